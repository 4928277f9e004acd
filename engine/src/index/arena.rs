//! The sprigs' memory: slots of a few fixed sizes, carved from 2 MiB chunks mapped apart
//! from the heap and advised onto transparent huge pages. One arena per index.
//!
//! Why not the heap: a sprig is reallocated every [`CLASS_STEP_BYTES`] of growth, and glibc
//! left holes among the live sprigs (RSS 15% above the bytes allocated after a 10 M-record
//! load); and on 4 KiB pages a lookup in a 10 GB index misses the TLB, which made each
//! operation at 300 M records cost 1.5–1.9× what it costs at 10 M (1.2–1.6× with glibc's
//! heap on huge pages). Here every slot of a chunk has one size, so a freed slot is exactly
//! what the next sprig of that size needs, and a chunk is one huge page.
//!
//! Layout: a chunk is 2 MiB, aligned to 2 MiB so that a slot finds its chunk's header by
//! masking its address; the header takes the first [`HEADER_BYTES`], slots of one class
//! follow. A class holds slots of `(class + 1) × CLASS_STEP_BYTES` (sprigs' entries), or
//! of a power of two from 8 to 256 KiB (the partitions' sprig directories); a request
//! larger than that, or of an alignment above 16, goes to the heap.
//!
//! Compaction: sprigs grow in waves (a load grows every partition alike), so a class can be
//! left with many half-empty chunks once the wave has passed. [`Arena::plan_drain`] marks
//! the sparsest chunks of such a class as draining (no slot is handed out from them again)
//! and the index moves the sprigs they hold (`Index::compact_arena`); a drained chunk is
//! unmapped as its last slot goes.
//!
//! Invariants (checked by `check` in tests): a chunk's `used` counts its slots handed out,
//! and its free list plus its never-used tail hold the rest; a chunk that has room and is
//! not draining is in its class's `partial` list, no other is; an empty chunk is unmapped
//! unless it is its class's last partial chunk (so that a sprig moving between two sizes
//! does not map and unmap a chunk each time).
//!
//! Cost: one class mutex per allocation or free (a sprig reallocates once per 16 inserts),
//! three system calls per 2 MiB mapped; a compaction copies the sprigs it moves.

use allocator_api2::alloc::{AllocError, Allocator, Global};
use std::alloc::Layout;
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// One transparent huge page on x86-64 and aarch64 (4 KiB base pages).
pub const CHUNK_BYTES: usize = 2 << 20;
/// Room kept at a chunk's start for its header (a cache line).
const HEADER_BYTES: usize = 64;
/// Entry slots are multiples of this: the step a sprig's capacity grows by, in bytes.
pub const CLASS_STEP_BYTES: usize = super::partition::CAPACITY_STEP * super::entry::ENTRY_BYTES;
/// Classes of entry slots: enough for a sprig of `SPRIG_ENTRIES_MAX + 1` entries (it splits
/// at once), rounded up to a step.
const STEP_CLASSES: usize = (super::SPRIG_ENTRIES_MAX + 1).div_ceil(super::partition::CAPACITY_STEP);
/// Past the entry slots, classes of powers of two from twice `LARGE_CLASS_MIN_BYTES / 2`:
/// for the partitions' sprig directories (which grow by doubling: at 300 M records about
/// 400 sprigs a partition, 22 KiB), so that a lookup's first probe is on a huge page too.
const LARGE_CLASS_MIN_BYTES: usize = 8 << 10;
const LARGE_CLASSES: usize = 6;
pub const CLASS_COUNT: usize = STEP_CLASSES + LARGE_CLASSES;
const _: () = assert!(STEP_CLASSES * CLASS_STEP_BYTES <= LARGE_CLASS_MIN_BYTES);
const _: () = assert!(LARGE_CLASS_MIN_BYTES << (LARGE_CLASSES - 1) < CHUNK_BYTES / 4);
const SLOT_ALIGN_MAX: usize = 16;
const _: () = assert!(CLASS_STEP_BYTES % SLOT_ALIGN_MAX == 0 && HEADER_BYTES % SLOT_ALIGN_MAX == 0);
const _: () = assert!(std::mem::size_of::<ChunkHeader>() <= HEADER_BYTES);

