//! The primary index: every record's digest → where it lies, its generation and void time.
//!
//! Memory budget: 28 bytes per entry (checked at compile time) plus about 3% slack, so
//! under 32 bytes per record at 10 million records (Aerospike spends 64). The trick is to
//! not use a hash table (whose load factor costs 15-100%): each of the 4096 partitions
//! keeps a sorted vector plus a small unsorted vector of recent inserts that is merged in
//! (one backwards pass, no allocation while capacity lasts) when it fills. The partition
//! number and the device are implied by the digest bits not stored, so an entry keeps
//! 96 of the digest's 128 bits: enough that two keys of one partition never collide in
//! practice, and a read still compares the full digest stored on the device.
//!
//! Cost: a lookup is an interpolation search of the sorted run (tags are uniform, so the
//! first guess lands within a few cache lines of the entry) and, on a miss there, a scan of
//! at most [`RECENT_MAX`] recent entries. An insert is amortised O(partition size /
//! RECENT_MAX) bytes moved.
//!
//! Concurrency: one mutex per partition; callers hold it only to copy or update an entry,
//! never across I/O (the read path copies the location and lets go).

use crate::format::Digest;
use crate::sync::{Mutex, MutexGuard};

pub const PARTITION_COUNT: usize = 4096;
/// Unsorted inserts a partition buffers before merging them into its sorted run.
pub const RECENT_MAX: usize = 32;

/// Hands the pages of freed heap memory back to the kernel. A growing partition is
/// reallocated and glibc keeps the old allocation's pages mapped, so an index grown insert
/// by insert holds about 38 bytes of RSS per 29 allocated per entry (10 M entries) until
/// this runs, 30 after. About 10 ms over a 300 MB heap the first time, 1 ms after; run after
/// recovery and every `HEAP_TRIM_INTERVAL` by the janitor. A no-op off glibc.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often the janitor hands freed heap pages back ([`trim_heap`]).
pub const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Partition of a digest: its first 12 bits.
pub fn partition_of(digest: &Digest) -> usize {
    (u16::from_le_bytes([digest[0], digest[1]]) as usize) & (PARTITION_COUNT - 1)
}

/// The part of a digest an entry stores (bytes 4..16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DigestTag {
    pub hi: u64,
    pub lo: u32,
}

impl DigestTag {
    pub fn of(digest: &Digest) -> Self {
        DigestTag {
            hi: u64::from_be_bytes(digest[4..12].try_into().unwrap_or_default()),
            lo: u32::from_be_bytes(digest[12..16].try_into().unwrap_or_default()),
        }
    }
}

/// A record's place on a device, packed into 64 bits: device (5 bits), offset in 16-byte
/// units (40 bits: 16 TiB per device), size in 16-byte units (19 bits: 8 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub device: u8,
    pub offset_bytes: u64,
    pub size_bytes: u32,
}

pub const DEVICES_MAX: usize = 32;
pub const DEVICE_BYTES_MAX: u64 = 16 << 40;
const UNIT: u64 = crate::format::RECORD_ALIGN as u64;
const _: () = assert!(
    ((crate::format::WBLOCK_SIZE_MAX as u64 - crate::format::WBLOCK_HEADER_SIZE as u64) / UNIT) < (1 << 19)
);

impl Location {
    fn pack(self) -> u64 {
        debug_assert!(self.offset_bytes % UNIT == 0 && self.size_bytes as u64 % UNIT == 0);
        debug_assert!((self.device as usize) < DEVICES_MAX && self.offset_bytes < DEVICE_BYTES_MAX);
        (self.device as u64) << 59 | (self.offset_bytes / UNIT) << 19 | (self.size_bytes as u64 / UNIT)
    }

    fn unpack(packed: u64) -> Self {
        Location {
            device: (packed >> 59) as u8,
            offset_bytes: ((packed >> 19) & ((1 << 40) - 1)) * UNIT,
            size_bytes: ((packed & ((1 << 19) - 1)) * UNIT) as u32,
        }
    }
}

const TOMBSTONE_BIT: u32 = 1 << 31;
/// Marks a slot of the sorted run whose entry was removed (compacted at the next merge).
const REMOVED: u64 = u64::MAX;

/// One index entry: 28 bytes, 4-byte aligned.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
pub struct IndexEntry {
    tag_hi: u64,
    tag_lo: u32,
    /// Generation in the low 31 bits; the top bit marks a tombstone (or an expired record
    /// kept so that an older copy on the device cannot come back).
    generation: u32,
    location: u64,
    void_time: u32,
}
const _: () = assert!(std::mem::size_of::<IndexEntry>() == 28);

