//! Robustness: no lock held across a wait, every wait bounded, background failures
//! latched, corrupt blocks quarantined rather than retried forever.

mod common;

use common::*;
use spike::index::partition_of;
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
