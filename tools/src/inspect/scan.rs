//! The scan: every write block of the device read once, each block classified by its
//! header, each data block walked (`walk`), and the newest copy of every record kept.
//!
//! Which copy of a record is the live one follows `engine/src/recovery.rs` exactly: only
//! blocks whose header decodes as a data block of this device at this index count; only
//! records whose block-sequence tag matches their block and whose digest belongs to this
//! device (`spike::device_of`) count; of several copies (keyed like the engine's index, by
//! partition and digest tag) the higher generation wins, then the later last-update time,
//! then the higher block write sequence, and on a full tie the copy seen first (lower
//! block, then lower offset). A winning tombstone or expired copy hides the record. Live
//! bytes and blocks in use are counted as a cold start counts them (a tombstone the
//! running engine already reclaimed still counts until its block is rewritten).
//!
//! Cost: the reads are sequential batches of `SCAN_BATCH_BYTES`, with `SCAN_BUFFERS`
//! batches in memory (one being read by a reader thread, one being parsed); per record
//! one hash-map probe and one xxh3 over its value.

use super::walk::{walk_block, DamageSpan};
use super::Opened;
use crate::text::hex;
use anyhow::{bail, Result};
use spike::device::{AlignedBuf, Device, ReadRequest};
use spike::offline::format::{
    CopyOrder, DeviceHeader, Digest, WblockHeader, WBLOCK_KIND_DATA, WBLOCK_KIND_FREE, WBLOCK_KIND_SNAPSHOT,
    WBLOCK_MAGIC,
};
use spike::offline::index::{partition_of, DigestTag};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::mpsc;

/// Bytes read per batch of the scan: large sequential reads keep the device busy.
const SCAN_BATCH_BYTES: usize = 8 << 20;
/// Batches in flight: one being read, one being parsed.
const SCAN_BUFFERS: usize = 2;
/// Damaged regions remembered per block (the first ones; the rest are counted).
const DAMAGE_PER_BLOCK_MAX: usize = 16;

/// What a block's header says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockKind {
    /// A data block of this device at its own index: its records count.
    Data,
    /// Free-marked by the engine.
    Free,
    Snapshot,
    /// A valid header of a kind this build does not know.
    OtherKind,
    /// No Spike block header: never written, or left from before a forced format.
    NoHeader,
    /// Spike's block magic but the header does not verify.
    DamagedHeader,
    /// A valid header of another device (left from before a forced format).
    Foreign,
    /// A valid header of this device naming another block index.
    Misplaced,
    Unreadable,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct BlockInfo {
    pub(super) kind: BlockKind,
    /// Write sequence from the header: a data block's sequence, or for a snapshot block
    /// the open count of the run that wrote it; 0 for every other kind.
    pub(super) seq: u64,
}

/// A valid copy of a record, with what the listing and the merge rule need.
#[derive(Clone, Copy, Debug)]
pub(super) struct RecordCopy {
    pub(super) digest: Digest,
    pub(super) generation: u32,
    pub(super) void_time: u32,
    pub(super) last_update_ms: u64,
    pub(super) tombstone: bool,
    pub(super) block: u32,
    pub(super) block_seq: u64,
    pub(super) size_bytes: u32,
    pub(super) value_len: u32,
    pub(super) value_xxh3: u64,
    /// Valid copies of this record found on the device so far, this one included.
    pub(super) copies: u32,
}

/// Whether `candidate` replaces `current` as the newest copy: the engine's own order
/// (`CopyOrder`, the one cold start and `apply` use).
fn is_newer(candidate: &RecordCopy, current: &RecordCopy) -> bool {
    candidate.order() > current.order()
}

impl RecordCopy {
    fn order(&self) -> CopyOrder {
        CopyOrder {
            generation: self.generation,
            last_update_ms: self.last_update_ms,
            block_seq: self.block_seq,
        }
    }
}

/// Unix seconds now, as the engine decides expiry.
fn now_s() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

pub(super) fn is_expired(void_time: u32, now_s: u32) -> bool {
    void_time != 0 && void_time <= now_s
}

#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Valid records of this device carrying their block's sequence.
    pub(super) records_found: u64,
    /// Valid records left from an earlier use of their block.
    pub(super) stale_records: u64,
    /// Records of a block whose digest belongs to another device.
    pub(super) wrong_device_records: u64,
}

