//! One partition of the index: its entries in sprigs, small sorted runs that each cover a
//! range of tags, found through a sorted directory of their first tags.
//!
//! Why sprigs: one sorted run per partition makes an insert move a share of the whole
//! partition, so inserts slow down as the index grows (half as fast at 50 M records as at
//! 10 M). A sprig holds at most [`SPRIG_ENTRIES_MAX`] entries and splits in two when it
//! fills, so an insert moves at most a sprig (7 KiB, half that on average) at any index
//! size, and a lookup costs a search of the directory (about 1300 first tags a partition at
//! a billion records) plus one of a sprig. A sprig that empties is dropped; two small neighbours merge.
//!
//! Memory: a sprig's capacity grows in steps of [`CAPACITY_STEP`] entries (about 4% slack
//! on average), each step a slot size of the index's arena (`arena`, which also holds the
//! directory), and a sprig costs 56 bytes of directory, a third of a byte per entry.
//!
//! Invariants (checked by `check` in tests): sprig starts are strictly increasing and the
//! first is the minimum tag; every entry of sprig i lies in [start(i), start(i+1));
//! each sprig's entries are strictly sorted; `len` and `tombstones` count the entries; a
//! sprig's `next_expiry_s` is at most the void time of each of its live entries with a TTL.

use super::arena::ArenaRef;
use super::entry::{DigestTag, EntryInfo, IndexEntry};
use super::shared::{EntryName, SharedTags};
use crate::format::Digest;
use std::cmp::Ordering;

/// Entries a sprig holds before it splits in two.
pub const SPRIG_ENTRIES_MAX: usize = 256;
/// A sprig this small merges with its right neighbour if the two fit in half a sprig.
const SPRIG_ENTRIES_MERGE: usize = SPRIG_ENTRIES_MAX / 8;
/// Sprig capacities are multiples of this many entries: the arena's slot sizes for
/// entries (few sizes, so that the slots sprigs give up as they grow are reused), while
/// the slack stays under one step a sprig (about 4%).
pub(super) const CAPACITY_STEP: usize = 16;

fn capacity_for(len: usize) -> usize {
    len.next_multiple_of(CAPACITY_STEP).max(CAPACITY_STEP)
}

/// A sprig's entries, in slots of the sprig arena (`arena`), not on the heap.
type SprigEntries = allocator_api2::vec::Vec<IndexEntry, ArenaRef>;

struct Sprig {
    /// The first tag this sprig may hold (the minimum for the first sprig). Kept beside the
    /// entries' pointer so that finding a sprig touches one cache line, not two arrays.
    start: DigestTag,
    entries: SprigEntries,
    /// A lower bound on the void time of every live entry with a TTL (0: none has one),
    /// lowered by `upsert` and made exact by `expire_due`'s walk.
    next_expiry_s: u32,
}

impl Sprig {
    fn find(&self, tag: DigestTag, range: (u64, u64)) -> Result<usize, usize> {
        let entries = &self.entries;
        // Tags are uniform over the sprig's range, so the guess lands within a few entries.
        let span = (range.1 - range.0).max(1) as u128;
        let guess = ((tag.hi - range.0) as u128 * entries.len() as u128 / span) as usize;
        prefetch_around(entries, guess, SPRIG_PREFETCH_ENTRIES);
        interpolated_search(entries.len(), guess, |i| entries[i].tag().cmp(&tag))
    }

    /// Room for one more entry, growing by one capacity step rather than doubling.
    fn reserve_one(&mut self) {
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact(CAPACITY_STEP);
        }
    }

    /// Gives back capacity beyond one step of slack.
    fn trim_capacity(&mut self) {
        let want = capacity_for(self.entries.len());
        if self.entries.capacity() > want {
            self.entries.shrink_to(want);
        }
    }
}

