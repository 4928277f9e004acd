//! Loads N records of 100 bytes into a file device, then measures the CPU the idle engine
//! uses over D seconds (process user + system time, from getrusage).
//!
//! `cargo run --release -p spike --example idle_cpu -- /tmp/idle.img 10000000 60 [ttl]`
//! (`ttl`: every record gets a one-day TTL, so the expiry pass has work to consider).

use spike::{Config, Engine, WriteOptions};
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() -> Result<(), spike::Error> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/tmp/spike-idle.img"));
    let records: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let idle_s: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(60);
    let ttl_s = (args.get(4).map(String::as_str) == Some("ttl")).then_some(86_400);
    let _ = std::fs::remove_file(&path);
    let device_bytes = (records * 200).max(1 << 30).next_multiple_of(1 << 20);
    spike::device::create_file(&path, device_bytes)?;
    let config = Config { devices: vec![path.clone()], ..Config::default() };
    Engine::format(&config, false)?;
    let engine = Engine::open(config)?;
    let value = [0x5Au8; 100];
    let options = WriteOptions { ttl_s, ..WriteOptions::default() };
    let start = Instant::now();
    for i in 0..records {
        engine.put(format!("key-{i}").as_bytes(), &value, &options)?;
    }
    println!("loaded {records} records in {:.1} s", start.elapsed().as_secs_f64());
    // Let the last flush and any defrag finish before measuring.
    std::thread::sleep(Duration::from_secs(5));
    let before = cpu_seconds();
    std::thread::sleep(Duration::from_secs(idle_s));
    let used = cpu_seconds() - before;
    println!(
        "idle {idle_s} s with {records} records: {used:.2} CPU-seconds = {:.2}% of a core",
        used * 100.0 / idle_s as f64
    );
    engine.close()?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
