//! Fills (or changes part of) a file-backed Spike device with the engine, for measuring
//! `spike-backup` on realistic devices.
//!
//! ```text
//! fill PATH SIZE_MIB WBLOCK_KIB fill PERCENT   # create, format, put records until PERCENT of the space is used
//! fill PATH SIZE_MIB WBLOCK_KIB change PERCENT # overwrite PERCENT of the records (a tenth of them deleted)
//! ```
//!
//! Values are 4000 bytes of JSON-like text (field names repeat, numbers vary), about what a
//! document store holds, so that `--compress` sees a realistic ratio.

use spike::{Config, Engine, WriteOptions};
use std::path::PathBuf;

const VALUE_BYTES: usize = 4000;

fn value(i: u64, version: u64) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut v = String::with_capacity(VALUE_BYTES + 200);
    v.push_str(&format!("{{\"id\":{i},\"version\":{version},\"events\":["));
    while v.len() < VALUE_BYTES {
        let n = next();
        v.push_str(&format!(
            "{{\"ts\":{},\"kind\":\"{}\",\"amount\":{}.{:02},\"user\":\"u{:06}\"}},",
            1_700_000_000 + n % 10_000_000,
            ["click", "view", "buy", "share"][(n >> 20) as usize % 4],
            n % 1000,
            (n >> 30) % 100,
            (n >> 40) % 1_000_000
        ));
    }
    let mut bytes = v.into_bytes();
    bytes.truncate(VALUE_BYTES);
    bytes
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        return Err("usage: fill PATH SIZE_MIB WBLOCK_KIB fill|change PERCENT".into());
    }
    let path = PathBuf::from(&args[1]);
    let size_mib: u64 = args[2].parse()?;
    let wblock_kib: u32 = args[3].parse()?;
    let percent: u64 = args[5].parse()?;
    let config = Config {
        namespace: "fill".into(),
        devices: vec![path.clone()],
        write_block_size: wblock_kib * 1024,
        ..Config::default()
    };
    let records_full = size_mib * (1 << 20) / (VALUE_BYTES as u64 + 80);
    let count = records_full * 3 / 4;
    match args[4].as_str() {
        "fill" => {
            spike::device::create_file(&path, size_mib << 20)?;
            Engine::format(&config, false)?;
            let engine = Engine::open(config)?;
            let target = records_full * percent / 100;
            for i in 0..target.min(count) {
                engine.put(format!("key-{i:010}").as_bytes(), &value(i, 0), &WriteOptions::default())?;
            }
            engine.close()?;
            println!("{} records", target.min(count));
        }
        "change" => {
            let engine = Engine::open(config)?;
            let stats = engine.stats();
            let live = (stats.index_entries - stats.tombstones).max(1);
            let changes = live * percent / 100;
            let mut state = 0x1234_5678u64 ^ percent;
            for n in 0..changes {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // Changes cluster (a run of neighbours), as updates to recent data do.
                let i = (n + (state >> 33) % 8) % live;
                let key = format!("key-{i:010}");
                if n % 10 == 0 {
                    let _ = engine.delete(key.as_bytes());
                } else {
                    engine.put(key.as_bytes(), &value(i, n + 1), &WriteOptions::default())?;
                }
            }
            engine.close()?;
            println!("{changes} records changed");
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(())
}
