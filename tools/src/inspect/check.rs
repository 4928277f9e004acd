//! `spike-inspect check`: verifies one device (header slots, index snapshot, every block
//! header and record) and decides which damage a crash explains.
//!
//! # What `check` calls an inconsistency
//!
//! A data block must follow the layout rule in `walk` (the block's records without gaps,
//! then zero padding to the end of their 4 KiB page); a break in it is a damaged region,
//! a hole or a torn tail.
//!
//! A crash can leave damage only where writes had not been synced, and a torn write can
//! keep any subset of its 512-byte sectors (DESIGN.md), not just a prefix, so a hole is
//! as likely as a tail there. Damage is therefore tolerated (reported, counted, exit 0)
//! in two places only:
//! - in the blocks written last: those whose write sequence is among the `--crash-window`
//!   sequences up to the highest one on the device (default 10: one group commit writes at
//!   most the engine's default write-queue bound of 8 sealed blocks plus the open block's
//!   dirty span, and a shutdown can seal one more, all with the last sequences handed out);
//! - in the first 4 KiB page of a block that a restart does not need (no newest copy in
//!   it is live, and no tombstone in it still hides an older copy): the engine rewrites
//!   the header page of a block it frees, and a torn rewrite can zero part of that page
//!   while the old header survives.
//!
//! Everything else is an error naming the device, the block and the device offset, and
//! `check` exits 1: damage in any other block, a block header with Spike's magic that
//! does not verify (sector 0 is never torn), a data block of this device at the wrong
//! index, two data blocks with one write sequence, a record of this block whose digest
//! belongs to another device, an unreadable block, and an index snapshot of the last
//! clean shutdown that fails its chain, length, checksum or layout (read and checked by
//! the engine's own `snapshot::read_payload` and `format::parse_snapshot_payload`, as a fast
//! restart reads it).
//!
//! The report ends with what a cold start of the device would count (`a cold start:`,
//! under the names of the engine's `RecoveryStats`): the scan, block classifier, record
//! walker, device rule and newest-copy order are the engine's own, so these are the
//! numbers the next cold start reports.
//!
//! A device that went through a crash and then more writes keeps its
//! torn blocks until the defragmenter rewrites them (the engine skips their damage):
//! check such a device with a larger `--crash-window`.

use super::header::slot_statuses;
use super::scan::{BlockKind, Scan};
use super::{Opened, EXIT_INCONSISTENT};
use anyhow::Result;
use spike::device::IO_ALIGN;
use std::io::Write;
use std::path::Path;

/// Default number of most recently written blocks in which torn writes are tolerated.
pub const CRASH_WINDOW_DEFAULT: u64 = 10;
/// Inconsistencies printed one per line; past it only the count grows.
const PROBLEMS_PRINTED_MAX: usize = 1000;

/// Opens, scans and verifies the device at `path`; returns the exit code: 0 consistent,
/// [`EXIT_INCONSISTENT`] if anything outside the tolerated places is wrong.
pub fn run(path: &Path, crash_window: u64, out: &mut dyn Write) -> Result<u8> {
    let opened = super::open(path)?;
    let scan = Scan::run(&opened)?;
    check(&opened, &scan, crash_window, out)
}

enum SnapshotStatus {
    None,
    /// Not of the last clean shutdown: the engine ignores it and cold-starts.
    Stale,
    Valid {
        entries: u64,
        blocks: u64,
    },
}

/// A snapshot that fails a check: device offset and what is wrong.
type SnapshotProblem = (u64, String);

