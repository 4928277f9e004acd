//! The engine's one error type. Every variant carries what an operator needs to act:
//! the device, the offset, the expected and found values. Corruption (bytes that fail
//! a check) is distinct from I/O failure (the device refused).

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("record not found")]
    NotFound,
    #[error("record already exists (create-only put)")]
    AlreadyExists,
    #[error("generation mismatch: expected {expected}, record is at {found}")]
    GenerationMismatch { expected: u32, found: u32 },
    #[error("record generation exhausted (2^31 - 1 updates)")]
    GenerationExhausted,
    #[error("record too big: {size_bytes} bytes, the maximum is {max_bytes}")]
    RecordTooBig { size_bytes: usize, max_bytes: usize },
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    #[error("out of space on {device}: {detail}")]
    OutOfSpace { device: String, detail: String },
    #[error("device {device} overloaded: {queued} write blocks queued, waited {waited_ms} ms")]
    DeviceOverloaded { device: String, queued: usize, waited_ms: u64 },
    #[error("I/O error on {device} at offset {offset}: {source}")]
    Io { device: String, offset: u64, source: io::Error },
    #[error("device {device} failed an earlier write or sync and accepts no more writes")]
    DeviceFailed { device: String },
    #[error("write to {device} is in doubt: it was accepted but is not known to be durable ({reason})")]
    InDoubt { device: String, reason: String },
    #[error("the engine stopped taking writes: {reason}")]
    EngineFailed { reason: String },
    #[error("corrupt data on {device} at offset {offset}: {reason}")]
    Corrupt { device: String, offset: u64, reason: String },
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path} is in use by another process (exclusive lock held)")]
    DeviceInUse { path: PathBuf },
    #[error("{path} refused: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("partition {partition} out of range: partitions are 0..{count}")]
    InvalidPartition { partition: usize, count: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("engine is shut down")]
    ShutDown,
}

impl Error {
    pub(crate) fn io(device: &str, offset: u64, source: io::Error) -> Self {
        Error::Io { device: device.to_string(), offset, source }
    }

    pub(crate) fn corrupt(device: &str, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt { device: device.to_string(), offset, reason: reason.into() }
    }

    pub(crate) fn refused(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Refused { path: path.into(), reason: reason.into() }
    }
}