pub(super) struct Scan {
    pub(super) blocks: Vec<BlockInfo>,
    /// The newest copy of each record, keyed like the engine's index.
    pub(super) winners: HashMap<(usize, DigestTag), RecordCopy>,
    /// Damaged regions per data block (the first `DAMAGE_PER_BLOCK_MAX` of each).
    pub(super) damage: Vec<(u32, DamageSpan)>,
    /// Per block with more damaged regions than that: (block, regions not kept, lowest
    /// block offset among them).
    pub(super) damage_dropped: Vec<(u32, u64, u32)>,
    pub(super) damage_total: u64,
    /// Inconsistencies that no crash explains, found while scanning: (block, offset in
    /// block, message). `stats` and `records` refuse to go on with any.
    pub(super) problems: Vec<Problem>,
    pub(super) counts: Counts,
    pub(super) now_s: u32,
}

#[derive(Debug)]
pub(super) struct Problem {
    pub(super) block: u32,
    pub(super) offset_in_block: u32,
    pub(super) message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "block {} at block offset {}: {}", self.block, self.offset_in_block, self.message)
    }
}

impl Scan {
    pub(super) fn run(opened: &Opened) -> Result<Scan> {
        opened.check_span()?;
        let header = &opened.header;
        let count = header.wblock_count as usize;
        let mut scan = Scan {
            blocks: vec![BlockInfo { kind: BlockKind::NoHeader, seq: 0 }; count],
            winners: HashMap::new(),
            damage: Vec::new(),
            damage_dropped: Vec::new(),
            damage_total: 0,
            problems: Vec::new(),
            counts: Counts::default(),
            now_s: now_s(),
        };
        for_each_block(opened.device.as_ref(), header, &mut |block, read| match read {
            Ok(buf) => scan.parse_block(header, block, buf),
            Err(err) => {
                scan.blocks[block as usize].kind = BlockKind::Unreadable;
                scan.problems.push(Problem {
                    block,
                    offset_in_block: 0,
                    message: format!("unreadable: {err}"),
                });
            }
        });
        scan.check_sequences();
        Ok(scan)
    }

