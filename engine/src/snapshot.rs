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
    classify_block, decode_snapshot_chain, decode_snapshot_entry, encode_snapshot_chain,
    encode_snapshot_entry, encode_snapshot_head, parse_snapshot_head, snapshot_head_len, snapshot_slots_of,
    BlockClass, DeviceHeader, SnapshotRef, SnapshotSlot, SNAPSHOT_CHAIN_END, SNAPSHOT_CHUNK_START,
    SNAPSHOT_ENTRY_SIZE, WBLOCK_HEADER_SIZE, WBLOCK_KIND_SNAPSHOT,
};
use crate::index::{partition_of, DigestTag, EntryInfo, EntryName, Index, IndexEntry, PARTITION_COUNT};
use std::sync::atomic::Ordering;
use xxhash_rust::xxh3::Xxh3Default;

/// This disk's slot count (`format::snapshot_slots_of`) and every partition's generation floor. Called at close, once
/// the flusher and janitor have stopped. Partition locks are taken one at a time, never
/// while holding the disk lock: the lock order (ARCHITECTURE.md) is partition, then disk.
fn count_entries(disk: &Disk, index: &Index) -> (u64, Vec<u32>) {
    let mut floors = Vec::with_capacity(PARTITION_COUNT);
    let mut count = 0u64;
    for partition in 0..PARTITION_COUNT {
        let p = index.partition(partition);
        floors.push(p.generation_floor());
        for (name, _) in p.named_entries().filter(|(_, e)| e.location.device == disk.index) {
            count += snapshot_slots_of(matches!(name, EntryName::Digest(_)));
        }
    }
    (count, floors)
}

/// Writes this disk's snapshot into free blocks and syncs. `None` when the free blocks
/// cannot hold it (the next open then cold-starts).
///
/// The payload is streamed, block by block, with its checksum computed on the way: it is
/// never held whole (32 bytes an entry; at 300 M entries, building it in memory beside
/// the index took the process to 23 GiB of RSS at close on a 24 GiB machine).
pub fn write_snapshot(disk: &Disk, index: &Index, open_count: u64) -> Result<Option<SnapshotRef>> {
    let (entry_count, floors) = count_entries(disk, index);
    let head = {
        let state = disk.lock();
        encode_snapshot_head(entry_count, state.next_seq, state.blocks.seqs(), &floors)
    };
    let len_bytes = head.len() as u64 + entry_count * SNAPSHOT_ENTRY_SIZE as u64;
    let per_block = (disk.geometry.wblock_size as usize - SNAPSHOT_CHUNK_START) as u64;
    let needed = len_bytes.div_ceil(per_block) as usize;
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
    let mut writer = ChainWriter::new(disk, &blocks, open_count);
    writer.push(&head)?;
    let mut written = 0u64;
    let mut chunk = Vec::new();
    for partition in 0..PARTITION_COUNT {
        for (name, entry) in index.partition(partition).named_entries() {
            if entry.location.device != disk.index {
                continue;
            }
            let named_by = match &name {
                EntryName::Digest(digest) => Some(digest),
                EntryName::Tag(_) => None,
            };
            encode_snapshot_entry(partition, &IndexEntry::new(entry).to_bytes(), named_by, &mut chunk);
            written += snapshot_slots_of(named_by.is_some());
        }
        writer.push(&chunk)?;
        chunk.clear();
    }
    if written != entry_count {
        // Nothing writes at close; should the index change anyway, no snapshot is better
        // than a wrong one (the blocks written stay free).
        log::warn!(
            "{}: the index changed while its snapshot was written; next open will cold-start",
            disk.name()
        );
        return Ok(None);
    }
    let checksum = writer.finish()?;
    disk.device.sync()?;
    Ok(Some(SnapshotRef {
        offset: blocks.first().map_or(0, |&b| disk.geometry.wblock_offset(b)),
        len_bytes,
        checksum,
        open_count,
    }))
}

