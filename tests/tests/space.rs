//! Space management: defrag under long random overwrite and delete workloads, write
//! amplification, stop-writes, tombstone reclaim, expiry and eviction, fast restart equal
//! to cold start, and power cuts inside a defrag pass and inside the shutdown snapshot.

mod common;

use common::*;
use spike::device::sim::{SimFaults, SimRng};
use spike::{Config, Durability, Engine, Error, WriteOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn space_config(config: &Config) -> Config {
    Config { defrag_sleep_us: 0, flush_max_ms: 1000, ..config.clone() }
}

fn check(engine: &Engine, model: &BTreeMap<u64, Vec<u8>>, keys: u64, context: &str) {
    for k in 0..keys {
        match (engine.get(&key(k)), model.get(&k)) {
            (Ok(record), Some(v)) => assert!(record.value == *v, "{context}: key {k} has a stale value"),
            (Err(Error::NotFound), None) => {}
            (got, want) => panic!(
                "{context}: key {k}: got {:?}, want {:?}",
                got.map(|r| r.generation),
                want.map(|v| v.len())
            ),
        }
    }
}

/// Waits (bounded) until the janitor has nothing left under the low-water mark.
fn settle(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && engine.stats().devices.iter().any(|d| d.wblocks_defrag_queued > 0) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn random_overwrites_and_deletes_far_beyond_capacity_never_run_out_of_space() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 11);
    let config = Config { tombstone_scan_interval_ms: 100, ..space_config(&config) };
    let mut engine = open(&config, &sims);
    let mut model = BTreeMap::new();
    let mut rng = SimRng::new(11);
    let keys = 600u64;
    let mut written = 0u64;
    let mut reclaimed = 0;
    for op in 0..40_000u64 {
        let k = rng.below(keys);
        if rng.below(5) == 0 {
            match engine.delete(&key(k)) {
                Ok(()) => assert!(model.remove(&k).is_some()),
                Err(Error::NotFound) => assert!(!model.contains_key(&k)),
                Err(err) => panic!("op {op}: delete: {err}"),
            }
        } else {
            let v = value(k, op, 500 + rng.below(4000) as usize);
            written += v.len() as u64;
            engine.put(&key(k), &v, &WriteOptions::default()).unwrap_or_else(|e| panic!("op {op}: put: {e}"));
            model.insert(k, v);
        }
        // The janitor scans for reclaimable tombstones on a timer longer than this whole
        // test; drive the scan by hand to keep the test quick and deterministic.
        if op % 2_000 == 1_999 {
            engine.reclaim_tombstones().unwrap();
        }
        if op % 10_000 == 4_999 {
            reclaimed += engine.stats().tombstones_reclaimed;
            engine.close().unwrap();
            engine = open(&config, &sims);
            check(&engine, &model, keys, &format!("after restart at op {op}"));
        }
    }
    assert!(written > 8 * (8 << 20), "only {written} bytes written");
    check(&engine, &model, keys, "end");
    let stats = engine.stats();
    reclaimed += stats.tombstones_reclaimed;
    assert!(stats.blocks_defragged > 0 && reclaimed > 0, "{reclaimed} reclaimed; {stats:?}");
    assert!(stats.tombstones < 2 * keys, "tombstones pile up: {}", stats.tombstones);
}

#[test]
fn write_amplification_stays_under_the_lwm_bound_for_uniform_overwrites() {
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, 12);
    let config = Config { defrag_lwm_pct: 50, ..space_config(&config) };
    let engine = open(&config, &sims);
    let mut rng = SimRng::new(12);
    // About 45% of the block area live: defrag must work, but never needs the urgent mark.
    let keys = 6_000u64;
    for k in 0..keys {
        engine.put(&key(k), &value(k, 0, 1000), &WriteOptions::default()).unwrap();
    }
    let before = engine.stats();
    for op in 0..60_000u64 {
        let k = rng.below(keys);
        engine.put(&key(k), &value(k, op, 1000), &WriteOptions::default()).unwrap();
    }
    let after = engine.stats();
    let client = (after.client_bytes_written - before.client_bytes_written) as f64;
    let defrag = (after.defrag_bytes_written - before.defrag_bytes_written) as f64;
    let device = (after.device_bytes_written - before.device_bytes_written) as f64;
    let record_wa = (client + defrag) / client;
    println!(
        "uniform overwrites at lwm 50: record-level WA {record_wa:.3}, device-level WA {:.3}",
        device / client
    );
    assert!(record_wa <= 2.0, "write amplification {record_wa}");
    assert!(after.blocks_defragged > before.blocks_defragged);
}

