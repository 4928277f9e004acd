//! What the bench prints: interval lines and progress while it runs, then one report, as
//! text or (with `--json`) as one JSON document on stdout. Latencies are recorded in
//! nanoseconds and printed in microseconds (JSON) or a readable unit (text); rates use
//! decimal megabytes (1 MB = 10^6 bytes), device sizes binary units.

use super::options::{OpKind, Plan};
use super::raw::RawResult;
use super::workload::{PhaseResult, PhaseSpec, Work};
use hdrhistogram::Histogram;
use spike::Stats;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

/// Where human-readable output goes: stdout, or stderr when stdout carries the JSON.
pub struct Out {
    json: bool,
    tty: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        let tty = if json { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
        Out { json, tty }
    }

    fn write(&self, text: &str) {
        // A closed pipe must not abort a run that is writing to a device: output is best effort.
        if self.json {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        }
    }

    pub fn line(&self, text: &str) {
        self.write(&format!("{text}\n"));
    }

    /// A line that replaces itself on a terminal; elsewhere an ordinary line.
    pub fn progress(&self, text: &str) {
        if self.tty {
            self.write(&format!("\r{text}\x1b[K"));
        } else {
            self.line(text);
        }
    }

    /// The last state of a progress line, kept.
    pub fn progress_done(&self, text: &str) {
        if self.tty {
            self.write(&format!("\r{text}\x1b[K\n"));
        } else {
            self.line(text);
        }
    }

    /// Ends a progress line so that the next output starts on its own line.
    pub fn progress_end(&self) {
        if self.tty {
            self.write("\n");
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }
}

/// Percentiles and ACT's shares of one latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Fractions of operations slower than 1, 8 and 64 ms.
    pub over_1ms: f64,
    pub over_8ms: f64,
    pub over_64ms: f64,
}