/// The entry's fields, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub tag: DigestTag,
    pub generation: u32,
    pub tombstone: bool,
    pub location: Location,
    pub void_time: u32,
}

pub const GENERATION_MAX: u32 = TOMBSTONE_BIT - 1;

impl IndexEntry {
    pub fn new(info: EntryInfo) -> Self {
        debug_assert!(info.generation <= GENERATION_MAX);
        IndexEntry {
            tag_hi: info.tag.hi,
            tag_lo: info.tag.lo,
            generation: info.generation | if info.tombstone { TOMBSTONE_BIT } else { 0 },
            location: info.location.pack(),
            void_time: info.void_time,
        }
    }

    pub fn info(&self) -> EntryInfo {
        let generation = self.generation;
        EntryInfo {
            tag: self.tag(),
            generation: generation & GENERATION_MAX,
            tombstone: generation & TOMBSTONE_BIT != 0,
            location: Location::unpack(self.location),
            void_time: self.void_time,
        }
    }

    /// The 28 bytes a snapshot stores, little-endian.
    pub fn to_bytes(&self) -> [u8; 28] {
        let mut out = [0u8; 28];
        let (tag_hi, tag_lo, generation, location, void_time) =
            (self.tag_hi, self.tag_lo, self.generation, self.location, self.void_time);
        out[0..8].copy_from_slice(&tag_hi.to_le_bytes());
        out[8..12].copy_from_slice(&tag_lo.to_le_bytes());
        out[12..16].copy_from_slice(&generation.to_le_bytes());
        out[16..24].copy_from_slice(&location.to_le_bytes());
        out[24..28].copy_from_slice(&void_time.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8; 28]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        IndexEntry {
            tag_hi: u64_at(0),
            tag_lo: u32_at(8),
            generation: u32_at(12),
            location: u64_at(16),
            void_time: u32_at(24),
        }
    }

    fn tag(&self) -> DigestTag {
        DigestTag { hi: self.tag_hi, lo: self.tag_lo }
    }

    fn is_removed(&self) -> bool {
        self.location == REMOVED
    }
}

/// One partition's entries: a sorted run and a few recent inserts.
#[derive(Default)]
pub struct Partition {
    sorted: Vec<IndexEntry>,
    recent: Vec<IndexEntry>,
    removed_in_sorted: usize,
    /// Highest generation of a tombstone reclaimed from this partition: a key re-created
    /// after its tombstone is gone starts above it, so that it beats the tombstone's copy
    /// should that copy still be on a device at the next cold start.
    generation_floor: u32,
    /// Live entries that are tombstones (or expired records kept as such), kept current by
    /// `upsert` and `remove` so that deciding whether a reclaim scan is worth it does not
    /// walk the index.
    tombstones: u32,
    /// A lower bound on the void time of every live entry with a TTL (0: none has one),
    /// lowered by `upsert` and made exact by the expiry pass, so that a pass skips the
    /// partitions where nothing can be due without walking them.
    next_expiry_s: u32,
}

impl Partition {
    /// Whether an entry of this partition may be past its void time at `now_s`.
    pub fn expiry_may_be_due(&self, now_s: u32) -> bool {
        self.next_expiry_s != 0 && self.next_expiry_s <= now_s
    }

    /// Sets the bound after a walk found `void_time_min` the soonest void time (0: none).
    pub fn set_next_expiry(&mut self, void_time_min: u32) {
        self.next_expiry_s = void_time_min;
    }

    pub fn len(&self) -> usize {
        self.sorted.len() - self.removed_in_sorted + self.recent.len()
    }

    pub fn generation_floor(&self) -> u32 {
        self.generation_floor
    }

