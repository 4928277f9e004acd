//! Command-line options and the validated plan they turn into.
//!
//! Every option is checked here, before any device is opened, so that a bad option is a
//! one-line error and never a half-done run: value sizes that cannot fit a write block,
//! zero threads, a file too small to format, a preset mixed with an explicit mix.

use super::keys::KeyDistribution;
use anyhow::{bail, Context as _, Result};
use clap::Parser;
use spike::device::IoBackend;
use spike::offline::format::{
    record_size, RECORD_HEADER_SIZE, WBLOCK_HEADER_SIZE, WBLOCK_SIZE_DEFAULT, WBLOCK_SIZE_MAX,
    WBLOCK_SIZE_MIN,
};
use spike::Durability;
use std::path::PathBuf;
use std::time::Duration;

/// Size of the temporary device file of a run without `--device`.
pub const DEFAULT_FILE_SIZE_BYTES: u64 = 2 << 30;
/// Mixed phase length when neither `--duration` nor `--ops` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// Share of the device the default load fills: with defrag at its default low-water mark
/// (50%), a device kept under half full needs little defrag work to take the updates.
pub const DEFAULT_FILL_FRACTION: f64 = 0.4;
/// Smallest device the bench accepts: room for the header area and a few write blocks.
pub const DEVICE_SIZE_MIN_BYTES: u64 = 16 << 20;
/// Bound on threads: every thread is an OS thread doing blocking engine calls.
pub const THREADS_MAX: usize = 1024;
/// Bound on a batch: the engine keeps at most 128 reads of one batch in flight per ring.
pub const BATCH_MAX: usize = 128;
/// Batch of a paced run unless `--batch` says otherwise.
pub const PACED_BATCH_DEFAULT: usize = 16;
/// Bound on one phase's length, so a typo cannot start a run of years.
pub const DURATION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// ACT's record size on the device, and its 1x rates per device.
pub const ACT_RECORD_BYTES: usize = 1536;
pub const ACT_READS_PER_S_1X: f64 = 2000.0;
pub const ACT_WRITES_PER_S_1X: f64 = 1000.0;
/// ACT's multiplier bound: 1000x is 3 M operations/s per device, beyond any SSD.
pub const ACT_MULTIPLIER_MAX: u32 = 1000;