pub fn latency_summary(hist: &Histogram<u64>) -> LatencySummary {
    let count = hist.len();
    if count == 0 {
        return LatencySummary::default();
    }
    let us = |ns: u64| ns as f64 / 1e3;
    let over = |ms: u64| {
        let within = hist.count_between(0, ms * 1_000_000);
        count.saturating_sub(within) as f64 / count as f64
    };
    LatencySummary {
        count,
        mean_us: hist.mean() / 1e3,
        p50_us: us(hist.value_at_quantile(0.50)),
        p90_us: us(hist.value_at_quantile(0.90)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
        over_1ms: over(1),
        over_8ms: over(8),
        over_64ms: over(64),
    }
}

/// "2.0 GiB", "512 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// "45.2k", "1.20M", "812".
pub fn count(x: f64) -> String {
    match x {
        x if x >= 10e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 10e3 => format!("{:.1}k", x / 1e3),
        x if x >= 1e3 => format!("{:.2}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// A latency in a readable unit: "850 ns", "85 µs", "1.23 ms", "2.1 s".
pub fn latency(us: f64) -> String {
    match us {
        us if us < 1.0 => format!("{:.0}ns", us * 1e3),
        us if us < 100.0 => format!("{us:.1}µs"),
        us if us < 1e3 => format!("{us:.0}µs"),
        us if us < 100e3 => format!("{:.2}ms", us / 1e3),
        us if us < 1e6 => format!("{:.0}ms", us / 1e3),
        us => format!("{:.2}s", us / 1e6),
    }
}

pub fn percent(fraction: f64) -> String {
    match fraction * 100.0 {
        0.0 => "0%".into(),
        p if p < 0.01 => "<0.01%".into(),
        p if p < 10.0 => format!("{p:.2}%"),
        p => format!("{p:.1}%"),
    }
}

pub fn load_progress_line(
    loaded: u64,
    total: u64,
    at_s: f64,
    ops_per_s: f64,
    interval: &Histogram<u64>,
    device_mb_s: f64,
) -> String {
    let done = loaded as f64 / total.max(1) as f64;
    let eta = if ops_per_s > 0.0 { (total.saturating_sub(loaded)) as f64 / ops_per_s } else { f64::NAN };
    let p99 = latency(interval.value_at_quantile(0.99) as f64 / 1e3);
    format!(
        "load {:>3.0}%  {}/{} records  {}/s  p99 {p99}  device {device_mb_s:.0} MB/s  {at_s:.0}s elapsed{}",
        done * 100.0,
        count(loaded as f64),
        count(total as f64),
        count(ops_per_s),
        if eta.is_finite() && loaded < total { format!(", eta {eta:.0}s") } else { String::new() }
    )
}

pub fn interval_line(
    spec: &PhaseSpec,
    at_s: f64,
    seconds: f64,
    interval: &[Histogram<u64>],
    device_mb_s: f64,
) -> String {
    let mut line = match spec.duration {
        Some(d) => format!("[{at_s:>4.0}/{:.0}s]", d.as_secs_f64()),
        None => format!("[{at_s:>5.0}s]"),
    };
    for kind in OpKind::ALL {
        let hist = &interval[kind.index()];
        let listed = match &spec.work {
            Work::Mix { mix, .. } => mix.weight(kind) > 0,
            Work::Load { .. } => kind == OpKind::Insert,
        };
        if !listed {
            continue;
        }
        let s = latency_summary(hist);
        let _ = write!(
            line,
            "  {} {:>6}/s p50 {:>7} p99 {:>7} max {:>7} |",
            kind.name(),
            count(hist.len() as f64 / seconds),
            latency(s.p50_us),
            latency(s.p99_us),
            latency(s.max_us)
        );
    }
    let _ = write!(line, " device write {device_mb_s:.0} MB/s");
    line
}

/// A JSON value of the report (fields keep the order they are written in).
pub use serde_json::Value as Json;

pub fn obj(fields: Vec<(&str, Json)>) -> Json {
    Json::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A float rounded to `decimals` places (for readable JSON); not finite: null.
pub fn num(x: f64, decimals: i32) -> Json {
    let scale = 10f64.powi(decimals);
    Json::from((x * scale).round() / scale)
}

pub fn opt_num(x: Option<f64>, decimals: i32) -> Json {
    x.map_or(Json::Null, |x| num(x, decimals))
}

pub fn latency_json(s: &LatencySummary) -> Json {
    obj(vec![
        ("mean", num(s.mean_us, 1)),
        ("p50", num(s.p50_us, 1)),
        ("p90", num(s.p90_us, 1)),
        ("p99", num(s.p99_us, 1)),
        ("p999", num(s.p999_us, 1)),
        ("max", num(s.max_us, 1)),
    ])
}

pub fn over_ms_json(s: &LatencySummary) -> Json {
    obj(vec![("1", num(s.over_1ms, 6)), ("8", num(s.over_8ms, 6)), ("64", num(s.over_64ms, 6))])
}

/// ACT's verdict for one run.
pub struct ActOutcome {
    pub multiplier: u32,
    pub devices: usize,
    pub target_reads_per_s: f64,
    pub target_writes_per_s: f64,
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    pub reads: LatencySummary,
    pub writes: LatencySummary,
    pub fill_fraction: f64,
    pub pass: bool,
    /// Each failed condition, in words.
    pub failures: Vec<String>,
}

/// ACT's pass rule on read latency: under 5% over 1 ms, 1% over 8 ms, 0.1% over 64 ms;
/// and the load must actually have been carried (within 1% of the target rate).
pub fn act_verdict(reads: &LatencySummary, carried_per_s: f64, target_per_s: f64) -> (bool, Vec<String>) {
    let mut failures = Vec::new();
    for (share, limit, ms) in
        [(reads.over_1ms, 0.05, 1), (reads.over_8ms, 0.01, 8), (reads.over_64ms, 0.001, 64)]
    {
        if share >= limit {
            failures.push(format!("{} of reads over {ms} ms (limit {})", percent(share), percent(limit)));
        }
    }
    if carried_per_s < 0.99 * target_per_s {
        failures.push(format!("carried {}/s of the {}/s target", count(carried_per_s), count(target_per_s)));
    }
    (failures.is_empty(), failures)
}

/// Everything the final report shows.
pub struct Report<'a> {
    pub plan: &'a Plan,
    pub labels: &'a [String],
    pub device_sizes: Vec<u64>,
    pub backend: String,
    pub namespace: String,
    pub write_block_size: u32,
    pub defrag_lwm_pct: u32,
    /// Seconds waited after the load for the write queue and defrag to drain.
    pub settle_seconds: f64,
    pub records: u64,
    pub raw: Option<&'a RawResult>,
    pub load: Option<&'a PhaseResult>,
    pub run: Option<&'a PhaseResult>,
    pub stats: Option<&'a Stats>,
    pub act: Option<&'a ActOutcome>,
    pub notes: Vec<String>,
}

/// The engine's figures as shares of the raw device's.
pub struct Ratios {
    pub write: Option<f64>,
    pub read: Option<f64>,
    pub read_p99: Option<f64>,
}

impl Report<'_> {
    pub fn ratios(&self) -> Ratios {
        let raw = self.raw;
        let write = match (raw.and_then(|r| r.seq_write.as_ref()), self.load) {
            (Some(raw), Some(load)) if load.ops() > 0 => Some(load.client_mb_s() / raw.mb_s()),
            _ => None,
        };
        let reads =
            self.run.map(|run| (run.ops_per_s(OpKind::Read), latency_summary(&run.kind(OpKind::Read).hist)));
        let (read, read_p99) = match (raw, reads) {
            (Some(raw), Some((per_s, lat))) if lat.count > 0 && raw.rand_read.reads > 0 => {
                (Some(per_s / raw.rand_read.iops()), Some(lat.p99_us / raw.rand_read.latency.p99_us))
            }
            _ => (None, None),
        };
        Ratios { write, read, read_p99 }
    }

    pub fn text(&self) -> String {
        let mut t = String::new();
        let plan = self.plan;
        let _ = writeln!(t, "\n== spike-bench report ==");
        for (label, size) in self.labels.iter().zip(&self.device_sizes) {
            let _ = writeln!(t, "device      {label}  {}", bytes(*size));
        }
        let _ = writeln!(
            t,
            "engine      namespace {:?}, {} write blocks, {} backend, durability {}, {} threads, batch {}, seed {}",
            self.namespace,
            bytes(self.write_block_size as u64),
            self.backend,
            durability_name(plan),
            plan.threads,
            plan.batch,
            plan.seed
        );
        if let Some(raw) = self.raw {
            let _ = writeln!(t, "\nraw device (the engine's I/O layer, no engine; before formatting)");
            match &raw.seq_write {
                Some(w) => {
                    let _ = writeln!(
                        t,
                        "  sequential write  {} blocks, 1 in flight per device, sync each: {:.0} MB/s  (block p99 {}, {} in {:.1} s)",
                        bytes(raw.write_block_size as u64),
                        w.mb_s(),
                        latency(w.block_latency.p99_us),
                        bytes(w.bytes),
                        w.seconds
                    );
                }
                None => {
                    let _ = writeln!(
                        t,
                        "  sequential write  skipped: {}",
                        raw.seq_write_skipped.unwrap_or("not measured")
                    );
                }
            }
            let r = &raw.rand_read;
            let _ = writeln!(
                t,
                "  random read       4 KiB, {} threads: {} IOPS  p50 {}  p99 {}  p99.9 {}  max {}  >1ms {}  >8ms {}",
                r.threads,
                count(r.iops()),
                latency(r.latency.p50_us),
                latency(r.latency.p99_us),
                latency(r.latency.p999_us),
                latency(r.latency.max_us),
                percent(r.latency.over_1ms),
                percent(r.latency.over_8ms)
            );
        }
        if let Some(load) = self.load {
            let lat = latency_summary(&load.kind(OpKind::Insert).hist);
            let _ = writeln!(
                t,
                "\nload        {} records of {} in {:.1} s: {}/s, {:.0} MB/s of records, p50 {} p99 {} max {}, write amplification {:.2}",
                count(lat.count as f64),
                plan.value_sizes,
                load.seconds(),
                count(lat.count as f64 / load.seconds()),
                load.client_mb_s(),
                latency(lat.p50_us),
                latency(lat.p99_us),
                latency(lat.max_us),
                load.write_amplification().unwrap_or(0.0)
            );
            if self.settle_seconds >= 0.1 {
                let _ = writeln!(
                    t,
                    "            then {:.1} s for the write queue and defrag to drain before the run",
                    self.settle_seconds
                );
            }
        } else if self.run.is_some() {
            let _ = writeln!(
                t,
                "\nload        skipped (--no-load): {} records on the device",
                count(self.records as f64)
            );
        }
        if let Some(run) = self.run {
            let label = match plan.act {
                Some(n) => format!("ACT {n}x"),
                None => plan.workload.label.clone(),
            };
            let _ = writeln!(
                t,
                "\nrun         {label} ({}), {} keys over {} records, {:.1} s{}",
                plan.workload.mix,
                plan.keys,
                count(self.records as f64),
                run.seconds(),
                plan.rate_ops_s.map_or(String::new(), |r| format!(", target {}/s", count(r)))
            );
            let _ = writeln!(
                t,
                "  {:<7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9}",
                "op",
                "ops/s",
                "mean",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max",
                ">1ms",
                ">8ms",
                ">64ms",
                "not found"
            );
            let row = |t: &mut String, name: &str, hist: &Histogram<u64>, not_found: u64| {
                let s = latency_summary(hist);
                let _ = writeln!(
                    t,
                    "  {:<7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>9}",
                    name,
                    count(s.count as f64 / run.seconds()),
                    latency(s.mean_us),
                    latency(s.p50_us),
                    latency(s.p90_us),
                    latency(s.p99_us),
                    latency(s.p999_us),
                    latency(s.max_us),
                    percent(s.over_1ms),
                    percent(s.over_8ms),
                    percent(s.over_64ms),
                    count(not_found as f64)
                );
            };
            for kind in OpKind::ALL {
                let k = run.kind(kind);
                if !k.hist.is_empty() || k.errors > 0 {
                    row(&mut t, kind.name(), &k.hist, k.not_found);
                }
            }
            if let Ok(all) = run.all() {
                let not_found = run.kinds.iter().map(|k| k.not_found).sum();
                row(&mut t, "all", &all, not_found);
            }
            if run.errors() > 0 {
                let _ = writeln!(
                    t,
                    "  errors: {} (first: {})",
                    run.errors(),
                    run.first_error.as_deref().unwrap_or("see stopped early")
                );
            }
        }
        if let Some(stats) = self.stats {
            let reads = stats.reads_from_memory + stats.reads_from_device;
            let _ = writeln!(
                t,
                "\nwrites      write amplification {:.2} (device {} for {} of records){}",
                stats.write_amplification(),
                bytes(stats.device_bytes_written),
                bytes(stats.client_bytes_written),
                self.run
                    .and_then(|r| r.write_amplification())
                    .map_or(String::new(), |wa| format!("; {wa:.2} in the run phase"))
            );
            let _ = writeln!(
                t,
                "defrag      lwm {}%: {} blocks defragmented ({} of records moved), {} blocks freed, {} queued now",
                self.defrag_lwm_pct,
                stats.blocks_defragged,
                bytes(stats.defrag_bytes_written),
                stats.blocks_freed,
                stats.devices.iter().map(|d| d.wblocks_defrag_queued).sum::<u64>()
            );
            if let Some(defrag) = self.run.and_then(|r| r.defrag).filter(|d| !d.short_for.is_zero()) {
                let _ = writeln!(
                    t,
                    "            space short for {:.1} s of the run; longest time with victims \
                     waiting but no block defragmented then: {} ms",
                    defrag.short_for.as_secs_f64(),
                    defrag.longest_stall.as_millis()
                );
            }
            let free: u64 = stats.devices.iter().map(|d| d.wblocks_free).sum();
            let wblocks: u64 = stats.devices.iter().map(|d| d.wblocks_total).sum();
            let _ = writeln!(
                t,
                "space       {} live in {} of {} write blocks used; index {} entries, {}",
                bytes(stats.devices.iter().map(|d| d.live_bytes).sum()),
                wblocks - free,
                wblocks,
                count(stats.index_entries as f64),
                bytes(stats.index_bytes)
            );
            if reads > 0 {
                let _ = writeln!(
                    t,
                    "reads       {} from the device, {} from RAM (open block and post-write cache)",
                    percent(stats.reads_from_device as f64 / reads as f64),
                    percent(stats.reads_from_memory as f64 / reads as f64)
                );
            }
        }
        let ratios = self.ratios();
        if ratios.write.is_some() || ratios.read.is_some() {
            let _ = writeln!(t, "\nengine / raw device");
            if let Some(w) = ratios.write {
                let _ = writeln!(t, "  write    {w:.2}  (load MB/s of records ÷ raw sequential write MB/s)");
            }
            if let Some(r) = ratios.read {
                let _ = writeln!(
                    t,
                    "  read     {r:.2}  (engine reads/s ÷ raw 4 KiB random read IOPS, same thread count)"
                );
            }
            if let Some(p) = ratios.read_p99 {
                let _ = writeln!(t, "  read p99 {p:.2}  (engine read p99 ÷ raw read p99)");
            }
        }
        if let Some(act) = self.act {
            let _ = writeln!(
                t,
                "\nACT {}x     {} device(s), device filled to {:.0}% first; target {}/s reads and {}/s writes of 1536 B",
                act.multiplier,
                act.devices,
                act.fill_fraction * 100.0,
                count(act.target_reads_per_s),
                count(act.target_writes_per_s)
            );
            let _ = writeln!(
                t,
                "  reads  {}/s  >1ms {}  >8ms {}  >64ms {}   (limits 5%, 1%, 0.1%)",
                count(act.reads_per_s),
                percent(act.reads.over_1ms),
                percent(act.reads.over_8ms),
                percent(act.reads.over_64ms)
            );
            let _ = writeln!(
                t,
                "  writes {}/s  >1ms {}  >8ms {}  >64ms {}",
                count(act.writes_per_s),
                percent(act.writes.over_1ms),
                percent(act.writes.over_8ms),
                percent(act.writes.over_64ms)
            );
            if act.pass {
                let _ = writeln!(t, "  PASS");
            } else {
                let _ = writeln!(t, "  FAIL: {}", act.failures.join("; "));
            }
        }
        if let Some(reason) = self.run.and_then(|r| r.stopped_early.as_ref()) {
            let _ = writeln!(t, "\nstopped early: {reason}");
        }
        for note in &self.notes {
            let _ = writeln!(t, "note: {note}");
        }
        t
    }
}

pub(super) fn durability_name(plan: &Plan) -> &'static str {
    match plan.durability {
        spike::Durability::Buffered => "buffered",
        spike::Durability::CommitToDevice => "commit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_rounded_non_finite_ones_null_and_fields_keep_their_order() {
        assert_eq!(num(1.26, 1), Json::from(1.3));
        assert_eq!(num(f64::NAN, 1), Json::Null);
        assert_eq!(opt_num(None, 1), Json::Null);
        let doc = obj(vec![("zeta", Json::from(1u64)), ("alpha", num(f64::INFINITY, 0))]);
        assert_eq!(format!("{doc:#}"), "{\n  \"zeta\": 1,\n  \"alpha\": null\n}");
    }

    #[test]
    fn over_ms_shares_count_operations_above_each_threshold() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for _ in 0..90 {
            hist.record(500_000).unwrap();
        }
        for _ in 0..9 {
            hist.record(2_000_000).unwrap();
        }
        hist.record(100_000_000).unwrap();
        let s = latency_summary(&hist);
        assert!((s.over_1ms - 0.10).abs() < 1e-9);
        assert!((s.over_8ms - 0.01).abs() < 1e-9);
        assert!((s.over_64ms - 0.01).abs() < 1e-9);
    }

    #[test]
    fn act_passes_only_under_every_limit_and_at_the_target_rate() {
        let ok = LatencySummary { over_1ms: 0.04, over_8ms: 0.005, over_64ms: 0.0005, ..Default::default() };
        assert!(act_verdict(&ok, 3000.0, 3000.0).0);
        let slow = LatencySummary { over_8ms: 0.02, ..ok };
        assert!(!act_verdict(&slow, 3000.0, 3000.0).0);
        assert!(!act_verdict(&ok, 2500.0, 3000.0).0);
    }
}
