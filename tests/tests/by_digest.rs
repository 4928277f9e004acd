//! The digest-addressed API a server uses: Aerospike's partition mapping, crafted digest
//! collisions, the atomic read-modify-write, `apply` of copies from another node, the
//! flush barrier and a truncate that survives a cold start; and a property test of the
//! digest API against a model across crashes and restarts.

mod common;

use common::*;
use proptest::prelude::*;
use spike::{Applied, Change, Digest, Durability, Engine, Error, ReplicaCopy, WriteOptions, Written};
use std::collections::BTreeMap;
use std::sync::Arc;

fn hex_digest(hex: &str) -> Digest {
    let mut d = [0u8; 20];
    for (i, byte) in d.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    d
}

/// A digest of `i` spread over every byte, as RIPEMD-160 would be.
fn digest_of(i: u64) -> Digest {
    let mut rng = spike::device::sim::SimRng::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD16E57);
    let mut d = [0u8; 20];
    for chunk in d.chunks_mut(4) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..4]);
    }
    d
}

fn ttl(s: u32) -> WriteOptions {
    WriteOptions { ttl_s: Some(s), ..WriteOptions::default() }
}

#[test]
fn a_client_digest_lands_in_aerospikes_partition_and_comes_back_whole_from_a_scan() {
    let (config, sims) = sim_namespace(2, 8 << 20, Durability::CommitToDevice, 11);
    let engine = open(&config, &sims);
    // Integer key 1 in set "set", from the Aerospike client's own test vectors.
    let digest = hex_digest("82d7213b469812947c109a6d341e3b5b1dedec1f");
    let written = engine.put_by_digest(&digest, b"one", &ttl(100)).unwrap();
    assert_eq!(written.generation, 1);
    assert!(written.void_time > 0);
    let mut seen = Vec::new();
    assert!(engine
        .scan_partition_by_digest(1922, None, &mut |r| {
            seen.push(r.unwrap());
            true
        })
        .unwrap());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].digest, digest);
    assert_eq!(seen[0].value, b"one");
    assert_eq!(engine.partition_record_count(1922).unwrap(), 1);
    assert_eq!(engine.get_by_digest(&digest).unwrap().value, b"one");
    assert!(engine.exists_by_digest(&digest).unwrap());
}

/// `first` and a digest that agrees with it in every bit an index entry keeps (same
/// partition, device and tag; only bytes the entry does not store differ).
fn crafted_twin(first: &Digest, salt: u8) -> Digest {
    let mut twin = *first;
    twin[19] ^= 0xFF;
    twin[17] ^= salt;
    twin
}

fn value_of(engine: &Engine, digest: &Digest) -> Option<Vec<u8>> {
    match engine.get_by_digest(digest) {
        Ok(record) => {
            assert_eq!(record.digest, *digest, "a record returned for another digest");
            Some(record.value)
        }
        Err(Error::NotFound) => None,
        Err(err) => panic!("get: {err}"),
    }
}

fn scanned(engine: &Engine, digest: &Digest) -> BTreeMap<Digest, Vec<u8>> {
    let mut seen = BTreeMap::new();
    engine
        .scan_partition_by_digest(spike::partition_of(digest), None, &mut |r| {
            let r = r.unwrap();
            assert!(seen.insert(r.digest, r.value).is_none(), "a record scanned twice");
            true
        })
        .unwrap();
    seen
}