#[derive(Parser, Debug)]
#[command(
    name = "spike-bench",
    version,
    about = "Benchmark the Spike storage engine in-process, measured against the raw device",
    long_about = "Benchmark the Spike storage engine in-process, the way a server embeds it, and \
                  measure the raw device with the engine's own I/O layer so that the engine's \
                  figures print as ratios of the device's.\n\nWithout arguments: a 2 GiB file \
                  device in a temporary directory (removed afterwards), a load phase, then 30 s \
                  of read=50,update=50 on uniform keys. The bench never touches a device you did \
                  not name."
)]
pub struct Args {
    /// Device to run on: a block device or a regular file (repeat for several devices).
    /// Without it, a temporary file is used and removed afterwards.
    #[arg(long = "device", value_name = "PATH")]
    pub devices: Vec<PathBuf>,
    /// Format the devices first (destroys their contents). Without it, a device must
    /// already be a Spike device.
    #[arg(long)]
    pub format: bool,
    /// With --format: also format a device holding data that is not Spike's.
    #[arg(long, requires = "format")]
    pub force: bool,
    /// With --format on files: create or extend each file to this size (e.g. 4G, 512M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Write-block size (power of two, 128K to 8M); by default the device's own, or 1M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub write_block_size: Option<u64>,
    /// Namespace name; by default the device's own, or "spike".
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// Records loaded before the mixed phase (default: 40% of the device's capacity).
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
    /// Value size in bytes, fixed (1024) or a uniform range (100..4000).
    #[arg(long, value_name = "N|MIN..MAX", default_value = "1024", value_parser = parse_value_size)]
    pub value_size: ValueSizes,
    /// Operation mix, e.g. read=50,update=50 (kinds: read, update, insert, delete, rmw),
    /// or a YCSB preset: a (50/50 read/update), b (95/5), c (read only), f (read/rmw).
    #[arg(long, value_name = "MIX")]
    pub workload: Option<String>,
    /// Skip the load phase and reuse the records of a device filled by an earlier run.
    #[arg(long)]
    pub no_load: bool,
    /// Key distribution: uniform or zipfian[:theta] (theta in (0, 1), default 0.99).
    /// Default: uniform, or zipfian for the YCSB presets.
    #[arg(long, value_name = "DIST", value_parser = parse_keys)]
    pub keys: Option<KeyDistribution>,
    /// Client threads (each has one operation in flight at a time).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub threads: usize,
    /// Length of the mixed phase in seconds (default 30 unless --ops is given).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Operations in the mixed phase (with --duration, whichever comes first).
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Target load in operations per second over all threads; latency then counts from
    /// each operation's scheduled start. Without it: every thread at full speed.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// Most operations a thread issues together: its reads go through one `get_many`, their
    /// device reads in flight at once. Default: 1 at full speed; with --rate or --act,
    /// 16 (a thread behind its schedule issues every due operation at once, as a server
    /// with asynchronous I/O would).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// When a write is acknowledged: buffered (in RAM, on the device within 1 s) or
    /// commit (durable on the device, group commit).
    #[arg(long, value_name = "MODE", default_value = "buffered", value_parser = parse_durability)]
    pub durability: Durability,
    /// Defrag low-water mark: a write block whose live bytes fall under this percentage of
    /// its capacity is defragmented (default: the engine's, 50).
    #[arg(long, value_name = "PCT")]
    pub defrag_lwm: Option<u8>,
    /// RAM per device for the blocks written last, which serve reads of recent records
    /// (e.g. 256M); by default the engine's 8 write blocks, as in spike-server.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub post_write_cache: Option<u64>,
    /// Print one JSON report on stdout (progress and intervals go to stderr).
    #[arg(long)]
    pub json: bool,
    /// ACT storage load at N times its 1x rate: per device 2000*N reads/s and 1000*N
    /// writes/s of 1536-byte records, on a device filled first; reports ACT's pass rule.
    #[arg(long, value_name = "N")]
    pub act: Option<u32>,
    /// Measure the raw device alone and stop.
    #[arg(long, conflicts_with_all = ["no_raw", "no_load", "act"])]
    pub raw: bool,
    /// Skip the raw device measurement (no ratios then).
    #[arg(long)]
    pub no_raw: bool,
    /// Seconds each raw measurement runs.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_seconds)]
    pub raw_duration: Duration,
    /// I/O backend: auto (io_uring, else pread/pwrite), uring or blocking.
    #[arg(long, value_name = "BACKEND", default_value = "auto", value_parser = parse_backend)]
    pub io_backend: IoBackend,
    /// Seconds between interval lines.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,
    /// Seed of every random choice (printed in the report, to replay a run).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Drive a server speaking Aerospike's protocol (spike-server, or Aerospike itself)
    /// through the official Rust client instead of an in-process engine; with
    /// --namespace (default test). Records go to the set `bench`.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["devices", "format", "size", "raw", "act", "post_write_cache"])]
    pub server: Option<String>,
}

/// Value sizes in bytes: each write draws uniformly from `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueSizes {
    pub min: usize,
    pub max: usize,
}

impl ValueSizes {
    /// Mean size of a record on the device (header, value, alignment; keys are not stored).
    pub fn mean_record_bytes(&self) -> f64 {
        (record_size(0, self.min) + record_size(0, self.max)) as f64 / 2.0
    }
}

impl std::fmt::Display for ValueSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{} B", self.min)
        } else {
            write!(f, "{}..{} B", self.min, self.max)
        }
    }
}

/// Kinds of operation, in the order of [`Mix::weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Delete,
    /// Read-modify-write: a get, then a put of the same key (YCSB F).
    ReadModifyWrite,
}

pub const OP_KINDS: usize = 5;

impl OpKind {
    pub const ALL: [OpKind; OP_KINDS] =
        [OpKind::Read, OpKind::Update, OpKind::Insert, OpKind::Delete, OpKind::ReadModifyWrite];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Delete => "delete",
            OpKind::ReadModifyWrite => "rmw",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of each operation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub weights: [u32; OP_KINDS],
}

