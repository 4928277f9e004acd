//! Fast restart: the index snapshot written at clean shutdown and restored at open.
//!
//! At close, after the flusher has written and synced everything, each device's share of
//! the index (the entries pointing into it), its block sequence numbers and the
//! partitions' generation floors are written into free write blocks (kind SNAPSHOT,
//! chained by a next-block field), synced, and only then does the header get the clean
//! flag and the snapshot's place, length, checksum and the open count of this run. At open,
//! a snapshot is used only if the header is clean and the snapshot's open count equals the
//! header's (any later run that started writing bumped it and cleared the flag), and
//! its checksum and every field hold; otherwise the engine cold-starts. The result is the
//! state a cold start of the same device rebuilds.
//!
//! The payload's bytes and the chain headers are `format::snapshot_payload`.

use crate::device::{AlignedBuf, Device};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::format::Geometry;
use crate::format::{
    classify_block, decode_snapshot_chain, encode_snapshot_chain, encode_snapshot_entry,
    encode_snapshot_payload, parse_snapshot_payload, BlockClass, DeviceHeader, SnapshotRef,
    SNAPSHOT_CHAIN_END, SNAPSHOT_CHUNK_START, WBLOCK_HEADER_SIZE, WBLOCK_KIND_SNAPSHOT,
};
use crate::index::{Index, IndexEntry, PARTITION_COUNT};
use std::sync::atomic::Ordering;
use xxhash_rust::xxh3::xxh3_64;

/// Called at close, once the flusher and janitor have stopped. Partition locks are taken
/// (one at a time) before the disk lock, never while holding it: the lock order
/// (ARCHITECTURE.md) is partition, then disk.
fn encode_payload(disk: &Disk, index: &Index) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut floors = Vec::with_capacity(PARTITION_COUNT);
    for partition in 0..PARTITION_COUNT {
        let p = index.partition(partition);
        floors.push(p.generation_floor());
        for entry in p.entries().filter(|e| e.location.device == disk.index) {
            encode_snapshot_entry(partition, &IndexEntry::new(entry).to_bytes(), &mut entries);
        }
    }
    let state = disk.lock();
    encode_snapshot_payload(state.next_seq, state.blocks.seqs(), &floors, &entries)
}

/// Writes this disk's snapshot into free blocks and syncs. `None` when the free blocks
/// cannot hold it (the next open then cold-starts).
pub fn write_snapshot(disk: &Disk, index: &Index, open_count: u64) -> Result<Option<SnapshotRef>> {
    let payload = encode_payload(disk, index);
    let wbs = disk.geometry.wblock_size as usize;
    let per_block = wbs - SNAPSHOT_CHUNK_START;
    let needed = payload.len().div_ceil(per_block);
    let blocks: Vec<u32> = disk.lock().blocks.free_blocks().take(needed).collect();
    if blocks.len() < needed {
        log::warn!(
            "{}: snapshot needs {needed} free blocks, {} free; next open will cold-start",
            disk.name(),
            blocks.len()
        );
        return Ok(None);
    }
    disk.mark_changed(&blocks)?;
    let mut buf = AlignedBuf::zeroed(wbs);
    for (i, (&block, chunk)) in blocks.iter().zip(payload.chunks(per_block)).enumerate() {
        buf.fill(0);
        disk.wblock_header(WBLOCK_KIND_SNAPSHOT, open_count, block)
            .encode_into(&mut buf[..WBLOCK_HEADER_SIZE]);
        let next = blocks.get(i + 1).copied().unwrap_or(SNAPSHOT_CHAIN_END);
        encode_snapshot_chain(next, chunk.len(), &mut buf);
        buf[SNAPSHOT_CHUNK_START..SNAPSHOT_CHUNK_START + chunk.len()].copy_from_slice(chunk);
        disk.device.write_at(&buf, disk.geometry.wblock_offset(block))?;
    }
    disk.device.sync()?;
    Ok(Some(SnapshotRef {
        offset: blocks.first().map_or(0, |&b| disk.geometry.wblock_offset(b)),
        len_bytes: payload.len() as u64,
        checksum: xxh3_64(&payload),
        open_count,
    }))
}

fn bad(device: &dyn Device, offset: u64, reason: impl Into<String>) -> Error {
    Error::corrupt(device.name(), offset, format!("index snapshot: {}", reason.into()))
}

/// Reads the snapshot the header points at, following its chain, and checks its length
/// and checksum. (Used at open and by `spike-inspect check`.)
pub fn read_payload(device: &dyn Device, header: &DeviceHeader) -> Result<Vec<u8>> {
    let snapshot = header.snapshot;
    let geometry = Geometry::of(header);
    let Some((mut block, 0)) = geometry.locate(snapshot.offset) else {
        return Err(bad(device, snapshot.offset, "does not start at a write block"));
    };
    let wbs = geometry.wblock_size as usize;
    // Never trust a length from the device for an allocation beyond what the blocks can hold.
    let area_bytes = geometry.wblock_count as u64 * wbs as u64;
    if snapshot.len_bytes > area_bytes {
        return Err(bad(device, snapshot.offset, "longer than the device's write blocks"));
    }
    let mut payload = Vec::with_capacity(snapshot.len_bytes as usize);
    let mut buf = AlignedBuf::zeroed(wbs);
    for _ in 0..geometry.wblock_count {
        let offset = geometry.wblock_offset(block);
        device.read_at(&mut buf, offset)?;
        let class = classify_block(&buf, &header.device_uuid, block);
        if class != (BlockClass::Snapshot { open_count: snapshot.open_count }) {
            return Err(bad(device, offset, format!("block is not part of this snapshot ({class:?})")));
        }
        let (chunk, next) = decode_snapshot_chain(&buf).map_err(|reason| bad(device, offset, reason))?;
        payload.extend_from_slice(chunk);
        if payload.len() as u64 >= snapshot.len_bytes || next == SNAPSHOT_CHAIN_END {
            break;
        }
        if next >= geometry.wblock_count {
            return Err(bad(device, offset, "chain points outside the device"));
        }
        block = next;
    }
    if payload.len() as u64 != snapshot.len_bytes || xxh3_64(&payload) != snapshot.checksum {
        return Err(bad(device, snapshot.offset, "length or checksum mismatch"));
    }
    Ok(payload)
}