/// Reads the index snapshot of the last clean shutdown with the engine's fast-restart
/// reader and checks its chain, length, checksum and layout.
fn verify_snapshot(opened: &Opened, scan: &Scan) -> std::result::Result<SnapshotStatus, SnapshotProblem> {
    let h = &opened.header;
    let snapshot = h.snapshot;
    if snapshot.len_bytes == 0 {
        return Ok(SnapshotStatus::None);
    }
    if !h.is_clean() || snapshot.open_count != h.open_count {
        return Ok(SnapshotStatus::Stale);
    }
    // The engine's reader reserves its buffer from this length (up to 4 GiB): refuse a length
    // the block area cannot hold before it allocates. (A decoded header's area does not overflow.)
    if snapshot.len_bytes > h.wblock_count * h.write_block_size as u64 {
        return Err((
            snapshot.offset,
            format!("{} bytes long, more than the device holds", snapshot.len_bytes),
        ));
    }
    let payload =
        spike::offline::snapshot::read_payload(opened.device.as_ref(), h).map_err(|err| match err {
            // The engine's reasons start with "index snapshot: ", which the report line says.
            spike::Error::Corrupt { offset, reason, .. } => {
                (offset, reason.strip_prefix("index snapshot: ").unwrap_or(&reason).to_string())
            }
            spike::Error::Io { offset, source, .. } => (offset, format!("unreadable: {source}")),
            other => (snapshot.offset, other.to_string()),
        })?;
    let contents = spike::offline::format::parse_snapshot_payload(&payload, h.wblock_count)
        .map_err(|reason| (snapshot.offset, reason))?;
    Ok(SnapshotStatus::Valid {
        entries: contents.entry_count() as u64,
        blocks: scan.snapshot_blocks(snapshot.open_count) as u64,
    })
}

