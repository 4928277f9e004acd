//! Robustness: no lock held across a wait, every wait bounded, background failures
//! latched, corrupt blocks quarantined rather than retried forever.

mod common;

use common::*;
use spike::offline::index::partition_of;
use spike::{Config, Durability, Engine, Error, WriteOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A key other than `key(0)` in the same partition as `key(0)`.
fn same_partition_key(engine: &Engine) -> Vec<u8> {
    let target = partition_of(&engine.digest(&key(0)));
    (1..1_000_000u64).map(key).find(|k| partition_of(&engine.digest(k)) == target).expect("a neighbour key")
}

#[test]
fn a_writer_waiting_for_write_queue_room_does_not_block_readers_of_its_partition() {
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, 5);
    let config = Config { write_queue_blocks_max: 1, overload_wait_ms: 8000, ..config };
    let engine = Arc::new(open(&config, &sims));
    let neighbour = same_partition_key(&engine);
    engine.put(&neighbour, b"readable", &WriteOptions::default()).unwrap();
    sims[0].hold_writes(true);
    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (engine, done) = (engine.clone(), writer_done.clone());
        std::thread::spawn(move || {
            // Blocks of 128 KiB: a few of these fill the open block and the one-block queue.
            for version in 0..8 {
                let result = engine.put(&key(0), &value(0, version, 100_000), &WriteOptions::default());
                if result.is_err() {
                    break;
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    // Let the writer reach the full queue (it then waits up to 8 s).
    std::thread::sleep(Duration::from_millis(300));
    assert!(!writer_done.load(Ordering::Acquire), "the writer should be waiting for queue room");
    let start = Instant::now();
    let record = engine.get(&neighbour).expect("read while a writer waits");
    let waited = start.elapsed();
    sims[0].hold_writes(false);
    writer.join().unwrap();
    assert_eq!(record.value, b"readable");
    assert!(waited < Duration::from_secs(2), "a read of the writer's partition waited {waited:?}");
    assert_eq!(engine.get(&key(0)).unwrap().value, value(0, 7, 100_000));
}

#[test]
fn a_full_write_queue_ends_in_device_overloaded_after_the_bound() {
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, 6);
    let config = Config { write_queue_blocks_max: 1, overload_wait_ms: 200, ..config };
    let engine = open(&config, &sims);
    sims[0].hold_writes(true);
    let start = Instant::now();
    let mut outcome = None;
    for version in 0..8 {
        if let Err(err) = engine.put(&key(version), &value(version, 0, 100_000), &WriteOptions::default()) {
            outcome = Some(err);
            break;
        }
    }
    let elapsed = start.elapsed();
    sims[0].hold_writes(false);
    match outcome {
        Some(Error::DeviceOverloaded { waited_ms, .. }) => {
            assert!(waited_ms >= 200, "reported {waited_ms} ms waited");
        }
        other => panic!("expected DeviceOverloaded, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    engine.close().unwrap();
}

/// 60 records of 10 KB written, then the engine reopened (so every block is on the
/// device, none in RAM): the setup of the defrag-victim tests.
fn sixty_records_on_the_device(seed: u64) -> (Vec<std::sync::Arc<spike::device::sim::SimDevice>>, Engine) {
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, seed);
    let config = Config { defrag_sleep_us: 0, ..config };
    let engine = open(&config, &sims);
    for k in 0..60 {
        engine.put(&key(k), &value(k, 0, 10_000), &WriteOptions::default()).unwrap();
    }
    engine.close().unwrap();
    let engine = open(&config, &sims);
    (sims, engine)
}

#[test]
fn a_defrag_victim_with_a_corrupt_header_is_quarantined_not_reread_forever() {
    let (sims, engine) = sixty_records_on_the_device(7);
    // The first block: the one holding the lowest record offset, its header just before it.
    let entries = engine.index_entries();
    let first = entries.iter().map(|(_, e)| e.location.offset_bytes).min().unwrap();
    let block_start = first - spike::offline::format::WBLOCK_HEADER_SIZE as u64;
    let in_block: Vec<u64> = (0..60)
        .filter(|&k| {
            let digest = engine.digest(&key(k));
            let tag = spike::offline::index::DigestTag::of(&digest);
            entries.iter().any(|(_, e)| e.tag == tag && e.location.offset_bytes < block_start + (128 << 10))
        })
        .collect();
    assert!(in_block.len() > 4, "{in_block:?}");
    sims[0].corrupt_bit(block_start + 9, 3);
    // Overwrite all but one of its records: the block falls under the low-water mark.
    let kept = in_block[0];
    for &k in &in_block[1..] {
        engine.put(&key(k), &value(k, 1, 10_000), &WriteOptions::default()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().blocks_quarantined == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = engine.stats();
    assert_eq!(stats.blocks_quarantined, 1);
    assert_eq!(stats.devices[0].wblocks_quarantined, 1);
    let reads_before = stats.defrag_blocks_read;
    std::thread::sleep(Duration::from_millis(500));
    let reads_after = engine.stats().defrag_blocks_read;
    assert!(reads_after <= reads_before + 2, "defrag re-read blocks: {reads_before} -> {reads_after}");
    assert_eq!(engine.get(&key(kept)).unwrap().value, value(kept, 0, 10_000));
    for &k in &in_block[1..] {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 1, 10_000));
    }
}

/// A victim whose header verifies but which holds a record corrupted at rest: the walk
/// cannot read that record, so the block keeps its live bytes after defrag. It must not be
/// picked and re-read every round; the record's reads fail by name, the others move.
#[test]
fn a_defrag_victim_with_an_unreadable_record_is_not_reread_forever() {
    let (sims, engine) = sixty_records_on_the_device(8);
    let entries = engine.index_entries();
    let location_of = |k: u64| {
        let tag = spike::offline::index::DigestTag::of(&engine.digest(&key(k)));
        entries.iter().find(|(_, e)| e.tag == tag).map(|(_, e)| e.location.offset_bytes).unwrap()
    };
    let first = (0..60).map(location_of).min().unwrap();
    let block_end = first - spike::offline::format::WBLOCK_HEADER_SIZE as u64 + (128 << 10);
    let in_block: Vec<u64> = (0..60).filter(|&k| location_of(k) < block_end).collect();
    assert!(in_block.len() > 4, "{in_block:?}");
    let kept = in_block[0];
    sims[0].corrupt_bit(location_of(kept) + 64 + 100, 2);
    for &k in &in_block[1..] {
        engine.put(&key(k), &value(k, 1, 10_000), &WriteOptions::default()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.stats().blocks_defragged == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let reads_before = engine.stats().defrag_blocks_read;
    std::thread::sleep(Duration::from_millis(500));
    let reads_after = engine.stats().defrag_blocks_read;
    assert!(reads_after <= reads_before + 2, "defrag re-read blocks: {reads_before} -> {reads_after}");
    assert!(matches!(engine.get(&key(kept)), Err(Error::Corrupt { .. })), "the corrupt record was returned");
    for &k in &in_block[1..] {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 1, 10_000));
    }
}