/// Loads one slot of a snapshot into the index: an entry now, or, for an entry named by
/// its digest, once the slot after it (the digest) comes; `named` holds it in between.
fn load_slot(
    disk: &Disk,
    index: &Index,
    device_count: u8,
    raw: &[u8],
    named: &mut Option<(usize, EntryInfo)>,
) -> std::result::Result<(), &'static str> {
    let slot = decode_snapshot_entry(raw).ok_or("a slot is not an entry")?;
    let (partition, entry, digest) = match (slot, named.take()) {
        (SnapshotSlot::Entry(partition, raw), None) => {
            (partition, IndexEntry::from_bytes(raw).info(device_count), None)
        }
        (SnapshotSlot::NamedEntry(partition, raw), None) => {
            *named = Some((partition, IndexEntry::from_bytes(raw).info(device_count)));
            return Ok(());
        }
        (SnapshotSlot::Digest(at, digest), Some((partition, entry))) if at == partition => {
            if DigestTag::of(&digest) != entry.tag || partition_of(&digest) != partition {
                return Err("an entry is named by a digest of another tag");
            }
            (partition, entry, Some(digest))
        }
        _ => return Err("an entry named by digest is not followed by its digest"),
    };
    if !disk.location_is_valid(entry.location) {
        return Err("entry points outside a record area of this device");
    }
    let mut p = index.partition(partition);
    // Each name once, and a shared tag never also named by tag (the snapshot is
    // checksummed, so this is a bug's or a forger's snapshot, and the open cold-starts).
    let replaced = match digest {
        Some(digest) if p.get_by_tag(entry.tag).is_none() && p.get(&digest).is_none() => {
            p.upsert_shared_new(&digest, entry);
            false
        }
        None if !p.is_shared(entry.tag) => p.upsert_by_tag(entry).is_some(),
        _ => true,
    };
    if replaced {
        return Err("two entries of one name");
    }
    disk.add_live(entry.location);
    Ok(())
}

/// Writes a payload into a chain of blocks as its bytes come: each block is written once
/// full (the last when the payload ends), so one block's buffer is all it holds.
struct ChainWriter<'a> {
    disk: &'a Disk,
    blocks: &'a [u32],
    open_count: u64,
    /// The block being filled (an index into `blocks`) and its payload bytes so far.
    at: usize,
    filled: usize,
    buf: AlignedBuf,
    hasher: Xxh3Default,
}

impl<'a> ChainWriter<'a> {
    fn new(disk: &'a Disk, blocks: &'a [u32], open_count: u64) -> Self {
        let buf = AlignedBuf::zeroed(disk.geometry.wblock_size as usize);
        ChainWriter { disk, blocks, open_count, at: 0, filled: 0, buf, hasher: Xxh3Default::new() }
    }

    fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        let room = self.buf.len() - SNAPSHOT_CHUNK_START;
        while !bytes.is_empty() {
            if self.filled == room {
                self.write_block()?;
            }
            let n = bytes.len().min(room - self.filled);
            let start = SNAPSHOT_CHUNK_START + self.filled;
            self.buf[start..start + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Writes the block being filled, its chain header naming the next block (or the end).
    fn write_block(&mut self) -> Result<()> {
        let (disk, block) = (self.disk, self.blocks[self.at]);
        disk.wblock_header(WBLOCK_KIND_SNAPSHOT, self.open_count, block)
            .encode_into(&mut self.buf[..WBLOCK_HEADER_SIZE]);
        let next = self.blocks.get(self.at + 1).copied().unwrap_or(SNAPSHOT_CHAIN_END);
        encode_snapshot_chain(next, self.filled, &mut self.buf);
        disk.device.write_at(&self.buf, disk.geometry.wblock_offset(block))?;
        self.buf.fill(0);
        self.at += 1;
        self.filled = 0;
        Ok(())
    }

    /// Writes the last block; returns the payload's checksum.
    fn finish(mut self) -> Result<u64> {
        if self.filled > 0 || self.at == 0 {
            self.write_block()?;
        }
        debug_assert_eq!(self.at, self.blocks.len(), "the payload filled the blocks it was given");
        Ok(self.hasher.digest())
    }
}

fn bad(device: &dyn Device, offset: u64, reason: impl Into<String>) -> Error {
    Error::corrupt(device.name(), offset, format!("index snapshot: {}", reason.into()))
}

/// Reads the snapshot the header points at, following its chain, and checks its length
/// and checksum; the whole payload, in memory. (Used by `spike-inspect check`; open
/// streams it instead, `load_snapshot`.)
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub fn read_payload(device: &dyn Device, header: &DeviceHeader) -> Result<Vec<u8>> {
    let mut reader = ChainReader::new(device, header)?;
    let mut payload = vec![0u8; header.snapshot.len_bytes as usize];
    reader.read_exact(&mut payload)?;
    reader.finish()?;
    Ok(payload)
}

/// Why a device has no snapshot to load, when that is the expected state rather than
/// damage: a crash, a device never shut down cleanly since it was formatted, a snapshot
/// left from an earlier run. None: the header names this run's snapshot.
pub fn absent_reason(header: &crate::format::DeviceHeader) -> Option<&'static str> {
    if header.open_count == 0 {
        Some("first start since the device was formatted")
    } else if !header.is_clean() {
        Some("the last run did not shut down cleanly")
    } else if header.snapshot.len_bytes == 0 {
        Some("no index snapshot on the device (not shut down cleanly since it was formatted)")
    } else if header.snapshot.open_count != header.open_count {
        Some("the index snapshot is from an earlier run")
    } else {
        None
    }
}

/// Restores this disk's index entries, block table and free list from its snapshot, as
/// it streams from the device (one block in memory, never the whole payload). Any error,
/// a checksum that fails at the end included, means the caller must cold-start with a
/// fresh index and disks: what was restored so far is not to be used.
pub fn load_snapshot(disk: &Disk, index: &Index) -> Result<u64> {
    let header = disk.header().clone();
    let device = disk.device.as_ref();
    if let Some(reason) = absent_reason(&header) {
        return Err(bad(device, 0, reason));
    }
    let corrupt = |reason: String| bad(device, header.snapshot.offset, reason);
    let mut reader = ChainReader::new(device, &header)?;
    let mut head_bytes =
        vec![0u8; snapshot_head_len(header.wblock_count).min(header.snapshot.len_bytes as usize)];
    reader.read_exact(&mut head_bytes)?;
    let head = parse_snapshot_head(&head_bytes, header.wblock_count).map_err(corrupt)?;
    let entry_bytes = head.entry_count.checked_mul(SNAPSHOT_ENTRY_SIZE as u64);
    if entry_bytes.and_then(|e| e.checked_add(head_bytes.len() as u64)) != Some(header.snapshot.len_bytes) {
        return Err(corrupt("size does not match its entry count".into()));
    }
    for (partition, floor) in head.generation_floors.iter().enumerate() {
        index.partition(partition).raise_generation_floor(*floor);
    }
    let device_count = header.device_count as u8;
    // Entries are read a batch at a time, not one by one, to keep the copy and checksum
    // calls per entry few.
    const BATCH_ENTRIES: u64 = 4096;
    let mut batch = vec![0u8; BATCH_ENTRIES as usize * SNAPSHOT_ENTRY_SIZE];
    let mut left = head.entry_count;
    let mut named = None;
    while left > 0 {
        let n = left.min(BATCH_ENTRIES) as usize;
        reader.read_exact(&mut batch[..n * SNAPSHOT_ENTRY_SIZE])?;
        for raw in batch[..n * SNAPSHOT_ENTRY_SIZE].chunks_exact(SNAPSHOT_ENTRY_SIZE) {
            load_slot(disk, index, device_count, raw, &mut named)
                .map_err(|problem| corrupt(problem.into()))?;
        }
        left -= n as u64;
    }
    if named.is_some() {
        return Err(corrupt("an entry named by digest ends the snapshot without its digest".into()));
    }
    reader.finish()?;
    let mut state = disk.lock();
    state.next_seq = head.next_seq.max(head.block_seq.iter().max().copied().unwrap_or(0) + 1);
    for (block, seq) in head.block_seq.iter().enumerate() {
        let in_use = disk.live_bytes[block].load(Ordering::Relaxed) > 0;
        state.blocks.restore(block as u32, in_use, *seq);
    }
    Ok(head.entry_count)
}

/// Reads a snapshot's payload from its chain of blocks as it is consumed, checking every
/// block's kind and chain header on the way and the length and checksum at the end.
struct ChainReader<'a> {
    device: &'a dyn Device,
    header: &'a DeviceHeader,
    geometry: Geometry,
    /// The block to read next (`SNAPSHOT_CHAIN_END`: none) and how many were read.
    next: u32,
    blocks_read: u64,
    buf: AlignedBuf,
    /// The unread part of the current block's share of the payload.
    chunk: std::ops::Range<usize>,
    consumed: u64,
    hasher: Xxh3Default,
}