#[test]
fn crafted_digests_that_agree_in_every_indexed_bit_are_both_kept_each_for_its_own_key() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::CommitToDevice, 12);
    let engine = open(&config, &sims);
    let first = digest_of(1);
    let (second, third) = (crafted_twin(&first, 1), crafted_twin(&first, 2));
    engine.put_by_digest(&first, b"first", &WriteOptions::default()).unwrap();
    assert_eq!(value_of(&engine, &second), None, "the twin is not the first's record");
    assert!(!engine.exists_by_digest(&second).unwrap());
    let created = engine.put_by_digest(&second, b"second", &WriteOptions::default()).unwrap();
    assert_eq!(created.generation, 1, "the twin is a new record");
    assert_eq!(engine.stats().tags_shared, 1);
    assert_eq!(value_of(&engine, &first).as_deref(), Some(&b"first"[..]));
    assert_eq!(value_of(&engine, &second).as_deref(), Some(&b"second"[..]));
    assert!(engine.exists_by_digest(&second).unwrap() && !engine.exists_by_digest(&third).unwrap());
    let many = engine.get_many_by_digest(&[first, second, third]);
    assert_eq!(many[0].as_ref().unwrap().value, b"first");
    assert_eq!(many[1].as_ref().unwrap().value, b"second");
    assert!(matches!(many[2], Err(Error::NotFound)));
    // Each op reaches its own record only.
    engine
        .update_by_digest(&second, |_| Ok((Change::Put { value: b"second v2".to_vec(), ttl_s: None }, ())))
        .unwrap();
    let copy = ReplicaCopy {
        digest: &third,
        generation: 9,
        last_update_ms: 1,
        void_time: 0,
        tombstone: false,
        value: b"third",
    };
    assert_eq!(engine.apply(&copy).unwrap(), Applied::Written);
    engine.delete_by_digest(&first, &WriteOptions::default()).unwrap();
    let want = |first_value: Option<&[u8]>| {
        let mut want = BTreeMap::new();
        if let Some(v) = first_value {
            want.insert(first, v.to_vec());
        }
        want.insert(second, b"second v2".to_vec());
        want.insert(third, b"third".to_vec());
        want
    };
    assert_eq!(scanned(&engine, &first), want(None));
    assert_eq!(engine.partition_record_count(spike::partition_of(&first)).unwrap(), 2);
    engine.put_by_digest(&first, b"first again", &WriteOptions::default()).unwrap();
    assert_eq!(scanned(&engine, &first), want(Some(b"first again")));

    // A fast restart keeps the entries named by digest; so does a cold start, from the
    // copies flagged on the device (the first's oldest copy is not flagged).
    engine.close().unwrap();
    let engine = open(&config, &sims);
    assert_eq!(engine.stats().recovery.kind, "fast");
    assert_eq!(scanned(&engine, &first), want(Some(b"first again")));
    engine.put_by_digest(&second, b"second v3", &WriteOptions::default()).unwrap();
    let crashed = crash_all(&sims, 5);
    drop(engine);
    let engine = open(&config, &crashed);
    assert_eq!(engine.stats().recovery.kind, "cold");
    let mut after = want(Some(b"first again"));
    after.insert(second, b"second v3".to_vec());
    assert_eq!(scanned(&engine, &first), after);
    for (digest, value) in &after {
        assert_eq!(value_of(&engine, digest).as_ref(), Some(value));
    }
}

#[test]
fn a_cold_start_tells_apart_twins_whose_copies_it_meets_in_any_order() {
    // The twin written first has unflagged copies before the sharing and flagged ones
    // after; defrag moves them around, so that the scan meets them in another order.
    let (mut config, sims) = sim_namespace(1, 8 << 20, Durability::CommitToDevice, 13);
    config.defrag_enabled = true;
    let engine = open(&config, &sims);
    let first = digest_of(7);
    let second = crafted_twin(&first, 3);
    for round in 0..40u32 {
        engine.put_by_digest(&first, format!("first {round}").as_bytes(), &WriteOptions::default()).unwrap();
        if round >= 20 {
            engine
                .put_by_digest(&second, format!("second {round}").as_bytes(), &WriteOptions::default())
                .unwrap();
        }
        for filler in 0..20u64 {
            engine
                .put_by_digest(&digest_of(1000 + filler), &[round as u8; 900], &WriteOptions::default())
                .unwrap();
        }
    }
    let crashed = crash_all(&sims, 9);
    drop(engine);
    let engine = open(&config, &crashed);
    assert_eq!(engine.stats().recovery.kind, "cold");
    assert_eq!(value_of(&engine, &first).as_deref(), Some(&b"first 39"[..]));
    assert_eq!(value_of(&engine, &second).as_deref(), Some(&b"second 39"[..]));
    assert_eq!(engine.get_by_digest(&first).unwrap().generation, 40);
    assert_eq!(engine.get_by_digest(&second).unwrap().generation, 20);
}

