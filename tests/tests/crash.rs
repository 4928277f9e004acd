//! Crash tests on the simulated device: power cuts at many points of the write path,
//! including torn writes of the last blocks. After recovery, every write acknowledged in
//! commit-to-device mode is there with its value, no deleted record comes back, and
//! nothing corrupt is returned.

mod common;

use common::*;
use spike::device::sim::SimFaults;
use spike::device::Device;
use spike::{Durability, Engine, Error, WriteOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a key may hold after a crash: its last acknowledged state, or the state an
/// unacknowledged (failed) operation was trying to reach.
#[derive(Default, Clone)]
struct Allowed {
    acked: Option<Vec<u8>>,
    in_doubt: Vec<Option<Vec<u8>>>,
}

fn check_recovered(engine: &Engine, model: &BTreeMap<u64, Allowed>, context: &str) {
    for (k, allowed) in model {
        let found = match engine.get(&key(*k)) {
            Ok(record) => Some(record.value),
            Err(Error::NotFound) => None,
            Err(err) => panic!("{context}: key {k}: {err}"),
        };
        assert!(
            found == allowed.acked || allowed.in_doubt.contains(&found),
            "{context}: key {k} holds {:?}, acknowledged {:?}",
            found.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned()),
            allowed.acked.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned()),
        );
    }
}

/// One history of puts, overwrites and deletes on one key space, cut by a power loss
/// after `crash_after` device writes.
fn run_until_crash(crash_after: u64, seed: u64) {
    let (config, sims) = sim_namespace(2, 3 << 20, Durability::CommitToDevice, seed);
    let engine = open(&config, &sims);
    for sim in &sims {
        let writes_so_far = sim.counts().writes;
        sim.set_faults(SimFaults {
            crash_after_writes: Some(writes_so_far + crash_after),
            ..Default::default()
        });
    }
    let mut model: BTreeMap<u64, Allowed> = BTreeMap::new();
    let mut rng = spike::device::sim::SimRng::new(seed);
    for op in 0..3000u64 {
        let k = rng.below(40);
        let delete = rng.below(5) == 0;
        let new_value = value(k, op, 200 + rng.below(3000) as usize);
        let result = if delete {
            engine.delete(&key(k)).map(|_| ())
        } else {
            engine.put(&key(k), &new_value, &WriteOptions::default()).map(|_| ())
        };
        let target = if delete { None } else { Some(new_value) };
        let entry = model.entry(k).or_default();
        match result {
            Ok(()) => *entry = Allowed { acked: target, in_doubt: Vec::new() },
            Err(Error::NotFound) if delete => {}
            // Appended but not known durable: either outcome is allowed.
            Err(Error::InDoubt { .. }) => entry.in_doubt.push(target),
            // Refused before anything was appended: the key must keep its acknowledged
            // state, so these must not widen what is allowed.
            Err(Error::DeviceFailed { .. }) => {}
            Err(err) => panic!("seed {seed}, op {op}: unexpected error {err}"),
        }
        if sims.iter().all(|s| s.has_crashed()) {
            break;
        }
    }
    let crashed = crash_all(&sims, seed);
    drop(engine);
    let context = format!("crash after {crash_after} writes, seed {seed}");
    let engine = Engine::open_devices(config.clone(), as_devices(&crashed))
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    check_recovered(&engine, &model, &context);
    // A second restart (this time clean) must agree with the first.
    engine.close().unwrap();
    let engine = open(&config, &crashed);
    check_recovered(&engine, &model, &format!("{context}, after a further clean restart"));
}

#[test]
fn acknowledged_writes_survive_power_loss_at_many_points() {
    let (base, _report) = test_seed("acknowledged_writes_survive_power_loss_at_many_points");
    for crash_after in [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233] {
        for round in 0..3 {
            run_until_crash(crash_after, base.wrapping_add(round * 1000 + crash_after));
        }
    }
}