/// Searches `len` sorted items from a guessed position: gallops out from the guess until
/// the item is bracketed, then binary-searches the bracket. A few neighbouring cache lines
/// when the guess is good; O(log len) probes, never a linear walk, when it is not (crafted
/// digests need not be uniform).
fn interpolated_search(len: usize, guess: usize, cmp: impl Fn(usize) -> Ordering) -> Result<usize, usize> {
    if len == 0 {
        return Err(0);
    }
    let guess = guess.min(len - 1);
    let (mut low, mut high) = (guess, guess + 1);
    let mut step = 1;
    while low > 0 && cmp(low) == Ordering::Greater {
        low = low.saturating_sub(step);
        step *= 2;
    }
    step = 1;
    while high < len && cmp(high - 1) == Ordering::Less {
        high = (high + step).min(len);
        step *= 2;
    }
    let (mut lo, mut hi) = (low, high);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match cmp(mid) {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// Entries either side of a sprig search's guess whose cache lines are fetched together
/// before the search: the guess misses the key by about the square root of the sprig's
/// length (7 entries in a sprig of 190), and fetching that neighbourhood at once overlaps
/// the misses that a gallop from the guess would take one after the other.
const SPRIG_PREFETCH_ENTRIES: usize = 8;
/// The same for the directory's search (its starts are spaced about evenly).
const DIRECTORY_PREFETCH_SPRIGS: usize = 2;

/// Starts loading the cache lines of `items[guess - around ..= guess + around]` (clamped).
/// A hint only: it reads nothing and cannot fault.
#[inline(always)]
fn prefetch_around<T>(items: &[T], guess: usize, around: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if items.is_empty() {
            return;
        }
        let first = guess.saturating_sub(around).min(items.len() - 1);
        let last = (guess + around).min(items.len() - 1);
        let start = &items[first] as *const T as usize & !63;
        let end = &items[last] as *const T as usize + std::mem::size_of::<T>();
        for line in (start..end).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults; the lines lie within `items`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line as *const i8)
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (items, guess, around);
}

/// Whether a vector's block lies in a draining chunk of its arena (an empty one has none).
fn is_draining<T>(arena: &ArenaRef, vec: &allocator_api2::vec::Vec<T, ArenaRef>) -> bool {
    let Ok(layout) = std::alloc::Layout::array::<T>(vec.capacity()) else { return false };
    layout.size() > 0 && arena.arena().is_draining(std::ptr::NonNull::from(&vec[..]).cast(), layout)
}

/// Lowers a void-time bound (0: no bound yet) to `void_time` (0: no TTL, ignored).
fn lower_bound(bound: &mut u32, void_time: u32) {
    if void_time != 0 && (*bound == 0 || void_time < *bound) {
        *bound = void_time;
    }
}

/// One partition's entries and the counts kept with them.
pub struct Partition {
    /// The directory, in the arena like the entries (its first probe is on a huge page).
    sprigs: allocator_api2::vec::Vec<Sprig, ArenaRef>,
    len: usize,
    device_count: u8,
    /// Highest generation of a tombstone reclaimed from this partition: a key re-created
    /// after its tombstone is gone starts above it, so that it beats the tombstone's copy
    /// should that copy still be on a device at the next cold start.
    generation_floor: u32,
    /// Live entries that are tombstones (or expired records kept as such).
    tombstones: u32,
    /// The minimum of the sprigs' `next_expiry_s` bounds (0: no entry has a TTL), so that
    /// the expiry pass skips a partition where nothing can be due without looking further.
    next_expiry_s: u32,
    /// Entries whose tag another digest shares, by full digest (`shared`); almost always
    /// empty.
    shared: SharedTags,
    /// Where the sprigs' entries live: the index's arena.
    arena: ArenaRef,
}

impl Default for Partition {
    fn default() -> Self {
        Partition::new(1, ArenaRef::default())
    }
}

impl Partition {
    /// An empty partition of a namespace with `device_count` devices (entries derive their
    /// device from their tag), its sprigs in `arena`.
    pub fn new(device_count: u8, arena: ArenaRef) -> Self {
        // Room for one: most partitions of a small index never split.
        let mut sprigs = allocator_api2::vec::Vec::with_capacity_in(1, arena.clone());
        sprigs.push(Sprig {
            start: DigestTag::MIN,
            entries: SprigEntries::new_in(arena.clone()),
            next_expiry_s: 0,
        });
        Partition {
            sprigs,
            len: 0,
            device_count,
            generation_floor: 0,
            tombstones: 0,
            next_expiry_s: 0,
            shared: SharedTags::default(),
            arena,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by the benches
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn generation_floor(&self) -> u32 {
        self.generation_floor
    }

    pub fn raise_generation_floor(&mut self, generation: u32) {
        self.generation_floor = self.generation_floor.max(generation);
    }

    pub fn tombstones(&self) -> u32 {
        self.tombstones
    }

    /// Bytes allocated: entry capacity plus the directory.
    pub fn allocated_bytes(&self) -> usize {
        let entries: usize = self.sprigs.iter().map(|s| s.entries.capacity()).sum();
        entries * std::mem::size_of::<IndexEntry>()
            + self.sprigs.capacity() * std::mem::size_of::<Sprig>()
            + self.shared.allocated_bytes()
    }

    /// The sprig whose range holds `tag`, and that range as (first, end) of `hi`. Sprig
    /// starts are about uniform (tags are), so the guess is within a step or two.
    fn sprig_of(&self, tag: DigestTag) -> (usize, (u64, u64)) {
        let sprigs = &self.sprigs;
        let guess = ((tag.hi as u128 * sprigs.len() as u128) >> 64) as usize;
        prefetch_around(sprigs, guess, DIRECTORY_PREFETCH_SPRIGS);
        // The last sprig starting at or before `tag` (the first starts at the minimum).
        let i = match interpolated_search(sprigs.len(), guess, |i| sprigs[i].start.cmp(&tag)) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let end = sprigs.get(i + 1).map_or(u64::MAX, |next| next.start.hi);
        (i, (sprigs[i].start.hi, end))
    }

    /// The entry of `digest`: found by its full digest where its tag is shared, else the
    /// entry of its tag (which a caller that did not derive the digest itself must still
    /// prove is this digest's, by reading the record).
    pub fn get(&self, digest: &Digest) -> Option<EntryInfo> {
        let tag = DigestTag::of(digest);
        if self.shared.is_shared(tag) {
            return self.shared.get(digest).map(|e| e.info(self.device_count));
        }
        self.get_by_tag(tag)
    }

    /// The entry a walk named (`named_entries`).
    pub fn get_named(&self, name: EntryName) -> Option<EntryInfo> {
        match name {
            EntryName::Tag(tag) => self.get_by_tag(tag),
            EntryName::Digest(digest) => self.get(&digest),
        }
    }

    /// The entry of an unshared tag (`None` for a shared one: the tag names no one entry).
    pub fn get_by_tag(&self, tag: DigestTag) -> Option<EntryInfo> {
        let (s, range) = self.sprig_of(tag);
        let sprig = &self.sprigs[s];
        sprig.find(tag, range).ok().map(|i| sprig.entries[i].info(self.device_count))
    }

    /// Whether two or more digests share `tag` (their entries are named by digest).
    pub fn is_shared(&self, tag: DigestTag) -> bool {
        self.shared.is_shared(tag)
    }

    /// Inserts or replaces the entry of `digest`; returns the entry it replaced.
    pub fn upsert(&mut self, digest: &Digest, info: EntryInfo) -> Option<EntryInfo> {
        assert!(info.tag == DigestTag::of(digest), "an entry upserted under another digest");
        if !self.shared.is_shared(info.tag) {
            return self.upsert_by_tag(info);
        }
        self.note_void_time(None, &info);
        let old = self.shared.upsert(digest, IndexEntry::new(info)).map(|e| e.info(self.device_count));
        self.count_change(old.as_ref(), Some(&info));
        old
    }

    /// Makes `tag` shared: its entry, whose record's full digest is `held`, is named by
    /// that digest from now on (and so is every later entry of the tag).
    pub fn share_tag(&mut self, held: &Digest) {
        let tag = DigestTag::of(held);
        if self.shared.is_shared(tag) {
            return;
        }
        if let Some(info) = self.remove_by_tag(tag) {
            self.upsert_shared_new(held, info);
        }
    }

    /// Adds the first entry of a tag that is shared from the start (a cold start meeting a
    /// copy flagged as shared before any other copy of its tag).
    pub fn upsert_shared_new(&mut self, digest: &Digest, info: EntryInfo) {
        assert!(self.get_by_tag(info.tag).is_none(), "a tag made shared while a sprig holds it");
        self.note_void_time(None, &info);
        let old = self.shared.upsert(digest, IndexEntry::new(info));
        assert!(old.is_none(), "a digest shared twice");
        self.count_change(None, Some(&info));
    }

    /// Inserts or replaces the entry of an unshared `info.tag`; returns the one it replaced.
    pub fn upsert_by_tag(&mut self, info: EntryInfo) -> Option<EntryInfo> {
        debug_assert!(!self.shared.is_shared(info.tag), "a shared tag upserted by tag");
        let entry = IndexEntry::new(info);
        let (s, range) = self.sprig_of(info.tag);
        let device_count = self.device_count;
        self.note_void_time(Some(s), &info);
        let last = s + 1 == self.sprigs.len();
        let sprig = &mut self.sprigs[s];
        let mut appended = false;
        let old = match sprig.find(info.tag, range) {
            Ok(i) => Some(std::mem::replace(&mut sprig.entries[i], entry).info(device_count)),
            Err(i) => {
                appended = last && i == sprig.entries.len();
                sprig.reserve_one();
                sprig.entries.insert(i, entry);
                None
            }
        };
        self.count_change(old.as_ref(), Some(&info));
        if self.sprigs[s].entries.len() > SPRIG_ENTRIES_MAX {
            self.split(s, appended);
        }
        old
    }

    /// Removes the entry a walk named; returns it.
    pub fn remove_named(&mut self, name: EntryName) -> Option<EntryInfo> {
        match name {
            EntryName::Digest(digest) if self.shared.is_shared(name.tag()) => {
                let old = self.shared.remove(&digest)?.info(self.device_count);
                self.count_change(Some(&old), None);
                Some(old)
            }
            _ => self.remove_by_tag(name.tag()),
        }
    }

    fn remove_by_tag(&mut self, tag: DigestTag) -> Option<EntryInfo> {
        let (s, range) = self.sprig_of(tag);
        let sprig = &mut self.sprigs[s];
        let i = sprig.find(tag, range).ok()?;
        let old = sprig.entries.remove(i).info(self.device_count);
        if sprig.entries.capacity() >= sprig.entries.len() + 2 * CAPACITY_STEP {
            sprig.trim_capacity();
        }
        self.count_change(Some(&old), None);
        self.merge_if_small(s);
        Some(old)
    }

    /// Lowers the expiry bounds (of sprig `s`, or of the shared entries, and of the
    /// partition) to a live entry's void time.
    fn note_void_time(&mut self, sprig: Option<usize>, info: &EntryInfo) {
        if !info.tombstone {
            if let Some(s) = sprig {
                lower_bound(&mut self.sprigs[s].next_expiry_s, info.void_time);
            }
            lower_bound(&mut self.next_expiry_s, info.void_time);
        }
    }

    fn count_change(&mut self, old: Option<&EntryInfo>, new: Option<&EntryInfo>) {
        self.len = self.len + new.is_some() as usize - old.is_some() as usize;
        self.tombstones += new.is_some_and(|e| e.tombstone) as u32;
        self.tombstones -= old.is_some_and(|e| e.tombstone) as u32;
    }

    /// Every entry: the sprigs' in tag order, then the shared ones.
    pub fn entries(&self) -> impl Iterator<Item = EntryInfo> + '_ {
        self.named_entries().map(|(_, info)| info)
    }

    /// Every entry with the name that finds it again (`get_named`, `remove_named`).
    pub fn named_entries(&self) -> impl Iterator<Item = (EntryName, EntryInfo)> + '_ {
        let device_count = self.device_count;
        let in_sprigs = self.sprigs.iter().flat_map(move |s| {
            s.entries.iter().map(move |e| (EntryName::Tag(e.tag()), e.info(device_count)))
        });
        let shared = self.shared.iter().map(move |(d, e)| (EntryName::Digest(*d), e.info(device_count)));
        in_sprigs.chain(shared)
    }

    /// Whether an entry of this partition may be past its void time at `now_s`.
    pub fn expiry_may_be_due(&self, now_s: u32) -> bool {
        self.next_expiry_s != 0 && self.next_expiry_s <= now_s
    }

    /// Turns every live entry past its void time into a tombstone in place; returns how
    /// many. Walks only the sprigs whose bound says something may be due, so a pass costs
    /// in proportion to what expires (times a sprig), not to the partition's size.
    pub fn expire_due(&mut self, now_s: u32) -> u64 {
        if !self.expiry_may_be_due(now_s) {
            return 0;
        }
        let mut expired = 0u64;
        let mut partition_bound = 0u32;
        for sprig in &mut self.sprigs {
            if sprig.next_expiry_s != 0 && sprig.next_expiry_s <= now_s {
                let mut bound = 0u32;
                for entry in sprig.entries.iter_mut().filter(|e| !e.is_tombstone() && e.void_time() != 0) {
                    if entry.void_time() <= now_s {
                        entry.mark_tombstone();
                        expired += 1;
                    } else {
                        lower_bound(&mut bound, entry.void_time());
                    }
                }
                sprig.next_expiry_s = bound;
            }
            lower_bound(&mut partition_bound, sprig.next_expiry_s);
        }
        for entry in self.shared.iter_mut().filter(|e| !e.is_tombstone() && e.void_time() != 0) {
            if entry.void_time() <= now_s {
                entry.mark_tombstone();
                expired += 1;
            } else {
                lower_bound(&mut partition_bound, entry.void_time());
            }
        }
        self.tombstones += expired as u32;
        self.next_expiry_s = partition_bound;
        expired
    }

    /// Splits sprig `s` at its middle entry. Where the insert that filled it appended to the
    /// partition's last sprig (a load in tag order: a snapshot's), the upper half is given
    /// a whole sprig's capacity, since the appends that follow will fill it: growing it a
    /// step at a time would copy it eight times before its next split. (Measured on a fast
    /// restart of 10 M records: 1.20–1.34 s with this, 1.25–1.31 s without; the copies are
    /// a small share of a restart.)
    fn split(&mut self, s: usize, appended: bool) {
        let arena = self.arena.clone();
        let sprig = &mut self.sprigs[s];
        let half = sprig.entries.len() / 2;
        let upper_capacity =
            capacity_for(if appended { SPRIG_ENTRIES_MAX + 1 } else { sprig.entries.len() - half });
        let mut upper = SprigEntries::with_capacity_in(upper_capacity, arena.clone());
        upper.extend_from_slice(&sprig.entries[half..]);
        // The lower half moves to a block of its own too, rather than shrinking the full
        // one in place: the shrink would leave a hole of half a sprig behind it that few
        // requests fit, while the whole block freed is one the next grown sprig reuses
        // (RSS after a 10 M-record load: 34.1 bytes a record instead of 36.6).
        let mut lower = SprigEntries::with_capacity_in(capacity_for(half), arena);
        lower.extend_from_slice(&sprig.entries[..half]);
        sprig.entries = lower;
        let start = upper[0].tag();
        let next_expiry_s = sprig.next_expiry_s;
        self.sprigs.insert(s + 1, Sprig { start, entries: upper, next_expiry_s });
    }

    /// Moves the directory and the sprigs whose memory lies in a draining chunk of the
    /// arena (`Arena::plan_drain`) to fresh slots, and trims sprigs holding more than a
    /// step of spare capacity; returns how many blocks moved.
    pub fn move_draining_sprigs(&mut self) -> usize {
        let arena = self.arena.clone();
        let mut moved = 0;
        if is_draining(&arena, &self.sprigs) {
            let mut fresh = allocator_api2::vec::Vec::with_capacity_in(self.sprigs.capacity(), arena.clone());
            fresh.extend(self.sprigs.drain(..));
            self.sprigs = fresh;
            moved += 1;
        }
        for sprig in &mut self.sprigs {
            // A load in tag order leaves the last sprig with a whole sprig's capacity
            // (`split`): give back what is past one step.
            if sprig.entries.capacity() > capacity_for(sprig.entries.len()) {
                sprig.trim_capacity();
                moved += 1;
            } else if is_draining(&arena, &sprig.entries) {
                let mut fresh = SprigEntries::with_capacity_in(sprig.entries.capacity(), arena.clone());
                fresh.extend_from_slice(&sprig.entries);
                sprig.entries = fresh;
                moved += 1;
            }
        }
        moved
    }

    /// Merges sprig `s` with its right neighbour (or drops it if it is empty) once it is
    /// small, so that deletes do not leave a directory of near-empty sprigs.
    fn merge_if_small(&mut self, s: usize) {
        if self.sprigs.len() == 1 || self.sprigs[s].entries.len() > SPRIG_ENTRIES_MERGE {
            return;
        }
        // Merge into the left neighbour when there is no right one.
        let (left, right) = if s + 1 < self.sprigs.len() { (s, s + 1) } else { (s - 1, s) };
        if self.sprigs[left].entries.len() + self.sprigs[right].entries.len() > SPRIG_ENTRIES_MAX / 2 {
            return;
        }
        let moved = self.sprigs.remove(right);
        let into = &mut self.sprigs[left];
        into.entries
            .reserve_exact(capacity_for(into.entries.len() + moved.entries.len()) - into.entries.len());
        into.entries.extend_from_slice(&moved.entries);
        lower_bound(&mut into.next_expiry_s, moved.next_expiry_s);
    }

    /// Checks the invariants of the module comment; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        assert_eq!(self.sprigs[0].start, DigestTag::MIN);
        assert!(self.sprigs.windows(2).all(|w| w[0].start < w[1].start), "directory out of order");
        let mut len = 0;
        let mut tombstones = 0;
        for (i, sprig) in self.sprigs.iter().enumerate() {
            let end = self.sprigs.get(i + 1).map(|next| &next.start);
            assert!(sprig.entries.windows(2).all(|w| w[0].tag() < w[1].tag()), "sprig {i} out of order");
            for e in &sprig.entries {
                assert!(
                    e.tag() >= sprig.start && end.is_none_or(|end| e.tag() < *end),
                    "entry outside its sprig"
                );
                if !e.is_tombstone() && e.void_time() != 0 {
                    assert!(sprig.next_expiry_s != 0 && sprig.next_expiry_s <= e.void_time());
                    assert!(self.next_expiry_s != 0 && self.next_expiry_s <= e.void_time());
                }
                tombstones += e.is_tombstone() as u32;
            }
            len += sprig.entries.len();
        }
        self.shared.check();
        for (digest, e) in self.shared.iter() {
            assert!(self.get_by_tag(e.tag()).is_none(), "a shared tag also in a sprig");
            if !e.is_tombstone() && e.void_time() != 0 {
                assert!(self.next_expiry_s != 0 && self.next_expiry_s <= e.void_time());
            }
            assert_eq!(self.get(digest).map(|i| i.tag), Some(e.tag()));
            tombstones += e.is_tombstone() as u32;
            len += 1;
        }
        assert_eq!((len, tombstones), (self.len, self.tombstones));
    }

    /// Sprigs in the directory; for tests.
    #[cfg(test)]
    pub fn sprig_count(&self) -> usize {
        self.sprigs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Location;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn info(key: u64, generation: u32) -> EntryInfo {
        EntryInfo {
            tag: DigestTag { hi: key.wrapping_mul(0x9E37_79B9_7F4A_7C15), lo: key as u32 },
            generation,
            tombstone: generation % 7 == 0,
            location: Location { device: 0, offset_bytes: key * 16, size_bytes: 16 * (key as u32 % 1000) },
            void_time: if generation % 3 == 0 { 100 + generation } else { 0 },
        }
    }

    #[test]
    fn a_partition_knows_when_no_ttl_can_be_due() {
        let mut p = Partition::default();
        assert!(!p.expiry_may_be_due(u32::MAX), "an empty partition has nothing to expire");
        p.upsert_by_tag(EntryInfo { void_time: 0, tombstone: false, ..info(1, 1) });
        assert!(!p.expiry_may_be_due(u32::MAX), "no entry has a TTL");
        p.upsert_by_tag(EntryInfo { void_time: 500, tombstone: false, ..info(2, 1) });
        p.upsert_by_tag(EntryInfo { void_time: 300, tombstone: false, ..info(3, 1) });
        assert!(!p.expiry_may_be_due(299));
        assert_eq!(p.expire_due(299), 0);
        assert_eq!(p.expire_due(300), 1);
        assert!(!p.expiry_may_be_due(499), "the bound is exact after a walk");
        assert_eq!(p.expire_due(500), 1);
        assert_eq!(p.tombstones(), 2);
        assert!(!p.expiry_may_be_due(u32::MAX), "tombstones never expire again");
        p.check();
    }

    #[test]
    fn a_ttl_bounds_only_its_own_sprig_and_expiry_finds_it() {
        let mut p = Partition::default();
        for key in 0..20_000 {
            p.upsert_by_tag(EntryInfo { void_time: 0, tombstone: false, ..info(key, 1) });
        }
        let due = info(20_001, 1);
        p.upsert_by_tag(EntryInfo { void_time: 50, tombstone: false, ..due });
        assert!(p.sprig_count() > 40, "{} sprigs", p.sprig_count());
        let walked_before = p.sprigs.iter().filter(|s| s.next_expiry_s != 0).count();
        assert_eq!(walked_before, 1, "one sprig holds the only TTL");
        assert_eq!(p.expire_due(50), 1);
        assert!(p.get_by_tag(due.tag).is_some_and(|e| e.tombstone));
        p.check();
    }

    #[test]
    fn sprigs_split_as_the_partition_grows_and_merge_as_it_empties() {
        let mut p = Partition::default();
        for key in 0..50_000 {
            p.upsert_by_tag(info(key, 1));
        }
        p.check();
        let grown = p.sprig_count();
        assert!(grown >= 50_000 / SPRIG_ENTRIES_MAX, "{grown} sprigs");
        assert!(p.sprigs.iter().all(|s| s.entries.len() <= SPRIG_ENTRIES_MAX));
        for key in 0..49_990 {
            assert!(p.remove_named(EntryName::Tag(info(key, 1).tag)).is_some());
        }
        p.check();
        assert!(p.sprig_count() < grown / 4, "{} of {grown} sprigs left", p.sprig_count());
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn crafted_tags_bunched_in_one_corner_are_still_found() {
        // Caller digests need not be uniform: every guess of the interpolation is far off.
        let mut p = Partition::default();
        let bunched = |k: u64| DigestTag { hi: u64::MAX - k / 3, lo: k as u32 };
        for k in 0..20_000 {
            p.upsert_by_tag(EntryInfo { tag: bunched(k), ..info(k, 1) });
        }
        p.check();
        for k in 0..20_000 {
            assert_eq!(p.get_by_tag(bunched(k)).map(|e| e.tag), Some(bunched(k)));
        }
        assert_eq!(p.get_by_tag(DigestTag { hi: 5, lo: 0 }), None);
    }

    #[test]
    fn memory_per_entry_stays_near_the_entry_size() {
        let mut partition = Partition::default();
        for key in 0..60_000 {
            partition.upsert_by_tag(info(key, 1));
        }
        let per_entry = partition.allocated_bytes() as f64 / partition.len() as f64;
        assert!(per_entry < 30.0, "{per_entry} bytes per entry");
    }

    #[test]
    fn a_load_in_tag_order_grows_the_last_sprig_whole_and_compaction_trims_it() {
        let mut p = Partition::default();
        let mut infos: Vec<EntryInfo> = (0..10_000).map(|k| info(k, 1)).collect();
        infos.sort_by_key(|e| e.tag);
        for e in &infos {
            p.upsert_by_tag(*e);
        }
        let last = p.sprigs.last().unwrap();
        assert_eq!(
            last.entries.capacity(),
            capacity_for(SPRIG_ENTRIES_MAX + 1),
            "{} entries",
            last.entries.len()
        );
        assert!(p.move_draining_sprigs() >= 1);
        assert!(p.sprigs.iter().all(|s| s.entries.capacity() == capacity_for(s.entries.len())));
        p.check();
        for e in &infos {
            assert_eq!(p.get_by_tag(e.tag), Some(*e));
        }
    }

    #[test]
    fn sprigs_moved_out_of_draining_chunks_keep_their_entries() {
        let arena = ArenaRef::default();
        let mut kept = Partition::new(1, arena.clone());
        let mut dropped = Partition::new(1, arena.clone());
        // Two partitions grow together, their sprigs side by side in the same chunks; when
        // one goes, every chunk is left about half full.
        for key in 0..400_000 {
            let partition = if key % 2 == 0 { &mut kept } else { &mut dropped };
            partition.upsert_by_tag(info(key, 1));
        }
        drop(dropped);
        let mapped = arena.arena().mapped_bytes();
        let to_move = arena.arena().plan_drain();
        assert!(to_move > 0, "nothing to drain");
        assert_eq!(kept.move_draining_sprigs(), to_move);
        assert!(arena.arena().mapped_bytes() < mapped, "no chunk went back");
        assert_eq!(arena.arena().plan_drain(), 0, "a second plan finds the arena compact");
        kept.check();
        assert_eq!(kept.len(), 200_000);
        for key in (0..400_000).step_by(2) {
            assert_eq!(kept.get_by_tag(info(key, 1).tag), Some(info(key, 1)));
        }
    }

    /// Digest `i` of a small pool in which each group of four agrees in every tag bit.
    fn pooled_digest(i: u8) -> Digest {
        let mut d = [0u8; 20];
        d[2..10].copy_from_slice(&((i / 4) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        d[19] = i % 4;
        d
    }

    proptest! {
        #[test]
        fn entries_of_shared_tags_behave_like_a_map_by_digest(ops in proptest::collection::vec((0u8..4, 0u8..24, 1u32..1000), 1..400)) {
            // The engine's protocol: a digest whose tag an entry of another digest holds
            // first makes the tag shared (`share_tag` with the holder's digest).
            let mut partition = Partition::default();
            let mut model: BTreeMap<Digest, EntryInfo> = BTreeMap::new();
            for (op, i, generation) in ops {
                let d = pooled_digest(i);
                let e = EntryInfo { tag: DigestTag::of(&d), ..info(i as u64, generation) };
                match op {
                    0 | 1 => {
                        let holder = model.keys().find(|h| **h != d && DigestTag::of(h) == e.tag).copied();
                        if let Some(holder) = holder.filter(|_| !partition.is_shared(e.tag)) {
                            partition.share_tag(&holder);
                        }
                        prop_assert_eq!(partition.upsert(&d, e), model.insert(d, e));
                    }
                    2 => {
                        let name = if partition.is_shared(e.tag) { EntryName::Digest(d) } else { EntryName::Tag(e.tag) };
                        let owned = model.contains_key(&d);
                        if owned {
                            prop_assert_eq!(partition.remove_named(name), model.remove(&d));
                        }
                    }
                    _ => {
                        let now_s = 100 + generation;
                        let due: Vec<_> = model.iter().filter(|(_, m)| !m.tombstone && m.void_time != 0 && m.void_time <= now_s).map(|(d, _)| *d).collect();
                        prop_assert_eq!(partition.expire_due(now_s), due.len() as u64);
                        for d in due {
                            model.get_mut(&d).unwrap().tombstone = true;
                        }
                    }
                }
                prop_assert_eq!(partition.len(), model.len());
                partition.check();
            }
            for (d, e) in &model {
                prop_assert_eq!(partition.get(d), Some(*e));
            }
            let mut walked: Vec<(DigestTag, u32)> = partition.named_entries().map(|(name, e)| {
                assert_eq!(partition.get_named(name), Some(e));
                (e.tag, e.generation)
            }).collect();
            let mut want: Vec<(DigestTag, u32)> = model.values().map(|e| (e.tag, e.generation)).collect();
            walked.sort();
            want.sort();
            prop_assert_eq!(walked, want);
        }
    }

    proptest! {
        #[test]
        fn partition_behaves_like_a_map(ops in proptest::collection::vec((0u8..4, 0u64..3000, 1u32..1000), 1..3000)) {
            let mut partition = Partition::default();
            let mut model = BTreeMap::new();
            for (op, key, generation) in ops {
                let e = info(key, generation);
                match op {
                    0 | 1 => prop_assert_eq!(partition.upsert_by_tag(e), model.insert(e.tag, e)),
                    2 => prop_assert_eq!(partition.remove_named(EntryName::Tag(e.tag)), model.remove(&e.tag)),
                    _ => {
                        let now_s = 100 + generation;
                        let due: Vec<_> = model.values().filter(|m| !m.tombstone && m.void_time != 0 && m.void_time <= now_s).map(|m| m.tag).collect();
                        prop_assert_eq!(partition.expire_due(now_s), due.len() as u64);
                        for tag in due {
                            model.get_mut(&tag).unwrap().tombstone = true;
                        }
                    }
                }
                prop_assert_eq!(partition.len(), model.len());
            }
            partition.check();
            for (tag, e) in &model {
                prop_assert_eq!(partition.get_by_tag(*tag), Some(*e));
            }
            prop_assert_eq!(partition.entries().collect::<Vec<_>>(), model.values().copied().collect::<Vec<_>>());
        }
    }
}
