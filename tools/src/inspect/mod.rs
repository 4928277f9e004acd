//! The inspection behind `spike-inspect`: looks at one Spike device offline and never
//! writes to it.
//!
//! This module owns opening a device for inspection (`open`, the engine's offline open) and the exit codes; the
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

use anyhow::{anyhow, Result};
use std::path::Path;

/// `check` found inconsistencies.
pub const EXIT_INCONSISTENT: u8 = 1;
/// The device could not be inspected (in use, not a Spike device, I/O error) or bad usage.
pub const EXIT_CANNOT_INSPECT: u8 = 2;

/// An opened, locked Spike device and its header in force: the engine's one offline open.
use spike::offline::namespace::OfflineDevice as Opened;

/// Opens a device for inspection, saying what to do when something else holds it.
fn open(path: &Path) -> Result<Opened> {
    spike::offline::namespace::open_offline(path).map_err(|err| match err {
        spike::Error::DeviceInUse { .. } => anyhow!(
            "{err}: an engine or spike-backup is using it; spike-inspect only reads devices \
             that nothing else holds"
        ),
        other => anyhow!(other),
    })
}
