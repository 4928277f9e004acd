//! Write amplification of overwrites at a defrag low-water mark, for uniform and zipfian
//! keys, and the defragmenter's throughput on a backlog.
//!
//! `cargo run --release -p spike --example defrag_wa -- /path/on/ext4/dev.img [GiB] [lwm]`

use spike::device::sim::SimRng;
use spike::{Config, Engine, Stats, WriteOptions};
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 1000;

/// Zipfian ranks by inversion of the continuous approximation of the CDF (theta < 1).
struct Zipf {
    n: f64,
    theta: f64,
}

impl Zipf {
    fn sample(&self, rng: &mut SimRng) -> u64 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let one_minus = 1.0 - self.theta;
        let x = ((self.n.powf(one_minus) - 1.0) * u + 1.0).powf(1.0 / one_minus);
        (x as u64).saturating_sub(1).min(self.n as u64 - 1)
    }
}

fn scramble(rank: u64, n: u64) -> u64 {
    rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}

fn run(path: &std::path::Path, gib: u64, lwm: u32, zipf: Option<f64>) -> Result<(), spike::Error> {
    let _ = std::fs::remove_file(path);
    spike::device::create_file(path, gib << 30)?;
    let config = Config {
        devices: vec![path.to_path_buf()],
        defrag_lwm_pct: lwm,
        defrag_sleep_us: 0,
        ..Config::default()
    };
    Engine::format(&config, false)?;
    let engine = Engine::open(config.clone())?;
    // Half the device live.
    let keys = (gib << 30) / 2 / (VALUE_BYTES as u64 + 64);
    let value = vec![7u8; VALUE_BYTES];
    for k in 0..keys {
        engine.put(&k.to_le_bytes(), &value, &WriteOptions::default())?;
    }
    let before = engine.stats();
    let mut rng = SimRng::new(1);
    let sampler = zipf.map(|theta| Zipf { n: keys as f64, theta });
    let start = Instant::now();
    for _ in 0..3 * keys {
        let k = match &sampler {
            Some(z) => scramble(z.sample(&mut rng), keys),
            None => rng.below(keys),
        };
        engine.put(&k.to_le_bytes(), &value, &WriteOptions::default())?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = engine.stats();
    let delta = |f: fn(&Stats) -> u64| (f(&after) - f(&before)) as f64;
    let client = delta(|s| s.client_bytes_written);
    println!(
        "{:>13} lwm {lwm}: {} keys, {} overwrites in {elapsed:.1} s; WA records {:.3}, device {:.3}; {} blocks defragmented",
        zipf.map_or("uniform".to_string(), |t| format!("zipfian {t}")),
        keys,
        3 * keys,
        (client + delta(|s| s.defrag_bytes_written)) / client,
        delta(|s| s.device_bytes_written) / client,
        delta(|s| s.blocks_defragged),
    );
    engine.close()?;
    Ok(())
}

/// Builds a backlog with defrag held back (lwm 1), then measures how fast defrag at `lwm`
/// reclaims it.
fn defrag_throughput(path: &std::path::Path, gib: u64, lwm: u32) -> Result<(), spike::Error> {
    let _ = std::fs::remove_file(path);
    spike::device::create_file(path, gib << 30)?;
    let held = Config { devices: vec![path.to_path_buf()], defrag_lwm_pct: 1, ..Config::default() };
    Engine::format(&held, false)?;
    let engine = Engine::open(held.clone())?;
    let keys = (gib << 30) / 3 / (VALUE_BYTES as u64 + 64);
    let value = vec![7u8; VALUE_BYTES];
    for k in 0..keys {
        engine.put(&k.to_le_bytes(), &value, &WriteOptions::default())?;
    }
    for k in (0..keys).filter(|k| k % 3 != 0) {
        engine.put(&k.to_le_bytes(), &value, &WriteOptions::default())?;
    }
    engine.close()?;
    let start = Instant::now();
    let engine = Engine::open(Config { defrag_lwm_pct: lwm, defrag_sleep_us: 0, ..held })?;
    let opened = start.elapsed();
    let wbs = engine.stats().devices[0].wblocks_total;
    while engine.stats().devices[0].wblocks_defrag_queued > 0 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = (start.elapsed() - opened).as_secs_f64();
    let s = engine.stats();
    let reclaimed_mb = s.blocks_defragged as f64 * (1 << 20) as f64 / 1e6;
    println!(
        "defrag backlog at lwm {lwm}: {} of {wbs} blocks reclaimed in {secs:.2} s = {:.0} MB/s of reclaimed blocks ({:.0} MB/s of records moved)",
        s.blocks_defragged,
        reclaimed_mb / secs,
        s.defrag_bytes_written as f64 / 1e6 / secs
    );
    engine.close()?;
    Ok(())
}

fn main() -> Result<(), spike::Error> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/tmp/spike-wa.img"));
    let gib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let lwm: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
    run(&path, gib, lwm, None)?;
    run(&path, gib, lwm, Some(0.99))?;
    defrag_throughput(&path, gib, lwm)?;
    std::fs::remove_file(&path).ok();
    Ok(())
}