impl Mix {
    pub fn total(&self) -> u64 {
        self.weights.iter().map(|&w| w as u64).sum()
    }

    pub fn weight(&self, kind: OpKind) -> u32 {
        self.weights[kind.index()]
    }

    /// Picks a kind given a uniform draw in `0..total()`.
    pub fn pick(&self, mut draw: u64) -> OpKind {
        for kind in OpKind::ALL {
            let w = self.weights[kind.index()] as u64;
            if draw < w {
                return kind;
            }
            draw -= w;
        }
        OpKind::Read
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = OpKind::ALL
            .iter()
            .filter(|k| self.weight(**k) > 0)
            .map(|k| format!("{}={}", k.name(), self.weight(*k)))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// A workload: its mix, and the key distribution a preset implies.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub label: String,
    pub mix: Mix,
    pub preset_keys: Option<KeyDistribution>,
}

const YCSB_ZIPFIAN: KeyDistribution = KeyDistribution::Zipfian { theta: 0.99 };

pub fn parse_workload(text: &str) -> Result<Workload> {
    let text = text.trim();
    let preset = |label: &str, pairs: &[(OpKind, u32)]| {
        let mut weights = [0; OP_KINDS];
        for (kind, w) in pairs {
            weights[kind.index()] = *w;
        }
        Workload { label: label.into(), mix: Mix { weights }, preset_keys: Some(YCSB_ZIPFIAN) }
    };
    match text.to_ascii_lowercase().as_str() {
        "a" => return Ok(preset("YCSB-A", &[(OpKind::Read, 50), (OpKind::Update, 50)])),
        "b" => return Ok(preset("YCSB-B", &[(OpKind::Read, 95), (OpKind::Update, 5)])),
        "c" => return Ok(preset("YCSB-C", &[(OpKind::Read, 100)])),
        "f" => return Ok(preset("YCSB-F", &[(OpKind::Read, 50), (OpKind::ReadModifyWrite, 50)])),
        _ => {}
    }
    let mut weights = [0u32; OP_KINDS];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once('=') {
            Some((name, weight)) => {
                let weight: u32 = weight.trim().parse().map_err(|_| {
                    anyhow::anyhow!("--workload: weight {weight:?} of {name:?} is not a whole number")
                })?;
                (name.trim(), weight)
            }
            None => (part, 100),
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "read" | "get" => OpKind::Read,
            "update" | "put" => OpKind::Update,
            "insert" => OpKind::Insert,
            "delete" => OpKind::Delete,
            "rmw" | "read-modify-write" => OpKind::ReadModifyWrite,
            other => bail!(
                "--workload: unknown operation {other:?} (read, update, insert, delete, rmw, or a preset a, b, c, f)"
            ),
        };
        if weight > 1_000_000 {
            bail!("--workload: weight {weight} of {name} is above 1000000");
        }
        weights[kind.index()] += weight;
    }
    let mix = Mix { weights };
    if mix.total() == 0 {
        bail!("--workload {text:?} has no operation with a positive weight");
    }
    Ok(Workload { label: mix.to_string(), mix, preset_keys: None })
}

/// Parses sizes such as `4096`, `64K`, `512MiB`, `2G` (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size (e.g. 4096, 64K, 2G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G, T)")),
    };
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

pub fn parse_value_size(text: &str) -> Result<ValueSizes, String> {
    let (min, max) = match text.split_once("..") {
        Some((min, max)) => (parse_size(min)?, parse_size(max.trim_start_matches('='))?),
        None => {
            let n = parse_size(text)?;
            (n, n)
        }
    };
    if min == 0 {
        return Err("value sizes start at 1 byte".into());
    }
    if min > max {
        return Err(format!("range {text:?} has its minimum above its maximum"));
    }
    let limit = (WBLOCK_SIZE_MAX as usize - WBLOCK_HEADER_SIZE) as u64;
    if max > limit {
        return Err(format!("{max} bytes cannot fit even the largest write block ({WBLOCK_SIZE_MAX} bytes)"));
    }
    Ok(ValueSizes { min: min as usize, max: max as usize })
}

