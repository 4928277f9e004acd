//! Finding, creating and safety-checking the devices a run uses.
//!
//! The one rule: the bench never writes to a device the user did not name, and never
//! destroys what a named device holds unless told to (`--format`, and `--force` for data
//! that is not Spike's). Each device is opened once, through the engine's own I/O layer,
//! and that handle (holding the exclusive lock) serves the raw measurement, the format
//! and the engine, so nothing else can take the device between the steps.
//!
//! The default run's file is unlinked as soon as it is open: the descriptor keeps it alive
//! until the process exits, however it exits, and nothing is left behind in the temp dir.

use super::options::{Plan, DEFAULT_FILE_SIZE_BYTES, DEVICE_SIZE_MIN_BYTES};
use super::report::Out;
use anyhow::{anyhow, bail, Context as _, Result};
use spike::device::{self, AlignedBuf, Device, IO_ALIGN};
use spike::offline::format::DeviceHeader;
use spike::offline::namespace::{probe, DeviceContent};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Size of each write that fills a new file (one direct write in flight).
const FILL_CHUNK_BYTES: usize = 8 << 20;
const _: () = assert!(FILL_CHUNK_BYTES % IO_ALIGN == 0);

pub struct Prepared {
    pub devices: Vec<Arc<dyn Device>>,
    /// Paths as the user named them, or a description of the temporary file.
    pub labels: Vec<String>,
    /// The devices' contents are the bench's to destroy (temporary file or `--format`).
    pub destroyable: bool,
    /// When reusing a Spike device: the first device's header.
    pub existing: Option<DeviceHeader>,
}