#[test]
fn stop_writes_refuses_clients_while_deletes_and_defrag_bring_space_back() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 13);
    let config = Config { stop_writes_free_pct: 25, overload_wait_ms: 200, ..space_config(&config) };
    let engine = open(&config, &sims);
    assert!(!engine.stats().devices[0].short_of_space, "an empty device is short of space");
    let mut stored = 0u64;
    let err = loop {
        match engine.put(&key(stored), &value(stored, 0, 2000), &WriteOptions::default()) {
            Ok(_) => stored += 1,
            Err(err) => break err,
        }
    };
    match &err {
        Error::OutOfSpace { detail, .. } => assert!(detail.contains("stop-writes"), "{detail}"),
        other => panic!("expected stop-writes, got {other}"),
    }
    assert!(engine.stats().devices[0].short_of_space, "stop-writes reached, yet not short of space");
    assert_eq!(engine.get(&key(0)).unwrap().value, value(0, 0, 2000));
    for k in (0..stored).filter(|k| k % 4 != 0) {
        engine.delete(&key(k)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match engine.put(b"after", b"space came back", &WriteOptions::default()) {
            Ok(_) => break,
            Err(Error::OutOfSpace { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(err) => panic!("space never came back: {err}"),
        }
    }
    for k in (0..stored).step_by(4) {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 0, 2000));
    }
}

#[test]
fn deleted_records_stay_deleted_after_tombstone_reclaim_and_a_re_create_wins() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::CommitToDevice, 14);
    let config =
        Config { tombstone_scan_interval_ms: 3_600_000, fast_restart: false, ..space_config(&config) };
    // First without defrag (a 1% low-water mark), so that the old copies stay: the deleted
    // (even) keys share their blocks with live (odd) ones.
    let engine = open(&Config { defrag_lwm_pct: 1, ..config.clone() }, &sims);
    for k in 0..200 {
        engine.put(&key(k), &value(k, 0, 3000), &WriteOptions::default()).unwrap();
    }
    for k in (0..200).step_by(2) {
        engine.delete(&key(k)).unwrap();
    }
    assert_eq!(engine.reclaim_tombstones().unwrap(), 0, "a tombstone went while its old copy remains");
    engine.close().unwrap();
    // Now overwrite the survivors until the old blocks are defragmented and freed.
    let engine = open(&config, &sims);
    for round in 1..6 {
        for k in (1..200).step_by(2) {
            engine.put(&key(k), &value(k, round, 3000), &WriteOptions::default()).unwrap();
        }
    }
    settle(&engine);
    let reclaimed = engine.reclaim_tombstones().unwrap();
    assert!(reclaimed > 50, "only {reclaimed} tombstones reclaimed");
    // Re-create a deleted key after its tombstone left the index, then lose power.
    // A deleted key whose tombstone is gone from the index (`exists` cannot tell: it is
    // false for a tombstoned key too), so that the re-create starts from the floor.
    let indexed: std::collections::BTreeSet<_> =
        engine.index_entries().into_iter().map(|(_, e)| e.tag).collect();
    let gone = (0..200)
        .step_by(2)
        .find(|&k| !indexed.contains(&spike::offline::index::DigestTag::of(&engine.digest(&key(k)))))
        .expect("a reclaimed tombstone");
    engine.put(&key(gone), b"re-created", &WriteOptions::default()).unwrap();
    let crashed = crash_all(&sims, 14);
    drop(engine);
    let engine = open(&config, &crashed);
    assert_eq!(engine.get(&key(gone)).unwrap().value, b"re-created");
    for k in (0..200).step_by(2).filter(|&k| k != gone) {
        assert!(matches!(engine.get(&key(k)), Err(Error::NotFound)), "deleted key {k} came back");
    }
    for k in (1..200).step_by(2) {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 5, 3000));
    }
}

