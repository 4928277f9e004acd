//! The index's address space: namespaces of up to 128 devices (the device a record lives
//! on is derived from its digest, not stored in its index entry), across both restarts.

mod common;

use common::{as_devices, key, open, value, WBLOCK_SMALL};
use spike::device::sim::SimDevice;
use spike::{Config, Engine, Error, WriteOptions};
use std::sync::Arc;

fn config() -> Config {
    Config { namespace: "wide".into(), write_block_size: WBLOCK_SMALL, flush_max_ms: 20, ..Config::default() }
}

fn sims(count: usize) -> Vec<Arc<SimDevice>> {
    (0..count).map(|i| Arc::new(SimDevice::new(&format!("sim{i}"), 1 << 20, i as u64))).collect()
}

#[test]
fn a_namespace_of_128_devices_spreads_records_and_finds_them_after_both_restarts() {
    let config = config();
    let sims = sims(spike::offline::index::DEVICES_MAX);
    Engine::format_devices(&config, &as_devices(&sims), false).expect("format 128 devices");
    let records = 3000u64;
    {
        let engine = open(&config, &sims);
        for i in 0..records {
            engine.put(&key(i), &value(i, 1, 40), &WriteOptions::default()).unwrap();
        }
        let stats = engine.stats();
        let used = stats.devices.iter().filter(|d| d.live_bytes > 0).count();
        assert_eq!(used, 128, "every device holds records");
        engine.close().unwrap();
    }
    for restart in ["fast", "cold"] {
        let config = Config { fast_restart: restart == "fast", ..config.clone() };
        let engine = open(&config, &sims);
        assert_eq!(engine.stats().recovery.kind, restart);
        for i in 0..records {
            assert_eq!(
                engine.get(&key(i)).unwrap().value,
                value(i, 1, 40),
                "key {i} after a {restart} start"
            );
        }
        engine.close().unwrap();
    }
}

#[test]
fn a_namespace_of_129_devices_is_refused_by_name() {
    let sims = sims(spike::offline::index::DEVICES_MAX + 1);
    match Engine::format_devices(&config(), &as_devices(&sims), false) {
        Err(Error::Config(message)) => assert!(message.contains("1 to 128 devices"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