pub fn parse_keys(text: &str) -> Result<KeyDistribution, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "uniform" {
        return Ok(KeyDistribution::Uniform);
    }
    let Some(rest) = lower.strip_prefix("zipfian") else {
        return Err(format!("{text:?}: expected uniform or zipfian[:theta]"));
    };
    let theta = match rest.strip_prefix(':') {
        None if rest.is_empty() => 0.99,
        Some(theta) => {
            theta.parse::<f64>().map_err(|_| format!("zipfian theta {theta:?} is not a number"))?
        }
        None => return Err(format!("{text:?}: expected zipfian or zipfian:THETA")),
    };
    if theta.is_nan() || theta <= 0.0 || theta >= 1.0 {
        return Err(format!("zipfian theta {theta} must lie strictly between 0 and 1"));
    }
    Ok(KeyDistribution::Zipfian { theta })
}

pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 =
        text.trim().trim_end_matches('s').parse().map_err(|_| format!("{text:?} is not seconds"))?;
    if secs.is_nan() || secs <= 0.0 || !secs.is_finite() {
        return Err(format!("{text:?}: a duration must be positive"));
    }
    let duration = Duration::from_secs_f64(secs);
    if duration > DURATION_MAX {
        return Err(format!("{text:?}: at most {} seconds", DURATION_MAX.as_secs()));
    }
    Ok(duration)
}

pub fn parse_durability(text: &str) -> Result<Durability, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "buffered" => Ok(Durability::Buffered),
        "commit" | "commit-to-device" => Ok(Durability::CommitToDevice),
        _ => Err(format!("{text:?}: expected buffered or commit")),
    }
}

pub fn parse_backend(text: &str) -> Result<IoBackend, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(IoBackend::Auto),
        "uring" | "io_uring" | "io-uring" => Ok(IoBackend::Uring),
        "blocking" | "pread" => Ok(IoBackend::Blocking),
        _ => Err(format!("{text:?}: expected auto, uring or blocking")),
    }
}

/// Checked options: everything the run needs that does not depend on the devices.
#[derive(Debug)]
pub struct Plan {
    pub devices: Vec<PathBuf>,
    pub format: bool,
    pub force: bool,
    pub size_bytes: Option<u64>,
    pub write_block_size: Option<u32>,
    pub namespace: Option<String>,
    pub records: Option<u64>,
    pub value_sizes: ValueSizes,
    pub workload: Workload,
    pub keys: KeyDistribution,
    pub load: bool,
    pub threads: usize,
    pub duration: Option<Duration>,
    pub ops: Option<u64>,
    pub rate_ops_s: Option<f64>,
    pub batch: usize,
    pub durability: Durability,
    pub defrag_lwm: Option<u8>,
    pub post_write_cache_bytes: Option<u64>,
    pub json: bool,
    pub act: Option<u32>,
    pub raw_only: bool,
    pub raw: bool,
    pub raw_duration: Duration,
    pub io_backend: IoBackend,
    pub interval: Duration,
    pub seed: u64,
    /// Through the wire: the server's address (no device, no raw measurement).
    pub server: Option<String>,
}