#[test]
fn tombstones_of_digests_sharing_a_tag_are_reclaimed_each_on_its_own_and_stay_deleted() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::CommitToDevice, 16);
    let config =
        Config { tombstone_scan_interval_ms: 3_600_000, fast_restart: false, ..space_config(&config) };
    let engine = open(&config, &sims);
    // Twins: same partition, device and tag; only bytes the index does not keep differ.
    let twin = |salt: u8| {
        let mut d = engine.digest(b"twin");
        d[19] ^= salt;
        d
    };
    let (first, second, third) = (twin(0), twin(1), twin(2));
    engine.put_by_digest(&first, &[1; 3000], &WriteOptions::default()).unwrap();
    engine.put_by_digest(&second, &[2; 3000], &WriteOptions::default()).unwrap();
    engine.delete_by_digest(&first, &WriteOptions::default()).unwrap();
    assert_eq!(engine.reclaim_tombstones().unwrap(), 0, "the first's old copy is still there");
    // Rewrite other records until the blocks holding the first's copies are freed.
    let mut reclaimed = 0;
    for round in 1..40 {
        for k in 0..100 {
            engine.put(&key(k), &value(k, round, 3000), &WriteOptions::default()).unwrap();
        }
        settle(&engine);
        reclaimed += engine.reclaim_tombstones().unwrap();
        if reclaimed > 0 {
            break;
        }
    }
    let stats = engine.stats();
    assert_eq!(reclaimed, 1, "defragged {} blocks, freed {}", stats.blocks_defragged, stats.blocks_freed);
    let entries = engine.index_entries();
    let tag = spike::offline::index::DigestTag::of(&first);
    assert_eq!(entries.iter().filter(|(_, e)| e.tag == tag).count(), 1, "the second's entry stays, alone");
    assert_eq!(engine.get_by_digest(&second).unwrap().value, vec![2; 3000]);
    // A third twin starts above the reclaimed tombstone's generation; none comes back
    // after a power cut.
    engine.put_by_digest(&third, b"third", &WriteOptions::default()).unwrap();
    let crashed = crash_all(&sims, 16);
    drop(engine);
    let engine = open(&config, &crashed);
    assert!(matches!(engine.get_by_digest(&first), Err(Error::NotFound)), "a reclaimed twin came back");
    assert_eq!(engine.get_by_digest(&second).unwrap().value, vec![2; 3000]);
    assert_eq!(engine.get_by_digest(&third).unwrap().value, b"third");
}

#[test]
fn expired_records_are_removed_in_the_background_and_eviction_takes_the_soonest_expiring() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 15);
    let config = Config {
        evict_used_pct: 10,
        evict_per_pass_permille: 250,
        expiry_interval_ms: 3_600_000,
        ..space_config(&config)
    };
    let engine = open(&config, &sims);
    engine.put(b"short", b"v", &WriteOptions { ttl_s: Some(1), ..Default::default() }).unwrap();
    for k in 0..100 {
        let ttl = Some(1000 + k as u32 * 10);
        engine.put(&key(k), &value(k, 0, 3000), &WriteOptions { ttl_s: ttl, ..Default::default() }).unwrap();
        engine.put(&key(1000 + k), &value(k, 0, 3000), &WriteOptions::default()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(2100));
    let (expired, evicted) = engine.expire_now();
    assert_eq!(expired, 1);
    assert!(evicted >= 20, "evicted {evicted}");
    assert!(matches!(engine.get(b"short"), Err(Error::NotFound)));
    // The soonest-expiring went first; records without TTL are never evicted.
    assert!(matches!(engine.get(&key(0)), Err(Error::NotFound)));
    assert!(engine.get(&key(99)).is_ok());
    for k in 0..100 {
        assert!(engine.get(&key(1000 + k)).is_ok());
    }
    let stats = engine.stats();
    assert_eq!((stats.expired, stats.evicted), (1, evicted));
    engine.close().unwrap();
    let engine = open(&Config { fast_restart: false, ..config.clone() }, &sims);
    assert!(matches!(engine.get(&key(0)), Err(Error::NotFound)), "an evicted record came back");
}

