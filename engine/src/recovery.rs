//! Cold start: rebuild the index, every block's live byte count and the free lists by
//! scanning every device, all devices in parallel.
//!
//! Per device, a header pass first reads the first 4 KiB of every write block and keeps
//! the data blocks of this device (no other block holds a record the scan would take);
//! then a reader thread runs the one device scan over those (`device_scan::stream_blocks`,
//! whole blocks in order, `SCAN_IN_FLIGHT_BYTES` of reads in flight) while the device's
//! parser threads (the cores shared among devices) classify each block
//! (`format::classify_block`), verify its records (`format::block_records`) and merge
//! them into the index. The merge does not depend on the order blocks are parsed in: of
//! two copies the newer wins by one total order (`format::CopyOrder`: higher generation,
//! then later last-update time, then higher block write sequence), decided under the
//! partition lock. `spike-inspect check` runs the same scan and rules. Tombstones
//! win like any copy; a newest copy that has expired is kept as a tombstone, so that an
//! older copy on the device cannot come back at the next restart.
//!
//! Skipped and counted: torn or corrupt bytes (checksum, magic, length; the scan resyncs
//! at the next 16-byte boundary), and stale records (valid, but left from an earlier use of
//! the block: their block-sequence tag does not match the block header).
//!
//! Afterwards, blocks with a valid header but no live record are overwritten as free
//! before they go on the free list.

use crate::device::AlignedBuf;
use crate::device_scan::{scan_block_headers, stream_blocks, BlockRun, Blocks, ScanShape};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::format::{block_records, decode_record, device_of, BlockClass, BlockItem, CopyOrder};
use crate::index::{partition_of, DigestTag, EntryInfo, Index, Location, PARTITION_COUNT};
use crate::read::read_span;
use crate::stats::RecoveryStats;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// Bytes of whole-block reads kept in flight per device during a scan (fio reaches this
/// kind of device's sequential rate at 1 MiB × 8).
const SCAN_IN_FLIGHT_BYTES: usize = 8 << 20;
/// Block headers read together by the header pass (256 KiB of reads in flight).
const HEADER_READS_AT_ONCE: usize = 64;
/// Blocks past the reader: queued for a parser or being parsed (per parser).
const SCAN_BLOCKS_DOWNSTREAM: usize = 4;
/// Parser threads of one device's scan, at most.
const PARSERS_PER_DEVICE_MAX: usize = 8;

#[derive(Default)]
struct ScanCounts {
    records_found: AtomicU64,
    corrupt_records: AtomicU64,
    stale_records: AtomicU64,
    bytes_scanned: AtomicU64,
}

/// Scans all disks into `index` and sets up their block tables. `now_s` decides expiry.
pub fn cold_start(disks: &[Disk], index: &Index, now_s: u32) -> Result<RecoveryStats> {
    let start = Instant::now();
    let counts = ScanCounts::default();
    let device_count = disks.len();
    // Parsing is what limits a scan of small records: the cores are shared among devices.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parsers = (cores / device_count.max(1)).clamp(1, PARSERS_PER_DEVICE_MAX);
    let scanned: Vec<ScannedBlocks> = std::thread::scope(|scope| {
        let handles: Vec<_> = disks
            .iter()
            .map(|disk| scope.spawn(|| scan_disk(disk, device_count, parsers, index, now_s, &counts)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Config("scan thread panicked".into()))))
            .collect::<Result<_>>()
    })?;

    let mut stats = RecoveryStats { kind: "cold", ..Default::default() };
    for partition in 0..PARTITION_COUNT {
        for entry in index.partition(partition).entries() {
            if entry.tombstone && entry.void_time != 0 && entry.void_time <= now_s {
                stats.expired_dropped += 1;
            }
            if entry.tombstone {
                stats.tombstones_kept += 1;
            } else {
                stats.records_kept += 1;
            }
            if let Some(disk) = disks.get(entry.location.device as usize) {
                disk.add_live(entry.location);
            }
        }
    }
    for (disk, scanned) in disks.iter().zip(scanned) {
        let (in_use, freed) = settle_blocks(disk, scanned)?;
        stats.blocks_in_use += in_use;
        stats.blocks_freed += freed;
    }
    stats.records_found = counts.records_found.load(Relaxed);
    stats.corrupt_records = counts.corrupt_records.load(Relaxed);
    stats.stale_records = counts.stale_records.load(Relaxed);
    stats.bytes_scanned = counts.bytes_scanned.load(Relaxed);
    stats.duration_ms = start.elapsed().as_millis() as u64;
    Ok(stats)
}