pub fn prepare(plan: &Plan, out: &Out) -> Result<Prepared> {
    if plan.owns_device() {
        return prepare_temporary(plan, out);
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut devices = Vec::new();
    let mut existing = None;
    for path in &plan.devices {
        if let Ok(canonical) = std::fs::canonicalize(path) {
            if seen.contains(&canonical) {
                bail!("{} is named twice", path.display());
            }
            seen.push(canonical);
        }
        let fill_from = if plan.format { create_or_extend(path, plan.size_bytes)? } else { None };
        let device = device::open(path, plan.io_backend).map_err(|e| anyhow!(e)).with_context(|| {
            match (plan.format, path.exists()) {
                (true, false) => format!("{} does not exist: give --size to create it", path.display()),
                _ => format!("cannot open device {}", path.display()),
            }
        })?;
        check_content(plan, path, device.as_ref(), &mut existing)?;
        if let Some(from) = fill_from {
            fill(device.as_ref(), from, out)?;
        }
        devices.push(device);
    }
    Ok(Prepared {
        devices,
        labels: plan.devices.iter().map(|p| p.display().to_string()).collect(),
        destroyable: plan.format,
        existing,
    })
}

/// Creates or extends a file to `--size`; returns the offset from which it needs filling.
fn create_or_extend(path: &Path, size_bytes: Option<u64>) -> Result<Option<u64>> {
    let metadata = std::fs::metadata(path).ok();
    let is_block = metadata.as_ref().is_some_and(|m| m.file_type().is_block_device());
    let Some(size) = size_bytes else { return Ok(None) };
    if is_block {
        bail!("--size applies to files; {} is a block device with its own size", path.display());
    }
    let old_len = metadata.map_or(0, |m| m.len());
    if old_len >= size {
        if old_len > size {
            bail!(
                "{} is already {old_len} bytes, larger than --size {size}: the bench never shrinks a file",
                path.display()
            );
        }
        return Ok(None);
    }
    device::create_file(path, size).map_err(|e| anyhow!(e))?;
    Ok(Some(old_len / IO_ALIGN as u64 * IO_ALIGN as u64))
}

/// What may be done with a device is decided by what it holds.
fn check_content(
    plan: &Plan,
    path: &Path,
    device: &dyn Device,
    existing: &mut Option<DeviceHeader>,
) -> Result<()> {
    let content = probe(device).map_err(|e| anyhow!(e))?;
    let name = path.display();
    if plan.format {
        if device.size_bytes() < DEVICE_SIZE_MIN_BYTES {
            bail!(
                "{name} is {} bytes; the bench needs at least {} MiB",
                device.size_bytes(),
                DEVICE_SIZE_MIN_BYTES >> 20
            );
        }
        return match content {
            DeviceContent::Blank | DeviceContent::Spike(_) => Ok(()),
            DeviceContent::BadSpike(reason) | DeviceContent::Foreign(reason) if !plan.force => {
                bail!("refusing to format {name}: {reason}; add --force to format it anyway")
            }
            DeviceContent::BadSpike(_) | DeviceContent::Foreign(_) => Ok(()),
        };
    }
    match content {
        DeviceContent::Spike(header) => {
            existing.get_or_insert(*header);
            Ok(())
        }
        DeviceContent::Blank => bail!("{name} is blank, not a Spike device: add --format to format it"),
        DeviceContent::BadSpike(reason) | DeviceContent::Foreign(reason) => {
            bail!("{name} is not a usable Spike device ({reason}); --format formats it")
        }
    }
}

fn prepare_temporary(plan: &Plan, out: &Out) -> Result<Prepared> {
    let size = plan.size_bytes.unwrap_or(DEFAULT_FILE_SIZE_BYTES);
    let dir = tempfile::Builder::new()
        .prefix("spike-bench-")
        .tempdir()
        .context("cannot create a temporary directory (set TMPDIR, or use --device)")?;
    let path = dir.path().join("device");
    let created = device::create_file(&path, size).map_err(|e| anyhow!(e));
    let opened = created.and_then(|_| device::open(&path, plan.io_backend).map_err(|e| anyhow!(e)));
    // Unlinked now: the open descriptor keeps the file until the process exits.
    let _ = std::fs::remove_file(&path);
    let dir_path = dir.path().to_path_buf();
    dir.close().with_context(|| format!("cannot remove {}", dir_path.display()))?;
    let device = opened.with_context(|| {
        format!(
            "cannot use a file device in {} (it must be on a file system with O_DIRECT, not tmpfs: \
             set TMPDIR to a directory on disk, or use --device)",
            std::env::temp_dir().display()
        )
    })?;
    fill(device.as_ref(), 0, out)?;
    Ok(Prepared {
        labels: vec![format!("{} (temporary, removed at exit)", path.display())],
        devices: vec![device],
        destroyable: true,
        existing: None,
    })
}

/// Writes zeros over `[from, size)` of a new file and syncs. A file's first write to a
/// range allocates its blocks, which a device never does and which makes both the raw
/// measurement and the engine slower by a file-system cost; and reads of a hole never
/// reach the device. After this the file behaves like a device.
fn fill(device: &dyn Device, from: u64, out: &Out) -> Result<()> {
    let end = device.size_bytes();
    if from >= end {
        return Ok(());
    }
    let start = Instant::now();
    let buf = AlignedBuf::zeroed(FILL_CHUNK_BYTES);
    let mut offset = from;
    let mut last_progress = Instant::now();
    while offset < end {
        let len = (end - offset).min(FILL_CHUNK_BYTES as u64) as usize;
        device.write_at(&buf[..len], offset).map_err(|e| anyhow!(e))?;
        offset += len as u64;
        if last_progress.elapsed().as_millis() >= 500 {
            last_progress = Instant::now();
            out.progress(&format!(
                "preparing {}: writing the file once so that it has no holes ({:.0}%)",
                device.name(),
                (offset - from) as f64 * 100.0 / (end - from) as f64
            ));
        }
    }
    device.sync().map_err(|e| anyhow!(e))?;
    out.progress_done(&format!(
        "prepared {}: wrote {} once so that it has no holes ({:.1} s)",
        device.name(),
        super::report::bytes(end - from),
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}