#[test]
fn fast_restart_restores_exactly_what_a_cold_start_rebuilds() {
    for seed in 0..4u64 {
        let (config, sims) = sim_namespace(2, 6 << 20, Durability::Buffered, 100 + seed);
        let config = space_config(&config);
        let engine = open(&config, &sims);
        let mut rng = SimRng::new(seed);
        for op in 0..4000u64 {
            let k = rng.below(300);
            match rng.below(6) {
                0 => drop(engine.delete(&key(k))),
                1 => drop(engine.touch(&key(k), 5000)),
                _ => drop(engine.put(
                    &key(k),
                    &value(k, op, 100 + rng.below(3000) as usize),
                    &WriteOptions::default(),
                )),
            }
        }
        settle(&engine);
        engine.close().unwrap();
        let copies = |s: u64| -> Vec<_> {
            sims.iter()
                .map(|d| {
                    std::sync::Arc::new(spike::device::sim::SimDevice::from_image(
                        spike::device::Device::name(&**d),
                        d.live_image(),
                        s,
                    ))
                })
                .collect()
        };
        // Compared with the defragmenter off, so that neither engine moves records meanwhile
        // (a 1% low-water mark was not enough: a block holding one small record qualifies).
        let idle = Config { defrag_enabled: false, ..config.clone() };
        let fast = open(&idle, &copies(1));
        assert_eq!(fast.stats().recovery.kind, "fast", "seed {seed}");
        let cold = open(&Config { fast_restart: false, ..idle }, &copies(2));
        assert_eq!(cold.stats().recovery.kind, "cold");
        let (f, c) = (fast.index_entries(), cold.index_entries());
        let only_fast: Vec<_> = f.iter().filter(|e| !c.contains(e)).collect();
        let only_cold: Vec<_> = c.iter().filter(|e| !f.contains(e)).collect();
        assert!(
            only_fast.is_empty() && only_cold.is_empty(),
            "seed {seed}: fast only {only_fast:?}, cold only {only_cold:?}"
        );
        let stats = (fast.stats(), cold.stats());
        let live = |s: &spike::Stats| s.devices.iter().map(|d| d.live_bytes).collect::<Vec<_>>();
        assert_eq!(live(&stats.0), live(&stats.1), "seed {seed}: live bytes differ");
    }
}

#[test]
fn power_cuts_inside_defrag_passes_lose_nothing() {
    for crash_after in [1u64, 2, 3, 5, 8, 13, 21, 40] {
        let (config, sims) = sim_namespace(1, 4 << 20, Durability::CommitToDevice, 200 + crash_after);
        // Fill, then overwrite most keys so that many blocks fall under the low-water mark,
        // with the janitor paused (huge sleep) until the crash point is armed.
        let quiet = Config { defrag_lwm_pct: 1, ..space_config(&config) };
        let engine = open(&quiet, &sims);
        let mut model = BTreeMap::new();
        for k in 0..300u64 {
            engine.put(&key(k), &value(k, 0, 2000), &WriteOptions::default()).unwrap();
            model.insert(k, value(k, 0, 2000));
        }
        for k in (0..300u64).filter(|k| k % 3 != 0) {
            if k % 7 == 0 {
                engine.delete(&key(k)).unwrap();
                model.remove(&k);
            } else {
                engine.put(&key(k), &value(k, 1, 2000), &WriteOptions::default()).unwrap();
                model.insert(k, value(k, 1, 2000));
            }
        }
        engine.close().unwrap();
        // Arm the power cut before the engine opens, so the janitor cannot defragment
        // anything first: count the writes an open makes on a copy (defrag off there),
        // then let the real open make those and `crash_after` more.
        let copy = spike::device::sim::SimDevice::from_image("sim0", sims[0].live_image(), 1);
        let copy = std::sync::Arc::new(copy);
        let probe =
            open(&Config { defrag_enabled: false, ..space_config(&config) }, std::slice::from_ref(&copy));
        let open_writes = copy.counts().writes;
        drop(probe);
        let writes = sims[0].counts().writes;
        sims[0].set_faults(SimFaults {
            crash_after_writes: Some(writes + open_writes + crash_after),
            ..Default::default()
        });
        let engine = open(&space_config(&config), &sims);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sims[0].has_crashed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(sims[0].has_crashed() || engine.stats().blocks_defragged > 0);
        let crashed = crash_all(&sims, crash_after);
        drop(engine);
        let engine = open(&config, &crashed);
        check(&engine, &model, 300, &format!("power cut after {crash_after} writes of defrag"));
    }
}

