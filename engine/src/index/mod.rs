//! The primary index: every record's digest → where it lies, its generation and void time.
//!
//! Each of the 4096 partitions (`partition`) keeps its entries (`entry`, 28 bytes each) in
//! sprigs, small sorted runs that split as they fill, so that inserts, lookups and removes
//! cost the same at a billion records as at ten million. The partition number is implied by
//! the digest's first 12 bits and the device by bytes 2..4, so an entry stores 96 of the
//! digest's bits; a read still compares the full digest stored on the device, and a
//! caller-supplied digest is compared with the record's before a write replaces it. Two
//! digests that agree in all 96 bits (crafted) are both kept, named by full digest
//! (`shared`). Sprigs and directories live in the index's arena (`arena`) of huge pages.
//!
//! Concurrency: one mutex per partition; callers hold it only to copy or update an entry,
//! never across I/O (the read path copies the location and lets go). The arena's mutexes
//! (one per slot size) are taken under a partition's, never the other way.

mod arena;
mod entry;
mod partition;
mod shared;

#[cfg_attr(not(feature = "offline"), allow(unused_imports))] // the tools read them via `offline::index`
pub use entry::{
    DigestTag, EntryInfo, IndexEntry, Location, DEVICES_MAX, DEVICE_BYTES_MAX, ENTRY_BYTES, GENERATION_MAX,
};
#[cfg_attr(not(feature = "offline"), allow(unused_imports))] // the benches size partitions by it
pub use partition::{Partition, SPRIG_ENTRIES_MAX};
pub use shared::EntryName;

use crate::sync::{Mutex, MutexGuard};
use arena::ArenaRef;

pub use crate::format::partition_of;
pub use crate::limits::PARTITION_COUNT;

/// Hands the pages of freed heap memory back to the kernel (the index's own memory is in
/// its arena, compacted by `Index::compact_arena`; this returns what the scan buffers,
/// snapshots and other heap users freed). Run after recovery and every
/// `HEAP_TRIM_INTERVAL` by the janitor. A no-op off glibc.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often the janitor compacts the index's arena and hands freed heap pages back
/// ([`trim_heap`]).
pub const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct PoisonOnPanic<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// The whole index: 4096 partitions, each behind its own mutex.
pub struct Index {
    partitions: Box<[Mutex<Partition>]>,
    /// The sprigs' memory (`arena`).
    arena: ArenaRef,
    /// Set when a partition lock is found poisoned (a thread panicked half-way through
    /// an update): the engine then refuses writes, since that partition may be inconsistent.
    poisoned: std::sync::atomic::AtomicBool,
}

impl Default for Index {
    fn default() -> Self {
        Index::new(1)
    }
}

impl Index {
    /// An empty index of a namespace with `device_count` devices, its memory on huge
    /// pages as it grows.
    pub fn new(device_count: u8) -> Self {
        let index = Index::for_restart(device_count);
        index.arena.arena().set_huge_pages(true);
        index
    }

    /// An empty index for a restart to fill: its memory on small pages until
    /// [`Index::use_huge_pages`] (see `Arena::set_huge_pages`).
    pub fn for_restart(device_count: u8) -> Self {
        let arena = ArenaRef::default();
        Index {
            partitions: (0..PARTITION_COUNT)
                .map(|_| Mutex::new(Partition::new(device_count, arena.clone())))
                .collect(),
            arena,
            poisoned: Default::default(),
        }
    }

    pub fn partition(&self, partition: usize) -> MutexGuard<'_, Partition> {
        self.lock(&self.partitions[partition])
    }

    fn lock<'a>(&self, partition: &'a Mutex<Partition>) -> MutexGuard<'a, Partition> {
        partition.lock().unwrap_or_else(|poisoned| {
            if !self.poisoned.swap(true, std::sync::atomic::Ordering::AcqRel) {
                log::error!(
                    "an index partition lock is poisoned (a thread panicked holding it); no more writes"
                );
            }
            poisoned.into_inner()
        })
    }

    /// A guard to hold across an update of a partition: if the thread panics before it
    /// is dropped, the index is marked poisoned at once (rather than when some later
    /// caller happens to lock the same partition).
    pub fn poison_on_panic(&self) -> PoisonOnPanic<'_> {
        PoisonOnPanic(&self.poisoned)
    }

    /// Whether a thread panicked while holding a partition lock.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Tombstone entries (tombstones and expired records kept as such) over all partitions.
    pub fn tombstone_count(&self) -> u64 {
        self.partitions.iter().map(|p| self.lock(p).tombstones() as u64).sum()
    }

    /// Moves sprigs out of the arena's sparse chunks so that those chunks go back to the
    /// kernel (`arena`'s compaction); returns the bytes unmapped. Locks one partition at a
    /// time; costs a look at each sprig, and a copy of those it moves.
    pub fn compact_arena(&self) -> usize {
        let arena = self.arena.arena();
        let before = arena.mapped_bytes();
        arena.plan_drain();
        for partition in self.partitions.iter() {
            self.lock(partition).move_draining_sprigs();
        }
        before.saturating_sub(arena.mapped_bytes())
    }

    /// Puts the memory mapped from now on onto huge pages (what was mapped before waits for
    /// [`Index::collapse_some`]).
    pub fn use_huge_pages(&self) {
        self.arena.arena().set_huge_pages(true);
    }

    /// Moves up to `max_chunks` of the index's 2 MiB chunks that a restart filled onto huge
    /// pages; returns how many. The janitor calls it each round until none is left.
    pub fn collapse_some(&self, max_chunks: usize) -> usize {
        self.arena.arena().collapse_some(max_chunks)
    }

    /// Bytes the index's arena has mapped (sprigs and directories, free slots included):
    /// what they cost in RSS.
    pub fn arena_mapped_bytes(&self) -> usize {
        self.arena.arena().mapped_bytes()
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // index_footprint prints it
    /// Per slot class of the arena: (chunks mapped, slots handed out, slots a chunk holds).
    pub fn arena_class_usage(&self) -> Vec<(usize, usize, usize)> {
        self.arena.arena().class_usage()
    }

    /// (entries, allocated bytes) over all partitions.
    pub fn usage(&self) -> (u64, u64) {
        let mut entries = 0u64;
        let mut bytes = std::mem::size_of_val(&*self.partitions) as u64;
        for partition in self.partitions.iter() {
            let p = self.lock(partition);
            entries += p.len() as u64;
            bytes += p.allocated_bytes() as u64;
        }
        (entries, bytes)
    }
}
