//! Record operations on a simulated namespace: policies, generations, TTL, bad input.

mod common;

use common::*;
use spike::{Durability, Error, WriteOptions, WritePolicy};

#[test]
fn put_get_delete_round_trip_across_devices() {
    let (config, sims) = sim_namespace(3, 8 << 20, Durability::Buffered, 1);
    let engine = open(&config, &sims);
    for i in 0..500 {
        assert_eq!(engine.put(&key(i), &value(i, 0, 100 + i as usize), &WriteOptions::default()).unwrap(), 1);
    }
    for i in 0..500 {
        let record = engine.get(&key(i)).unwrap();
        assert_eq!(record.value, value(i, 0, 100 + i as usize));
        assert_eq!(record.generation, 1);
        assert_eq!(record.key.as_deref(), Some(&key(i)[..]));
    }
    for i in (0..500).step_by(2) {
        engine.delete(&key(i)).unwrap();
    }
    for i in 0..500 {
        assert_eq!(engine.exists(&key(i)).unwrap(), i % 2 == 1);
        assert_eq!(engine.get(&key(i)).is_ok(), i % 2 == 1);
    }
    assert!(matches!(engine.delete(&key(0)), Err(Error::NotFound)));
    let used: Vec<u64> = engine.stats().devices.iter().map(|d| d.live_bytes).collect();
    assert!(used.iter().all(|&b| b > 0), "digest spreads records over every device: {used:?}");
    engine.close().unwrap();
}

#[test]
fn write_policies_and_compare_and_set() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 2);
    let engine = open(&config, &sims);
    let create = WriteOptions { policy: WritePolicy::CreateOnly, ..Default::default() };
    let update = WriteOptions { policy: WritePolicy::UpdateOnly, ..Default::default() };
    assert!(matches!(engine.put(b"k", b"v", &update), Err(Error::NotFound)));
    assert_eq!(engine.put(b"k", b"v1", &create).unwrap(), 1);
    assert!(matches!(engine.put(b"k", b"v", &create), Err(Error::AlreadyExists)));
    assert_eq!(engine.put(b"k", b"v2", &update).unwrap(), 2);
    let cas = |generation| WriteOptions { expected_generation: Some(generation), ..Default::default() };
    assert!(matches!(
        engine.put(b"k", b"v", &cas(1)),
        Err(Error::GenerationMismatch { expected: 1, found: 2 })
    ));
    assert_eq!(engine.put(b"k", b"v3", &cas(2)).unwrap(), 3);
    assert_eq!(engine.get(b"k").unwrap().value, b"v3");
}

#[test]
fn generation_keeps_rising_across_delete_and_recreate() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 3);
    let engine = open(&config, &sims);
    engine.put(b"k", b"a", &WriteOptions::default()).unwrap();
    engine.put(b"k", b"b", &WriteOptions::default()).unwrap();
    engine.delete(b"k").unwrap();
    assert_eq!(engine.put(b"k", b"c", &WriteOptions::default()).unwrap(), 4);
    engine.close().unwrap();
    let engine = open(&config, &sims);
    let record = engine.get(b"k").unwrap();
    assert_eq!((record.value.as_slice(), record.generation), (&b"c"[..], 4));
}

#[test]
fn touch_sets_a_new_ttl_and_bumps_the_generation() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 4);
    let engine = open(&config, &sims);
    engine.put(b"k", b"v", &WriteOptions { ttl_s: Some(100), ..Default::default() }).unwrap();
    let before = engine.get(b"k").unwrap();
    assert!(before.void_time > 0);
    assert_eq!(engine.touch(b"k", 0).unwrap(), 2);
    let after = engine.get(b"k").unwrap();
    assert_eq!((after.void_time, after.value.as_slice()), (0, &b"v"[..]));
    assert!(matches!(engine.touch(b"missing", 5), Err(Error::NotFound)));
}

#[test]
fn expired_records_are_never_returned_and_stay_gone_after_restart() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 5);
    let engine = open(&config, &sims);
    engine.put(b"old", b"no ttl", &WriteOptions::default()).unwrap();
    engine.put(b"old", b"short ttl", &WriteOptions { ttl_s: Some(1), ..Default::default() }).unwrap();
    engine.put(b"keep", b"v", &WriteOptions::default()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(matches!(engine.get(b"old"), Err(Error::NotFound)));
    assert!(!engine.exists(b"old").unwrap());
    engine.close().unwrap();
    for _ in 0..2 {
        let engine = open(&spike::Config { fast_restart: false, ..config.clone() }, &sims);
        assert_eq!(engine.stats().recovery.expired_dropped, 1);
        assert!(matches!(engine.get(b"old"), Err(Error::NotFound)), "the older copy without TTL came back");
        assert_eq!(engine.get(b"keep").unwrap().value, b"v");
        engine.close().unwrap();
    }
}

#[test]
fn bad_keys_and_oversized_records_are_typed_errors() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 6);
    let engine = open(&config, &sims);
    assert!(matches!(engine.put(b"", b"v", &WriteOptions::default()), Err(Error::InvalidKey(_))));
    assert!(matches!(engine.put(&[1; 1025], b"v", &WriteOptions::default()), Err(Error::InvalidKey(_))));
    assert!(matches!(engine.get(b""), Err(Error::InvalidKey(_))));
    let too_big = vec![0u8; 128 * 1024];
    assert!(matches!(engine.put(b"k", &too_big, &WriteOptions::default()), Err(Error::RecordTooBig { .. })));
    let fits = vec![7u8; 128 * 1024 - 64 - spike::offline::format::RECORD_HEADER_SIZE - 1];
    engine.put(b"k", &fits, &WriteOptions::default()).unwrap();
    assert_eq!(engine.get(b"k").unwrap().value, fits);
}

