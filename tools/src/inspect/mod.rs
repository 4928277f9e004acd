//! The inspection behind `spike-inspect`: looks at one Spike device offline and never
//! writes to it.
//!
//! This module owns opening a device for inspection (`Opened`) and the exit codes; the
//! subcommands each have their own module: [`header`] (the device header, both slots),
//! [`stats`] (space use and block fill), [`check`] (every block header and record, with the
//! rule documented there) and [`records`] (every live record, one line each, sorted by
//! digest, so that two devices can be diffed). `scan` reads every write block once and
//! keeps the newest copy of each record; `walk` judges one data block's layout.
//!
//! The device is opened like the engine opens it (`O_DIRECT`, exclusive lock), so the
//! tool refuses a device that an engine or `spike-backup` holds, and an engine cannot
//! start on a device while it is being inspected. Nothing here calls `write_at` or `sync`.
//!
//! Cost: one pass over the write-block area in large sequential reads (8 MiB batches,
//! one batch read ahead by a reader thread while the previous one is parsed), one xxh3
//! per record for its checksum and one more over each value. RAM: 16 MiB of buffers, a
//! few bytes per write block, and about 80 bytes per distinct record (the newest copy of
//! each), like the engine's own index.
//!
//! Exit codes: 0 consistent (or the listing succeeded), [`EXIT_INCONSISTENT`] `check`
//! found inconsistencies, [`EXIT_CANNOT_INSPECT`] the device could not be inspected (in
//! use, not a Spike device, I/O error) or bad usage.

pub mod check;
pub mod header;
pub mod records;
mod scan;
pub mod stats;
mod walk;

use anyhow::{anyhow, bail, Context, Result};
use spike::device::{self, Device, IoBackend};
use spike::offline::format::DeviceHeader;
use spike::offline::namespace::{probe, DeviceContent};
use std::path::Path;
use std::sync::Arc;

/// `check` found inconsistencies.
pub const EXIT_INCONSISTENT: u8 = 1;
/// The device could not be inspected (in use, not a Spike device, I/O error) or bad usage.
pub const EXIT_CANNOT_INSPECT: u8 = 2;

/// An opened, locked Spike device and its header in force.
struct Opened {
    device: Arc<dyn Device>,
    header: DeviceHeader,
}

impl Opened {
    fn open(path: &Path) -> Result<Opened> {
        // `device::open` takes the same exclusive lock as the engine. It opens read-write
        // because that is the only way it opens; nothing below ever writes.
        let device = device::open(path, IoBackend::Auto).map_err(|err| match err {
            spike::Error::DeviceInUse { .. } => anyhow!(
                "{err}: an engine or spike-backup is using it; spike-inspect only reads devices \
                 that nothing else holds"
            ),
            other => anyhow!(other),
        })?;
        let content =
            probe(device.as_ref()).with_context(|| format!("reading the header of {}", path.display()))?;
        let header = match content {
            DeviceContent::Spike(header) => *header,
            DeviceContent::Blank => {
                bail!(
                    "{}: not a Spike device: blank (all zeroes at the start), never formatted",
                    path.display()
                )
            }
            DeviceContent::Foreign(reason) => bail!("{}: not a Spike device: {reason}", path.display()),
            DeviceContent::BadSpike(reason) => bail!("{}: unusable Spike device: {reason}", path.display()),
        };
        Ok(Opened { device, header })
    }

    fn name(&self) -> &str {
        self.device.name()
    }

    /// The block area must lie on the device before anything scans it.
    fn check_span(&self) -> Result<()> {
        let span = self.header.device_span_bytes();
        if span > self.device.size_bytes() {
            bail!(
                "{}: the device is {} bytes but its header describes {span} bytes (truncated?)",
                self.name(),
                self.device.size_bytes()
            );
        }
        Ok(())
    }
}
