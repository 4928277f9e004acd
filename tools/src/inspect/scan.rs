//! The scan: every write block of the device read once, each block classified by its
//! header, each data block walked (`walk`), and the newest copy of every record kept.
//!
//! Which copy of a record is the live one follows `engine/src/recovery.rs` exactly: only
//! blocks whose header decodes as a data block of this device at this index count; only
//! records whose block-sequence tag matches their block and whose digest belongs to this
//! device (`spike::offline::format::device_of`) count; of several copies (keyed like the engine's index, by
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
use spike::device::Device;
use spike::offline::device_scan::{stream_blocks, Blocks, ScanShape};
use spike::offline::format::{classify_block, BlockClass, CopyOrder, DeviceHeader, Digest, Geometry};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

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
    /// Corrupt regions in data blocks (the walker's count, as a cold start's).
    pub(super) corrupt_records: u64,
}

/// What a cold start of this device would count, under the names of the engine's
/// `RecoveryStats`: the same classifier, walker, device rule and newest-copy order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RestartCounts {
    pub(super) records_found: u64,
    pub(super) records_kept: u64,
    pub(super) tombstones_kept: u64,
    pub(super) expired_dropped: u64,
    pub(super) corrupt_records: u64,
    pub(super) stale_records: u64,
    pub(super) blocks_in_use: u64,
    pub(super) blocks_freed: u64,
}

pub(super) struct Scan {
    pub(super) blocks: Vec<BlockInfo>,
    /// The newest copy of each record, by full digest (the engine names an entry by its
    /// tag unless another digest shares it; a walk of copies can afford the whole digest).
    pub(super) winners: HashMap<Digest, RecordCopy>,
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
        })?;
        scan.check_sequences();
        Ok(scan)
    }

    fn parse_block(&mut self, header: &DeviceHeader, block: u32, buf: &[u8]) {
        let (kind, seq, message) = match classify_block(buf, &header.device_uuid, block) {
            BlockClass::Data { write_seq } => (BlockKind::Data, write_seq, None),
            BlockClass::Snapshot { open_count } => (BlockKind::Snapshot, open_count, None),
            BlockClass::Free => (BlockKind::Free, 0, None),
            BlockClass::OtherKind(_) => (BlockKind::OtherKind, 0, None),
            BlockClass::NoHeader => (BlockKind::NoHeader, 0, None),
            BlockClass::Foreign => (BlockKind::Foreign, 0, None),
            BlockClass::DamagedHeader => {
                let message =
                    "write-block header has Spike's magic but does not verify (checksum or version)";
                (BlockKind::DamagedHeader, 0, Some(message.to_string()))
            }
            BlockClass::Misplaced { header_index } => {
                let message = format!("header of this device's block {header_index} found at block {block}");
                (BlockKind::Misplaced, 0, Some(message))
            }
        };
        self.blocks[block as usize] = BlockInfo { kind, seq };
        if let Some(message) = message {
            self.problems.push(Problem { block, offset_in_block: 0, message });
        }
        if kind != BlockKind::Data {
            return;
        }
        let write_seq = seq;
        let walk = walk_block(buf, write_seq);
        self.counts.stale_records += walk.stale;
        self.counts.corrupt_records += walk.corrupt;
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
            let owner = spike::offline::format::device_of(&meta.digest, header.device_count as usize);
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
                block_seq: write_seq,
                size_bytes: view.size_bytes as u32,
                value_len: view.value.len() as u32,
                value_xxh3: xxhash_rust::xxh3::xxh3_64(view.value),
                copies: 1,
            };
            match self.winners.entry(meta.digest) {
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
        let name = opened.device.name();
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
    /// The counts a cold start of this device reports. A newest copy that has expired is
    /// kept as a tombstone (and counted as expired, a deleted record's tombstone too when
    /// its void time has passed); a record of another device is stale to a restart.
    pub(super) fn restart_counts(&self) -> RestartCounts {
        let live = self.live_bytes();
        let (mut records_kept, mut tombstones_kept, mut expired_dropped) = (0, 0, 0);
        for copy in self.winners.values() {
            let expired = is_expired(copy.void_time, self.now_s);
            expired_dropped += expired as u64;
            if copy.tombstone || expired {
                tombstones_kept += 1;
            } else {
                records_kept += 1;
            }
        }
        RestartCounts {
            records_found: self.counts.records_found,
            records_kept,
            tombstones_kept,
            expired_dropped,
            corrupt_records: self.counts.corrupt_records,
            stale_records: self.counts.stale_records + self.counts.wrong_device_records,
            blocks_in_use: live.iter().filter(|&&bytes| bytes > 0).count() as u64,
            blocks_freed: self.data_blocks_empty(&live) as u64,
        }
    }

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

/// Reads every write block with the engine's one device scan (the one a cold start runs),
/// in 8 MiB runs with two in flight, and calls `visit` in block order with each block's
/// bytes or its read error: an unreadable block is named and the others are still read.
fn for_each_block(
    device: &dyn Device,
    header: &DeviceHeader,
    visit: &mut dyn FnMut(u32, BlockRead<'_>),
) -> Result<()> {
    let shape = ScanShape {
        run_bytes_max: SCAN_BATCH_BYTES,
        in_flight_bytes: SCAN_BATCH_BYTES * SCAN_BUFFERS,
        consumer_holds: 0,
        tolerate_read_errors: true,
    };
    let blocks = Blocks::All { count: header.wblock_count as u32 };
    let scanned = stream_blocks(device, &Geometry::of(header), blocks, shape, &mut |_| {}, &mut |run| {
        match &run.error {
            Some(err) => visit(run.first, Err(err)),
            None => run.iter().for_each(|(block, buf)| visit(block, Ok(buf))),
        }
        Ok(())
    });
    // A tolerant scan whose visitor never fails delivers read errors per block; what is
    // left (the scan's own buffer pool gone) is not the device's fault, but stops it.
    scanned.map_err(|err| anyhow::anyhow!("{}: the scan stopped: {err}", device.name()))
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
            spike::offline::format::device_of(
                &[0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                3
            ),
            (0x0105 % 3)
        );
    }
}