#[test]
fn batch_get_and_scans_return_exactly_the_live_records() {
    let (config, sims) = sim_namespace(2, 8 << 20, Durability::Buffered, 7);
    let engine = open(&config, &sims);
    for i in 0..2000 {
        engine.put(&key(i), &value(i, 0, 300), &WriteOptions::default()).unwrap();
    }
    for i in (0..2000).step_by(3) {
        engine.delete(&key(i)).unwrap();
    }
    let keys: Vec<Vec<u8>> = (0..2000).map(key).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    for (i, result) in engine.get_many(&refs).into_iter().enumerate() {
        match result {
            Ok(record) => assert_eq!(record.value, value(i as u64, 0, 300)),
            Err(Error::NotFound) => assert_eq!(i % 3, 0),
            Err(err) => panic!("{err}"),
        }
    }
    let mut seen = Vec::new();
    engine
        .scan_all(&mut |record| {
            seen.push(record.key.unwrap());
            true
        })
        .unwrap();
    seen.sort();
    let expected: Vec<Vec<u8>> = (0..2000).filter(|i| i % 3 != 0).map(key).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(seen, expected_sorted);
    let counted: usize = (0..4096).map(|p| engine.partition_record_count(p).unwrap()).sum();
    assert_eq!(counted, expected.len());
    // Partitions past the last are an error, never another partition's answer.
    assert!(matches!(engine.partition_record_count(5000), Err(Error::InvalidPartition { .. })));
    assert!(matches!(engine.scan_partition(4096, &mut |_| true), Err(Error::InvalidPartition { .. })));
    // A batch larger than one chunk keeps its order.
    let many: Vec<Vec<u8>> =
        (0..spike::limits::BATCH_KEYS_MAX as u64 * 2 + 7).map(|i| key(i % 2000)).collect();
    let many_refs: Vec<&[u8]> = many.iter().map(|k| k.as_slice()).collect();
    for (i, result) in engine.get_many(&many_refs).into_iter().enumerate() {
        let k = i as u64 % 2000;
        match result {
            Ok(record) => assert_eq!(record.value, value(k, 0, 300)),
            Err(Error::NotFound) => assert_eq!(k % 3, 0),
            Err(err) => panic!("{err}"),
        }
    }
}

#[test]
fn concurrent_writers_fill_blocks_before_sealing_them() {
    let (config, sims) = sim_namespace(1, 32 << 20, Durability::Buffered, 8);
    // A one-block write queue makes writers wait for room often, which is when a writer
    // could seal a block another writer has just opened.
    let config = spike::Config { write_queue_blocks_max: 1, defrag_lwm_pct: 1, ..config };
    let engine = open(&config, &sims);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let engine = &engine;
            scope.spawn(move || {
                for i in 0..2000 {
                    let k = t * 100_000 + i;
                    engine.put(&key(k), &value(k, 0, 1000), &WriteOptions::default()).unwrap();
                }
            });
        }
    });
    let stats = engine.stats();
    let device = &stats.devices[0];
    let in_use = device.wblocks_total - device.wblocks_free - device.wblocks_pending_free;
    let needed = device.live_bytes.div_ceil(128 * 1024 - 64);
    assert!(
        in_use <= needed + 2,
        "{in_use} blocks hold {} live bytes that fit in {needed}",
        device.live_bytes
    );
}

#[test]
fn recycled_write_buffers_leave_nothing_of_their_earlier_use_on_the_device() {
    // Write buffers are reused without zeroing: any byte of a buffer's earlier block left
    // past the records of its next one would surface at a cold start as stale or corrupt.
    // Commit-to-device: every put also flushes the open block's dirty span.
    let (config, sims) = sim_namespace(1, 32 << 20, Durability::CommitToDevice, 11);
    let config = spike::Config { post_write_cache_blocks: 1, write_queue_blocks_max: 2, ..config };
    let engine = open(&config, &sims);
    let mut written = 0u64;
    for i in 0..6000u64 {
        // Sizes vary so that records of consecutive blocks do not line up.
        let len = 200 + (i * 7919 % 3000) as usize;
        engine.put(&key(i), &value(i, 0, len), &WriteOptions::default()).unwrap();
        written += 1;
    }
    let cold = spike::Config { fast_restart: false, ..config.clone() };
    // A power cut now: the open block is on the device only as partial flushes.
    let crashed = crash_all(&sims, 5);
    let recovery = open(&cold, &crashed).stats().recovery;
    assert_eq!((recovery.stale_records, recovery.corrupt_records), (0, 0), "after a crash: {recovery:?}");
    assert_eq!(recovery.records_kept, written);
    // A clean close: every block sealed and written whole.
    engine.close().unwrap();
    let recovery = open(&cold, &sims).stats().recovery;
    assert_eq!((recovery.stale_records, recovery.corrupt_records), (0, 0), "after a close: {recovery:?}");
    assert_eq!(recovery.records_kept, written);
}