#[test]
fn concurrent_increments_of_one_counter_end_at_threads_times_increments() {
    const THREADS: u64 = 8;
    const INCREMENTS: u64 = 400;
    let (config, sims) = sim_namespace(1, 32 << 20, Durability::Buffered, 13);
    let engine = Arc::new(open(&config, &sims));
    let counter = digest_of(42);
    let start = std::time::Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    engine
                        .update_by_digest(&counter, |record| {
                            let n =
                                record.map_or(0, |r| u64::from_le_bytes(r.value[..8].try_into().unwrap()));
                            Ok((Change::Put { value: (n + 1).to_le_bytes().to_vec(), ttl_s: None }, ()))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    // A plain put of another record in between, and plain puts racing on the counter's
    // neighbours, must not disturb the count.
    for i in 0..200 {
        engine.put_by_digest(&digest_of(1000 + i), b"noise", &WriteOptions::default()).unwrap();
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let elapsed = start.elapsed();
    let record = engine.get_by_digest(&counter).unwrap();
    assert_eq!(u64::from_le_bytes(record.value[..8].try_into().unwrap()), THREADS * INCREMENTS);
    assert_eq!(record.generation as u64, THREADS * INCREMENTS);
    let stats = engine.stats();
    println!(
        "{} increments by {THREADS} threads in {elapsed:?} ({:.1} µs each), {} retries",
        THREADS * INCREMENTS,
        elapsed.as_micros() as f64 / (THREADS * INCREMENTS) as f64,
        stats.update_retries
    );
}

#[test]
fn an_update_that_a_plain_put_races_starts_over_with_the_new_record() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 14);
    let engine = open(&config, &sims);
    let digest = digest_of(5);
    engine.put_by_digest(&digest, b"a", &WriteOptions::default()).unwrap();
    let mut calls = 0;
    let (seen, written) = engine
        .update_by_digest(&digest, |record| {
            calls += 1;
            let seen = record.unwrap().value.clone();
            if calls == 1 {
                // Another writer changes the record between this read and the write.
                engine.put_by_digest(&digest, b"b", &WriteOptions::default()).unwrap();
            }
            let mut value = seen.clone();
            value.push(b'+');
            Ok((Change::Put { value, ttl_s: None }, seen))
        })
        .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(seen, b"b");
    assert_eq!(written.generation, 3);
    assert_eq!(engine.get_by_digest(&digest).unwrap().value, b"b+");
    assert_eq!(engine.stats().update_retries, 1);
}

#[test]
fn updates_of_many_records_see_a_change_made_after_their_records_were_read() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::CommitToDevice, 15);
    let engine = open(&config, &sims);
    let (a, b, missing) = (digest_of(1), digest_of(2), digest_of(3));
    engine.put_by_digest(&a, b"a", &WriteOptions::default()).unwrap();
    engine.put_by_digest(&b, b"b", &WriteOptions::default()).unwrap();
    // All three are read first; a's change then rewrites b and creates `missing`, so the
    // copies read for them are stale by the time their own changes run.
    let digests = [a, b, missing, a];
    let calls = std::cell::Cell::new(0);
    let results = engine.update_each_by_digest(&digests, |i, record| {
        calls.set(calls.get() + 1);
        let seen = record.map(|r| r.value.clone());
        if i == 0 {
            engine.put_by_digest(&b, b"B", &WriteOptions::default()).unwrap();
            engine.put_by_digest(&missing, b"M", &WriteOptions::default()).unwrap();
        }
        let mut value = seen.clone().unwrap_or_default();
        value.push(b'+');
        Ok((Change::Put { value, ttl_s: None }, seen))
    });
    let seen: Vec<Option<Vec<u8>>> = results.iter().map(|r| r.as_ref().unwrap().0.clone()).collect();
    let seen: Vec<Option<&[u8]>> = seen.iter().map(|v| v.as_deref()).collect();
    assert_eq!(seen, [Some(&b"a"[..]), Some(b"B"), Some(b"M"), Some(b"a+")]);
    let generations: Vec<u32> = results.iter().map(|r| r.as_ref().unwrap().1.generation).collect();
    assert_eq!(generations, [2, 3, 2, 3]);
    for (digest, value) in [(a, &b"a++"[..]), (b, b"B+"), (missing, b"M+")] {
        assert_eq!(engine.get_by_digest(&digest).unwrap().value, value);
    }
    // Each stale copy was seen to be stale before its change ran, not after (a retry).
    assert_eq!((calls.get(), engine.stats().update_retries), (4, 0));
    assert_eq!(engine.stats().updates, 4);
}