#[test]
fn power_cuts_inside_the_shutdown_snapshot_fall_back_to_a_cold_start() {
    for crash_after in [0u64, 1, 2, 3, 4] {
        let (config, sims) = sim_namespace(1, 8 << 20, Durability::CommitToDevice, 300 + crash_after);
        let config = space_config(&config);
        let engine = open(&config, &sims);
        let mut model = BTreeMap::new();
        for k in 0..2000u64 {
            engine.put(&key(k), &value(k, 0, 600), &WriteOptions::default()).unwrap();
            model.insert(k, value(k, 0, 600));
        }
        for k in 0..2000u64 {
            if k % 5 == 0 {
                engine.delete(&key(k)).unwrap();
                model.remove(&k);
            }
        }
        let writes = sims[0].counts().writes;
        sims[0]
            .set_faults(SimFaults { crash_after_writes: Some(writes + crash_after), ..Default::default() });
        let closed = engine.close();
        let crashed = crash_all(&sims, crash_after);
        let engine = open(&config, &crashed);
        // A close that failed part-way must cold-start; one that completed must not.
        let expected = if closed.is_err() { "cold" } else { "fast" };
        assert_eq!(engine.stats().recovery.kind, expected, "crash after {crash_after}");
        check(&engine, &model, 2000, &format!("power cut after {crash_after} writes of shutdown"));
    }
}

/// Without background threads nothing defragments until the caller runs a round: the
/// mode deterministic tests use.
#[test]
fn without_background_threads_defrag_runs_only_when_asked() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 17);
    let config = Config { background_threads: false, ..space_config(&config) };
    let engine = open(&config, &sims);
    // Every other key overwritten: the first blocks fall to about half live.
    for round in 0..2u64 {
        for k in (0..120).filter(|k| round == 0 || k % 2 == 0) {
            engine.put(&key(k), &value(k, round, 3000), &WriteOptions::default()).unwrap();
        }
    }
    engine.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let idle = engine.stats();
    assert_eq!(idle.blocks_defragged, 0, "defrag ran on its own");
    assert!(idle.devices[0].wblocks_defrag_queued > 0, "no victim to test with: {idle:?}");
    let round = engine.run_background_once().unwrap();
    assert!(round.blocks_defragged > 0, "{round:?}");
    assert_eq!(engine.stats().blocks_defragged, round.blocks_defragged);
    for k in 0..120 {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, if k % 2 == 0 { 1 } else { 0 }, 3000));
    }
}

/// A reclaim scan reads at most `tombstone_scan_mib_s`: background work must leave the
/// device to the writers. 8 MiB of blocks at 16 MiB/s cannot take less than about 0.5 s
/// (unthrottled, the simulated device scans them in milliseconds).
#[test]
fn a_tombstone_scan_keeps_to_its_read_rate() {
    let (config, sims) = sim_namespace(1, 16 << 20, Durability::Buffered, 19);
    let config = Config { background_threads: false, tombstone_scan_mib_s: 16, ..space_config(&config) };
    let engine = open(&config, &sims);
    for k in 0..2000 {
        engine.put(&key(k), &value(k, 0, 4000), &WriteOptions::default()).unwrap();
    }
    for k in 0..100 {
        engine.delete(&key(k)).unwrap();
    }
    engine.close().unwrap();
    let engine = open(&config, &sims);
    let used_bytes: u64 =
        engine.stats().devices.iter().map(|d| (d.wblocks_total - d.wblocks_free) * 128 * 1024).sum();
    assert!(used_bytes >= 7 << 20, "only {used_bytes} bytes in use");
    let start = Instant::now();
    engine.reclaim_tombstones().unwrap();
    let took = start.elapsed();
    // The first read goes at once, and blocks still in RAM are copied, not read.
    let floor = Duration::from_secs_f64((used_bytes - (4 << 17)) as f64 / (16u64 << 20) as f64);
    assert!(took >= floor.mul_f64(0.9), "scanned {used_bytes} bytes in {took:?}, under the floor {floor:?}");
}
