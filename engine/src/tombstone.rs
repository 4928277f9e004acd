//! Tombstone reclaim: a tombstone (or an expired record, which the index keeps as one)
//! may leave the index only once no older copy of its record remains on its device, or
//! the older copy would come back at the next cold start.
//!
//! A scan reads every block that can hold records (in use, queued, open) and notes, for
//! each tombstone, whether any copy with a lower generation is still there. Tombstones
//! with none are removed from the index under their partition lock (only if the index
//! still names the same copy), and the partition's generation floor rises to their
//! generation so a re-created key outranks the tombstone's own copy, which stays on the
//! device until its block is rewritten.
//!
//! Cost: one sequential read of the device's used blocks per scan, streamed with
//! `SCAN_IN_FLIGHT_BLOCKS` whole-block reads in flight and at most
//! `tombstone_scan_mib_s` (blocks still in RAM are copied instead), on a thread of lowered
//! priority, so scans are spaced by `tombstone_scan_interval_ms` and run only when
//! tombstones are worth reclaiming. Scans run on the reclaimer thread (`janitor`), never on
//! the thread that defrags; a scan stops between two blocks when the engine closes.

use crate::device::{AlignedBuf, StreamRead};
use crate::disk::{BlockState, Disk};
use crate::error::{Error, Result};
use crate::format::{block_records, BlockItem};
use crate::index::{partition_of, DigestTag, EntryInfo, EntryName, PARTITION_COUNT};
use crate::record_core::Shared;
use crate::stats::Counters;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// Whole-block reads a scan keeps in flight: enough that the device never idles between
/// two reads, few enough that a background scan leaves the device to the writers and to
/// defrag (a cold start, which has the device to itself, keeps 8 MiB in flight).
const SCAN_IN_FLIGHT_BLOCKS: usize = 2;

struct Candidate {
    entry: EntryInfo,
    older_copy_found: bool,
}

/// By partition and the entry's name (its tag, or its digest where the tag is shared).
type Candidates = HashMap<(u16, EntryName), Candidate>;

/// Scans every device and reclaims the tombstones with no older copy left. Returns how
/// many were reclaimed. `stop` is asked between blocks: a stopped scan reclaims nothing
/// and returns `ShutDown`.
pub fn reclaim_tombstones(shared: &Shared, stop: &dyn Fn() -> bool) -> Result<u64> {
    let mut reclaimed = 0;
    for disk in &shared.disks {
        reclaimed += reclaim_on_disk(shared, disk, stop)?;
    }
    Counters::add(&shared.counters.tombstones_reclaimed, reclaimed);
    Ok(reclaimed)
}

fn reclaim_on_disk(shared: &Shared, disk: &Disk, stop: &dyn Fn() -> bool) -> Result<u64> {
    let mut candidates: Candidates = HashMap::new();
    for partition in 0..PARTITION_COUNT {
        for (name, entry) in shared.index.partition(partition).named_entries() {
            if entry.tombstone && entry.location.device == disk.index {
                candidates.insert((partition as u16, name), Candidate { entry, older_copy_found: false });
            }
        }
    }
    if candidates.is_empty() {
        return Ok(0);
    }
    scan_used_blocks(disk, &mut candidates, shared.config.tombstone_scan_mib_s, stop)?;
    let mut reclaimed = 0;
    for ((partition, name), candidate) in candidates {
        if candidate.older_copy_found {
            continue;
        }
        let mut p = shared.index.partition(partition as usize);
        if p.get_named(name) != Some(candidate.entry) {
            continue;
        }
        p.remove_named(name);
        p.raise_generation_floor(candidate.entry.generation);
        disk.remove_live(candidate.entry.location);
        reclaimed += 1;
    }
    Ok(reclaimed)
}