impl<'a> ChainReader<'a> {
    fn new(device: &'a dyn Device, header: &'a DeviceHeader) -> Result<Self> {
        let snapshot = header.snapshot;
        let geometry = Geometry::of(header);
        let Some((first, 0)) = geometry.locate(snapshot.offset) else {
            return Err(bad(device, snapshot.offset, "does not start at a write block"));
        };
        // Never trust a length from the device for an allocation beyond what the blocks hold.
        let area_bytes = geometry.wblock_count as u64 * geometry.wblock_size as u64;
        if snapshot.len_bytes > area_bytes {
            return Err(bad(device, snapshot.offset, "longer than the device's write blocks"));
        }
        let buf = AlignedBuf::zeroed(geometry.wblock_size as usize);
        let hasher = Xxh3Default::new();
        Ok(ChainReader {
            device,
            header,
            geometry,
            next: first,
            blocks_read: 0,
            buf,
            chunk: 0..0,
            consumed: 0,
            hasher,
        })
    }

    fn read_exact(&mut self, mut out: &mut [u8]) -> Result<()> {
        while !out.is_empty() {
            if self.chunk.is_empty() {
                self.read_block()?;
            }
            let n = out.len().min(self.chunk.len());
            let bytes = &self.buf[self.chunk.start..self.chunk.start + n];
            out[..n].copy_from_slice(bytes);
            self.hasher.update(bytes);
            self.chunk.start += n;
            self.consumed += n as u64;
            out = &mut out[n..];
        }
        Ok(())
    }

    fn read_block(&mut self) -> Result<()> {
        let offset_of_chain = self.header.snapshot.offset;
        if self.next == SNAPSHOT_CHAIN_END || self.blocks_read >= self.geometry.wblock_count as u64 {
            return Err(bad(self.device, offset_of_chain, "length or checksum mismatch"));
        }
        if self.next >= self.geometry.wblock_count {
            return Err(bad(self.device, offset_of_chain, "chain points outside the device"));
        }
        let offset = self.geometry.wblock_offset(self.next);
        self.device.read_at(&mut self.buf, offset)?;
        let class = classify_block(&self.buf, &self.header.device_uuid, self.next);
        if class != (BlockClass::Snapshot { open_count: self.header.snapshot.open_count }) {
            return Err(bad(self.device, offset, format!("block is not part of this snapshot ({class:?})")));
        }
        let (chunk, next) =
            decode_snapshot_chain(&self.buf).map_err(|reason| bad(self.device, offset, reason))?;
        self.chunk = SNAPSHOT_CHUNK_START..SNAPSHOT_CHUNK_START + chunk.len();
        self.next = next;
        self.blocks_read += 1;
        Ok(())
    }

