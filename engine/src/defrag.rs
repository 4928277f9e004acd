//! The defragmenter: reclaims write blocks whose live bytes fell under the low-water mark.
//!
//! Mechanism and policy are apart: `pick_victims` asks the disk's policy
//! (`defrag_policy`) for the emptiest in-use blocks under `defrag_lwm_pct`, already
//! written to the device; `defrag_block`
//! (mechanism) reads one victim whole (one direct read, or from the post-write cache),
//! and moves every record the index still names at that copy into the write buffer,
//! keeping its generation and last-update time. The index is repointed under the
//! partition lock only if it still names the old copy, so a concurrent client overwrite
//! wins. The victim's live bytes then reach zero and the ordinary free path takes over: it
//! frees the block only after the moved copies are durable, and overwrites its header as
//! free first. A crash at any moment therefore leaves either copy, never neither.
//!
//! Defrag appends may take the reserved free blocks clients cannot, so it can always
//! progress. It pauses `defrag_sleep_us` between blocks while free space is plentiful and
//! runs flat out when free blocks fall near the stop-writes mark.
//!
//! Cost per victim: one read of a write block (into the caller's `Scratch`, so no
//! allocation), one decode per record, one append and one
//! index update per live record; written bytes = the victim's live bytes (at lwm 50, at
//! most half a block), which bounds write amplification at 100 / (100 - lwm).

use crate::device::AlignedBuf;
use crate::disk::{BlockState, Disk};
use crate::error::{Error, Result};
use crate::format::{block_records, BlockClass, BlockItem, RecordView};
use crate::index::{partition_of, EntryInfo, Location};
use crate::record_core::Shared;
use crate::stats::Counters;
use crate::write::WriteKind;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Victims chosen per scan of the live-byte table.
const VICTIMS_PER_PICK: usize = 16;

/// The next victims: up to `VICTIMS_PER_PICK` written, in-use blocks under the low-water
/// mark (raised to `URGENT_LWM_PCT` when free space is low), emptiest first, from the
/// disk's event-driven policy (`defrag_policy`): no walk of the block table.
pub fn pick_victims(disk: &Disk) -> Vec<u32> {
    disk.victims.pick(lwm_now(disk), VICTIMS_PER_PICK, &disk.live_bytes)
}

/// How many blocks are defrag victims now.
pub fn victim_count(disk: &Disk) -> usize {
    disk.victims.count_below(lwm_now(disk), &disk.live_bytes)
}

/// The low-water mark in live bytes that applies now.
fn lwm_now(disk: &Disk) -> u32 {
    disk.defrag_lwm_bytes[is_urgent(disk) as usize]
}

/// Whether free space is low enough that defrag should not pause.
pub fn is_urgent(disk: &Disk) -> bool {
    let free = disk.lock().blocks.free_count();
    disk.short_of_space(free)
}

