//! The raw device, measured without the engine but through its own I/O layer (the same
//! `Device` handle the engine then uses), so that the engine's figures can be read as a
//! share of what the device gives.
//!
//! - Sequential write: what the engine's flusher does at full load, one thread per device
//!   writing whole write blocks in order, one in flight, each followed by a sync
//!   (`fdatasync` on files and block devices alike). The engine's flusher syncs once per
//!   batch of queued blocks, so under a deep queue it can do slightly better than this.
//!   Destructive: only on devices the bench may destroy.
//! - Random read: `threads` threads, each with one 4 KiB direct read in flight at a
//!   uniformly random aligned offset of a random device: the engine's read path at the
//!   bench's concurrency. Read-only, so it also runs on devices that are kept.
//!
//! Cost: about `2 * duration` of device time; the buffers are one write block per device
//! and one page per thread.

use super::keys::Rng;
use super::report::{latency_summary, LatencySummary};
use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;
use spike::device::{AlignedBuf, Device, IO_ALIGN};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Size of each random read, as the issue and ACT define the raw read figure.
pub const RAW_READ_BYTES: usize = 4096;
const _: () = assert!(RAW_READ_BYTES % IO_ALIGN == 0);

pub struct SeqWrite {
    pub bytes: u64,
    pub seconds: f64,
    pub block_latency: LatencySummary,
}

impl SeqWrite {
    /// Decimal megabytes per second over all devices.
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

pub struct RandRead {
    pub reads: u64,
    pub seconds: f64,
    pub threads: usize,
    pub latency: LatencySummary,
}

impl RandRead {
    pub fn iops(&self) -> f64 {
        self.reads as f64 / self.seconds
    }
}

pub struct RawResult {
    pub write_block_size: usize,
    pub seq_write: Option<SeqWrite>,
    /// Why there is no write figure.
    pub seq_write_skipped: Option<&'static str>,
    pub rand_read: RandRead,
}

/// Measures the devices: `write` allows the destructive sequential-write test.
pub fn measure(
    devices: &[Arc<dyn Device>],
    write: bool,
    write_block_size: usize,
    threads: usize,
    duration: Duration,
    seed: u64,
) -> Result<RawResult> {
    let (seq_write, seq_write_skipped) = if write {
        (Some(seq_write(devices, write_block_size, duration, seed)?), None)
    } else {
        (None, Some("the device holds Spike data to keep (the write test needs --format)"))
    };
    let rand_read = rand_read(devices, threads, duration, seed)?;
    Ok(RawResult { write_block_size, seq_write, seq_write_skipped, rand_read })
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, super::workload::LATENCY_NS_MAX, 3).map_err(|e| anyhow!("histogram: {e}"))
}

fn seq_write(
    devices: &[Arc<dyn Device>],
    write_block_size: usize,
    duration: Duration,
    seed: u64,
) -> Result<SeqWrite> {
    let start = Instant::now();
    let results: Vec<Result<(u64, Histogram<u64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, device)| {
                scope.spawn(move || -> Result<(u64, Histogram<u64>)> {
                    let mut buf = AlignedBuf::zeroed(write_block_size);
                    // Incompressible bytes: a device that compresses or dedups must not
                    // look faster than it will be for records.
                    let mut rng = Rng::new(seed, 1000 + i as u64);
                    for chunk in buf.chunks_exact_mut(8) {
                        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
                    }
                    let mut hist = new_histogram()?;
                    let blocks = device.size_bytes() / write_block_size as u64;
                    let mut written = 0u64;
                    for block in 0..blocks {
                        if start.elapsed() >= duration {
                            break;
                        }
                        let op_start = Instant::now();
                        let offset = block * write_block_size as u64;
                        device.write_at(&buf, offset).map_err(|e| anyhow!(e))?;
                        device.sync().map_err(|e| anyhow!(e))?;
                        hist.saturating_record(op_start.elapsed().as_nanos() as u64);
                        written += write_block_size as u64;
                    }
                    Ok((written, hist))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("raw writer panicked"))))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut bytes = 0;
    let mut total = new_histogram()?;
    for result in results {
        let (written, hist) = result?;
        bytes += written;
        total.add(&hist).map_err(|e| anyhow!("histogram: {e}"))?;
    }
    if bytes == 0 {
        bail!("the raw write test wrote nothing (device smaller than one write block?)");
    }
    Ok(SeqWrite { bytes, seconds, block_latency: latency_summary(&total) })
}

fn rand_read(devices: &[Arc<dyn Device>], threads: usize, duration: Duration, seed: u64) -> Result<RandRead> {
    let pages: Vec<u64> = devices.iter().map(|d| d.size_bytes() / RAW_READ_BYTES as u64).collect();
    if pages.contains(&0) {
        bail!("a device is smaller than one {RAW_READ_BYTES}-byte read");
    }
    let stop = AtomicBool::new(false);
    let total = Mutex::new(new_histogram()?);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (stop, total, first_error, pages) = (&stop, &total, &first_error, &pages);
            scope.spawn(move || {
                let mut rng = Rng::new(seed, 2000 + t as u64);
                let mut buf = AlignedBuf::zeroed(RAW_READ_BYTES);
                let Ok(mut hist) = new_histogram() else { return };
                while !stop.load(Relaxed) {
                    let d = rng.below(devices.len() as u64) as usize;
                    let offset = rng.below(pages[d]) * RAW_READ_BYTES as u64;
                    let op_start = Instant::now();
                    if let Err(err) = devices[d].read_at(&mut buf, offset) {
                        first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(anyhow!(err));
                        stop.store(true, Relaxed);
                        break;
                    }
                    hist.saturating_record(op_start.elapsed().as_nanos() as u64);
                }
                let _ = total.lock().unwrap_or_else(|e| e.into_inner()).add(&hist);
            });
        }
        while start.elapsed() < duration && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Relaxed);
    });
    let seconds = start.elapsed().as_secs_f64();
    if let Some(err) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err.context("raw random read"));
    }
    let total = total.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(RandRead { reads: total.len(), seconds, threads, latency: latency_summary(&total) })
}