/// Restores this disk's index entries, block table and free list from its snapshot.
/// Any error means the caller must cold-start (with a fresh index).
pub fn load_snapshot(disk: &Disk, index: &Index) -> Result<u64> {
    let header = disk.header().clone();
    let device = disk.device.as_ref();
    if !header.is_clean() || header.snapshot.len_bytes == 0 || header.snapshot.open_count != header.open_count
    {
        return Err(bad(device, 0, "no snapshot of the last clean shutdown"));
    }
    let payload = read_payload(device, &header)?;
    let contents = parse_snapshot_payload(&payload, header.wblock_count)
        .map_err(|reason| bad(device, header.snapshot.offset, reason))?;
    for (partition, floor) in contents.generation_floors.iter().enumerate() {
        index.partition(partition).raise_generation_floor(*floor);
    }
    let device_count = header.device_count as u8;
    for item in contents.entries() {
        let entry = item.map(|(partition, raw)| (partition, IndexEntry::from_bytes(raw).info(device_count)));
        let Some((partition, entry)) = entry.filter(|(_, e)| disk.location_is_valid(e.location)) else {
            return Err(bad(
                device,
                header.snapshot.offset,
                "entry points outside a record area of this device",
            ));
        };
        index.partition(partition).upsert(entry);
        disk.add_live(entry.location);
    }
    let count = disk.geometry.wblock_count as usize;
    let entry_count = contents.entry_count() as u64;
    let mut state = disk.lock();
    state.next_seq = contents.next_seq.max(contents.block_seq.iter().max().copied().unwrap_or(0) + 1);
    for block in 0..count {
        let in_use = disk.live_bytes[block].load(Ordering::Relaxed) > 0;
        state.blocks.restore(block as u32, in_use, contents.block_seq[block]);
    }
    Ok(entry_count)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::device::sim::SimDevice;
    use crate::format::{test_header, HEADER_FLAG_CLEAN};
    use crate::index::{DigestTag, EntryInfo, Location};
    use std::sync::Arc;

    fn disk_with_free_blocks() -> Disk {
        let header = test_header();
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let device: Arc<dyn Device> = Arc::new(SimDevice::new("sim", size, 1));
        let disk = Disk::new(0, device, header, &Config::default());
        disk.lock().blocks.restore_all_free();
        disk
    }

    /// Writes a snapshot of one valid entry and `extra`, marks the header clean, and loads
    /// it into a fresh disk and index.
    fn round_trip(extra: Option<Location>) -> Result<u64> {
        let disk = disk_with_free_blocks();
        let record_at = disk.geometry.wblock_offset(1) + WBLOCK_HEADER_SIZE as u64;
        let entry = |n: u64, location| EntryInfo {
            tag: DigestTag { hi: n << 40, lo: 0 },
            generation: 1,
            tombstone: false,
            location,
            void_time: 0,
        };
        let index = Index::new(1);
        index.partition(7).upsert(entry(1, Location { device: 0, offset_bytes: record_at, size_bytes: 128 }));
        if let Some(location) = extra {
            index.partition(9).upsert(entry(2, location));
        }
        let open_count = disk.header().open_count;
        let snapshot = write_snapshot(&disk, &index, open_count)?.expect("room for the snapshot");
        let mut header = disk.header().clone();
        header.flags |= HEADER_FLAG_CLEAN;
        header.snapshot = snapshot;
        let loaded = Disk::new(0, disk.device.clone(), header, &Config::default());
        load_snapshot(&loaded, &Index::new(1))
    }

    #[test]
    fn entries_that_leave_their_block_are_refused_even_under_a_valid_checksum() {
        assert_eq!(round_trip(None).unwrap(), 1);
        let geometry = disk_with_free_blocks().geometry;
        let (block_2, wbs) = (geometry.wblock_offset(2), geometry.wblock_size as u64);
        let crafted = [
            ("runs past its block's end", block_2 + wbs - 64, 128),
            ("inside a block header", block_2, 128),
            ("shorter than a record header", block_2 + WBLOCK_HEADER_SIZE as u64, 16),
            ("past the last block", geometry.wblock_offset(geometry.wblock_count) + 4096, 128),
            ("before the first block", 0, 128),
        ];
        for (what, offset_bytes, size_bytes) in crafted {
            let location = Location { device: 0, offset_bytes, size_bytes };
            match round_trip(Some(location)) {
                Err(Error::Corrupt { reason, .. }) => {
                    assert!(reason.contains("outside a record area"), "{what}: {reason}")
                }
                other => panic!("an entry that {what} was accepted: {other:?}"),
            }
        }
    }
}
