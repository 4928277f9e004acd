//! Spike: a storage engine for raw flash devices.
//!
//! A primary index in RAM points at records laid out in fixed-size write blocks on one or
//! more devices ([`device`]), written and read with direct I/O. See `ARCHITECTURE.md` at
//! the repository root for how a write, a read and a restart flow through the modules.
//!
//! The public surface is [`Engine`] and what its methods take and return, [`device`] (the
//! seam an embedding server's tests use with the simulated device) and [`limits`]. The
//! bundled tools read devices offline through the `offline` feature's module.
//!
//! ```no_run
//! use spike::{Config, Engine, WriteOptions};
//! let config = Config { devices: vec!["/dev/nvme0n1".into()], ..Config::default() };
//! let engine = Engine::open(config)?;
//! engine.put(b"user:1", b"hello", &WriteOptions::default())?;
//! assert_eq!(engine.get(b"user:1")?.value, b"hello");
//! engine.close()?;
//! # Ok::<(), spike::Error>(())
//! ```

mod block_table;
mod change_bitmap;
mod config;
mod defrag;
mod defrag_policy;
pub mod device;
mod device_scan;
mod disk;
mod engine;
mod error;
mod expiry;
#[cfg(feature = "failpoints")]
pub mod failpoint;
#[cfg(not(feature = "failpoints"))]
mod failpoint;
mod format;
mod index;
mod janitor;
pub mod limits;
#[cfg(all(test, loom))]
mod loom_model;
mod namespace;
mod post_write_cache;
mod read;
mod record_core;
mod recovery;
mod snapshot;
mod stats;
mod sync;
mod tombstone;
mod write;

pub use config::{Config, Durability, WriteOptions, WritePolicy};
pub use engine::{Applied, BackgroundRound, Change, Engine, ReplicaCopy};
pub use error::{Error, Result};
pub use format::{partition_of, Digest};
pub use read::Record;
pub use record_core::Written;
pub use stats::{DeviceStats, OpErrors, OpLatency, RecoveryStats, Stats, OP_NAMES};

/// The device layout and offline access to a namespace's devices, for the bundled tools
/// (`spike-inspect`, `spike-backup`, `spike-bench`) and the project's own tests, benches
/// and fuzz targets: byte formats, the index's internals, namespace probing and headers,
/// the change bitmap and the snapshot codec. Behind the `offline` feature because it is
/// not an API an embedding server should build on: it changes with the format.
#[cfg(feature = "offline")]
pub mod offline {
    pub mod change_bitmap {
        pub use crate::change_bitmap::*;
    }
    pub mod device_scan {
        pub use crate::device_scan::*;
    }
    pub mod format {
        pub use crate::format::*;
    }
    pub mod index {
        pub use crate::index::*;
    }
    pub mod namespace {
        pub use crate::namespace::*;
    }
    pub mod snapshot {
        pub use crate::snapshot::*;
    }
}
