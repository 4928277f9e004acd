//! Synchronisation primitives of the concurrent core (disk state, live byte counts,
//! index partitions): std's normally, loom's under `--cfg loom`, so that the loom model in
//! `disk::loom_model` explores every interleaving of the real code.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU32},
    Condvar, Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU32},
    Condvar, Mutex, MutexGuard,
};
