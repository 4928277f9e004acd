//! The progress line on a terminal and the `--max-rate` throttle.
//!
//! The progress line is redrawn on standard error at most every `REDRAW_MS` and only when
//! standard error is a terminal (a script's log gets the closing summary only). The
//! throttle sleeps the caller so that bytes moved never run ahead of `rate × elapsed`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW_MS: u128 = 250;

pub struct Progress {
    what: &'static str,
    total_blocks: u64,
    total_bytes: u64,
    blocks: u64,
    bytes: u64,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    pub fn new(what: &'static str, total_blocks: u64, total_bytes: u64) -> Progress {
        Progress {
            what,
            total_blocks,
            total_bytes,
            blocks: 0,
            bytes: 0,
            start: Instant::now(),
            last_draw: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    pub fn add(&mut self, blocks: u64, bytes: u64) {
        self.blocks += blocks;
        self.bytes += bytes;
        if self.enabled && self.last_draw.is_none_or(|t| t.elapsed().as_millis() >= REDRAW_MS) {
            self.last_draw = Some(Instant::now());
            self.draw();
        }
    }

    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn draw(&self) {
        let rate = self.rate();
        let left = self.total_bytes.saturating_sub(self.bytes) as f64;
        let eta = if rate > 0.0 { format!("{:.0} s", left / rate) } else { "?".into() };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{}: {}/{} blocks, {:.1}/{:.1} MiB, {:.1} MB/s, {} left   ",
            self.what,
            self.blocks,
            self.total_blocks,
            self.bytes as f64 / (1 << 20) as f64,
            self.total_bytes as f64 / (1 << 20) as f64,
            rate / 1e6,
            eta
        );
        let _ = err.flush();
    }

    /// Clears the line (the caller prints its summary).
    pub fn finish(&self) {
        if self.enabled && self.last_draw.is_some() {
            self.draw();
            eprintln!();
        }
    }
}

/// Keeps throughput under `--max-rate` MB/s (10^6 bytes per second).
pub struct Throttle {
    bytes_per_s: Option<f64>,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(max_rate_mb_s: Option<f64>) -> Throttle {
        Throttle {
            bytes_per_s: max_rate_mb_s.filter(|r| *r > 0.0).map(|r| r * 1e6),
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` and sleeps as long as they run ahead of the rate.
    pub fn pass(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Some(rate) = self.bytes_per_s {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}
