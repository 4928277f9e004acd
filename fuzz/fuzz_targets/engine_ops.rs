//! Random sequences of record operations, clean restarts and power cuts on a one-device
//! namespace on a simulated device, checked after every step against a `BTreeMap` model
//! (the shape of redb's `fuzz_redb`).
//!
//! The namespace runs in commit-to-device mode, so an acknowledged put or delete is durable
//! and must survive any crash: the model changes only on `Ok`, and after a crash the engine
//! must match it exactly. A put or delete that fails before its record is appended
//! (policy, compare-and-set, `OutOfSpace`) changes nothing, before or after a crash.
//! The key space is small (`KEYS`) so that operations hit the same records and fill the
//! 4 MiB device (31 write blocks of 128 KiB) until blocks are freed or space runs out.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use spike::device::sim::SimDevice;
use spike::device::Device;
use spike::{Config, Durability, Engine, Error, WriteOptions, WritePolicy};
use std::collections::BTreeMap;
use std::sync::Arc;

const KEYS: u8 = 48;
const VALUE_LEN_MAX: u16 = 2000;
const OPS_MAX: usize = 200;
const DEVICE_BYTES_SMALL: u64 = 4 << 20;
const DEVICE_BYTES_LARGE: u64 = 8 << 20;
/// A touch either clears the TTL or sets one far beyond any run.
const TOUCH_TTL_S: u32 = 86_400;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Policy {
    Upsert,
    CreateOnly,
    UpdateOnly,
    /// Compare-and-set at the record's current generation (0 when absent): succeeds.
    CasCurrent,
    /// Compare-and-set at a generation the record is not at: fails.
    CasStale,
}

#[derive(Debug)]
enum Op {
    Put { key: u8, len: u16, fill: u8, policy: Policy },
    Get { key: u8 },
    Delete { key: u8 },
    Touch { key: u8, ttl: bool },
    CleanRestart,
    Crash { seed: u64 },
}

/// Weighted by hand rather than derived: a restart costs milliseconds (a cold start scans
/// the device), a record operation microseconds, and a run of mostly restarts writes too
/// little to reach full blocks, block frees and out-of-space.
impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0u8..=63)? {
            0..=27 => Op::Put {
                key: u.arbitrary()?,
                len: u.arbitrary()?,
                fill: u.arbitrary()?,
                policy: u.arbitrary()?,
            },
            28..=41 => Op::Get { key: u.arbitrary()? },
            42..=51 => Op::Delete { key: u.arbitrary()? },
            52..=59 => Op::Touch { key: u.arbitrary()?, ttl: u.arbitrary()? },
            60..=61 => Op::CleanRestart,
            _ => Op::Crash { seed: u.arbitrary()? },
        })
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    large_device: bool,
    ops: Vec<Op>,
}

/// What the namespace must hold: live value and generation per key.
#[derive(Default)]
struct Model {
    live: BTreeMap<u8, (Vec<u8>, u32)>,
}

fn key_bytes(key: u8) -> Vec<u8> {
    format!("key-{}", key % KEYS).into_bytes()
}

fn value_bytes(step: usize, len: u16, fill: u8) -> Vec<u8> {
    let len = (len % VALUE_LEN_MAX) as usize;
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ fill ^ (step as u8)).collect()
}

fn config() -> Config {
    Config {
        namespace: "fuzz".into(),
        write_block_size: 128 * 1024,
        durability: Durability::CommitToDevice,
        flush_max_ms: 20,
        // Small, so that reads also go through the device.
        post_write_cache_blocks: 1,
        store_keys: true,
        ..Config::default()
    }
}

fn open(sim: &Arc<SimDevice>) -> Engine {
    let devices: Vec<Arc<dyn Device>> = vec![sim.clone()];
    match Engine::open_devices(config(), devices) {
        Ok(engine) => engine,
        Err(err) => panic!("open after a clean shutdown or crash failed: {err}"),
    }
}

fuzz_target!(|input: Input| {
    let size = if input.large_device { DEVICE_BYTES_LARGE } else { DEVICE_BYTES_SMALL };
    let mut sim = Arc::new(SimDevice::new("sim0", size, 1));
    let devices: Vec<Arc<dyn Device>> = vec![sim.clone()];
    Engine::format_devices(&config(), &devices, false).expect("format a blank simulated device");
    let mut engine = open(&sim);
    let mut model = Model::default();
    for (step, op) in input.ops.iter().take(OPS_MAX).enumerate() {
        match *op {
            Op::Put { key, len, fill, policy } => {
                put(&engine, &mut model, key, value_bytes(step, len, fill), policy)
            }
            Op::Get { key } => check_key(&engine, &model, key % KEYS),
            Op::Delete { key } => delete(&engine, &mut model, key),
            Op::Touch { key, ttl } => touch(&engine, &mut model, key, ttl),
            Op::CleanRestart => {
                engine.close().expect("clean shutdown");
                engine = open(&sim);
            }
            Op::Crash { seed } => {
                let crashed = Arc::new(sim.crash(seed));
                // Shuts down cleanly on the old device, which the crashed copy no longer sees.
                drop(engine);
                sim = crashed;
                engine = open(&sim);
            }
        }
        check_all(&engine, &model);
    }
    engine.close().expect("clean shutdown");
});