    pub fn raise_generation_floor(&mut self, generation: u32) {
        self.generation_floor = self.generation_floor.max(generation);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tombstones(&self) -> u32 {
        self.tombstones
    }

    /// Bytes allocated for entries (capacity, not length).
    pub fn allocated_bytes(&self) -> usize {
        (self.sorted.capacity() + self.recent.capacity()) * std::mem::size_of::<IndexEntry>()
    }

    fn find(&self, tag: DigestTag) -> Option<(bool, usize)> {
        if let Some(i) = self.find_sorted(tag) {
            return Some((false, i));
        }
        self.recent.iter().position(|e| e.tag() == tag).map(|i| (true, i))
    }

    /// Interpolation search: tags are uniform (a keyed hash), so a tag's position is close
    /// to `tag.hi / 2^64 × len`. Gallop out from that guess, then binary-search the bracket:
    /// a few neighbouring cache lines instead of a dozen scattered binary-search probes.
    fn find_sorted(&self, tag: DigestTag) -> Option<usize> {
        let sorted = &self.sorted;
        if sorted.is_empty() {
            return None;
        }
        let guess = ((tag.hi as u128 * sorted.len() as u128) >> 64) as usize;
        let (mut low, mut high) = (guess, guess + 1);
        let mut step = 1;
        while low > 0 && sorted[low].tag() > tag {
            low = low.saturating_sub(step);
            step *= 2;
        }
        step = 1;
        while high < sorted.len() && sorted[high - 1].tag() < tag {
            high = (high + step).min(sorted.len());
            step *= 2;
        }
        sorted[low..high].binary_search_by(|e| e.tag().cmp(&tag)).ok().map(|i| low + i)
    }

    fn slot(&mut self, at: (bool, usize)) -> &mut IndexEntry {
        if at.0 {
            &mut self.recent[at.1]
        } else {
            &mut self.sorted[at.1]
        }
    }

    pub fn get(&self, tag: DigestTag) -> Option<EntryInfo> {
        let (in_recent, i) = self.find(tag)?;
        let entry = if in_recent { &self.recent[i] } else { &self.sorted[i] };
        (!entry.is_removed()).then(|| entry.info())
    }

    /// Inserts or replaces the entry for `info.tag`; returns the entry it replaced.
    pub fn upsert(&mut self, info: EntryInfo) -> Option<EntryInfo> {
        let entry = IndexEntry::new(info);
        let old = self.upsert_entry(info.tag, entry);
        if !info.tombstone && info.void_time != 0 {
            self.next_expiry_s =
                if self.next_expiry_s == 0 { info.void_time } else { self.next_expiry_s.min(info.void_time) };
        }
        self.tombstones += info.tombstone as u32;
        self.tombstones -= old.is_some_and(|old| old.tombstone) as u32;
        old
    }

    fn upsert_entry(&mut self, tag: DigestTag, entry: IndexEntry) -> Option<EntryInfo> {
        if let Some(at) = self.find(tag) {
            let slot = self.slot(at);
            let old = (!slot.is_removed()).then(|| slot.info());
            if old.is_none() {
                self.removed_in_sorted -= 1;
            }
            *self.slot(at) = entry;
            return old;
        }
        if self.recent.capacity() == 0 {
            self.recent.reserve_exact(RECENT_MAX);
        }
        self.recent.push(entry);
        if self.recent.len() == RECENT_MAX {
            self.merge_recent();
        }
        None
    }

    /// Removes the entry for `tag`; returns it.
    pub fn remove(&mut self, tag: DigestTag) -> Option<EntryInfo> {
        let old = self.remove_entry(tag);
        self.tombstones -= old.is_some_and(|old| old.tombstone) as u32;
        old
    }

    fn remove_entry(&mut self, tag: DigestTag) -> Option<EntryInfo> {
        let (in_recent, i) = self.find(tag)?;
        if in_recent {
            return Some(self.recent.swap_remove(i).info());
        }
        if self.sorted[i].is_removed() {
            return None;
        }
        let old = self.sorted[i].info();
        self.sorted[i].location = REMOVED;
        self.removed_in_sorted += 1;
        if self.removed_in_sorted > self.sorted.len() / 4 + RECENT_MAX {
            self.merge_recent();
        }
        Some(old)
    }

    /// Every live entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = EntryInfo> + '_ {
        self.sorted.iter().chain(self.recent.iter()).filter(|e| !e.is_removed()).map(|e| e.info())
    }

    /// Folds the recent inserts into the sorted run, dropping removed slots, in one
    /// backwards pass. Grows capacity by about 1/16 at a time to keep slack small.
    fn merge_recent(&mut self) {
        if self.removed_in_sorted > 0 {
            self.sorted.retain(|e| !e.is_removed());
            self.removed_in_sorted = 0;
        }
        self.recent.sort_unstable_by_key(|e| e.tag());
        let old_len = self.sorted.len();
        let new_len = old_len + self.recent.len();
        if self.sorted.capacity() < new_len {
            self.sorted.reserve_exact((new_len - old_len).max(new_len / 16));
        }
        let filler = IndexEntry { tag_hi: 0, tag_lo: 0, generation: 0, location: REMOVED, void_time: 0 };
        self.sorted.resize(new_len, filler);
        let (mut i, mut j) = (old_len, self.recent.len());
        for k in (0..new_len).rev() {
            if j == 0 {
                break;
            }
            if i > 0 && self.sorted[i - 1].tag() > self.recent[j - 1].tag() {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = self.recent[j - 1];
                j -= 1;
            }
        }
        self.recent.clear();
        if self.sorted.capacity() > 2 * new_len.max(RECENT_MAX) {
            self.sorted.shrink_to(new_len + new_len / 16);
        }
    }
}

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
    /// Set when a partition lock is found poisoned (a thread panicked half-way through
    /// an update): the engine then refuses writes, since that partition may be inconsistent.
    poisoned: std::sync::atomic::AtomicBool,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            partitions: (0..PARTITION_COUNT).map(|_| Mutex::new(Partition::default())).collect(),
            poisoned: Default::default(),
        }
    }
}

