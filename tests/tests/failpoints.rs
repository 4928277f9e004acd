//! Failures between two steps that a simulated device alone cannot reach: a background
//! thread that panics, a put that panics while it holds a partition lock, a failed sync
//! between writing freed blocks' headers and putting them on the free list, and a failure
//! between writing the shutdown snapshot and flipping the header, and a tombstone-reclaim
//! scan that takes as long as a test likes.
//!
//! Run with `cargo test -p spike-tests --features failpoints --test failpoints`. The
//! failpoints are process-wide, so the tests take one lock and run one at a time.

mod common;

use common::*;
use spike::failpoint::{arm, hits, Action};
use spike::{Config, Durability, Error, WriteOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_flusher_that_panics_fails_commit_waiters_at_once() {
    let _serial = serial();
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::CommitToDevice, 21);
    let engine = open(&config, &sims);
    engine.put(&key(1), b"before", &WriteOptions::default()).unwrap();
    let _armed = arm("write::flusher::before_write", Action::Panic);
    let start = Instant::now();
    let result = engine.put(&key(2), b"during", &WriteOptions::default());
    let waited = start.elapsed();
    assert!(matches!(result, Err(Error::InDoubt { .. })), "{result:?}");
    assert!(waited < Duration::from_secs(5), "the waiter waited {waited:?} for a dead flusher");
    let after = engine.put(&key(3), b"after", &WriteOptions::default());
    assert!(matches!(after, Err(Error::DeviceFailed { .. })), "{after:?}");
    assert_eq!(engine.get(&key(1)).unwrap().value, b"before");
}

#[test]
fn a_put_that_panics_holding_a_partition_lock_stops_all_writes() {
    let _serial = serial();
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, 22);
    let engine = open(&config, &sims);
    engine.put(&key(1), b"one", &WriteOptions::default()).unwrap();
    {
        let _armed = arm("engine::write::after_index_update", Action::Panic);
        let panicked =
            catch_unwind(AssertUnwindSafe(|| engine.put(&key(2), b"two", &WriteOptions::default())));
        assert!(panicked.is_err());
    }
    // Only the panicking put's partition is poisoned, but its state is unknown: every
    // write is refused from now on, in any partition.
    for k in [2, 3, 4, 5] {
        let result = engine.put(&key(k), b"later", &WriteOptions::default());
        assert!(matches!(result, Err(Error::EngineFailed { .. })), "key {k}: {result:?}");
    }
    assert_eq!(engine.get(&key(1)).unwrap().value, b"one");
}

#[test]
fn a_failed_sync_after_writing_free_headers_loses_nothing_and_revives_nothing() {
    let _serial = serial();
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::CommitToDevice, 23);
    let config = Config { defrag_sleep_us: 0, ..config };
    let engine = open(&config, &sims);
    // Fill a few blocks, then overwrite everything so the first blocks empty out.
    for round in 0..2u64 {
        for k in 0..60 {
            engine.put(&key(k), &value(k, round, 6000), &WriteOptions::default()).unwrap();
        }
    }
    for k in 0..20 {
        engine.delete(&key(k)).unwrap();
    }
    let armed = arm("write::free::before_sync", Action::Fail);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The next free fails: the disk latches and writes are refused.
    let mut refused = false;
    for k in 60.. {
        match engine.put(&key(k), &value(k, 0, 6000), &WriteOptions::default()) {
            Ok(_) => {}
            Err(Error::DeviceFailed { .. } | Error::InDoubt { .. }) => {
                refused = true;
                break;
            }
            Err(err) => panic!("{err}"),
        }
        if Instant::now() > deadline {
            break;
        }
    }
    drop(armed);
    assert!(refused, "no block was freed within 10 s");
    drop(engine);
    let crashed = crash_all(&sims, 23);
    let engine = open(&config, &crashed);
    for k in 0..20 {
        assert!(matches!(engine.get(&key(k)), Err(Error::NotFound)), "deleted key {k} came back");
    }
    for k in 20..60 {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 1, 6000), "key {k}");
    }
}

#[test]
fn a_failure_between_the_snapshot_and_the_header_flip_means_a_cold_start() {
    let _serial = serial();
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, 24);
    let engine = open(&config, &sims);
    for k in 0..200 {
        engine.put(&key(k), &value(k, 0, 300), &WriteOptions::default()).unwrap();
    }
    engine.delete(&key(7)).unwrap();
    {
        let _armed = arm("engine::close::before_header_flip", Action::Fail);
        assert!(engine.close().is_err());
    }
    let engine = open(&config, &sims);
    assert_eq!(engine.stats().recovery.kind, "cold");
    for k in 0..200 {
        match engine.get(&key(k)) {
            Ok(record) => assert_eq!(record.value, value(k, 0, 300)),
            Err(Error::NotFound) => assert_eq!(k, 7),
            Err(err) => panic!("key {k}: {err}"),
        }
    }
    engine.close().unwrap();
    assert_eq!(open(&config, &sims).stats().recovery.kind, "fast");
}

