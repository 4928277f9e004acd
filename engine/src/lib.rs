//! Spike: a storage engine for raw flash devices.
//!
//! A primary index in RAM ([`index`]) points at records laid out in fixed-size write
//! blocks ([`format`]) on one or more devices ([`device`]), written and read with direct
//! I/O. See `ARCHITECTURE.md` at the repository root for how a write, a read and a restart
//! flow through the modules.

pub mod device;
mod error;
pub mod format;
pub mod index;

pub use error::{Error, Result};
