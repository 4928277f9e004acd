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
//! Cost: one sequential read of the device's used blocks per scan, so scans are spaced
//! by `tombstone_scan_interval_ms` and run only when tombstones are worth reclaiming.

use crate::device::AlignedBuf;
use crate::disk::{BlockState, Disk};
use crate::engine::Shared;
use crate::error::Result;
use crate::format::{block_records, BlockItem};
use crate::index::{partition_of, DigestTag, EntryInfo, PARTITION_COUNT};
use crate::stats::Counters;
use std::collections::HashMap;

struct Candidate {
    entry: EntryInfo,
    older_copy_found: bool,
}

/// Scans every device and reclaims the tombstones with no older copy left. Returns how
/// many were reclaimed.
pub fn reclaim_tombstones(shared: &Shared) -> Result<u64> {
    let mut reclaimed = 0;
    for disk in &shared.disks {
        reclaimed += reclaim_on_disk(shared, disk)?;
    }
    Counters::add(&shared.counters.tombstones_reclaimed, reclaimed);
    Ok(reclaimed)
}

fn reclaim_on_disk(shared: &Shared, disk: &Disk) -> Result<u64> {
    let mut candidates: HashMap<(u16, DigestTag), Candidate> = HashMap::new();
    for partition in 0..PARTITION_COUNT {
        for entry in shared.index.partition(partition).entries() {
            if entry.tombstone && entry.location.device == disk.index {
                candidates
                    .insert((partition as u16, entry.tag), Candidate { entry, older_copy_found: false });
            }
        }
    }
    if candidates.is_empty() {
        return Ok(0);
    }
    let blocks: Vec<(u32, u64)> = {
        let state = disk.lock();
        (0..disk.geometry.wblock_count)
            .filter(|&b| state.block_state[b as usize] != BlockState::Free)
            .map(|b| (b, state.block_seq[b as usize]))
            .collect()
    };
    let mut buf = AlignedBuf::zeroed(disk.geometry.wblock_size as usize);
    for (block, seq) in blocks {
        if !disk.copy_block_from_memory(block, seq, &mut buf) {
            disk.device.read_at(&mut buf, disk.geometry.wblock_offset(block))?;
        }
        for item in block_records(&buf, seq) {
            let BlockItem::Record { view, .. } = item else { continue };
            let key = (partition_of(&view.meta.digest) as u16, DigestTag::of(&view.meta.digest));
            if let Some(candidate) = candidates.get_mut(&key) {
                if view.meta.generation < candidate.entry.generation {
                    candidate.older_copy_found = true;
                }
            }
        }
    }
    let mut reclaimed = 0;
    for ((partition, tag), candidate) in candidates {
        if candidate.older_copy_found {
            continue;
        }
        let mut p = shared.index.partition(partition as usize);
        if p.get(tag) != Some(candidate.entry) {
            continue;
        }
        p.remove(tag);
        p.raise_generation_floor(candidate.entry.generation);
        disk.remove_live(candidate.entry.location);
        reclaimed += 1;
    }
    Ok(reclaimed)
}

impl Disk {
    /// Copies a block that is open, queued or cached into `buf`; false if it is not in RAM.
    fn copy_block_from_memory(&self, block: u32, seq: u64, buf: &mut [u8]) -> bool {
        let state = self.lock();
        if let Some(open) = state.open.as_ref().filter(|o| o.wblock == block && o.seq == seq) {
            buf.copy_from_slice(&open.buf);
            return true;
        }
        match state.to_write.iter().chain(state.cache.iter()).find(|b| b.wblock == block && b.seq == seq) {
            Some(sealed) => {
                buf.copy_from_slice(&sealed.buf);
                true
            }
            None => false,
        }
    }
}