    fn parse_block(&mut self, header: &DeviceHeader, block: u32, buf: &[u8]) {
        let info = &mut self.blocks[block as usize];
        let Some(wblock) = WblockHeader::decode(buf) else {
            let has_magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) == WBLOCK_MAGIC;
            info.kind = if has_magic { BlockKind::DamagedHeader } else { BlockKind::NoHeader };
            if has_magic {
                self.problems.push(Problem {
                    block,
                    offset_in_block: 0,
                    message: "write-block header has Spike's magic but does not verify (checksum or version)"
                        .into(),
                });
            }
            return;
        };
        if wblock.device_uuid != header.device_uuid {
            info.kind = BlockKind::Foreign;
            return;
        }
        if wblock.wblock_index != block {
            info.kind = BlockKind::Misplaced;
            self.problems.push(Problem {
                block,
                offset_in_block: 0,
                message: format!(
                    "header of this device's block {} found at block {block}",
                    wblock.wblock_index
                ),
            });
            return;
        }
        info.kind = match wblock.kind {
            WBLOCK_KIND_DATA => BlockKind::Data,
            WBLOCK_KIND_FREE => BlockKind::Free,
            WBLOCK_KIND_SNAPSHOT => BlockKind::Snapshot,
            _ => BlockKind::OtherKind,
        };
        if info.kind == BlockKind::Snapshot {
            info.seq = wblock.write_seq;
        }
        if info.kind != BlockKind::Data {
            return;
        }
        info.seq = wblock.write_seq;
        let walk = walk_block(buf, wblock.write_seq);
        self.counts.stale_records += walk.stale;
        self.damage_total += walk.damage.len() as u64;
        if walk.damage.len() > DAMAGE_PER_BLOCK_MAX {
            let dropped = &walk.damage[DAMAGE_PER_BLOCK_MAX..];
            let start_min = dropped.iter().map(|d| d.start).min().unwrap_or(0);
            self.damage_dropped.push((block, dropped.len() as u64, start_min));
        }
        self.damage.extend(walk.damage.into_iter().take(DAMAGE_PER_BLOCK_MAX).map(|d| (block, d)));
        for (offset, view) in walk.records {
            let meta = view.meta;
            // A decoded header has 1 <= device_count <= 32, so this never divides by zero.
            let owner = spike::device_of(&meta.digest, header.device_count as usize);
            if owner != header.device_index as usize {
                // Recovery skips it as stale; the engine never writes one.
                self.counts.wrong_device_records += 1;
                self.problems.push(Problem {
                    block,
                    offset_in_block: offset,
                    message: format!(
                        "record {} belongs to device {owner}, not to this device {}",
                        hex(&meta.digest),
                        header.device_index
                    ),
                });
                continue;
            }
            self.counts.records_found += 1;
            let candidate = RecordCopy {
                digest: meta.digest,
                generation: meta.generation,
                void_time: meta.void_time,
                last_update_ms: meta.last_update_ms,
                tombstone: meta.tombstone,
                block,
                block_seq: wblock.write_seq,
                size_bytes: view.size_bytes as u32,
                value_len: view.value.len() as u32,
                value_xxh3: xxhash_rust::xxh3::xxh3_64(view.value),
                copies: 1,
            };
            match self.winners.entry((partition_of(&meta.digest), DigestTag::of(&meta.digest))) {
                Entry::Vacant(slot) => {
                    slot.insert(candidate);
                }
                Entry::Occupied(mut slot) => {
                    let copies = slot.get().copies + 1;
                    if is_newer(&candidate, slot.get()) {
                        slot.insert(candidate);
                    }
                    slot.get_mut().copies = copies;
                }
            }
        }
    }

    /// For `stats` and `records`: an unreadable block makes the answer incomplete (the
    /// engine would not open either); anything else the engine's recovery skips, so the
    /// answer stands, with a warning pointing at `check`.
    pub(super) fn warn_or_refuse(&self, opened: &Opened) -> Result<()> {
        let name = opened.name();
        if let Some(unreadable) =
            self.problems.iter().find(|p| self.blocks[p.block as usize].kind == BlockKind::Unreadable)
        {
            bail!("{name}: {unreadable}");
        }
        if !self.problems.is_empty() || self.damage_total > 0 {
            eprintln!(
                "spike-inspect: warning: {name}: {} inconsistenc(ies) and {} damaged region(s) skipped, as the \
                 engine's recovery skips them (run `spike-inspect check`)",
                self.problems.len(),
                self.damage_total
            );
        }
        Ok(())
    }

    /// The engine gives every block it writes a new sequence number.
    fn check_sequences(&mut self) {
        let mut seen: HashMap<u64, u32> = HashMap::new();
        for (block, info) in self.blocks.iter().enumerate() {
            if info.kind != BlockKind::Data {
                continue;
            }
            if let Some(first) = seen.insert(info.seq, block as u32) {
                self.problems.push(Problem {
                    block: block as u32,
                    offset_in_block: 0,
                    message: format!("write sequence {} also used by block {first}", info.seq),
                });
            }
        }
    }

    /// Bytes of newest copies (tombstones and expired ones included, as the engine keeps
    /// them in its index) per block.
    pub(super) fn live_bytes(&self) -> Vec<u64> {
        let mut live = vec![0u64; self.blocks.len()];
        for copy in self.winners.values() {
            live[copy.block as usize] += copy.size_bytes as u64;
        }
        live
    }

    /// Per block, whether a cold start needs something in it: a newest copy that is live,
    /// or a tombstone (or expired copy) that still hides an older copy of its record.
    /// A block that needs nothing is one the engine has freed or frees at its next open
    /// (it reclaims a tombstone once no older copy of its record is left).
    pub(super) fn blocks_needed(&self) -> Vec<bool> {
        let mut needed = vec![false; self.blocks.len()];
        for copy in self.winners.values() {
            let hides_nothing = copy.tombstone || is_expired(copy.void_time, self.now_s);
            if !hides_nothing || copy.copies > 1 {
                needed[copy.block as usize] = true;
            }
        }
        needed
    }

    pub(super) fn blocks_of_kind(&self, kind: BlockKind) -> usize {
        self.blocks.iter().filter(|b| b.kind == kind).count()
    }

    /// Data blocks holding no newest copy (`live` from [`Scan::live_bytes`]): the engine
    /// frees them at its next open.
    pub(super) fn data_blocks_empty(&self, live: &[u64]) -> usize {
        self.blocks.iter().zip(live).filter(|(b, &l)| b.kind == BlockKind::Data && l == 0).count()
    }

    /// Snapshot blocks written by the run with this open count. Every open bumps the open
    /// count before it writes, and a run writes one snapshot (at close), so for the
    /// snapshot the header points at this is the length of its chain.
    pub(super) fn snapshot_blocks(&self, open_count: u64) -> usize {
        self.blocks.iter().filter(|b| b.kind == BlockKind::Snapshot && b.seq == open_count).count()
    }

    /// The lowest write sequence of the crash window: the `window` sequences up to the
    /// highest one on the device (`u64::MAX` for an empty window). By value, not by
    /// count of blocks present: the blocks a crash can have left half-written carry the
    /// last sequences the engine handed out, and an older block that is still in use
    /// (its neighbours in time freed since) was synced long ago.
    pub(super) fn crash_window_seq_min(&self, window: u64) -> u64 {
        let seq_max = self.blocks.iter().filter(|b| b.kind == BlockKind::Data).map(|b| b.seq).max();
        match seq_max {
            Some(seq_max) if window > 0 => seq_max.saturating_sub(window - 1),
            _ => u64::MAX,
        }
    }

    /// (live records, tombstones, expired) among the newest copies.
    pub(super) fn record_kinds(&self) -> (u64, u64, u64) {
        let (mut live, mut tombstones, mut expired) = (0, 0, 0);
        for copy in self.winners.values() {
            if copy.tombstone {
                tombstones += 1;
            } else if is_expired(copy.void_time, self.now_s) {
                expired += 1;
            } else {
                live += 1;
            }
        }
        (live, tombstones, expired)
    }
}