fn copy(
    digest: &Digest,
    generation: u32,
    last_update_ms: u64,
    tombstone: bool,
    value: &'static [u8],
) -> ReplicaCopy<'static> {
    let digest: &'static Digest = Box::leak(Box::new(*digest));
    ReplicaCopy { digest, generation, last_update_ms, void_time: 0, tombstone, value }
}

#[test]
fn apply_in_either_order_converges_on_the_newest_copy_and_is_idempotent() {
    let digest = digest_of(7);
    let older = copy(&digest, 3, 5_000, false, b"older");
    let newer = copy(&digest, 5, 1_000, false, b"newer");
    let same_generation_later = copy(&digest, 5, 2_000, false, b"later");
    let deleted = copy(&digest, 6, 3_000, true, b"");
    let orders: [&[&ReplicaCopy]; 4] = [
        &[&older, &newer, &same_generation_later],
        &[&same_generation_later, &newer, &older],
        &[&newer, &same_generation_later, &older, &older],
        &[&same_generation_later, &same_generation_later, &older],
    ];
    for (n, order) in orders.iter().enumerate() {
        let (config, sims) = sim_namespace(1, 8 << 20, Durability::CommitToDevice, 20 + n as u64);
        let engine = open(&config, &sims);
        for c in order.iter() {
            engine.apply(c).unwrap();
        }
        assert_eq!(engine.apply(order[0]).unwrap(), Applied::Stale, "order {n}: applying again");
        let record = engine.get_by_digest(&digest).unwrap();
        assert_eq!((record.value.as_slice(), record.generation), (&b"later"[..], 5), "order {n}");
        assert_eq!(record.last_update_ms, 2_000);
        // The copy survives a power cut (commit-to-device), and a newer tombstone wins.
        let crashed = crash_all(&sims, n as u64);
        drop(engine);
        let engine = open(&config, &crashed);
        assert_eq!(engine.get_by_digest(&digest).unwrap().value, b"later", "order {n} after a crash");
        assert_eq!(engine.apply(&deleted).unwrap(), Applied::Written);
        assert_eq!(engine.apply(&newer).unwrap(), Applied::Stale);
        assert!(matches!(engine.get_by_digest(&digest), Err(Error::NotFound)));
    }
}

#[test]
fn truncate_deletes_durably_and_spares_records_written_after_it() {
    let (seed, _report) = test_seed("truncate_deletes_durably_and_spares_records_written_after_it");
    let (config, sims) = sim_namespace(2, 16 << 20, Durability::Buffered, seed);
    let engine = open(&config, &sims);
    for i in 0..500 {
        engine.put_by_digest(&digest_of(i), &value(i, 0, 200), &WriteOptions::default()).unwrap();
    }
    // Make the records durable, so that a crash could bring them back if the tombstones
    // were lost; then truncate all but the odd ones of partition range 0..4096.
    engine.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Spare the records whose number starts with 1 ("value-1...", "value-17-...").
    let deleted = engine.truncate(0..4096, before_ms, &mut |r| r.value[6] != b'1').unwrap();
    let survivors: Vec<u64> = (0..500).filter(|&i| i.to_string().starts_with('1')).collect();
    assert_eq!(deleted as usize, 500 - survivors.len());
    // A record written after the truncate is spared (it is newer than the cut-off).
    engine.put_by_digest(&digest_of(9999), b"after", &WriteOptions::default()).unwrap();
    let after = digest_of(9999);
    assert_eq!(engine.truncate(0..4096, before_ms, &mut |r| r.digest == after).unwrap(), 0);
    // The power cut comes right after truncate returned: its tombstones must be durable.
    let crashed = crash_all(&sims, seed);
    drop(engine);
    let engine = open(&config, &crashed);
    assert_eq!(engine.stats().recovery.kind, "cold");
    for i in 0..500 {
        let found = engine.get_by_digest(&digest_of(i)).is_ok();
        assert_eq!(found, survivors.contains(&i), "record {i} after a cold start");
    }
    assert!(matches!(engine.truncate(0..4097, 0, &mut |_| true), Err(Error::InvalidPartition { .. })));
}