impl Index {
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

    /// Sizes every partition for `total` entries spread evenly (plus 3% for the unevenness
    /// of the spread), so that a restore fills the index without regrowing partitions: each
    /// regrowth leaves a hole in the heap, which is why an index grown entry by entry costs
    /// more RSS than its allocated bytes.
    pub fn reserve_total(&self, total: u64) {
        let per_partition = (total / PARTITION_COUNT as u64) as usize;
        let want = per_partition + per_partition / 32 + 8;
        for partition in self.partitions.iter() {
            let mut p = self.lock(partition);
            let more = want.saturating_sub(p.sorted.len());
            p.sorted.reserve_exact(more);
        }
    }

    /// Tombstone entries (tombstones and expired records kept as such) over all partitions.
    pub fn tombstone_count(&self) -> u64 {
        self.partitions.iter().map(|p| self.lock(p).tombstones as u64).sum()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn info(tag: u64, generation: u32) -> EntryInfo {
        EntryInfo {
            tag: DigestTag { hi: tag.wrapping_mul(0x9E37_79B9_7F4A_7C15), lo: tag as u32 },
            generation,
            tombstone: generation % 7 == 0,
            location: Location {
                device: (tag % 32) as u8,
                offset_bytes: tag * 16 % DEVICE_BYTES_MAX,
                size_bytes: 16 * (tag as u32 % 1000),
            },
            void_time: tag as u32,
        }
    }

    #[test]
    fn a_partition_knows_when_no_ttl_can_be_due() {
        let mut p = Partition::default();
        assert!(!p.expiry_may_be_due(u32::MAX), "an empty partition has nothing to expire");
        p.upsert(EntryInfo { void_time: 0, tombstone: false, ..info(1, 1) });
        assert!(!p.expiry_may_be_due(u32::MAX), "no entry has a TTL");
        p.upsert(EntryInfo { void_time: 500, tombstone: false, ..info(2, 1) });
        p.upsert(EntryInfo { void_time: 300, tombstone: false, ..info(3, 1) });
        assert!(!p.expiry_may_be_due(299));
        assert!(p.expiry_may_be_due(300));
        // Tombstones never expire again.
        let mut q = Partition::default();
        q.upsert(EntryInfo { void_time: 10, tombstone: true, ..info(4, 7) });
        assert!(!q.expiry_may_be_due(u32::MAX));
    }

    #[test]
    fn location_packs_its_extremes() {
        let max = Location {
            device: 31,
            offset_bytes: DEVICE_BYTES_MAX - 16,
            size_bytes: crate::format::WBLOCK_SIZE_MAX - 16,
        };
        assert_eq!(Location::unpack(max.pack()), max);
        let zero = Location { device: 0, offset_bytes: 0, size_bytes: 0 };
        assert_eq!(Location::unpack(zero.pack()), zero);
    }

    proptest! {
        #[test]
        fn partition_behaves_like_a_map(ops in proptest::collection::vec((0u8..3, 0u64..200, 1u32..1000), 1..600)) {
            let mut partition = Partition::default();
            let mut model = BTreeMap::new();
            for (op, key, generation) in ops {
                let e = info(key, generation);
                match op {
                    0 | 1 => prop_assert_eq!(partition.upsert(e), model.insert(e.tag, e)),
                    _ => prop_assert_eq!(partition.remove(e.tag), model.remove(&e.tag)),
                }
                prop_assert_eq!(partition.len(), model.len());
                prop_assert_eq!(partition.tombstones() as usize, model.values().filter(|e| e.tombstone).count());
            }
            for (tag, e) in &model {
                prop_assert_eq!(partition.get(*tag), Some(*e));
            }
            let mut all: Vec<_> = partition.entries().collect();
            all.sort_by_key(|e| e.tag);
            prop_assert_eq!(all, model.values().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn memory_per_entry_stays_near_28_bytes() {
        let mut partition = Partition::default();
        for key in 0..2500 {
            partition.upsert(info(key, 1));
        }
        let per_entry = partition.allocated_bytes() as f64 / partition.len() as f64;
        assert!(per_entry < 32.0, "{per_entry} bytes per entry");
    }
}
