//! Fills a file device with records, then times a cold start (full scan) and a fast
//! restart (snapshot) of it, and prints the scan rate.
//!
//! `cargo run --release -p spike --example restart_times -- /path/on/ext4/dev.img 4 10000000 200`
//! (device GiB, records, value bytes); `restart_times PATH open` times both on a Spike
//! device that exists already (its namespace must be "spike" or, with a second
//! word, that name: `restart_times PATH open fill`); `restart_times PATH reopen` times one
//! start in a fresh process and closes normally. Compare the scan rate with `fio --rw=read --bs=8M
//! --direct=1 --ioengine=io_uring --iodepth=4` on the same file.

use spike::{Config, Engine, WriteOptions};
use std::time::Instant;

fn main() -> Result<(), spike::Error> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/tmp/spike-restart.img"));
    let gib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let records: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let value_len: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
    if args.get(2).map(String::as_str) == Some("reopen") {
        // One start in a fresh process, as a real restart is, and a normal close (so the
        // next one is fast again, once a first one has written a snapshot).
        let namespace = args.get(3).cloned().unwrap_or_else(|| Config::default().namespace);
        let start = Instant::now();
        let engine = Engine::open(Config { namespace, devices: vec![path], ..Config::default() })?;
        let r = engine.stats().recovery;
        println!("{} start: {} ms, {} records kept", r.kind, start.elapsed().as_millis(), r.records_kept);
        return engine.close();
    }
    if args.get(2).map(String::as_str) == Some("open") {
        let namespace = args.get(3).cloned().unwrap_or_else(|| Config::default().namespace);
        return time_restarts(&Config { namespace, devices: vec![path], ..Config::default() });
    }
    let _ = std::fs::remove_file(&path);
    spike::device::create_file(&path, gib << 30)?;
    let config = Config { devices: vec![path.clone()], ..Config::default() };
    Engine::format(&config, false)?;
    let start = Instant::now();
    let engine = Engine::open(config.clone())?;
    let r = engine.stats().recovery;
    println!("first start after the format: {} ms ({})", start.elapsed().as_millis(), r.kind);
    let start = Instant::now();
    let value = vec![0x5Au8; value_len];
    for i in 0..records {
        engine.put(format!("key-{i}").as_bytes(), &value, &WriteOptions::default())?;
    }
    let load_s = start.elapsed().as_secs_f64();
    let stats = engine.stats();
    println!(
        "loaded {records} records of {value_len} B in {load_s:.1} s ({:.0} MB/s of records); backend {}",
        stats.client_bytes_written as f64 / load_s / 1e6,
        stats.devices[0].backend
    );
    engine.close()?;
    time_restarts(&config)?;
    if std::env::var_os("KEEP").is_none() {
        std::fs::remove_file(&path).ok();
    }
    Ok(())
}

fn time_restarts(config: &Config) -> Result<(), spike::Error> {
    let start = Instant::now();
    let engine = Engine::open(config.clone())?;
    let r = engine.stats().recovery;
    println!(
        "fast restart: {} ms ({} in the engine), {} records kept ({})",
        start.elapsed().as_millis(),
        r.duration_ms,
        r.records_kept,
        r.kind
    );
    engine.close()?;
    let start = Instant::now();
    let engine = Engine::open(Config { fast_restart: false, ..config.clone() })?;
    let r = engine.stats().recovery;
    println!(
        "cold start: {} ms ({} in the scan), {} records kept, {:.0} MB scanned at {:.0} MB/s",
        start.elapsed().as_millis(),
        r.duration_ms,
        r.records_kept,
        r.bytes_scanned as f64 / 1e6,
        r.bytes_scanned as f64 / 1e3 / r.duration_ms.max(1) as f64
    );
    engine.close()?;
    Ok(())
}