/// Moves every live record out of `block`. Returns the bytes moved.
pub fn defrag_block(shared: &Shared, disk: &Disk, block: u32, scratch: &mut Scratch) -> Result<u64> {
    let (seq, cached) = {
        let state = disk.lock();
        if state.blocks.state(block) != BlockState::InUse {
            return Ok(0);
        }
        let cached = state.cache.get(block).cloned();
        (state.blocks.seq(block), cached)
    };
    let bytes: &[u8] = match &cached {
        Some(sealed) => &sealed.buf,
        None => {
            let buf = scratch.block_buf(disk.geometry.wblock_size as usize);
            disk.device.read_at(buf, disk.geometry.wblock_offset(block))?;
            buf
        }
    };
    Counters::add(&shared.counters.defrag_blocks_read, 1);
    match disk.classify(bytes, block) {
        BlockClass::Data { write_seq } if write_seq == seq => {}
        _ => {
            // Still in use (checked above) yet its header is not what was written:
            // corrupted at rest. Returning to it would read it again and again.
            if disk.quarantine(block) {
                Counters::add(&shared.counters.blocks_quarantined, 1);
            }
            return Ok(0);
        }
    }
    let base = disk.geometry.wblock_offset(block);
    let mut moved = 0u64;
    for item in block_records(bytes, seq) {
        let BlockItem::Record { offset, view } = item else { continue };
        let old = Location {
            device: disk.index,
            offset_bytes: base + offset as u64,
            size_bytes: view.size_bytes as u32,
        };
        if move_record(shared, disk, &view, old)? {
            moved += old.size_bytes as u64;
        }
    }
    Counters::add(&shared.counters.defrag_bytes_written, moved);
    Counters::add(&shared.counters.blocks_defragged, 1);
    let stuck = disk.live_bytes[block as usize].load(Ordering::Acquire);
    if stuck > 0 {
        // The index still names records here that the walk could not read (corrupted at
        // rest: each fails its checksum). Picking the block again would re-read it every
        // round for nothing; it leaves the policy until those records are overwritten or
        // deleted, when the ordinary free path takes it.
        disk.victims.untrack(block);
        log::error!(
            "{}: write block {block} keeps {stuck} live bytes defrag could not move (unreadable \
             records the index still names); left out of defrag until they are rewritten",
            disk.name()
        );
    }
    Ok(moved)
}

/// Moves one record if the index still names its copy at `old`; returns whether it did.
/// A full write queue is waited out with no partition lock held (readers of the
/// partition must not wait on the device), up to `overload_wait_ms`.
fn move_record(shared: &Shared, disk: &Disk, view: &RecordView<'_>, old: Location) -> Result<bool> {
    let digest = &view.meta.digest;
    let deadline = disk.overload_deadline();
    loop {
        let mut partition = shared.index.partition(partition_of(&view.meta.digest));
        let Some(entry) = partition.get(digest).filter(|e| e.location == old) else { return Ok(false) };
        match disk.append(&view.meta, view.key, view.value, WriteKind::Defrag) {
            Ok((new, _)) => {
                partition.upsert(digest, EntryInfo { location: new, ..entry });
                disk.remove_live(old);
                return Ok(true);
            }
            Err(Error::DeviceOverloaded { .. }) if Instant::now() < deadline => {
                drop(partition);
                disk.wait_for_queue_room(deadline);
            }
            Err(err) => return Err(err),
        }
    }
}

/// The buffer victims are read into, kept by the caller across rounds: a fresh zeroed
/// write block per victim (page faults, a memset and an munmap each time) was 40% of the
/// janitor's CPU under a stream of updates.
#[derive(Default)]
pub struct Scratch {
    buf: Option<AlignedBuf>,
}

impl Scratch {
    /// A buffer of exactly `len` bytes (a write block), allocated on first use. Its
    /// contents are whatever the last read left: every use overwrites it whole.
    fn block_buf(&mut self, len: usize) -> &mut AlignedBuf {
        if self.buf.as_ref().is_some_and(|buf| buf.len() != len) {
            self.buf = None;
        }
        self.buf.get_or_insert_with(|| AlignedBuf::zeroed(len))
    }
}

/// One round of defrag over every disk; returns whether any block was processed.
pub fn defrag_round(shared: &Shared, scratch: &mut Scratch, stop: &dyn Fn() -> bool) -> bool {
    let mut worked = false;
    if !shared.config.defrag_enabled {
        return worked;
    }
    for disk in &shared.disks {
        if disk.failed.load(Ordering::Relaxed) {
            continue;
        }
        for block in pick_victims(disk) {
            if stop() {
                return worked;
            }
            match defrag_block(shared, disk, block, scratch) {
                Ok(_) => worked = true,
                Err(err) => {
                    log::warn!("defrag of block {block} on {} stopped: {err}", disk.name());
                    break;
                }
            }
            if !is_urgent(disk) && shared.config.defrag_sleep_us > 0 {
                std::thread::sleep(std::time::Duration::from_micros(shared.config.defrag_sleep_us));
            }
        }
    }
    worked
}