/// The start of a chunk. Fields other than `draining` change only under the class's lock.
#[repr(C)]
struct ChunkHeader {
    class: usize,
    /// Slots handed out.
    used: usize,
    /// Slots at and past this index have never been handed out (not yet touched, so a
    /// chunk costs RSS only as it fills where huge pages are off).
    untouched_from: usize,
    /// The chunk's freed slots, linked through their first bytes.
    free: *mut FreeSlot,
    /// Set by `plan_drain`: no slot is handed out from here again; read without the lock
    /// by `is_draining`.
    draining: AtomicBool,
}

struct FreeSlot {
    next: *mut FreeSlot,
}

#[derive(Default)]
struct ClassState {
    /// Chunks of this class with a slot to hand out and not draining; allocation takes
    /// the last.
    partial: Vec<NonNull<ChunkHeader>>,
    /// Every chunk of this class, partial, full or draining.
    chunks: Vec<NonNull<ChunkHeader>>,
}

// SAFETY: the chunk pointers are owned by the arena and dereferenced only while holding
// the mutex of the class they belong to (or, for `draining`, atomically).
unsafe impl Send for ClassState {}

/// The slots of one index.
#[derive(Default)]
pub struct Arena {
    classes: [Mutex<ClassState>; CLASS_COUNT],
    mapped_chunks: AtomicUsize,
    /// Whether a new chunk is advised onto a huge page as it is mapped; off while a restart
    /// fills the index (see `set_huge_pages`).
    huge_pages: AtomicBool,
    /// Chunks mapped while `huge_pages` was off, with their class: `collapse_some` turns
    /// them into huge pages later.
    to_collapse: Mutex<Vec<(usize, usize)>>,
}

/// The allocator handle a sprig's vector carries: its index's arena.
#[derive(Clone, Default)]
pub struct ArenaRef(Arc<Arena>);

impl ArenaRef {
    pub fn arena(&self) -> &Arena {
        &self.0
    }
}

// SAFETY: forwards to `Arena`, whose blocks stay valid until deallocated (the arena lives
// as long as any handle, so as long as any vector using it) and are never handed out twice.
unsafe impl Allocator for ArenaRef {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        self.0.allocate(layout)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's contract is the arena's.
        unsafe { self.0.deallocate(ptr, layout) }
    }
}

fn slot_bytes(class: usize) -> usize {
    match class.checked_sub(STEP_CLASSES) {
        None => (class + 1) * CLASS_STEP_BYTES,
        Some(large) => LARGE_CLASS_MIN_BYTES << large,
    }
}

fn slots_per_chunk(class: usize) -> usize {
    (CHUNK_BYTES - HEADER_BYTES) / slot_bytes(class)
}

/// The class of a request, or `None` where the heap serves it.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    let class = if size <= STEP_CLASSES * CLASS_STEP_BYTES {
        size.div_ceil(CLASS_STEP_BYTES).checked_sub(1)?
    } else {
        let doublings = size.div_ceil(LARGE_CLASS_MIN_BYTES).next_power_of_two().trailing_zeros() as usize;
        STEP_CLASSES + doublings
    };
    (class < CLASS_COUNT && layout.align() <= SLOT_ALIGN_MAX).then_some(class)
}

fn chunk_of(ptr: NonNull<u8>) -> NonNull<ChunkHeader> {
    NonNull::new((ptr.as_ptr() as usize & !(CHUNK_BYTES - 1)) as *mut ChunkHeader)
        .expect("a slot lies past its chunk's header")
}

