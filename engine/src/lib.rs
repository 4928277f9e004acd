//! Spike: a storage engine for raw flash devices.
//!
//! A primary index in RAM ([`index`]) points at records laid out in fixed-size write
//! blocks ([`format`]) on one or more devices ([`device`]), written and read with direct
//! I/O. See `ARCHITECTURE.md` at the repository root for how a write, a read and a restart
//! flow through the modules.
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
mod by_digest;
pub mod change_bitmap;
mod config;
mod defrag;
mod defrag_policy;
pub mod device;
mod disk;
mod engine;
mod error;
mod expiry;
#[cfg(feature = "failpoints")]
pub mod failpoint;
#[cfg(not(feature = "failpoints"))]
mod failpoint;
pub mod format;
pub mod index;
mod janitor;
pub mod limits;
#[cfg(all(test, loom))]
mod loom_model;
pub mod namespace;
mod read;
mod record_core;
mod recovery;
mod replica;
pub mod snapshot;
mod stats;
mod sync;
mod tombstone;
mod write;

pub use by_digest::{Change, BATCH_DIGESTS_MAX};
pub use config::{Config, Durability, WriteOptions, WritePolicy};
pub use engine::{BackgroundRound, Engine, GET_MANY_KEYS_MAX};
pub use error::{Error, Result};
pub use format::{Digest, DIGEST_SIZE};
pub use read::Record;
pub use record_core::Written;
pub use recovery::device_of;
pub use replica::{Applied, ReplicaCopy};
pub use stats::{DeviceStats, OpErrors, OpLatency, RecoveryStats, Stats, OP_NAMES};