#[test]
fn a_flush_barrier_makes_buffered_writes_survive_a_power_cut() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 30);
    let engine = open(&config, &sims);
    for i in 0..50 {
        engine.put_by_digest(&digest_of(i), b"v", &WriteOptions::default()).unwrap();
    }
    engine.flush().unwrap();
    let crashed = crash_all(&sims, 3);
    drop(engine);
    let engine = open(&config, &crashed);
    for i in 0..50 {
        assert!(engine.get_by_digest(&digest_of(i)).is_ok(), "record {i} lost after a flush barrier");
    }
}

#[test]
fn a_scan_resumes_strictly_after_a_digest_in_descending_order() {
    let (config, sims) = sim_namespace(2, 16 << 20, Durability::Buffered, 31);
    let engine = open(&config, &sims);
    // Many records in one partition: digests that differ only past the partition bits.
    let mut digests: Vec<Digest> = (0..300).map(digest_of).collect();
    for d in &mut digests {
        d[0] = 0x2A;
        d[1] &= 0xF0;
    }
    for (i, d) in digests.iter().enumerate() {
        engine.put_by_digest(d, &value(i as u64, 0, 64), &WriteOptions::default()).unwrap();
    }
    let partition = spike::partition_of(&digests[0]);
    let mut first_half = Vec::new();
    engine
        .scan_partition_by_digest(partition, None, &mut |r| {
            first_half.push(r.unwrap().digest);
            first_half.len() < 120
        })
        .unwrap();
    let mut rest = Vec::new();
    let finished = engine
        .scan_partition_by_digest(partition, first_half.last(), &mut |r| {
            rest.push(r.unwrap().digest);
            true
        })
        .unwrap();
    assert!(finished);
    let mut all = first_half.clone();
    all.extend(&rest);
    let mut expected = digests.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(all, expected, "resumed scan lost, repeated or misordered records");
}

#[test]
fn a_corrupt_record_is_reported_by_a_scan_which_goes_on() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::CommitToDevice, 32);
    let mut digests: Vec<Digest> = (0..40).map(digest_of).collect();
    for d in &mut digests {
        d[0] = 0x11;
        d[1] = 0x00;
    }
    {
        let engine = open(&config, &sims);
        for d in &digests {
            engine.put_by_digest(d, &[0xAB; 3000], &WriteOptions::default()).unwrap();
        }
        engine.close().unwrap();
    }
    let engine = open(&config, &sims);
    let entries = engine.index_entries();
    let victim = entries.iter().find(|(p, _)| *p == 0x11).unwrap().1.location;
    // Flip a value byte of one record at rest.
    sims[0].corrupt_bit(victim.offset_bytes + 200, 3);
    let (mut ok, mut bad) = (0, 0);
    engine
        .scan_partition_by_digest(0x11, None, &mut |r| {
            match r {
                Ok(_) => ok += 1,
                Err(Error::Corrupt { .. }) => bad += 1,
                Err(err) => panic!("unexpected {err}"),
            }
            true
        })
        .unwrap();
    assert_eq!((ok, bad), (39, 1));
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        k: u8,
        len: u16,
    },
    Get,
    Delete {
        k: u8,
    },
    Increment {
        k: u8,
    },
    /// One `update_each_by_digest` over these keys (repeats included).
    IncrementEach {
        ks: Vec<u8>,
    },
    Apply {
        k: u8,
        generation: u32,
    },
    CleanRestart,
    Crash {
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..16, 8u16..3000).prop_map(|(k, len)| Op::Put { k, len }),
        4 => Just(Op::Get),
        3 => (0u8..16).prop_map(|k| Op::Delete { k }),
        3 => (0u8..16).prop_map(|k| Op::Increment { k }),
        2 => proptest::collection::vec(0u8..16, 1..6).prop_map(|ks| Op::IncrementEach { ks }),
        2 => (0u8..16, 1u32..40).prop_map(|(k, generation)| Op::Apply { k, generation }),
        1 => Just(Op::CleanRestart),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

/// The model: per digest, the live value and generation, and the order key (generation,
/// last-update time) of the newest copy of any kind, a tombstone included, which `apply`
/// compares against. A local write's time is later than any applied copy's here.
#[derive(Default)]
struct Model {
    live: BTreeMap<u8, (Vec<u8>, u32)>,
    newest: BTreeMap<u8, (u32, u64)>,
}

const LOCAL: u64 = u64::MAX;

