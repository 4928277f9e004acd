//! `spike-backup`: block-level full and incremental images of Spike devices, offline.
//!
//! - [`image`]: the image file format and its checked reader; [`writer`]: the atomic writer.
//! - [`chain`]: a full image and its incrementals checked as one chain; `merge`.
//! - [`source`]: the device side: opening a device under the engine's exclusive lock,
//!   telling blocks in use from free ones, reading many blocks at once.
//! - [`capture`]: `full` and `incr`: device to image, then a new bitmap generation.
//! - [`restore`]: `restore` and `verify`: image chain to device, and checks.
//! - [`progress`]: progress line and `--max-rate`.
//!
//! What "in use" means (the same rule as the engine's cold start and `spike-inspect`): a
//! write block whose header decodes as a data or snapshot block of this device (its UUID)
//! at its own index. Anything else is free: never copied, recorded as free, and restored as
//! a free header page so that nothing stale on the target can come back.

pub mod capture;
pub mod chain;
pub mod image;
pub mod progress;
pub mod restore;
pub mod source;
pub mod writer;

pub(crate) fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub use crate::text::{human_bytes, utc_time};