impl Arena {
    /// Bytes of chunks mapped (what the arena costs in RSS once they are touched).
    pub fn mapped_bytes(&self) -> usize {
        self.mapped_chunks.load(Relaxed) * CHUNK_BYTES
    }

    /// Bytes of slots handed out (a walk over every chunk's header; for tests).
    #[cfg(test)]
    pub fn used_bytes(&self) -> usize {
        self.class_usage().iter().enumerate().map(|(class, (_, used, _))| used * slot_bytes(class)).sum()
    }

    fn class(&self, class: usize) -> MutexGuard<'_, ClassState> {
        // No code under a class lock panics short of an allocation failure in a `Vec`
        // push, which aborts; a poisoned lock holds consistent state.
        self.classes[class].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let Some(class) = class_of(layout) else {
            return Global.allocate(layout);
        };
        let mut state = self.class(class);
        let chunk = match state.partial.last() {
            Some(chunk) => *chunk,
            None => {
                let huge = self.huge_pages.load(Relaxed);
                let chunk = map_chunk(class, huge).ok_or(AllocError)?;
                if !huge {
                    self.collapse_queue().push((chunk.as_ptr() as usize, class));
                }
                self.mapped_chunks.fetch_add(1, Relaxed);
                state.partial.push(chunk);
                state.chunks.push(chunk);
                chunk
            }
        };
        // SAFETY: the chunk is mapped, has room and is of this class, whose lock we hold.
        let (slot, full) = unsafe { take_slot(chunk) };
        if full {
            state.partial.pop();
        }
        Ok(NonNull::slice_from_raw_parts(slot, slot_bytes(class)))
    }

    /// # Safety
    /// `ptr` was returned by `allocate` of this arena with a layout of the same class as
    /// `layout` (the `Allocator` contract), and is not used afterwards.
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: the heap served this layout's class (`allocate`).
            return unsafe { Global.deallocate(ptr, layout) };
        };
        let chunk = chunk_of(ptr);
        let mut state = self.class(class);
        // SAFETY: the slot came from this chunk (chunks are aligned to their size), which
        // stays mapped while it has a slot out; we hold its class's lock.
        let (was_full, now_empty, draining) = unsafe {
            let header = chunk.as_ptr();
            assert_eq!((*header).class, class, "a slot freed with another class's size");
            let was_full = (*header).free.is_null() && (*header).untouched_from == slots_per_chunk(class);
            let slot = ptr.as_ptr() as *mut FreeSlot;
            (*slot).next = (*header).free;
            (*header).free = slot;
            (*header).used -= 1;
            (was_full, (*header).used == 0, (*header).draining.load(Relaxed))
        };
        if draining {
            if now_empty {
                self.unmap(&mut state, chunk);
            }
            return;
        }
        if was_full {
            state.partial.push(chunk);
        }
        if now_empty && state.partial.len() > 1 {
            self.unmap(&mut state, chunk);
        }
    }

    fn collapse_queue(&self) -> MutexGuard<'_, Vec<(usize, usize)>> {
        // Pushes and pops cannot leave the list half-changed.
        self.to_collapse.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Turns huge pages on or off for the chunks mapped from now on. A restart fills the
    /// index with them off: on a virtual machine a huge page's first touch can cost several
    /// times what the same bytes in small pages cost (the host backs fresh memory as it is
    /// touched: 0.39 GB/s against 1.7 GB/s measured here), which made a fast restart of
    /// 10 M records take 1.8–2.3 s instead of 1.1–1.5 s. `collapse_some` then moves the
    /// chunks mapped meanwhile onto huge pages, a few at a time, in the background.
    pub fn set_huge_pages(&self, on: bool) {
        self.huge_pages.store(on, Relaxed);
    }

    /// Moves up to `max` chunks mapped while huge pages were off onto huge pages
    /// (`MADV_COLLAPSE`: the kernel copies each into a huge page; contents are unchanged,
    /// and a thread touching the chunk meanwhile waits for the copy). Returns how many
    /// chunks it asked for; where the kernel cannot (no `MADV_COLLAPSE` before Linux 6.1,
    /// huge pages off), the chunk stays on small pages and is not asked again.
    pub fn collapse_some(&self, max: usize) -> usize {
        let mut done = 0;
        while done < max {
            let Some((address, class)) = self.collapse_queue().pop() else { break };
            // Still ours? (An emptied chunk is unmapped and leaves the queue under its
            // class lock, so one popped and found listed was mapped a moment ago; if it
            // goes before the call below, the call fails or collapses whatever took the
            // addresses, neither of which changes a byte.)
            let listed = self.class(class).chunks.iter().any(|c| c.as_ptr() as usize == address);
            if listed {
                advise_huge(address, true);
                done += 1;
            }
        }
        done
    }

    fn unmap(&self, state: &mut ClassState, chunk: NonNull<ChunkHeader>) {
        state.partial.retain(|c| *c != chunk);
        state.chunks.retain(|c| *c != chunk);
        self.collapse_queue().retain(|(address, _)| *address != chunk.as_ptr() as usize);
        // SAFETY: the chunk has no slot out and is no longer listed, so nothing refers to it.
        unsafe {
            libc::munmap(chunk.as_ptr() as *mut libc::c_void, CHUNK_BYTES);
        }
        self.mapped_chunks.fetch_sub(1, Relaxed);
    }

    /// Marks the sparsest chunks of each class as draining while the rest of the class has
    /// room for their slots and a half chunk to spare; unmaps empty ones. Returns the
    /// slots in draining chunks, which the index must now move (`is_draining`).
    pub fn plan_drain(&self) -> usize {
        let mut to_move = 0;
        for class in 0..CLASS_COUNT {
            let per_chunk = slots_per_chunk(class);
            let mut state = self.class(class);
            // SAFETY (this block's header reads and writes): partial chunks are mapped and
            // we hold their class's lock.
            let used = |chunk: &NonNull<ChunkHeader>| unsafe { (*chunk.as_ptr()).used };
            state.partial.sort_by_key(|chunk| std::cmp::Reverse(used(chunk)));
            let mut free_slots: usize = state.partial.iter().map(|c| per_chunk - used(c)).sum();
            while let Some(&sparsest) = state.partial.last() {
                let empty = used(&sparsest) == 0;
                if !empty && free_slots < per_chunk + per_chunk / 2 {
                    break;
                }
                free_slots -= per_chunk;
                state.partial.pop();
                if empty {
                    self.unmap(&mut state, sparsest);
                } else {
                    to_move += used(&sparsest);
                    unsafe { (*sparsest.as_ptr()).draining.store(true, Relaxed) };
                }
            }
        }
        to_move
    }

    /// Whether the block at `ptr`, allocated with `layout` by this arena, lies in a
    /// draining chunk (its owner should move it: allocate anew, copy, free).
    pub fn is_draining(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        if class_of(layout).is_none() {
            return false;
        }
        // SAFETY: the block is live, so its chunk is mapped; `draining` is atomic.
        unsafe { (*chunk_of(ptr).as_ptr()).draining.load(Relaxed) }
    }

    /// Per class: (chunks mapped, slots handed out, slots a chunk holds).
    pub fn class_usage(&self) -> Vec<(usize, usize, usize)> {
        (0..CLASS_COUNT)
            .map(|class| {
                let state = self.class(class);
                // SAFETY: listed chunks are mapped; we hold the lock.
                let used = state.chunks.iter().map(|c| unsafe { (*c.as_ptr()).used }).sum();
                (state.chunks.len(), used, slots_per_chunk(class))
            })
            .collect()
    }

    /// Checks the invariants of the module comment; returns the slots handed out. For tests.
    #[cfg(test)]
    fn check(&self) -> usize {
        let mut slots_out = 0;
        for class in 0..CLASS_COUNT {
            let state = self.class(class);
            for chunk in &state.chunks {
                // SAFETY: listed chunks are mapped; we hold the class lock.
                unsafe {
                    let header = chunk.as_ptr();
                    assert_eq!((*header).class, class);
                    let mut free = 0;
                    let mut slot = (*header).free;
                    while !slot.is_null() {
                        free += 1;
                        slot = (*slot).next;
                    }
                    assert_eq!((*header).used + free, (*header).untouched_from);
                    let has_room = (*header).used < slots_per_chunk(class);
                    let listed = has_room && !(*header).draining.load(Relaxed);
                    assert_eq!(state.partial.contains(chunk), listed, "partial list out of step");
                    slots_out += (*header).used;
                }
            }
        }
        slots_out
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Every handle, and so every vector, is gone: no slot is out.
        for class in 0..CLASS_COUNT {
            let mut state = self.class(class);
            while let Some(&chunk) = state.chunks.last() {
                self.unmap(&mut state, chunk);
            }
        }
    }
}