impl Plan {
    pub fn from_args(args: Args) -> Result<Plan> {
        if args.threads == 0 || args.threads > THREADS_MAX {
            bail!("--threads must be 1 to {THREADS_MAX}, got {}", args.threads);
        }
        if let Some(wbs) = args.write_block_size {
            let ok =
                wbs.is_power_of_two() && (WBLOCK_SIZE_MIN as u64..=WBLOCK_SIZE_MAX as u64).contains(&wbs);
            if !ok {
                bail!(
                    "--write-block-size {wbs} must be a power of two from {} KiB to {} MiB",
                    WBLOCK_SIZE_MIN >> 10,
                    WBLOCK_SIZE_MAX >> 20
                );
            }
        }
        if let Some(size) = args.size {
            if !args.devices.is_empty() && !args.format {
                bail!("--size creates or extends a file and needs --format");
            }
            if size < DEVICE_SIZE_MIN_BYTES {
                bail!(
                    "--size {size} is too small: a device needs at least {} MiB",
                    DEVICE_SIZE_MIN_BYTES >> 20
                );
            }
        }
        let owns_device = args.devices.is_empty() && args.server.is_none();
        if args.no_load && owns_device {
            bail!("--no-load reuses a device filled by an earlier run: name it with --device");
        }
        if args.no_load && args.format {
            bail!("--no-load reuses the records on the device; --format would erase them");
        }
        if owns_device && args.format {
            bail!("--format needs --device (without --device the bench formats its own temporary file)");
        }
        if args.ops == Some(0) {
            bail!("--ops must be positive");
        }
        if args.records == Some(0) && !args.no_load {
            bail!("--records must be positive");
        }
        if let Some(rate) = args.rate {
            if rate.is_nan() || rate <= 0.0 || !rate.is_finite() {
                bail!("--rate must be a positive number of operations per second");
            }
        }
        if args.batch.is_some_and(|b| b == 0 || b > BATCH_MAX) {
            bail!("--batch must be 1 to {BATCH_MAX}");
        }
        let paced = args.rate.is_some() || args.act.is_some();
        let batch = args.batch.unwrap_or(if paced { PACED_BATCH_DEFAULT } else { 1 });
        if let Some(lwm) = args.defrag_lwm {
            if lwm == 0 || lwm >= 100 {
                bail!("--defrag-lwm is a percentage from 1 to 99, got {lwm}");
            }
        }
        if let Some(n) = args.act {
            if n == 0 || n > ACT_MULTIPLIER_MAX {
                bail!("--act must be 1 to {ACT_MULTIPLIER_MAX}, got {n}");
            }
            if args.workload.is_some() || args.rate.is_some() || args.ops.is_some() {
                bail!("--act sets its own workload and rate; drop --workload, --rate and --ops");
            }
        }
        let workload = match (&args.workload, args.act) {
            (Some(text), _) => parse_workload(text)?,
            (None, Some(_)) => {
                let mut weights = [0; OP_KINDS];
                weights[OpKind::Read.index()] = 2;
                weights[OpKind::Update.index()] = 1;
                Workload { label: "ACT".into(), mix: Mix { weights }, preset_keys: None }
            }
            (None, None) => parse_workload("read=50,update=50")?,
        };
        let value_sizes = match args.act {
            Some(_) => {
                if args.value_size != (ValueSizes { min: 1024, max: 1024 }) {
                    bail!("--act writes {ACT_RECORD_BYTES}-byte records; drop --value-size");
                }
                let value = ACT_RECORD_BYTES - record_size(0, 0);
                debug_assert_eq!(record_size(0, value), ACT_RECORD_BYTES);
                ValueSizes { min: value, max: value }
            }
            None => args.value_size,
        };
        let wbs = args.write_block_size.map_or(WBLOCK_SIZE_DEFAULT as usize, |w| w as usize);
        if record_size(0, value_sizes.max) > wbs - WBLOCK_HEADER_SIZE {
            bail!(
                "--value-size {} does not fit a {wbs}-byte write block (at most {} bytes of value)",
                value_sizes.max,
                wbs - WBLOCK_HEADER_SIZE - RECORD_HEADER_SIZE
            );
        }
        if let Some(name) = &args.namespace {
            if name.is_empty() || name.len() > spike::offline::format::NAMESPACE_NAME_MAX {
                bail!("--namespace must be 1 to {} bytes", spike::offline::format::NAMESPACE_NAME_MAX);
            }
        }
        let seed = match args.seed {
            Some(seed) => seed,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("system clock before 1970")?
                .as_nanos() as u64,
        };
        let duration = match (args.duration, args.ops) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_DURATION),
        };
        Ok(Plan {
            keys: args.keys.or(workload.preset_keys).unwrap_or(KeyDistribution::Uniform),
            workload,
            devices: args.devices,
            format: args.format || owns_device,
            force: args.force,
            size_bytes: args.size,
            write_block_size: args.write_block_size.map(|w| w as u32),
            namespace: args.namespace,
            records: args.records,
            value_sizes,
            load: !args.no_load,
            threads: args.threads,
            duration,
            ops: args.ops,
            rate_ops_s: args.rate,
            batch,
            durability: args.durability,
            defrag_lwm: args.defrag_lwm,
            post_write_cache_bytes: args.post_write_cache,
            json: args.json,
            act: args.act,
            raw_only: args.raw,
            raw: !args.no_raw && args.server.is_none(),
            raw_duration: args.raw_duration,
            io_backend: args.io_backend,
            interval: args.interval,
            seed,
            server: args.server,
        })
    }

    /// Whether the bench created the device itself (a temporary file).
    pub fn owns_device(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan> {
        let mut all = vec!["spike-bench"];
        all.extend_from_slice(args);
        Plan::from_args(Args::try_parse_from(all)?)
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("2X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn value_sizes_reject_zero_and_inverted_ranges() {
        assert_eq!(parse_value_size("100..2000"), Ok(ValueSizes { min: 100, max: 2000 }));
        assert!(parse_value_size("0..0").is_err());
        assert!(parse_value_size("0").is_err());
        assert!(parse_value_size("10..5").is_err());
    }

    #[test]
    fn workloads_parse_mixes_and_presets() {
        let a = parse_workload("a").unwrap();
        assert_eq!(a.mix.weight(OpKind::Read), 50);
        assert_eq!(a.preset_keys, Some(YCSB_ZIPFIAN));
        let f = parse_workload("f").unwrap();
        assert_eq!(f.mix.weight(OpKind::ReadModifyWrite), 50);
        let mix = parse_workload("read=90, delete=10").unwrap().mix;
        assert_eq!(mix.weight(OpKind::Delete), 10);
        assert_eq!(parse_workload("insert").unwrap().mix.weight(OpKind::Insert), 100);
        assert!(parse_workload("read=0").is_err());
        assert!(parse_workload("scan=5").is_err());
    }

    #[test]
    fn mix_picks_each_kind_by_weight() {
        let mix = parse_workload("read=2,update=1").unwrap().mix;
        assert_eq!(mix.pick(0), OpKind::Read);
        assert_eq!(mix.pick(1), OpKind::Read);
        assert_eq!(mix.pick(2), OpKind::Update);
    }

    #[test]
    fn key_distributions_parse() {
        assert_eq!(parse_keys("uniform"), Ok(KeyDistribution::Uniform));
        assert_eq!(parse_keys("zipfian"), Ok(KeyDistribution::Zipfian { theta: 0.99 }));
        assert_eq!(parse_keys("zipfian:0.5"), Ok(KeyDistribution::Zipfian { theta: 0.5 }));
        assert!(parse_keys("zipfian:1").is_err());
        assert!(parse_keys("zipf").is_err());
    }

    #[test]
    fn bad_options_are_errors_not_panics() {
        assert!(plan(&["--threads", "0"]).is_err());
        assert!(plan(&["--value-size", "0..0"]).is_err());
        assert!(plan(&["--size", "1M"]).is_err());
        assert!(plan(&["--no-load"]).is_err());
        assert!(plan(&["--write-block-size", "100K"]).is_err());
        assert!(plan(&["--value-size", "200K", "--write-block-size", "128K"]).is_err());
        assert!(plan(&["--act", "0"]).is_err());
        assert!(plan(&["--device", "/x", "--size", "1G"]).is_err());
        assert!(plan(&["--rate=-5"]).is_err());
        assert!(plan(&["--batch", "0"]).is_err());
    }

    #[test]
    fn defaults_run_thirty_seconds_of_read_update_on_uniform_keys() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.duration, Some(DEFAULT_DURATION));
        assert_eq!(plan.keys, KeyDistribution::Uniform);
        assert_eq!(plan.workload.mix.weight(OpKind::Update), 50);
        assert!(plan.format && plan.owns_device() && plan.raw && plan.load);
    }

    #[test]
    fn act_uses_1536_byte_records_and_a_two_to_one_mix() {
        let plan = plan(&["--act", "3"]).unwrap();
        assert_eq!(record_size(0, plan.value_sizes.max), ACT_RECORD_BYTES);
        assert_eq!(plan.workload.mix.weight(OpKind::Read), 2 * plan.workload.mix.weight(OpKind::Update));
    }
}