    /// Checks that exactly the payload's length was read, nothing left over in its last
    /// block, and that its checksum holds.
    fn finish(self) -> Result<()> {
        let snapshot = self.header.snapshot;
        if self.consumed != snapshot.len_bytes
            || !self.chunk.is_empty()
            || self.hasher.digest() != snapshot.checksum
        {
            return Err(bad(self.device, snapshot.offset, "length or checksum mismatch"));
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::device::sim::SimDevice;
    use crate::format::{test_header, HEADER_FLAG_CLEAN};
    use crate::index::{DigestTag, EntryInfo, Location};
    use std::sync::Arc;
    use xxhash_rust::xxh3::xxh3_64;

    fn disk_with_free_blocks() -> Disk {
        let header = test_header();
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let device: Arc<dyn Device> = Arc::new(SimDevice::new("sim", size, 1));
        let disk = Disk::new(0, device, header, &Config::default());
        disk.lock().blocks.restore_all_free();
        disk
    }

    /// A disk of 16 blocks whose index holds `count` entries pointing into its last block,
    /// snapshotted (into the first free blocks); the header marked clean.
    fn snapshotted(count: usize) -> (Disk, DeviceHeader, Vec<(usize, EntryInfo)>) {
        let mut header = test_header();
        header.wblock_count = 16;
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let device: Arc<dyn Device> = Arc::new(SimDevice::new("sim", size, 1));
        let disk = Disk::new(0, device, header, &Config::default());
        disk.lock().blocks.restore_all_free();
        let area = disk.geometry.wblock_offset(15) + WBLOCK_HEADER_SIZE as u64;
        let index = Index::new(1);
        let mut written = Vec::new();
        for n in 0..count as u64 {
            let entry = EntryInfo {
                tag: DigestTag { hi: (n % 4096) << 52 | n, lo: n as u32 },
                generation: 1 + n as u32 % 7,
                tombstone: n % 5 == 0,
                location: Location { device: 0, offset_bytes: area + 16 * (n % 1000), size_bytes: 128 },
                void_time: n as u32,
            };
            index.partition((n % 4096) as usize).upsert_by_tag(entry);
            written.push(((n % 4096) as usize, entry));
        }
        let open_count = disk.header().open_count;
        let snapshot = write_snapshot(&disk, &index, open_count).unwrap().expect("room");
        let mut header = disk.header().clone();
        header.flags |= HEADER_FLAG_CLEAN;
        header.snapshot = snapshot;
        (disk, header, written)
    }

    #[test]
    fn a_snapshot_over_many_blocks_is_streamed_and_restores_every_entry() {
        let per_block = test_header().write_block_size as usize - SNAPSHOT_CHUNK_START;
        // Enough entries for several blocks, the last one partly filled.
        let count = 3 * per_block / SNAPSHOT_ENTRY_SIZE + 77;
        let (disk, header, written) = snapshotted(count);
        assert!(header.snapshot.len_bytes as usize > 3 * per_block, "spans more than three blocks");
        let payload = read_payload(disk.device.as_ref(), &header).unwrap();
        assert_eq!(xxh3_64(&payload), header.snapshot.checksum);
        let loaded_disk = Disk::new(0, disk.device.clone(), header, &Config::default());
        let loaded = Index::new(1);
        assert_eq!(load_snapshot(&loaded_disk, &loaded).unwrap(), count as u64);
        for (partition, entry) in written {
            assert_eq!(loaded.partition(partition).get_by_tag(entry.tag), Some(entry));
        }
    }

    #[test]
    fn a_flipped_bit_among_the_entries_fails_the_load_after_they_streamed() {
        let per_block = test_header().write_block_size as usize - SNAPSHOT_CHUNK_START;
        let (disk, header, _) = snapshotted(2 * per_block / SNAPSHOT_ENTRY_SIZE);
        // One bit of a byte among the second block's entries: every block still classifies
        // and chains, every entry still points into a record area; only the checksum knows.
        let second =
            disk.geometry.wblock_offset(1) + SNAPSHOT_CHUNK_START as u64 + 4 * SNAPSHOT_ENTRY_SIZE as u64;
        let mut buf = AlignedBuf::zeroed(4096);
        disk.device.read_at(&mut buf, second / 4096 * 4096).unwrap();
        buf[(second % 4096) as usize + 4 + 12] ^= 0x01;
        disk.device.write_at(&buf, second / 4096 * 4096).unwrap();
        let loaded_disk = Disk::new(0, disk.device.clone(), header, &Config::default());
        let err = load_snapshot(&loaded_disk, &Index::new(1)).unwrap_err();
        assert!(err.to_string().contains("length or checksum mismatch"), "{err}");
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
        index
            .partition(7)
            .upsert_by_tag(entry(1, Location { device: 0, offset_bytes: record_at, size_bytes: 128 }));
        if let Some(location) = extra {
            index.partition(9).upsert_by_tag(entry(2, location));
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

    #[test]
    fn slots_naming_entries_by_digest_load_only_in_pairs_and_each_name_once() {
        let disk = disk_with_free_blocks();
        let location = Location {
            device: 0,
            offset_bytes: disk.geometry.wblock_offset(1) + WBLOCK_HEADER_SIZE as u64,
            size_bytes: 128,
        };
        let digest = |last: u8| {
            let mut d = [0u8; 20];
            d[0] = 7; // partition 7
            d[2..14].copy_from_slice(&[0x42; 12]);
            d[19] = last;
            d
        };
        let entry = EntryInfo {
            tag: DigestTag::of(&digest(1)),
            generation: 1,
            tombstone: false,
            location,
            void_time: 0,
        };
        let raw = IndexEntry::new(entry).to_bytes();
        let slots = |digests: &[Option<u8>]| {
            let mut out = Vec::new();
            for d in digests {
                encode_snapshot_entry(7, &raw, d.map(digest).as_ref(), &mut out);
            }
            out
        };
        let load = |bytes: &[u8], index: &Index| {
            let mut named = None;
            for raw in bytes.chunks_exact(SNAPSHOT_ENTRY_SIZE) {
                load_slot(&disk, index, 1, raw, &mut named)?;
            }
            if named.is_some() {
                Err("unpaired")
            } else {
                Ok(())
            }
        };
        let index = Index::new(1);
        load(&slots(&[Some(1), Some(2)]), &index).unwrap();
        assert_eq!(index.partition(7).get(&digest(2)), Some(entry));
        assert_eq!(index.partition(7).get(&digest(3)), None, "a third twin finds nothing");
        let refused: [(&str, Vec<u8>); 4] = [
            ("a named entry and a tag entry of one tag", slots(&[None, Some(1)])),
            ("one digest twice", slots(&[Some(1), Some(1)])),
            ("a named entry without its digest", slots(&[Some(1)])[..SNAPSHOT_ENTRY_SIZE].to_vec()),
            (
                "a digest after a tag entry",
                [slots(&[None]), slots(&[Some(1)])[SNAPSHOT_ENTRY_SIZE..].to_vec()].concat(),
            ),
        ];
        for (what, bytes) in refused {
            assert!(load(&bytes, &Index::new(1)).is_err(), "{what} loaded");
        }
        let mut other_tag = slots(&[Some(1)]);
        other_tag[SNAPSHOT_ENTRY_SIZE + 10] ^= 1; // digest byte 6: inside the tag
        assert!(load(&other_tag, &Index::new(1)).is_err(), "a digest of another tag loaded");
    }

    #[test]
    fn a_missing_snapshot_is_explained_by_the_headers_state() {
        use crate::format::HEADER_FLAG_CLEAN;
        let mut header = crate::format::test_header();
        header.open_count = 0;
        assert_eq!(absent_reason(&header), Some("first start since the device was formatted"));
        header.open_count = 3;
        header.flags &= !HEADER_FLAG_CLEAN;
        assert_eq!(absent_reason(&header), Some("the last run did not shut down cleanly"));
        header.flags |= HEADER_FLAG_CLEAN;
        assert!(absent_reason(&header).unwrap().starts_with("no index snapshot"));
        header.snapshot = SnapshotRef { offset: 1 << 20, len_bytes: 4096, checksum: 0, open_count: 2 };
        assert_eq!(absent_reason(&header), Some("the index snapshot is from an earlier run"));
        header.snapshot.open_count = 3;
        assert_eq!(absent_reason(&header), None);
    }
}