/// A reclaim scan of a large device takes minutes, and "a device is short of space" is one
/// of its triggers: defrag must go on freeing blocks while it runs. The scan is held at its
/// first block for the whole test while overwrites of twice the device's size
/// need defrag to free blocks.
#[test]
fn defrag_keeps_freeing_blocks_while_a_tombstone_reclaim_scan_is_in_progress() {
    let _serial = serial();
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 25);
    let config = Config { defrag_sleep_us: 0, tombstone_scan_interval_ms: 20, ..config };
    let engine = open(&config, &sims);
    let scan_block = "tombstone::scan::next_block";
    let held = arm(scan_block, Action::Hold);
    let hits_before = hits(scan_block);
    for k in 0..200 {
        engine.put(&key(k), &value(k, 0, 3000), &WriteOptions::default()).unwrap();
    }
    for k in 0..100 {
        engine.delete(&key(k)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hits(scan_block) == hits_before {
        assert!(Instant::now() < deadline, "no reclaim scan started within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let defragged_before = engine.stats().blocks_defragged;
    // A quarter of the keys are never rewritten, so the blocks that hold them stay partly
    // live and only the defragmenter can free them (a block whose every record was
    // rewritten is freed without it: with all keys rewritten, whether defrag ran at all
    // depended on when the janitor looked, and CI once saw it not run).
    for round in 1..=60u64 {
        for k in (100..200).filter(|k| k % 4 != 0) {
            let put = engine.put(&key(k), &value(k, round, 3000), &WriteOptions::default());
            put.unwrap_or_else(|e| panic!("round {round}, key {k}, while the scan is held: {e}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().blocks_defragged == defragged_before {
        assert!(Instant::now() < deadline, "no block defragmented within 10 s: {:?}", engine.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = engine.stats();
    assert_eq!(stats.tombstones_reclaimed, 0, "the scan finished while held");
    assert_eq!(hits(scan_block), hits_before + 1, "the scan moved past its first block");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().tombstones_reclaimed == 0 {
        assert!(Instant::now() < deadline, "the released scan reclaimed nothing within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    for k in 0..200 {
        let got = engine.get(&key(k));
        if k < 100 {
            assert!(matches!(got, Err(Error::NotFound)), "deleted key {k}: {got:?}");
        } else {
            let round = if k % 4 == 0 { 0 } else { 60 };
            assert_eq!(got.unwrap().value, value(k, round, 3000), "key {k}");
        }
    }
}

/// The largest device the index addresses, end to end: a sparse file larger than
/// `DEVICE_BYTES_MAX` (128 TiB) on tmpfs, formatted to that size, records written into its
/// last write blocks (the failpoint takes the last free block instead of the first), read
/// back checksum-verified, and found again by a fast restart. A cold start is not run: its
/// header pass alone reads 4 KiB of each of 16 M write blocks.
#[test]
fn records_at_the_top_of_a_128_tib_device_are_written_read_and_kept_by_a_fast_restart() {
    use spike::offline::index::DEVICE_BYTES_MAX;
    use std::os::fd::AsRawFd;
    let _serial = serial();
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        println!("skipped: no /dev/shm (tmpfs) to hold a sparse 128 TiB file");
        return;
    };
    let path = dir.path().join("huge");
    let file = std::fs::File::create(&path).unwrap();
    if let Err(err) = file.set_len(DEVICE_BYTES_MAX + (1 << 30)) {
        println!("skipped: /dev/shm cannot hold a sparse file of 128 TiB ({err})");
        return;
    }
    let wbs: u64 = 8 << 20;
    let config = Config {
        namespace: "huge".into(),
        devices: vec![path.clone()],
        write_block_size: wbs as u32,
        durability: Durability::CommitToDevice,
        post_write_cache_blocks: 1,
        ..Config::default()
    };
    if let Err(err) = spike::Engine::format(&config, false) {
        println!("skipped: cannot format a file on /dev/shm with direct I/O ({err})");
        return;
    }
    let records = 20_000u64; // 1 KiB each: three 8 MiB write blocks
    let engine = spike::Engine::open(config.clone()).unwrap();
    {
        let _armed = arm("write::open_block::next_free", Action::Fail);
        for k in 0..records {
            engine.put(&key(k), &value(k, 1, 1000), &WriteOptions::default()).unwrap();
        }
    }
    // The records lie in the device's last write blocks: the file's first data past the
    // first 127 TiB is within the last few write blocks of the formatted size.
    let first_data_high =
        unsafe { libc::lseek(file.as_raw_fd(), (127u64 << 40) as libc::off_t, libc::SEEK_DATA) };
    assert!(first_data_high > 0, "nothing was written above 127 TiB");
    assert!(
        (first_data_high as u64) >= DEVICE_BYTES_MAX - 4 * wbs && (first_data_high as u64) < DEVICE_BYTES_MAX,
        "first data above 127 TiB at {first_data_high}, not in the last write blocks below {DEVICE_BYTES_MAX}"
    );
    for k in 0..records {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 1, 1000), "key {k}");
    }
    engine.close().unwrap();
    let engine = spike::Engine::open(config.clone()).unwrap();
    assert_eq!(engine.stats().recovery.kind, "fast");
    assert_eq!(engine.stats().recovery.records_kept, records);
    for k in (0..records).step_by(7) {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 1, 1000), "key {k} after restart");
    }
    engine.close().unwrap();
}
