//! Random 4 KiB direct reads through Spike's device layer, per backend and thread count:
//! what the engine's own I/O path can do on a device, without the engine.
//!
//! `cargo run --release -p spike --example device_reads -- /path/on/ext4/file.img 1 4`
//! (file GiB, threads; the file is created and filled if missing, and kept)

use spike::device::sim::SimRng;
use spike::device::{self, AlignedBuf, IoBackend};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> Result<(), spike::Error> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/tmp/spike-reads.img"));
    let gib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) != gib << 30 {
        let _ = std::fs::remove_file(&path);
        device::create_file(&path, gib << 30)?;
        let dev = device::open(&path, IoBackend::Blocking)?;
        let mut buf = AlignedBuf::zeroed(8 << 20);
        buf.fill(0xA5);
        for chunk in 0..(gib << 30) / (8 << 20) {
            dev.write_at(&buf, chunk * (8 << 20))?;
        }
        dev.sync()?;
    }
    for backend in [IoBackend::Blocking, IoBackend::Uring] {
        let dev = device::open(&path, backend)?;
        let blocks = dev.size_bytes() / 4096;
        let ops = AtomicU64::new(0);
        let deadline = Instant::now() + Duration::from_secs(3);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (dev, ops) = (&dev, &ops);
                scope.spawn(move || {
                    let mut rng = SimRng::new(t as u64 + 1);
                    let mut buf = AlignedBuf::zeroed(4096);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        dev.read_at(&mut buf, rng.below(blocks) * 4096).expect("read");
                        n += 1;
                    }
                    ops.fetch_add(n, Ordering::Relaxed);
                });
            }
        });
        println!(
            "{:>13} {threads} threads: {:.0} random 4 KiB reads/s",
            dev.backend(),
            ops.load(Ordering::Relaxed) as f64 / 3.0
        );
    }
    Ok(())
}