/// Hands out one slot of `chunk`; also says whether the chunk is full after it.
///
/// # Safety
/// `chunk` is mapped, has room, and its class's lock is held.
unsafe fn take_slot(chunk: NonNull<ChunkHeader>) -> (NonNull<u8>, bool) {
    let header = chunk.as_ptr();
    // SAFETY: per the contract; freed slots hold a `FreeSlot` link.
    unsafe {
        let class = (*header).class;
        let slot = if !(*header).free.is_null() {
            let slot = (*header).free;
            (*header).free = (*slot).next;
            slot as *mut u8
        } else {
            let index = (*header).untouched_from;
            assert!(index < slots_per_chunk(class), "a full chunk asked for a slot");
            (*header).untouched_from += 1;
            (chunk.as_ptr() as *mut u8).add(HEADER_BYTES + index * slot_bytes(class))
        };
        (*header).used += 1;
        let full = (*header).free.is_null() && (*header).untouched_from == slots_per_chunk(class);
        (NonNull::new_unchecked(slot), full)
    }
}

/// Advises a chunk onto a huge page: as it is first touched (`collapse` false), or now.
fn advise_huge(address: usize, collapse: bool) {
    // Without transparent huge pages (or with them off) this fails and the chunk is
    // ordinary pages: slower lookups in a large index, nothing else.
    #[cfg(target_os = "linux")]
    // SAFETY: advice only; it changes no byte of the range.
    unsafe {
        libc::madvise(address as *mut libc::c_void, CHUNK_BYTES, libc::MADV_HUGEPAGE);
        #[cfg(target_env = "gnu")]
        if collapse {
            libc::madvise(address as *mut libc::c_void, CHUNK_BYTES, libc::MADV_COLLAPSE);
        }
    }
    let _ = (address, collapse);
}