/// What a scan found of each block: its write sequence and whether it holds a valid data
/// header of this device.
struct ScannedBlocks {
    seq: Vec<u64>,
    valid: Vec<bool>,
}

fn scan_disk(
    disk: &Disk,
    device_count: usize,
    parsers: usize,
    index: &Index,
    now_s: u32,
    counts: &ScanCounts,
) -> Result<ScannedBlocks> {
    let total = disk.geometry.wblock_count as usize;
    let shape = ScanShape {
        run_bytes_max: disk.geometry.wblock_size as usize,
        in_flight_bytes: SCAN_IN_FLIGHT_BYTES,
        consumer_holds: SCAN_BLOCKS_DOWNSTREAM * parsers.max(1),
        tolerate_read_errors: false,
    };
    // Only data blocks of this device hold records, and a block's first 4 KiB say whether
    // it is one: whole blocks are read for those alone, so a start costs in proportion to
    // the blocks in use, not to the device (a mostly empty device of tens of TiB).
    let data_blocks = data_blocks_of(disk)?;
    let (full_tx, full_rx) = mpsc::channel::<BlockRun>();
    let block_seq: Vec<AtomicU64> = (0..total).map(|_| AtomicU64::new(0)).collect();
    let block_valid: Vec<AtomicBool> = (0..total).map(|_| AtomicBool::new(false)).collect();
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let reader = scope.spawn(move || {
            let blocks = Blocks::Only(&data_blocks);
            stream_blocks(disk.device.as_ref(), &disk.geometry, blocks, shape, &mut |_| {}, &mut |run| {
                full_tx.send(run).map_err(|_| Error::ShutDown)
            })
        });
        // Parsers share the stream of blocks; each owns a clone of the channel's end, so
        // that once every parser has stopped (done or failed) the reader stops too.
        let full_rx = Arc::new(std::sync::Mutex::new(full_rx));
        let parsers: Vec<_> = (0..parsers.max(1))
            .map(|_| {
                let full_rx = full_rx.clone();
                let (block_seq, block_valid, failed) = (&block_seq, &block_valid, &failed);
                scope.spawn(move || -> Result<()> {
                    let scan = BlockScan { disk, device_count, index, now_s, counts, block_seq };
                    while !failed.load(Relaxed) {
                        // A run dropped here (done, or on an error) gives its buffer back.
                        let next = full_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(run) = next else { return Ok(()) };
                        counts.bytes_scanned.fetch_add(run.bytes(), Relaxed);
                        for (block, buf) in run.iter() {
                            let BlockClass::Data { write_seq } = disk.classify(buf, block) else { continue };
                            // Stored before any of the block's records enters the index: a
                            // parser that finds one of them there (under its partition's
                            // lock, which orders the two) reads the block's sequence after.
                            block_seq[block as usize].store(write_seq, Relaxed);
                            block_valid[block as usize].store(true, Relaxed);
                            if let Err(err) = scan.block(block, write_seq, buf) {
                                failed.store(true, Relaxed);
                                return Err(err);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        drop(full_rx);
        let parsed: Vec<Result<()>> = parsers
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| Err(Error::Config("scan parser thread panicked".into()))))
            .collect();
        let read = reader.join().unwrap_or_else(|_| Err(Error::Config("scan reader thread panicked".into())));
        parsed.into_iter().collect::<Result<()>>()?;
        read
    })?;
    Ok(ScannedBlocks {
        seq: block_seq.into_iter().map(AtomicU64::into_inner).collect(),
        valid: block_valid.into_iter().map(AtomicBool::into_inner).collect(),
    })
}

/// The blocks whose header page classifies as a data block of this device, in block
/// order: the blocks the scan parses whole (it skips every other class).
fn data_blocks_of(disk: &Disk) -> Result<Vec<u32>> {
    let mut data = Vec::new();
    scan_block_headers(disk.device.as_ref(), &disk.geometry, HEADER_READS_AT_ONCE, &mut |block, page| {
        if matches!(disk.classify(page, block), BlockClass::Data { .. }) {
            data.push(block);
        }
    })?;
    Ok(data)
}

/// What merging one data block's records into the index needs.
struct BlockScan<'a> {
    disk: &'a Disk,
    device_count: usize,
    index: &'a Index,
    now_s: u32,
    counts: &'a ScanCounts,
    block_seq: &'a [AtomicU64],
}

impl BlockScan<'_> {
    fn block(&self, block: u32, seq: u64, buf: &[u8]) -> Result<()> {
        let BlockScan { disk, device_count, index, now_s, counts, block_seq } = *self;
        let base = disk.geometry.wblock_offset(block);
        for item in block_records(buf, seq) {
            let (offset, view) = match item {
                BlockItem::Record { offset, view } => (offset, view),
                BlockItem::Stale { .. } => {
                    counts.stale_records.fetch_add(1, Relaxed);
                    continue;
                }
                BlockItem::Corrupt { .. } => {
                    counts.corrupt_records.fetch_add(1, Relaxed);
                    continue;
                }
            };
            let meta = view.meta;
            if device_of(&meta.digest, device_count) != disk.index as usize {
                counts.stale_records.fetch_add(1, Relaxed);
                continue;
            }
            counts.records_found.fetch_add(1, Relaxed);
            let candidate = EntryInfo {
                tag: DigestTag::of(&meta.digest),
                generation: meta.generation,
                tombstone: meta.tombstone || (meta.void_time != 0 && meta.void_time <= now_s),
                location: Location {
                    device: disk.index,
                    offset_bytes: base + offset as u64,
                    size_bytes: view.size_bytes as u32,
                },
                void_time: meta.void_time,
            };
            let candidate_order = CopyOrder {
                generation: meta.generation,
                last_update_ms: meta.last_update_ms,
                block_seq: seq,
            };
            let mut partition = index.partition(partition_of(&meta.digest));
            if meta.shared_tag && !partition.is_shared(candidate.tag) {
                // Another digest may share this copy's tag: the entry merged so far (from
                // copies that were not flagged, so all of one digest) is named by its own.
                match partition.get_by_tag(candidate.tag) {
                    Some(held) => partition.share_tag(&disk.digest_at(held.location)?),
                    None => {
                        partition.upsert_shared_new(&meta.digest, candidate);
                        continue;
                    }
                }
            }
            let newer = match partition.get(&meta.digest) {
                None => true,
                Some(current) if current.generation != candidate.generation => {
                    candidate_order > CopyOrder::by_generation(current.generation)
                }
                // Equal generations: the held copy's last-update time is on the device (a rare
                // read: only defrag copies tie).
                Some(current) => {
                    let current_order = CopyOrder {
                        generation: current.generation,
                        last_update_ms: disk.last_update_ms_at(current.location)?,
                        block_seq: disk
                            .block_of(current.location)
                            .map_or(0, |b| block_seq[b as usize].load(Relaxed)),
                    };
                    candidate_order > current_order
                }
            };
            if newer {
                partition.upsert(&meta.digest, candidate);
            }
        }
        Ok(())
    }
}

impl Disk {
    /// Last-update time of the record at `location` (for ties on generation, which only a
    /// defrag copy or an interrupted defrag leaves; a read is rare).
    fn last_update_ms_at(&self, location: Location) -> Result<u64> {
        self.meta_at(location).map(|meta| meta.last_update_ms)
    }

    /// Full digest of the record at `location` (when a copy flagged as sharing its tag
    /// meets the entry merged so far: crafted digests only).
    fn digest_at(&self, location: Location) -> Result<crate::format::Digest> {
        self.meta_at(location).map(|meta| meta.digest)
    }

    fn meta_at(&self, location: Location) -> Result<crate::format::RecordMeta> {
        let (start, len) = read_span(location);
        let mut buf = AlignedBuf::zeroed(len);
        self.device.read_at(&mut buf, start)?;
        let at = (location.offset_bytes - start) as usize;
        decode_record(&buf[at..at + location.size_bytes as usize])
            .map(|view| view.meta)
            .map_err(|problem| Error::corrupt(self.name(), location.offset_bytes, problem.to_string()))
    }
}

/// After the scan: blocks without live records are overwritten as free (if they held a
/// valid data header) and go on the free list. Returns (in use, freed).
fn settle_blocks(disk: &Disk, scanned: ScannedBlocks) -> Result<(u64, u64)> {
    let mut state = disk.lock();
    state.next_seq = scanned.seq.iter().max().copied().unwrap_or(0) + 1;
    let mut to_invalidate = Vec::new();
    let mut in_use = 0;
    for block in 0..disk.geometry.wblock_count {
        let live = disk.live_bytes[block as usize].load(Relaxed) > 0;
        state.blocks.restore(block, live, scanned.seq[block as usize]);
        if live {
            in_use += 1;
        } else if scanned.valid[block as usize] {
            to_invalidate.push(block);
        }
    }
    drop(state);
    if !to_invalidate.is_empty() {
        disk.write_free_pages(&to_invalidate)?;
        disk.device.sync()?;
    }
    Ok((in_use, to_invalidate.len() as u64))
}