#[test]
fn concurrent_committed_writers_survive_power_loss() {
    let (base, _report) = test_seed("concurrent_committed_writers_survive_power_loss");
    for crash_after in [10, 40, 120] {
        let (config, sims) = sim_namespace(1, 6 << 20, Durability::CommitToDevice, base ^ crash_after);
        let engine = open(&config, &sims);
        let writes = sims[0].counts().writes;
        sims[0]
            .set_faults(SimFaults { crash_after_writes: Some(writes + crash_after), ..Default::default() });
        let acked = Mutex::new(BTreeMap::new());
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let (engine, acked) = (&engine, &acked);
                scope.spawn(move || {
                    for i in 0..2000u64 {
                        let k = thread * 10_000 + i;
                        if engine.put(&key(k), &value(k, 0, 500), &WriteOptions::default()).is_err() {
                            break;
                        }
                        acked.lock().unwrap().insert(k, value(k, 0, 500));
                    }
                });
            }
        });
        let crashed = crash_all(&sims, base ^ crash_after);
        drop(engine);
        let engine = open(&config, &crashed);
        let acked = acked.into_inner().unwrap();
        assert!(!acked.is_empty());
        for (k, v) in &acked {
            assert_eq!(&engine.get(&key(*k)).unwrap_or_else(|e| panic!("key {k}: {e}")).value, v);
        }
    }
}

#[test]
fn buffered_mode_never_returns_corrupt_or_invented_data_after_a_crash() {
    let (base, _report) = test_seed("buffered_mode_never_returns_corrupt_or_invented_data_after_a_crash");
    for seed in (0..6).map(|round| base.wrapping_add(round)) {
        let (config, sims) = sim_namespace(1, 3 << 20, Durability::Buffered, seed ^ 50);
        let engine = open(&config, &sims);
        let mut history: BTreeMap<u64, Vec<Option<Vec<u8>>>> = BTreeMap::new();
        let mut rng = spike::device::sim::SimRng::new(seed);
        for op in 0..1500u64 {
            let k = rng.below(30);
            let v = value(k, op, 100 + rng.below(2000) as usize);
            let states = history.entry(k).or_insert_with(|| vec![None]);
            if rng.below(4) == 0 {
                if engine.delete(&key(k)).is_ok() {
                    states.push(None);
                }
            } else if engine.put(&key(k), &v, &WriteOptions::default()).is_ok() {
                states.push(Some(v));
            }
        }
        let crashed = crash_all(&sims, seed);
        drop(engine);
        let engine = open(&config, &crashed);
        for (k, states) in &history {
            let found = match engine.get(&key(*k)) {
                Ok(record) => Some(record.value),
                Err(Error::NotFound) => None,
                Err(err) => panic!("seed {seed} key {k}: {err}"),
            };
            assert!(states.contains(&found), "seed {seed}: key {k} holds a value it never had");
        }
    }
}