/// Model digests each in a partition of their own (partition k), so that no other
/// digest's reclaimed tombstone raises their partition's generation floor.
fn model_digest(k: u8) -> Digest {
    let mut d = digest_of(k as u64);
    d[0] = k;
    d[1] = 0;
    d
}

fn check_model(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    let digests: Vec<Digest> = (0u8..16).map(model_digest).collect();
    let each = engine.get_each_by_digest(&digests);
    for (k, found) in (0u8..16).zip(each) {
        let found = found.map(|r| (r.value, r.generation)).ok();
        prop_assert_eq!(found, model.live.get(&k).cloned(), "get_each of digest {}", k);
    }
    for k in 0u8..16 {
        match engine.get_by_digest(&model_digest(k)) {
            Ok(record) => {
                let expected = model.live.get(&k).map(|(v, g)| (v.clone(), *g));
                prop_assert_eq!(Some((record.value, record.generation)), expected, "digest {}", k)
            }
            Err(Error::NotFound) => prop_assert!(!model.live.contains_key(&k), "digest {} lost", k),
            Err(err) => return Err(TestCaseError::fail(format!("digest {k}: {err}"))),
        }
    }
    Ok(())
}

fn step(engine: &Engine, model: &mut Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let fail = |what: &str, err: Error| TestCaseError::fail(format!("step {step}: {what}: {err}"));
    match *op {
        Op::Put { k, len } => {
            let v = value(k as u64, step as u64, len as usize);
            let written = engine.put_by_digest(&model_digest(k), &v, &WriteOptions::default());
            let Written { generation, .. } = written.map_err(|e| fail("put", e))?;
            model.live.insert(k, (v, generation));
            model.newest.insert(k, (generation, LOCAL));
        }
        Op::Get => check_model(engine, model)?,
        Op::Delete { k } => match engine.delete_by_digest(&model_digest(k), &WriteOptions::default()) {
            Ok(()) => {
                prop_assert!(model.live.remove(&k).is_some());
                let generation = model.newest.get(&k).map_or(0, |n| n.0) + 1;
                model.newest.insert(k, (generation, LOCAL));
            }
            Err(Error::NotFound) => prop_assert!(!model.live.contains_key(&k)),
            Err(err) => return Err(fail("delete", err)),
        },
        Op::Increment { k } => {
            let (_, written) = engine
                .update_by_digest(&model_digest(k), |r| {
                    let mut v = r.map_or(Vec::new(), |r| r.value.clone());
                    v.push(b'+');
                    Ok((Change::Put { value: v, ttl_s: None }, ()))
                })
                .map_err(|e| fail("increment", e))?;
            let mut v = model.live.get(&k).map_or(Vec::new(), |(v, _)| v.clone());
            v.push(b'+');
            model.live.insert(k, (v, written.generation));
            model.newest.insert(k, (written.generation, LOCAL));
        }
        Op::IncrementEach { ref ks } => {
            let digests: Vec<Digest> = ks.iter().map(|&k| model_digest(k)).collect();
            let results = engine.update_each_by_digest(&digests, |_, r| {
                let mut v = r.map_or(Vec::new(), |r| r.value.clone());
                v.push(b'+');
                Ok((Change::Put { value: v, ttl_s: None }, ()))
            });
            for (&k, result) in ks.iter().zip(results) {
                let (_, written) = result.map_err(|e| fail("increment each", e))?;
                let mut v = model.live.get(&k).map_or(Vec::new(), |(v, _)| v.clone());
                v.push(b'+');
                model.live.insert(k, (v, written.generation));
                model.newest.insert(k, (written.generation, LOCAL));
            }
        }
        Op::Apply { k, generation } => {
            let v = value(k as u64, 1_000_000 + step as u64, 100);
            let copy = ReplicaCopy {
                digest: &model_digest(k),
                generation,
                last_update_ms: step as u64,
                void_time: 0,
                tombstone: false,
                value: &v,
            };
            let applied = engine.apply(&copy).map_err(|e| fail("apply", e))?;
            let held = model.newest.get(&k).copied().unwrap_or((0, 0));
            let newer = (generation, step as u64) > held;
            prop_assert_eq!(
                applied == Applied::Written,
                newer,
                "step {}: apply gen {} over {:?}",
                step,
                generation,
                held
            );
            if newer {
                model.live.insert(k, (v, generation));
                model.newest.insert(k, (generation, step as u64));
            }
        }
        Op::CleanRestart | Op::Crash { .. } => unreachable!(),
    }
    Ok(())
}