/// Maps a fresh chunk for `class`, aligned to its size, advised onto a huge page if `huge`.
fn map_chunk(class: usize, huge: bool) -> Option<NonNull<ChunkHeader>> {
    // Twice the size, so that an aligned chunk lies inside; the ends are unmapped.
    let span = 2 * CHUNK_BYTES;
    // SAFETY: an anonymous private mapping aliases nothing; the unmapped ends are ours.
    unsafe {
        let raw = libc::mmap(
            null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(CHUNK_BYTES);
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + span - (aligned + CHUNK_BYTES);
        if tail > 0 {
            libc::munmap((aligned + CHUNK_BYTES) as *mut libc::c_void, tail);
        }
        if huge {
            advise_huge(aligned, false);
        }
        let header = aligned as *mut ChunkHeader;
        header.write(ChunkHeader {
            class,
            used: 0,
            untouched_from: 0,
            free: null_mut(),
            draining: AtomicBool::new(false),
        });
        NonNull::new(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::SimRng;

    fn layout(class: usize) -> Layout {
        Layout::from_size_align(slot_bytes(class), 4).unwrap()
    }

    #[test]
    fn slots_are_distinct_keep_their_bytes_and_whole_chunks_go_back() {
        let arena = Arena::default();
        // `SPIKE_SEED` replays a failure; else a fresh seed, printed.
        let seed = std::env::var("SPIKE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("SPIKE_SEED={seed}");
        let mut rng = SimRng::new(seed);
        let mut out: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
        for round in 0..40_000u32 {
            if out.is_empty() || rng.next_u64() % 3 != 0 {
                let class = (rng.next_u64() % CLASS_COUNT as u64) as usize;
                let slot = arena.allocate(layout(class)).unwrap();
                assert!(slot.len() >= slot_bytes(class));
                let fill = round as u8;
                let ptr = slot.as_ptr() as *mut u8;
                unsafe { std::ptr::write_bytes(ptr, fill, slot_bytes(class)) };
                out.push((NonNull::new(ptr).unwrap(), class, fill));
            } else {
                let (ptr, class, fill) = out.swap_remove((rng.next_u64() % out.len() as u64) as usize);
                let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), slot_bytes(class)) };
                assert!(bytes.iter().all(|b| *b == fill), "seed {seed}: a slot was overwritten");
                unsafe { arena.deallocate(ptr, layout(class)) };
            }
        }
        assert!(
            arena.mapped_bytes() > CLASS_COUNT * CHUNK_BYTES,
            "the test must span several chunks a class"
        );
        let used: usize = out.iter().map(|(_, class, _)| slot_bytes(*class)).sum();
        assert_eq!(arena.used_bytes(), used);
        arena.check();
        for (ptr, class, fill) in out.drain(..) {
            let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), slot_bytes(class)) };
            assert!(bytes.iter().all(|b| *b == fill), "seed {seed}: a slot was overwritten");
            unsafe { arena.deallocate(ptr, layout(class)) };
        }
        assert_eq!(arena.check(), 0);
        assert_eq!(
            (arena.used_bytes(), arena.mapped_bytes()),
            (0, CLASS_COUNT * CHUNK_BYTES),
            "one chunk a class stays"
        );
    }

    #[test]
    fn a_drain_moves_the_sparse_chunks_slots_and_unmaps_them() {
        let arena = Arena::default();
        let class = 8;
        assert!(class < STEP_CLASSES);
        let per_chunk = slots_per_chunk(class);
        let mut live: Vec<(NonNull<u8>, u8)> = Vec::new();
        for i in 0..per_chunk * 6 {
            let slot = arena.allocate(layout(class)).unwrap().as_ptr() as *mut u8;
            unsafe { std::ptr::write_bytes(slot, i as u8, slot_bytes(class)) };
            live.push((NonNull::new(slot).unwrap(), i as u8));
        }
        assert_eq!(arena.mapped_bytes(), 6 * CHUNK_BYTES);
        // A wave passes: two slots in three go, spread over every chunk.
        let mut kept = Vec::new();
        for (i, (slot, fill)) in live.into_iter().enumerate() {
            if i % 3 == 0 {
                kept.push((slot, fill));
            } else {
                unsafe { arena.deallocate(slot, layout(class)) };
            }
        }
        assert_eq!(arena.mapped_bytes(), 6 * CHUNK_BYTES, "no chunk is empty, none can go");
        let to_move = arena.plan_drain();
        assert!(to_move > 0);
        arena.check();
        let mut moved = 0;
        for (slot, _) in &mut kept {
            if arena.is_draining(*slot, layout(class)) {
                let fresh = arena.allocate(layout(class)).unwrap().as_ptr() as *mut u8;
                assert!(
                    !arena.is_draining(NonNull::new(fresh).unwrap(), layout(class)),
                    "a slot handed out of a draining chunk"
                );
                unsafe {
                    std::ptr::copy_nonoverlapping(slot.as_ptr(), fresh, slot_bytes(class));
                    arena.deallocate(*slot, layout(class));
                }
                *slot = NonNull::new(fresh).unwrap();
                moved += 1;
            }
        }
        assert_eq!(moved, to_move);
        arena.check();
        assert_eq!(arena.mapped_bytes(), 3 * CHUNK_BYTES, "two thirds free: three chunks of six go");
        for (slot, fill) in kept {
            let bytes = unsafe { std::slice::from_raw_parts(slot.as_ptr(), slot_bytes(class)) };
            assert!(bytes.iter().all(|b| *b == fill), "a moved slot lost its bytes");
            unsafe { arena.deallocate(slot, layout(class)) };
        }
        assert_eq!(arena.check(), 0);
    }

    #[test]
    fn chunks_mapped_on_small_pages_are_collapsed_later_once_each_while_mapped() {
        let arena = Arena::default();
        let class = CLASS_COUNT - 1;
        let per_chunk = slots_per_chunk(class);
        let slots: Vec<_> = (0..per_chunk + 1).map(|_| arena.allocate(layout(class)).unwrap()).collect();
        let small = arena.allocate(layout(0)).unwrap();
        assert_eq!(arena.mapped_bytes(), 3 * CHUNK_BYTES);
        arena.set_huge_pages(true);
        let huge = arena.allocate(layout(1)).unwrap();
        // The second chunk of `class` holds one slot: once the first has room, freeing it
        // unmaps the chunk, which must leave the queue too.
        for slot in [slots[0], slots[per_chunk]] {
            unsafe { arena.deallocate(NonNull::new(slot.as_ptr() as *mut u8).unwrap(), layout(class)) };
        }
        assert_eq!(arena.mapped_bytes(), 3 * CHUNK_BYTES, "two chunks of small pages and one huge");
        assert_eq!(arena.collapse_some(1), 1);
        assert_eq!(arena.collapse_some(10), 1, "the unmapped chunk and the huge one are not asked");
        assert_eq!(arena.collapse_some(10), 0);
        for slot in &slots[1..per_chunk] {
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(slot.as_ptr() as *mut u8, slot_bytes(class)) };
            bytes.fill(7);
            unsafe { arena.deallocate(NonNull::new(slot.as_ptr() as *mut u8).unwrap(), layout(class)) };
        }
        for (slot, class) in [(small, 0), (huge, 1)] {
            unsafe { arena.deallocate(NonNull::new(slot.as_ptr() as *mut u8).unwrap(), layout(class)) };
        }
        assert_eq!(arena.check(), 0);
    }

    #[test]
    fn sizes_past_the_classes_go_to_the_heap() {
        let arena = Arena::default();
        let big = Layout::from_size_align(slot_bytes(CLASS_COUNT - 1) + 1, 4).unwrap();
        let aligned = Layout::from_size_align(64, 64).unwrap();
        for layout in [big, aligned] {
            let block = arena.allocate(layout).unwrap();
            unsafe { arena.deallocate(NonNull::new(block.as_ptr() as *mut u8).unwrap(), layout) };
        }
        assert_eq!(arena.mapped_bytes(), 0);
        assert_eq!(class_of(Layout::from_size_align(1, 1).unwrap()), Some(0));
        assert_eq!(class_of(layout(CLASS_COUNT - 1)), Some(CLASS_COUNT - 1));
        for class in 0..CLASS_COUNT {
            assert_eq!(class_of(layout(class)), Some(class), "a slot's own size maps to its class");
            let smaller = Layout::from_size_align(slot_bytes(class) - 1, 4).unwrap();
            assert_eq!(class_of(smaller), Some(class));
            let larger = Layout::from_size_align(slot_bytes(class) + 1, 4).unwrap();
            assert_eq!(class_of(larger), (class + 1 < CLASS_COUNT).then_some(class + 1));
        }
        assert_eq!(slot_bytes(STEP_CLASSES), 8 << 10);
        assert_eq!(slot_bytes(CLASS_COUNT - 1), 256 << 10);
    }
}
