//! Helpers shared by the integration tests: simulated namespaces and a model to check against.
#![allow(dead_code)]

use spike::device::sim::SimDevice;
use spike::device::Device;
use spike::{Config, Durability, Engine};
use std::sync::Arc;

pub const WBLOCK_SMALL: u32 = 128 * 1024;

/// A formatted namespace of `count` simulated devices of `size_bytes` each.
pub fn sim_namespace(
    count: usize,
    size_bytes: u64,
    durability: Durability,
    seed: u64,
) -> (Config, Vec<Arc<SimDevice>>) {
    let config = Config {
        namespace: "test".into(),
        write_block_size: WBLOCK_SMALL,
        durability,
        flush_max_ms: 20,
        post_write_cache_blocks: 2,
        store_keys: true,
        ..Config::default()
    };
    let sims: Vec<Arc<SimDevice>> = (0..count)
        .map(|i| Arc::new(SimDevice::new(&format!("sim{i}"), size_bytes, seed + i as u64)))
        .collect();
    Engine::format_devices(&config, &as_devices(&sims), false).expect("format");
    (config, sims)
}

pub fn as_devices(sims: &[Arc<SimDevice>]) -> Vec<Arc<dyn Device>> {
    sims.iter().map(|s| s.clone() as Arc<dyn Device>).collect()
}

pub fn open(config: &Config, sims: &[Arc<SimDevice>]) -> Engine {
    Engine::open_devices(config.clone(), as_devices(sims)).expect("open")
}

/// The devices a power cut would leave, each crashed with its own seed.
pub fn crash_all(sims: &[Arc<SimDevice>], seed: u64) -> Vec<Arc<SimDevice>> {
    sims.iter().enumerate().map(|(i, s)| Arc::new(s.crash(seed.wrapping_add(i as u64 * 7919)))).collect()
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

pub fn value(i: u64, version: u64, len: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-{version}-").into_bytes();
    while v.len() < len {
        v.push((v.len() as u64 * 31 + i + version) as u8);
    }
    v.truncate(len.max(1));
    v
}

/// The seed of a randomised test: `SPIKE_SEED` if set, else a fresh one, so that every
/// CI run explores new histories. It is printed now (cargo shows it for a failing test)
/// and again by the returned guard if the test panics; replay with `SPIKE_SEED=<seed>`.
pub fn test_seed(test: &str) -> (u64, SeedReport) {
    let seed = match std::env::var("SPIKE_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SPIKE_SEED={text:?} is not a u64")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            spike::device::sim::SimRng::new(nanos ^ ((std::process::id() as u64) << 32)).next_u64() >> 16
        }
    };
    println!("{test}: SPIKE_SEED={seed}");
    (seed, SeedReport { test: test.to_string(), seed })
}

/// Prints the seed again when its test fails.
pub struct SeedReport {
    test: String,
    seed: u64,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} failed; replay with SPIKE_SEED={}", self.test, self.seed);
        }
    }
}