static SEED: std::sync::LazyLock<(u64, SeedReport)> =
    std::sync::LazyLock::new(|| test_seed("digest_api_matches_a_model_across_restarts_and_crashes"));

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(SEED.0),
        ..ProptestConfig::default()
    })]

    #[test]
    fn digest_api_matches_a_model_across_restarts_and_crashes(ops in proptest::collection::vec(op(), 1..200)) {
        let (config, mut sims) = sim_namespace(2, 4 << 20, Durability::CommitToDevice, SEED.0 ^ 91);
        let mut engine = open(&config, &sims);
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::CleanRestart => {
                    engine.close().map_err(|e| TestCaseError::fail(format!("step {i}: close: {e}")))?;
                    engine = open(&config, &sims);
                    check_model(&engine, &model)?;
                }
                Op::Crash { seed } => {
                    let crashed = crash_all(&sims, seed);
                    drop(engine);
                    sims = crashed;
                    engine = open(&config, &sims);
                    check_model(&engine, &model)?;
                }
                ref op => step(&engine, &mut model, i, op)?,
            }
        }
        check_model(&engine, &model)?;
    }
}

#[test]
fn errors_are_counted_by_operation_and_kind() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 33);
    let engine = open(&config, &sims);
    let (a, b) = (digest_of(1), digest_of(2));
    engine.put_by_digest(&a, b"v", &WriteOptions::default()).unwrap();
    assert!(engine.get_by_digest(&b).is_err());
    let create_only = WriteOptions { policy: spike::WritePolicy::CreateOnly, ..WriteOptions::default() };
    assert!(engine.put_by_digest(&a, b"w", &create_only).is_err());
    let wrong_generation = WriteOptions { expected_generation: Some(7), ..WriteOptions::default() };
    assert!(engine.delete_by_digest(&a, &wrong_generation).is_err());
    assert!(engine.get_many_by_digest(&[a, b, b]).iter().filter(|r| r.is_err()).count() == 2);
    let refused: spike::Result<((), Written)> =
        engine.update_by_digest(&a, |_| Err(Error::InvalidArgument("no".into())));
    assert!(refused.is_err());
    let counted: Vec<(&str, &str, u64)> =
        engine.stats().errors_by_op.iter().map(|e| (e.op, e.kind, e.count)).collect();
    assert_eq!(
        counted,
        vec![
            ("get", "not_found", 1),
            ("put", "already_exists", 1),
            ("delete", "generation_mismatch", 1),
            ("update", "invalid_argument", 1),
            ("batch", "not_found", 2),
        ]
    );
}

#[test]
fn every_operation_records_its_latency() {
    let (config, sims) = sim_namespace(1, 8 << 20, Durability::Buffered, 34);
    let engine = open(&config, &sims);
    let (a, b) = (digest_of(1), digest_of(2));
    engine.put_by_digest(&a, b"v", &WriteOptions::default()).unwrap();
    engine.put(b"keyed", b"v", &WriteOptions::default()).unwrap();
    engine.get_by_digest(&a).unwrap();
    engine.get(b"keyed").unwrap();
    engine.touch_by_digest(&a, Some(60)).unwrap();
    engine.update_by_digest(&a, |_| Ok((Change::Keep, ()))).unwrap();
    let copy = ReplicaCopy {
        digest: &b,
        generation: 1,
        last_update_ms: 1,
        void_time: 0,
        tombstone: false,
        value: b"c",
    };
    engine.apply(&copy).unwrap();
    engine.get_many_by_digest(&[a, b]);
    engine.scan_partition_by_digest(spike::partition_of(&a), None, &mut |_| true).unwrap();
    engine.delete_by_digest(&b, &WriteOptions::default()).unwrap();
    let counts: Vec<(&str, u64)> =
        engine.stats().latencies.iter().map(|l| (l.op, l.us_log2.iter().sum())).collect();
    assert_eq!(
        counts,
        vec![
            ("get", 2),
            ("put", 2),
            ("delete", 1),
            ("touch", 1),
            ("update", 1),
            ("apply", 1),
            ("batch", 1),
            ("scan", 1)
        ]
    );
}