/// Notes, for every candidate, whether a copy older than its tombstone is in a used block.
/// Blocks in RAM are copied; the rest stream from the device in block order.
fn scan_used_blocks(
    disk: &Disk,
    candidates: &mut Candidates,
    mib_s: u32,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let wblock_size = disk.geometry.wblock_size as usize;
    let used: Vec<(u32, u64)> = {
        let state = disk.lock();
        (0..disk.geometry.wblock_count)
            .filter(|&b| state.blocks.state(b) != BlockState::Free)
            .map(|b| (b, state.blocks.seq(b)))
            .collect()
    };
    let mut on_device = Vec::with_capacity(used.len());
    let mut buf = AlignedBuf::zeroed(wblock_size);
    for (block, seq) in used {
        if disk.copy_block_from_memory(block, seq, &mut buf) {
            note_older_copies(&buf, seq, candidates);
        } else {
            on_device.push((block, seq));
        }
    }
    let depth = SCAN_IN_FLIGHT_BLOCKS;
    let spare = RefCell::new(vec![buf]);
    let in_flight = RefCell::new(VecDeque::with_capacity(depth));
    let mut pending = on_device.into_iter();
    let mut pace = Pace::new(mib_s);
    let mut next = || -> Result<Option<StreamRead>> {
        crate::failpoint::hit("tombstone::scan::next_block")?;
        if stop() {
            return Err(Error::ShutDown);
        }
        let Some((block, seq)) = pending.next() else { return Ok(None) };
        pace.before_read(wblock_size as u64, stop)?;
        in_flight.borrow_mut().push_back(seq);
        let buf = spare.borrow_mut().pop().unwrap_or_else(|| AlignedBuf::zeroed(wblock_size));
        Ok(Some(StreamRead { offset: disk.geometry.wblock_offset(block), buf, len: wblock_size }))
    };
    let mut done = |read: StreamRead| -> Result<()> {
        // Reads come back in the order `next` gave them.
        let seq = in_flight.borrow_mut().pop_front().ok_or(Error::ShutDown)?;
        note_older_copies(&read.buf, seq, candidates);
        spare.borrow_mut().push(read.buf);
        Ok(())
    };
    disk.device.read_stream(depth, &mut next, &mut done)
}

/// Keeps a scan's reads under a rate: before each read, sleeps until the bytes read so far
/// are within the budget of the time elapsed (in slices, so that a close stops it soon).
struct Pace {
    bytes_per_s: u64,
    start: std::time::Instant,
    bytes: u64,
}

impl Pace {
    fn new(mib_s: u32) -> Self {
        Pace { bytes_per_s: mib_s as u64 * (1 << 20), start: std::time::Instant::now(), bytes: 0 }
    }

    fn before_read(&mut self, len: u64, stop: &dyn Fn() -> bool) -> Result<()> {
        if self.bytes_per_s == 0 {
            return Ok(());
        }
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_s as f64);
        while let Some(wait) = due.checked_sub(self.start.elapsed()).filter(|w| !w.is_zero()) {
            if stop() {
                return Err(Error::ShutDown);
            }
            // Pacing a background scan is the point of this sleep.
            std::thread::sleep(wait.min(std::time::Duration::from_millis(50)));
        }
        self.bytes += len;
        Ok(())
    }
}

/// Marks the candidates that have a copy of a lower generation in this block.
fn note_older_copies(buf: &[u8], seq: u64, candidates: &mut Candidates) {
    for item in block_records(buf, seq) {
        let BlockItem::Record { view, .. } = item else { continue };
        let partition = partition_of(&view.meta.digest) as u16;
        let by_tag = (partition, EntryName::Tag(DigestTag::of(&view.meta.digest)));
        let by_digest = (partition, EntryName::Digest(view.meta.digest));
        for key in [by_tag, by_digest] {
            if let Some(candidate) = candidates.get_mut(&key) {
                if view.meta.generation < candidate.entry.generation {
                    candidate.older_copy_found = true;
                }
            }
        }
    }
}

impl Disk {
    /// Copies a block that is open, queued or cached into `buf`; false if it is not in RAM.
    fn copy_block_from_memory(&self, block: u32, seq: u64, buf: &mut [u8]) -> bool {
        let state = self.lock();
        if let Some(open) = state.open.as_ref().filter(|o| o.wblock == block && o.seq == seq) {
            buf.copy_from_slice(&open.buf);
            return true;
        }
        let queued = state.to_write.iter().find(|b| b.wblock == block && b.seq == seq);
        match queued.or_else(|| state.cache.get(block).filter(|b| b.seq == seq)) {
            Some(sealed) => {
                buf.copy_from_slice(&sealed.buf);
                true
            }
            None => false,
        }
    }
}