fn put(engine: &Engine, model: &mut Model, key: u8, value: Vec<u8>, policy: Policy) {
    let key = key % KEYS;
    let current = model.live.get(&key).map(|(_, generation)| *generation);
    let options = match policy {
        Policy::Upsert => WriteOptions::default(),
        Policy::CreateOnly => WriteOptions { policy: WritePolicy::CreateOnly, ..Default::default() },
        Policy::UpdateOnly => WriteOptions { policy: WritePolicy::UpdateOnly, ..Default::default() },
        Policy::CasCurrent => {
            WriteOptions { expected_generation: Some(current.unwrap_or(0)), ..Default::default() }
        }
        Policy::CasStale => {
            WriteOptions { expected_generation: Some(current.map_or(1, |g| g + 1)), ..Default::default() }
        }
    };
    let result = engine.put(&key_bytes(key), &value, &options);
    match (policy, current, result) {
        (Policy::CreateOnly, Some(_), Err(Error::AlreadyExists)) => {}
        (Policy::UpdateOnly, None, Err(Error::NotFound)) => {}
        (Policy::CasStale, _, Err(Error::GenerationMismatch { .. })) => {}
        (Policy::CreateOnly, Some(_), other)
        | (Policy::UpdateOnly, None, other)
        | (Policy::CasStale, _, other) => {
            panic!("put {key} with {policy:?} on generation {current:?} must fail, got {other:?}")
        }
        (_, _, Err(Error::OutOfSpace { .. })) => {}
        (_, _, Ok(generation)) => {
            if let Some(current) = current {
                assert_eq!(generation, current + 1, "put {key} over generation {current}");
            }
            assert!(generation >= 1);
            model.live.insert(key, (value, generation));
        }
        (_, _, Err(err)) => panic!("put {key} with {policy:?} failed: {err}"),
    }
}

fn delete(engine: &Engine, model: &mut Model, key: u8) {
    let key = key % KEYS;
    match (model.live.contains_key(&key), engine.delete(&key_bytes(key))) {
        (true, Ok(())) => {
            model.live.remove(&key);
        }
        (false, Err(Error::NotFound)) | (true, Err(Error::OutOfSpace { .. })) => {}
        (live, result) => panic!("delete {key} (live: {live}) gave {result:?}"),
    }
}

fn touch(engine: &Engine, model: &mut Model, key: u8, ttl: bool) {
    let key = key % KEYS;
    let ttl_s = if ttl { TOUCH_TTL_S } else { 0 };
    match (model.live.get_mut(&key), engine.touch(&key_bytes(key), ttl_s)) {
        (Some((_, generation)), Ok(new_generation)) => {
            assert_eq!(new_generation, *generation + 1, "touch {key}");
            *generation = new_generation;
        }
        (None, Err(Error::NotFound)) | (Some(_), Err(Error::OutOfSpace { .. })) => {}
        (live, result) => panic!("touch {key} (live: {:?}) gave {result:?}", live.map(|(_, g)| *g)),
    }
}

fn check_key(engine: &Engine, model: &Model, key: u8) {
    let key_bytes = key_bytes(key);
    let exists = engine.exists(&key_bytes).expect("exists");
    match (model.live.get(&key), engine.get(&key_bytes)) {
        (Some((value, generation)), Ok(record)) => {
            assert!(exists, "key {key} readable but exists() says no");
            assert!(
                record.value == *value,
                "key {key}: value differs (len {} vs {})",
                record.value.len(),
                value.len()
            );
            assert_eq!(record.generation, *generation, "key {key}: generation");
            assert_eq!(record.key.as_deref(), Some(&key_bytes[..]), "key {key}: stored key");
        }
        (None, Err(Error::NotFound)) => assert!(!exists, "key {key} not found but exists() says yes"),
        (expected, result) => panic!(
            "key {key}: expected {:?}, got {:?}",
            expected.map(|(v, g)| (v.len(), *g)),
            result.map(|r| (r.value.len(), r.generation))
        ),
    }
}

fn check_all(engine: &Engine, model: &Model) {
    for key in 0..KEYS {
        check_key(engine, model, key);
    }
}
