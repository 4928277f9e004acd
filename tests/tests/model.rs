//! Property test: random sequences of put, get, delete, touch, clean restart and crash
//! against a `BTreeMap` model, on two simulated devices with 128 KiB write blocks small
//! enough that blocks fill, empty, get freed and are reused.

mod common;

use common::*;
use proptest::prelude::*;
use spike::{Durability, Engine, Error, WriteOptions};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Put {
        k: u8,
        len: u16,
    },
    Get {
        k: u8,
    },
    Delete {
        k: u8,
    },
    Touch {
        k: u8,
    },
    CleanRestart,
    Crash {
        seed: u64,
    },
    /// One round of defrag, expiry and tombstone reclaim, at this point of the history:
    /// the engine runs no background thread, so a seed replays the same choices.
    Background,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..24, 1u16..6000).prop_map(|(k, len)| Op::Put { k, len }),
        4 => (0u8..24).prop_map(|k| Op::Get { k }),
        3 => (0u8..24).prop_map(|k| Op::Delete { k }),
        1 => (0u8..24).prop_map(|k| Op::Touch { k }),
        1 => Just(Op::CleanRestart),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        2 => Just(Op::Background),
    ]
}

fn check_model(engine: &Engine, model: &BTreeMap<u8, Vec<u8>>) -> Result<(), TestCaseError> {
    for k in 0u8..24 {
        match engine.get(&key(k as u64)) {
            Ok(record) => prop_assert_eq!(Some(&record.value), model.get(&k), "key {}", k),
            Err(Error::NotFound) => prop_assert!(!model.contains_key(&k), "key {} lost", k),
            Err(err) => return Err(TestCaseError::fail(format!("key {k}: {err}"))),
        }
    }
    Ok(())
}

/// One seed drives the property test's case generator and the devices' fault choices.
static SEED: std::sync::LazyLock<(u64, SeedReport)> =
    std::sync::LazyLock::new(|| test_seed("engine_matches_a_map_across_restarts_and_crashes"));
static DEVICE_SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| SEED.0 ^ 77);

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(SEED.0),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_a_map_across_restarts_and_crashes(ops in proptest::collection::vec(op(), 1..400)) {
        let (config, mut sims) = sim_namespace(2, 2 << 20, Durability::CommitToDevice, *DEVICE_SEED);
        // No janitor thread (defrag runs at the `Background` steps), and a write short of
        // space fails at once instead of waiting for a defrag that only the test can run.
        let config = spike::Config { background_threads: false, overload_wait_ms: 0, ..config };
        let mut engine = open(&config, &sims);
        let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        // Blocks freed over every engine lifetime, and client bytes written: once more was
        // written than the devices hold, blocks must have been freed and reused.
        let (mut freed, mut written) = (0u64, 0u64);
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Put { k, len } => {
                    let v = value(k as u64, step as u64, len as usize);
                    match engine.put(&key(k as u64), &v, &WriteOptions::default()) {
                        Ok(_) => { written += v.len() as u64; model.insert(k, v); }
                        Err(Error::OutOfSpace { .. }) => {}
                        Err(err) => return Err(TestCaseError::fail(format!("step {step}: put: {err}"))),
                    }
                }
                Op::Get { k } => match engine.get(&key(k as u64)) {
                    Ok(record) => prop_assert_eq!(Some(&record.value), model.get(&k)),
                    Err(Error::NotFound) => prop_assert!(!model.contains_key(&k)),
                    Err(err) => return Err(TestCaseError::fail(format!("step {step}: get: {err}"))),
                },
                Op::Delete { k } => match engine.delete(&key(k as u64)) {
                    Ok(()) => { prop_assert!(model.remove(&k).is_some()); }
                    Err(Error::NotFound) => prop_assert!(!model.contains_key(&k)),
                    Err(Error::OutOfSpace { .. }) => {}
                    Err(err) => return Err(TestCaseError::fail(format!("step {step}: delete: {err}"))),
                },
                Op::Touch { k } => match engine.touch(&key(k as u64), 3600) {
                    Ok(_) => prop_assert!(model.contains_key(&k)),
                    Err(Error::NotFound) => prop_assert!(!model.contains_key(&k)),
                    Err(Error::OutOfSpace { .. }) => {}
                    Err(err) => return Err(TestCaseError::fail(format!("step {step}: touch: {err}"))),
                },
                Op::CleanRestart => {
                    freed += engine.stats().blocks_freed;
                    engine.close().map_err(|e| TestCaseError::fail(format!("step {step}: close: {e}")))?;
                    engine = open(&config, &sims);
                    check_model(&engine, &model)?;
                }
                Op::Background => {
                    engine.run_background_once().map_err(|e| TestCaseError::fail(format!("step {step}: background: {e}")))?;
                }
                Op::Crash { seed } => {
                    // Commit-to-device: every acknowledged write is durable, so the model
                    // holds whatever the crash tears.
                    let crashed = crash_all(&sims, seed);
                    freed += engine.stats().blocks_freed;
                    drop(engine);
                    sims = crashed;
                    engine = open(&config, &sims);
                    check_model(&engine, &model)?;
                }
            }
        }
        check_model(&engine, &model)?;
        freed += engine.stats().blocks_freed;
        engine.close().unwrap();
        let engine = open(&config, &sims);
        check_model(&engine, &model)?;
        let capacity = 2 * (2u64 << 20);
        prop_assert!(written <= capacity || freed > 0, "wrote {} bytes to {} of devices, freed no block", written, capacity);
    }
}

#[test]
fn overwrites_free_and_reuse_blocks_far_beyond_the_device_size() {
    // 2 cached blocks, and more than the device holds: then every block is still cached
    // when it is freed, and must leave the cache before it is written again.
    for cache_blocks in [2, 64] {
        overwrite_far_beyond_the_device_size(cache_blocks);
    }
}

fn overwrite_far_beyond_the_device_size(cache_blocks: usize) {
    let (config, sims) = sim_namespace(1, 2 << 20, Durability::Buffered, 5);
    let config = spike::Config { post_write_cache_blocks: cache_blocks, ..config };
    let engine = open(&config, &sims);
    let mut written = 0u64;
    for round in 0..60u64 {
        for k in 0..20 {
            let v = value(k, round, 4000);
            written += v.len() as u64;
            engine.put(&key(k), &v, &WriteOptions::default()).unwrap();
        }
    }
    assert!(written > 2 * (2 << 20), "wrote {written} bytes");
    assert!(engine.stats().blocks_freed > 10);
    for k in 0..20 {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 59, 4000));
    }
    engine.close().unwrap();
    let engine = open(&config, &sims);
    for k in 0..20 {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 59, 4000));
    }
}

#[test]
fn out_of_space_is_an_error_and_harms_nothing_stored() {
    let (config, sims) = sim_namespace(1, 2 << 20, Durability::CommitToDevice, 6);
    let engine = open(&config, &sims);
    let mut stored = 0u64;
    let err = loop {
        match engine.put(&key(stored), &value(stored, 0, 3000), &WriteOptions::default()) {
            Ok(_) => stored += 1,
            Err(err) => break err,
        }
    };
    assert!(matches!(err, Error::OutOfSpace { .. }), "{err}");
    assert!(stored > 100);
    for k in 0..stored {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 0, 3000));
    }
    // Deleting frees nothing here (tombstones need room too) but reads still work, and a
    // restart recovers every stored record.
    engine.close().unwrap();
    let engine = open(&config, &sims);
    for k in 0..stored {
        assert_eq!(engine.get(&key(k)).unwrap().value, value(k, 0, 3000));
    }
}