fn check(opened: &Opened, scan: &Scan, crash_window: u64, out: &mut dyn Write) -> Result<u8> {
    let h = &opened.header;
    let name = opened.device.name();
    writeln!(
        out,
        "checking {name}: namespace {:?}, device {} of {}, {} write blocks of {} bytes",
        h.namespace_name, h.device_index, h.device_count, h.wblock_count, h.write_block_size
    )?;
    let [slot0, slot1] = slot_statuses(opened)?;
    writeln!(out, "header slot 0: {slot0}")?;
    writeln!(out, "header slot 1: {slot1}")?;

    let mut errors: Vec<String> = Vec::new();
    match verify_snapshot(opened, scan) {
        Ok(SnapshotStatus::None) => writeln!(out, "index snapshot: none (the next open cold-starts)")?,
        Ok(SnapshotStatus::Stale) => writeln!(
            out,
            "index snapshot: stale, not of the last clean shutdown (the next open cold-starts)"
        )?,
        Ok(SnapshotStatus::Valid { entries, blocks }) => {
            writeln!(out, "index snapshot: valid, {entries} entries in {blocks} block(s)")?
        }
        Err((offset, message)) => {
            errors.push(format!("{name}: index snapshot (device offset {offset}): {message}"))
        }
    }
    for problem in &scan.problems {
        let offset = h.wblock_offset(problem.block) + problem.offset_in_block as u64;
        errors.push(format!("{name}: block {} (device offset {offset}): {}", problem.block, problem.message));
    }
    let window_seq_min = scan.crash_window_seq_min(crash_window);
    let live = scan.live_bytes();
    let needed = scan.blocks_needed();
    // Why damage at this block offset is tolerated, if it is.
    let tolerance = |block: u32, start: u32| {
        if scan.blocks[block as usize].seq >= window_seq_min {
            Some(format!("among the last {crash_window} blocks written: torn by a crash"))
        } else if !needed[block as usize] && (start as usize) < IO_ALIGN {
            Some("first page of a block no restart needs: torn free-marking".to_string())
        } else {
            None
        }
    };
    let mut tolerated: Vec<String> = Vec::new();
    let mut tolerated_count = 0u64;
    for (block, span) in &scan.damage {
        let info = scan.blocks[*block as usize];
        let offset = h.wblock_offset(*block) + span.start as u64;
        let shape = if span.tail {
            format!("torn tail from block offset {}", span.start)
        } else {
            format!(
                "damaged bytes {}..{} of the block, followed by more of its records",
                span.start, span.end
            )
        };
        let line = format!(
            "{name}: block {block} (write seq {}, device offset {offset}): {}: {shape}",
            info.seq, span.reason
        );
        match tolerance(*block, span.start) {
            Some(why) => {
                tolerated.push(format!("{line} [{why}]"));
                tolerated_count += 1;
            }
            None => errors.push(line),
        }
    }
    for &(block, count, start_min) in &scan.damage_dropped {
        let line =
            format!("{name}: block {block}: {count} more damaged region(s) from block offset {start_min}");
        match tolerance(block, start_min) {
            Some(why) => {
                tolerated.push(format!("{line} [{why}]"));
                tolerated_count += count;
            }
            None => errors.push(line),
        }
    }
    for line in tolerated.iter().take(PROBLEMS_PRINTED_MAX) {
        writeln!(out, "tolerated: {line}")?;
    }
    for line in errors.iter().take(PROBLEMS_PRINTED_MAX) {
        writeln!(out, "ERROR: {line}")?;
    }
    if errors.len() > PROBLEMS_PRINTED_MAX {
        writeln!(out, "ERROR: ... and {} more", errors.len() - PROBLEMS_PRINTED_MAX)?;
    }

    let kinds = |kind: BlockKind| scan.blocks_of_kind(kind);
    let data = kinds(BlockKind::Data);
    let data_empty = scan.data_blocks_empty(&live);
    let (records, tombstones, expired) = scan.record_kinds();
    let c = &scan.counts;
    writeln!(out, "write blocks:     {}", scan.blocks.len())?;
    writeln!(out, "  data:           {data} ({data_empty} holding no newest copy: freed at the next open)")?;
    writeln!(out, "  free-marked:    {}", kinds(BlockKind::Free))?;
    writeln!(out, "  no header:      {}", kinds(BlockKind::NoHeader))?;
    writeln!(
        out,
        "  other:          {} snapshot, {} unknown kind",
        kinds(BlockKind::Snapshot),
        kinds(BlockKind::OtherKind)
    )?;
    writeln!(out, "  foreign:        {} (another device's headers)", kinds(BlockKind::Foreign))?;
    writeln!(
        out,
        "  bad:            {} damaged header, {} misplaced, {} unreadable",
        kinds(BlockKind::DamagedHeader),
        kinds(BlockKind::Misplaced),
        kinds(BlockKind::Unreadable)
    )?;
    writeln!(out, "records found:    {} (valid copies of this device)", c.records_found)?;
    writeln!(out, "records kept:     {records} live, {tombstones} tombstones, {expired} expired")?;
    writeln!(out, "superseded:       {}", c.records_found - scan.winners.len() as u64)?;
    writeln!(out, "stale records:    {} (left from earlier uses of their blocks)", c.stale_records)?;
    writeln!(out, "wrong device:     {}", c.wrong_device_records)?;
    writeln!(out, "damaged regions:  {} ({tolerated_count} tolerated as torn writes)", scan.damage_total)?;
    let r = scan.restart_counts();
    writeln!(
        out,
        "a cold start:     records_found={} records_kept={} tombstones_kept={} expired_dropped={} \
         stale_records={} corrupt_records={} blocks_in_use={} blocks_freed={}",
        r.records_found,
        r.records_kept,
        r.tombstones_kept,
        r.expired_dropped,
        r.stale_records,
        r.corrupt_records,
        r.blocks_in_use,
        r.blocks_freed
    )?;
    writeln!(out, "errors:           {}", errors.len())?;
    if errors.is_empty() {
        writeln!(out, "result: consistent")?;
        Ok(0)
    } else {
        writeln!(
            out,
            "result: {} inconsistenc{} on {name}",
            errors.len(),
            if errors.len() == 1 { "y" } else { "ies" }
        )?;
        Ok(EXIT_INCONSISTENT)
    }
}