#[test]
fn corrupt_record_on_device_is_an_error_naming_device_and_offset() {
    let (config, sims) = sim_namespace(1, 3 << 20, Durability::CommitToDevice, 9);
    let engine = open(&config, &sims);
    for i in 0..400 {
        engine.put(&key(i), &value(i, 0, 1000), &WriteOptions::default()).unwrap();
    }
    engine.close().unwrap();
    let engine = open(&config, &sims);
    // Flip a bit inside the value of key 0, found through a scan of the raw image.
    let image = sims[0].live_image();
    let needle = value(0, 0, 1000);
    let at = image.windows(needle.len()).position(|w| w == needle.as_slice()).expect("value on device");
    sims[0].corrupt_bit((at + 500) as u64, 3);
    match engine.get(&key(0)) {
        Err(Error::Corrupt { device, offset, .. }) => {
            assert_eq!(device, "sim0");
            assert!(offset <= at as u64 && at as u64 - offset < 200, "offset {offset} vs value at {at}");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    assert_eq!(engine.get(&key(1)).unwrap().value, value(1, 0, 1000));
    engine.close().unwrap();
    // Cold start skips and counts the corrupt record rather than failing.
    let cold = spike::Config { fast_restart: false, ..config.clone() };
    let engine = open(&cold, &sims);
    assert_eq!(engine.stats().recovery.kind, "cold");
    assert!(engine.stats().recovery.corrupt_records >= 1);
    assert!(matches!(engine.get(&key(0)), Err(Error::NotFound)));
    assert_eq!(engine.get(&key(399)).unwrap().value, value(399, 0, 1000));
}

#[test]
fn read_errors_surface_as_io_errors_naming_the_device() {
    let (config, sims) = sim_namespace(1, 3 << 20, Durability::CommitToDevice, 10);
    let engine = open(&config, &sims);
    for i in 0..300 {
        engine.put(&key(i), &value(i, 0, 2000), &WriteOptions::default()).unwrap();
    }
    sims[0].set_faults(SimFaults { read_error_per_million: 1_000_000, ..Default::default() });
    // Key 0 sits in a block already written out of the small post-write cache.
    match engine.get(&key(0)) {
        Err(Error::Io { device, .. }) => assert_eq!(device, "sim0"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    sims[0].set_faults(SimFaults::default());
    assert_eq!(engine.get(&key(0)).unwrap().value, value(0, 0, 2000));
    let _ = Arc::clone(&sims[0]).size_bytes();
}

/// The first start since a format reads no write block (on a device of tens of TiB a scan
/// takes hours), even over a device that held another namespace's records: those were
/// written under another device UUID, so they never come back, not at the fresh start and
/// not at the cold start after a crash in the first run.
#[test]
fn the_first_start_after_a_format_reads_nothing_and_a_crash_in_its_run_is_a_cold_start() {
    let (config, sims) = sim_namespace(1, 6 << 20, Durability::CommitToDevice, 31);
    let engine = open(&config, &sims);
    for k in 0..300 {
        engine.put(&key(k), &value(k, 0, 500), &WriteOptions::default()).unwrap();
    }
    engine.close().unwrap();
    let reserved = |device: &dyn Device| match spike::offline::namespace::probe(device).unwrap() {
        spike::offline::namespace::DeviceContent::Spike(header) => header.write_seq_reserved,
        other => panic!("not a Spike device: {other:?}"),
    };
    let reserved_by_old_format = reserved(sims[0].as_ref());
    Engine::format_devices(&config, &as_devices(&sims), true).unwrap();
    // The new format's blocks start above every sequence the old one may have used.
    assert_eq!(reserved(sims[0].as_ref()), reserved_by_old_format);
    let reads_before = sims[0].counts().reads;
    let engine = open(&config, &sims);
    let recovery = engine.stats().recovery;
    assert_eq!((recovery.kind, recovery.bytes_scanned, recovery.records_kept), ("fresh", 0, 0));
    assert!(sims[0].counts().reads - reads_before < 16, "the fresh start read write blocks");
    assert!(matches!(engine.get(&key(1)), Err(Error::NotFound)), "a record of the old format came back");
    for k in 1000..1100 {
        engine.put(&key(k), &value(k, 1, 500), &WriteOptions::default()).unwrap();
    }
    let crashed = crash_all(&sims, 31);
    drop(engine);
    let engine = open(&config, &crashed);
    assert_eq!(engine.stats().recovery.kind, "cold");
    assert_eq!(engine.stats().recovery.records_kept, 100);
    for k in 1000..1100 {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 1, 500), "key {k}");
    }
    assert!(matches!(engine.get(&key(1)), Err(Error::NotFound)), "a record of the old format came back");
}

/// A cold start reads whole only the blocks whose header names a data block of the device
/// (a first pass reads 4 KiB of each): on a mostly empty device it costs in proportion to
/// the data, not to the device (a 64 TiB device would take hours to read whole).
#[test]
fn a_cold_start_reads_whole_only_the_blocks_that_hold_data() {
    let (config, sims) = sim_namespace(1, 64 << 20, Durability::CommitToDevice, 41);
    let engine = open(&config, &sims);
    for k in 0..300 {
        engine.put(&key(k), &value(k, 0, 500), &WriteOptions::default()).unwrap();
    }
    let crashed = crash_all(&sims, 41);
    drop(engine);
    let engine = open(&config, &crashed);
    let recovery = engine.stats().recovery;
    assert_eq!((recovery.kind, recovery.records_kept), ("cold", 300));
    let wbs = WBLOCK_SMALL as u64;
    assert!(recovery.blocks_in_use >= 2);
    assert_eq!(recovery.bytes_scanned, recovery.blocks_in_use * wbs, "{recovery:?}");
    for k in 0..300 {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 0, 500), "key {k}");
    }
}