/// A block's bytes, or why they could not be read.
type BlockRead<'a> = std::result::Result<&'a [u8], &'a spike::Error>;

/// Reads every write block in large batches (a reader thread keeps the next batch in
/// flight) and calls `visit` in block order with each block's bytes or its read error.
fn for_each_block(device: &dyn Device, header: &DeviceHeader, visit: &mut dyn FnMut(u32, BlockRead<'_>)) {
    let wbs = header.write_block_size as usize;
    let per_batch = (SCAN_BATCH_BYTES / wbs).max(1);
    let total = header.wblock_count as usize;
    type Batch = (usize, Vec<AlignedBuf>, Vec<Option<spike::Error>>);
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(SCAN_BUFFERS);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<AlignedBuf>>();
    for _ in 0..SCAN_BUFFERS.min(total.div_ceil(per_batch)) {
        let _ = empty_tx.send((0..per_batch.min(total)).map(|_| AlignedBuf::zeroed(wbs)).collect());
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut first = 0;
            while first < total {
                let Ok(mut bufs) = empty_rx.recv() else { return };
                let n = per_batch.min(total - first).min(bufs.len());
                let errors = read_batch(device, header, first, &mut bufs[..n]);
                bufs.truncate(n);
                if full_tx.send((first, bufs, errors)).is_err() {
                    return;
                }
                first += n;
            }
        });
        while let Ok((first, bufs, errors)) = full_rx.recv() {
            for (i, (buf, error)) in bufs.iter().zip(&errors).enumerate() {
                let block = (first + i) as u32;
                match error {
                    None => visit(block, Ok(buf)),
                    Some(err) => visit(block, Err(err)),
                }
            }
            // The reader may be done already; then the buffers are simply dropped.
            let _ = empty_tx.send(bufs);
        }
    });
}

/// Reads blocks `first..first + bufs.len()` in one batch; if the batch fails, block by
/// block, so that an unreadable block is named and the others are still read.
fn read_batch(
    device: &dyn Device,
    header: &DeviceHeader,
    first: usize,
    bufs: &mut [AlignedBuf],
) -> Vec<Option<spike::Error>> {
    let mut requests: Vec<ReadRequest<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| ReadRequest { offset: header.wblock_offset((first + i) as u32), buf })
        .collect();
    if device.read_many(&mut requests).is_ok() {
        return bufs.iter().map(|_| None).collect();
    }
    drop(requests);
    bufs.iter_mut()
        .enumerate()
        .map(|(i, buf)| device.read_at(buf, header.wblock_offset((first + i) as u32)).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_copy_rule_orders_generation_then_update_time_then_block_sequence() {
        let base = RecordCopy {
            digest: [0; 20],
            generation: 2,
            void_time: 0,
            last_update_ms: 100,
            tombstone: false,
            block: 0,
            block_seq: 5,
            size_bytes: 64,
            value_len: 1,
            value_xxh3: 0,
            copies: 1,
        };
        let older_gen_later_time = RecordCopy { generation: 1, last_update_ms: 900, block_seq: 9, ..base };
        assert!(!is_newer(&older_gen_later_time, &base));
        assert!(is_newer(&base, &older_gen_later_time));
        assert!(is_newer(&RecordCopy { last_update_ms: 101, block_seq: 1, ..base }, &base));
        assert!(is_newer(&RecordCopy { block_seq: 6, ..base }, &base));
        assert!(!is_newer(&base, &base), "a full tie keeps the copy seen first");
    }

    #[test]
    fn records_belong_to_the_device_the_engine_assigns() {
        // The scan uses the engine's own `device_of`; this pins the digest bytes it reads.
        assert_eq!(
            spike::device_of(&[0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 3),
            (0x0105 % 3)
        );
    }
}
