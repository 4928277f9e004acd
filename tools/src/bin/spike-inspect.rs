//! `spike-inspect`: looks at one Spike device offline and never writes to it.
//!
//! The device is opened like the engine opens it (`O_DIRECT`, exclusive lock), so the
//! tool refuses a device that an engine or `spike-backup` holds, and an engine cannot
//! start on a device while it is being inspected. No subcommand calls `write_at` or `sync`.
//!
//! Subcommands: `header` (the device header, both slots), `stats` (space use and block
//! fill), `check` (every block header and record, with the rule below) and `records`
//! (every live record, one line each, sorted by digest, so that two devices can be diffed).
//!
//! Cost: one pass over the write-block area in large sequential reads (8 MiB batches,
//! one batch read ahead by a reader thread while the previous one is parsed), one xxh3
//! per record for its checksum and one more over each value. RAM: 16 MiB of buffers, a
//! few bytes per write block, and about 80 bytes per distinct record (the newest copy of
//! each), like the engine's own index.
//!
//! Which copy of a record is the live one follows `engine/src/recovery.rs` exactly: only
//! blocks whose header decodes as a data block of this device at this index count; only
//! records whose block-sequence tag matches their block and whose digest belongs to this
//! device count; of several copies (keyed like the engine's index, by partition and
//! digest tag) the higher generation wins, then the later last-update time, then the
//! higher block write sequence, and on a full tie the copy seen first (lower block, then
//! lower offset). A winning tombstone or expired copy hides the record. Live bytes and
//! blocks in use are counted as a cold start counts them (a tombstone the running engine
//! already reclaimed still counts until its block is rewritten).
//!
//! # What `check` calls an inconsistency
//!
//! Within a data block, the block's own records (valid checksum, its sequence tag) must
//! follow each other without gaps from the end of the block header; after the last one,
//! the rest of its 4 KiB page must be zero (the engine pads every write to 4 KiB). What
//! lies beyond that page may be left from an earlier use of the block (a block written
//! by partial flushes is only overwritten as far as it was filled) and is not judged,
//! except that a damaged record carrying this block's sequence tag there is damage.
//! A break in that pattern is a damaged region: a hole (damaged bytes followed by more
//! of the block's records) or a torn tail (no record of the block follows).
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
//! clean shutdown that fails its chain, length or checksum. A device that went through a
//! crash and then more writes keeps its torn blocks until the defragmenter rewrites them
//! (the engine skips their damage): check such a device with a larger `--crash-window`.
//!
//! Exit codes: 0 consistent (or the listing succeeded), 1 `check` found inconsistencies,
//! 2 the device could not be inspected (in use, not a Spike device, I/O error) or bad usage.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use spike::device::{self, AlignedBuf, Device, IoBackend, ReadRequest, IO_ALIGN};
use spike::format::{
    block_records, BlockItem, DeviceHeader, Digest, RecordView, WblockHeader, DEVICE_HEADER_SIZE,
    RECORD_ALIGN, RECORD_MAGIC, RECORD_VERSION, WBLOCK_HEADER_SIZE, WBLOCK_KIND_DATA, WBLOCK_KIND_FREE,
    WBLOCK_KIND_SNAPSHOT, WBLOCK_MAGIC,
};
use spike::index::{partition_of, DigestTag, PARTITION_COUNT};
use spike::namespace::{probe, DeviceContent};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

/// Bytes read per batch of the scan: large sequential reads keep the device busy.
const SCAN_BATCH_BYTES: usize = 8 << 20;
/// Batches in flight: one being read, one being parsed.
const SCAN_BUFFERS: usize = 2;
/// Default number of most recently written blocks in which torn writes are tolerated.
const CRASH_WINDOW_DEFAULT: u64 = 10;
/// Inconsistencies printed one per line; past it only the count grows.
const PROBLEMS_PRINTED_MAX: usize = 1000;
/// Damaged regions remembered per block (the first ones; the rest are counted).
const DAMAGE_PER_BLOCK_MAX: usize = 16;

const EXIT_INCONSISTENT: u8 = 1;
const EXIT_CANNOT_INSPECT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "spike-inspect",
    version,
    about = "Inspect a Spike device offline (read-only; refuses a device an engine holds)",
    after_help = "Exit codes: 0 ok, 1 check found inconsistencies, 2 cannot inspect the device."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the device header (both slots, every field).
    Header {
        /// Block device or file holding one Spike device.
        #[arg(long)]
        device: PathBuf,
    },
    /// Print space use: write blocks, live bytes, block fill histogram, records.
    Stats {
        /// Block device or file holding one Spike device.
        #[arg(long)]
        device: PathBuf,
    },
    /// Verify every write-block header and record; exit 1 naming each inconsistency.
    Check {
        /// Block device or file holding one Spike device.
        #[arg(long)]
        device: PathBuf,
        /// Damage in the blocks holding the last N write sequences of the device is taken
        /// as a crash's torn writes and tolerated. Raise it for a device that crashed and
        /// then ran on (its torn blocks stay); 0 tolerates none.
        #[arg(long, default_value_t = CRASH_WINDOW_DEFAULT)]
        crash_window: u64,
    },
    /// List every live record (newest copy per digest), sorted by digest, one per line.
    Records {
        /// Block device or file holding one Spike device (each device of a namespace
        /// lists its own records).
        #[arg(long)]
        device: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = run(cli.command, &mut out).and_then(|code| {
        out.flush().context("writing to standard output")?;
        Ok(code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // `spike-inspect records | head` closes the pipe early: not an error worth a message.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spike-inspect: error: {err:#}");
            ExitCode::from(EXIT_CANNOT_INSPECT)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

fn run(command: Command, out: &mut dyn Write) -> Result<u8> {
    match command {
        Command::Header { device } => {
            let opened = Opened::open(&device)?;
            print_header(&opened, out)?;
            Ok(0)
        }
        Command::Stats { device } => {
            let opened = Opened::open(&device)?;
            let scan = Scan::run(&opened)?;
            scan.warn_or_refuse(&opened)?;
            print_stats(&opened, &scan, out)?;
            Ok(0)
        }
        Command::Check { device, crash_window } => {
            let opened = Opened::open(&device)?;
            let scan = Scan::run(&opened)?;
            check(&opened, &scan, crash_window, out)
        }
        Command::Records { device } => {
            let opened = Opened::open(&device)?;
            let scan = Scan::run(&opened)?;
            scan.warn_or_refuse(&opened)?;
            print_records(&scan, out)?;
            Ok(0)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------

/// An opened, locked Spike device and its header in force.
struct Opened {
    device: Arc<dyn Device>,
    header: DeviceHeader,
}

impl Opened {
    fn open(path: &Path) -> Result<Opened> {
        // `device::open` takes the same exclusive lock as the engine. It opens read-write
        // because that is the only way it opens; nothing below ever writes.
        let device = device::open(path, IoBackend::Auto).map_err(|err| match err {
            spike::Error::DeviceInUse { .. } => anyhow!(
                "{err}: an engine or spike-backup is using it; spike-inspect only reads devices \
                 that nothing else holds"
            ),
            other => anyhow!(other),
        })?;
        let content =
            probe(device.as_ref()).with_context(|| format!("reading the header of {}", path.display()))?;
        let header = match content {
            DeviceContent::Spike(header) => *header,
            DeviceContent::Blank => {
                bail!(
                    "{}: not a Spike device: blank (all zeroes at the start), never formatted",
                    path.display()
                )
            }
            DeviceContent::Foreign(reason) => bail!("{}: not a Spike device: {reason}", path.display()),
            DeviceContent::BadSpike(reason) => bail!("{}: unusable Spike device: {reason}", path.display()),
        };
        Ok(Opened { device, header })
    }

    fn name(&self) -> &str {
        self.device.name()
    }

    /// The block area must lie on the device before anything scans it.
    fn check_span(&self) -> Result<()> {
        let span = self.header.device_span_bytes();
        if span > self.device.size_bytes() {
            bail!(
                "{}: the device is {} bytes but its header describes {span} bytes (truncated?)",
                self.name(),
                self.device.size_bytes()
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// header
// ---------------------------------------------------------------------------------------

fn slot_status(slot: &[u8], in_force: &DeviceHeader) -> String {
    use spike::format::HeaderProblem;
    match DeviceHeader::decode(slot) {
        Ok(h) if h == *in_force => format!("valid, sequence {} (in force)", h.sequence),
        Ok(h) => format!("valid, sequence {}", h.sequence),
        Err(HeaderProblem::NoMagic) if slot.iter().all(|&b| b == 0) => "blank".into(),
        Err(HeaderProblem::NoMagic) => "no Spike magic".into(),
        Err(HeaderProblem::Damaged(reason)) => format!("damaged: {reason}"),
        Err(HeaderProblem::Version(v)) => format!("format version {v}, unreadable by this build"),
    }
}

fn print_header(opened: &Opened, out: &mut dyn Write) -> Result<()> {
    let h = &opened.header;
    let mut slots = AlignedBuf::zeroed(2 * DEVICE_HEADER_SIZE);
    opened
        .device
        .read_at(&mut slots, 0)
        .with_context(|| format!("reading the header slots of {}", opened.name()))?;
    let wbs = h.write_block_size as u64;
    writeln!(out, "device                {}", opened.name())?;
    writeln!(
        out,
        "device size           {} bytes ({})",
        opened.device.size_bytes(),
        human_bytes(opened.device.size_bytes())
    )?;
    writeln!(out, "header slot 0         {}", slot_status(&slots[..DEVICE_HEADER_SIZE], h))?;
    writeln!(out, "header slot 1         {}", slot_status(&slots[DEVICE_HEADER_SIZE..], h))?;
    writeln!(out, "format version        {}", h.format_version)?;
    writeln!(out, "header sequence       {}", h.sequence)?;
    writeln!(out, "device uuid           {}", hex(&h.device_uuid))?;
    writeln!(out, "namespace             {:?}", h.namespace_name)?;
    writeln!(out, "namespace uuid        {}", hex(&h.namespace_uuid))?;
    writeln!(out, "device index          {} of {}", h.device_index, h.device_count)?;
    writeln!(out, "write-block size      {wbs} bytes ({})", human_bytes(wbs))?;
    writeln!(
        out,
        "clean shutdown        {} (flags {:#x})",
        if h.is_clean() { "yes" } else { "no: open, or it crashed" },
        h.flags
    )?;
    writeln!(
        out,
        "write blocks          {} ({} of block area)",
        h.wblock_count,
        human_bytes(h.wblock_count * wbs)
    )?;
    writeln!(out, "first wblock offset   {} ({:#x})", h.first_wblock_offset, h.first_wblock_offset)?;
    writeln!(out, "span described        {} bytes", h.device_span_bytes())?;
    if h.device_span_bytes() > opened.device.size_bytes() {
        writeln!(out, "WARNING               the header describes more bytes than the device holds")?;
    }
    writeln!(out, "open count            {}", h.open_count)?;
    let s = &h.snapshot;
    if s.len_bytes == 0 {
        writeln!(out, "snapshot              none")?;
    } else {
        let fresh = if s.open_count == h.open_count {
            "written by the last run"
        } else {
            "stale: from an earlier run"
        };
        writeln!(
            out,
            "snapshot              offset {} ({:#x}), {} bytes, checksum {:016x}, open count {} ({fresh})",
            s.offset, s.offset, s.len_bytes, s.checksum, s.open_count
        )?;
    }
    writeln!(out, "bitmap offset         {}", spike::format::BITMAP_OFFSET)?;
    writeln!(out, "bitmap length         {} bytes", h.bitmap_len_bytes)?;
    writeln!(out, "bitmap generation     {}", h.bitmap_generation)?;
    writeln!(out, "bitmap reset by image {}", hex(&h.bitmap_reset_image_uuid))?;
    writeln!(out, "created               {} ({})", utc_time(h.created_unix_s), h.created_unix_s)?;
    writeln!(out, "digest secret         {} bytes (not shown)", h.digest_secret.len())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The scan: every write block, parsed; the newest copy of every record
// ---------------------------------------------------------------------------------------

/// What a block's header says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
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
struct BlockInfo {
    kind: BlockKind,
    /// Write sequence from the header (data blocks only; 0 otherwise).
    seq: u64,
}

/// A valid copy of a record, with what the listing and the merge rule need.
#[derive(Clone, Copy, Debug)]
struct RecordCopy {
    digest: Digest,
    generation: u32,
    void_time: u32,
    last_update_ms: u64,
    tombstone: bool,
    block: u32,
    block_seq: u64,
    size_bytes: u32,
    value_len: u32,
    value_xxh3: u64,
    /// Valid copies of this record found on the device so far, this one included.
    copies: u32,
}

/// A damaged region of a data block, in bytes from the block's start.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DamageSpan {
    start: u32,
    end: u32,
    /// A torn tail (no record of the block follows) rather than a hole.
    tail: bool,
    reason: String,
}

/// One walk over a data block's records.
#[derive(Default)]
struct BlockWalk<'a> {
    /// The block's own records (its sequence tag), with their offsets in the block.
    records: Vec<(u32, RecordView<'a>)>,
    /// Valid records left from an earlier use of the block.
    stale: u64,
    damage: Vec<DamageSpan>,
}

/// Whether the bytes at a record position claim to be a record of the block with this
/// sequence tag (magic, version and tag in place), whatever their checksum says.
fn claims_block(bytes: &[u8], seq_lo: u32) -> bool {
    bytes.len() >= 40
        && u16::from_le_bytes([bytes[0], bytes[1]]) == RECORD_MAGIC
        && bytes[2] == RECORD_VERSION
        && u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]) == seq_lo
}

/// Walks a data block with the engine's own walker (`format::block_records`, the one
/// recovery uses, so both see the same records) and finds where the block breaks the
/// pattern described in the module comment.
fn walk_block(buf: &[u8], seq: u64) -> BlockWalk<'_> {
    let seq_lo = seq as u32;
    let mut walk = BlockWalk::default();
    // Where the next record of this block must start: the end of the previous one.
    let mut expected = WBLOCK_HEADER_SIZE;
    // The first thing at or after `expected` that is neither zero nor a record of the block.
    let mut first_oddity: Option<(usize, String)> = None;
    let mut claimed_bad: Option<usize> = None;
    for item in block_records(buf, seq) {
        match item {
            BlockItem::Record { offset, view } => {
                if offset != expected {
                    let reason = first_oddity.take().map_or_else(
                        || "zeroes where the block's records should continue".to_string(),
                        |(_, reason)| reason,
                    );
                    walk.damage.push(DamageSpan {
                        start: expected as u32,
                        end: offset as u32,
                        tail: false,
                        reason,
                    });
                }
                expected = offset + view.size_bytes;
                walk.records.push((offset as u32, view));
                first_oddity = None;
                claimed_bad = None;
            }
            BlockItem::Stale { offset } => {
                walk.stale += 1;
                first_oddity.get_or_insert((offset, "a record left from an earlier use of the block".into()));
            }
            BlockItem::Corrupt { offset, problem } => {
                first_oddity.get_or_insert((offset, problem.to_string()));
                if claims_block(&buf[offset..], seq_lo) {
                    claimed_bad.get_or_insert(offset);
                }
            }
        }
    }
    let expected = expected.min(buf.len());
    let pad_end = (expected.div_ceil(IO_ALIGN) * IO_ALIGN).min(buf.len());
    let reason_at_end = |default: String| match &first_oddity {
        Some((pos, reason)) if *pos == expected => reason.clone(),
        _ => default,
    };
    if let Some(nonzero) = buf[expected..pad_end].iter().position(|&b| b != 0) {
        let reason = reason_at_end(format!(
            "non-zero bytes at block offset {} in the padding after the block's last record",
            expected + nonzero
        ));
        walk.damage.push(DamageSpan { start: expected as u32, end: pad_end as u32, tail: true, reason });
    } else if let Some(pos) = claimed_bad {
        let reason = format!("a damaged record carrying this block's sequence at block offset {pos}");
        walk.damage.push(DamageSpan {
            start: expected as u32,
            end: (pos + RECORD_ALIGN) as u32,
            tail: true,
            reason,
        });
    }
    walk
}

/// Device of a digest in a namespace of `device_count` devices (recovery's `device_of`).
fn device_of(digest: &Digest, device_count: u32) -> u32 {
    u16::from_le_bytes([digest[2], digest[3]]) as u32 % device_count.max(1)
}

/// Whether `candidate` replaces `current` as the newest copy: recovery's rule, verbatim.
fn is_newer(candidate: &RecordCopy, current: &RecordCopy) -> bool {
    if candidate.generation != current.generation {
        return candidate.generation > current.generation;
    }
    (candidate.last_update_ms, candidate.block_seq) > (current.last_update_ms, current.block_seq)
}

/// Unix seconds now, as the engine decides expiry.
fn now_s() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

fn is_expired(void_time: u32, now_s: u32) -> bool {
    void_time != 0 && void_time <= now_s
}

#[derive(Debug, Default)]
struct Counts {
    /// Valid records of this device carrying their block's sequence.
    records_found: u64,
    /// Valid records left from an earlier use of their block.
    stale_records: u64,
    /// Records of a block whose digest belongs to another device.
    wrong_device_records: u64,
}

struct Scan {
    blocks: Vec<BlockInfo>,
    /// The newest copy of each record, keyed like the engine's index.
    winners: HashMap<(usize, DigestTag), RecordCopy>,
    /// Damaged regions per data block (the first `DAMAGE_PER_BLOCK_MAX` of each).
    damage: Vec<(u32, DamageSpan)>,
    /// Per block with more damaged regions than that: (block, regions not kept, lowest
    /// block offset among them).
    damage_dropped: Vec<(u32, u64, u32)>,
    damage_total: u64,
    /// Inconsistencies that no crash explains, found while scanning: (block, offset in
    /// block, message). `stats` and `records` refuse to go on with any.
    problems: Vec<Problem>,
    counts: Counts,
    now_s: u32,
}

#[derive(Debug)]
struct Problem {
    block: u32,
    offset_in_block: u32,
    message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "block {} at block offset {}: {}", self.block, self.offset_in_block, self.message)
    }
}

impl Scan {
    fn run(opened: &Opened) -> Result<Scan> {
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
            let owner = device_of(&meta.digest, header.device_count);
            if owner != header.device_index {
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
    fn warn_or_refuse(&self, opened: &Opened) -> Result<()> {
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
    fn live_bytes(&self) -> Vec<u64> {
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
    fn blocks_needed(&self) -> Vec<bool> {
        let mut needed = vec![false; self.blocks.len()];
        for copy in self.winners.values() {
            let hides_nothing = copy.tombstone || is_expired(copy.void_time, self.now_s);
            if !hides_nothing || copy.copies > 1 {
                needed[copy.block as usize] = true;
            }
        }
        needed
    }

    fn data_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.kind == BlockKind::Data).count()
    }

    /// The lowest write sequence of the crash window: the `window` sequences up to the
    /// highest one on the device (`u64::MAX` for an empty window). By value, not by
    /// count of blocks present: the blocks a crash can have left half-written carry the
    /// last sequences the engine handed out, and an older block that is still in use
    /// (its neighbours in time freed since) was synced long ago.
    fn crash_window_seq_min(&self, window: u64) -> u64 {
        let seq_max = self.blocks.iter().filter(|b| b.kind == BlockKind::Data).map(|b| b.seq).max();
        match seq_max {
            Some(seq_max) if window > 0 => seq_max.saturating_sub(window - 1),
            _ => u64::MAX,
        }
    }

    /// (live records, tombstones, expired) among the newest copies.
    fn record_kinds(&self) -> (u64, u64, u64) {
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

// ---------------------------------------------------------------------------------------
// The index snapshot (layout: engine/src/snapshot.rs)
// ---------------------------------------------------------------------------------------

/// Each snapshot block: the block header, then next block (u32, `SNAPSHOT_CHAIN_END` ends
/// the chain), payload bytes in this block (u32) and 8 zero bytes, then payload.
const SNAPSHOT_CHAIN_HEADER_SIZE: usize = 16;
const SNAPSHOT_CHAIN_END: u32 = u32::MAX;
/// Payload: magic, entry count u64, next write sequence u64, block count u64, a write
/// sequence per block (u64), a generation floor per partition (u32), the entries.
const SNAPSHOT_MAGIC: [u8; 8] = *b"SPSNAP01";
const SNAPSHOT_ENTRY_SIZE: u64 = 32;

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

/// Follows the index snapshot of the last clean shutdown the way the engine's fast
/// restart reads it, and verifies its chain, length, checksum and layout.
fn verify_snapshot(opened: &Opened) -> std::result::Result<SnapshotStatus, SnapshotProblem> {
    let h = &opened.header;
    let snapshot = h.snapshot;
    if snapshot.len_bytes == 0 {
        return Ok(SnapshotStatus::None);
    }
    if !h.is_clean() || snapshot.open_count != h.open_count {
        return Ok(SnapshotStatus::Stale);
    }
    let wbs = h.write_block_size as u64;
    let per_block = wbs as usize - WBLOCK_HEADER_SIZE - SNAPSHOT_CHAIN_HEADER_SIZE;
    if snapshot.len_bytes > h.wblock_count * per_block as u64 {
        return Err((
            snapshot.offset,
            format!("{} bytes long, more than the device holds", snapshot.len_bytes),
        ));
    }
    let mut block = match snapshot.offset.checked_sub(h.first_wblock_offset) {
        Some(rel) if rel % wbs == 0 && rel / wbs < h.wblock_count => (rel / wbs) as u32,
        _ => return Err((snapshot.offset, "does not start at a write block".into())),
    };
    let mut payload = Vec::with_capacity(snapshot.len_bytes as usize);
    let mut buf = AlignedBuf::zeroed(wbs as usize);
    let mut blocks = 0u64;
    loop {
        let offset = h.wblock_offset(block);
        if blocks >= h.wblock_count {
            return Err((offset, "the chain of snapshot blocks loops".into()));
        }
        opened
            .device
            .read_at(&mut buf, offset)
            .map_err(|err| (offset, format!("block {block} unreadable: {err}")))?;
        WblockHeader::decode(&buf)
            .filter(|w| {
                w.kind == WBLOCK_KIND_SNAPSHOT
                    && w.device_uuid == h.device_uuid
                    && w.wblock_index == block
                    && w.write_seq == snapshot.open_count
            })
            .ok_or_else(|| (offset, format!("block {block} is not a block of this snapshot")))?;
        let le32 = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let next = le32(WBLOCK_HEADER_SIZE);
        let len = le32(WBLOCK_HEADER_SIZE + 4) as usize;
        if len > per_block {
            return Err((offset, format!("block {block} claims {len} payload bytes, more than it holds")));
        }
        let start = WBLOCK_HEADER_SIZE + SNAPSHOT_CHAIN_HEADER_SIZE;
        payload.extend_from_slice(&buf[start..start + len]);
        blocks += 1;
        if payload.len() as u64 >= snapshot.len_bytes || next == SNAPSHOT_CHAIN_END {
            break;
        }
        if next as u64 >= h.wblock_count {
            return Err((offset, format!("block {block} chains to block {next}, past the device's blocks")));
        }
        block = next;
    }
    if payload.len() as u64 != snapshot.len_bytes || xxhash_rust::xxh3::xxh3_64(&payload) != snapshot.checksum
    {
        return Err((snapshot.offset, "length or checksum mismatch".into()));
    }
    let u64_at = |at: usize| {
        payload
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    let entries = u64_at(8);
    let expected_len = (32 + h.wblock_count * 8 + PARTITION_COUNT as u64 * 4)
        .checked_add(entries.saturating_mul(SNAPSHOT_ENTRY_SIZE));
    if payload.get(..8) != Some(&SNAPSHOT_MAGIC[..])
        || u64_at(24) != h.wblock_count
        || expected_len != Some(payload.len() as u64)
    {
        return Err((snapshot.offset, "magic, block count or entry count does not match its length".into()));
    }
    Ok(SnapshotStatus::Valid { entries, blocks })
}

// ---------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------

fn check(opened: &Opened, scan: &Scan, crash_window: u64, out: &mut dyn Write) -> Result<u8> {
    let h = &opened.header;
    let name = opened.name();
    writeln!(
        out,
        "checking {name}: namespace {:?}, device {} of {}, {} write blocks of {} bytes",
        h.namespace_name, h.device_index, h.device_count, h.wblock_count, h.write_block_size
    )?;
    let mut slots = AlignedBuf::zeroed(2 * DEVICE_HEADER_SIZE);
    opened.device.read_at(&mut slots, 0).with_context(|| format!("reading the header slots of {name}"))?;
    writeln!(out, "header slot 0: {}", slot_status(&slots[..DEVICE_HEADER_SIZE], h))?;
    writeln!(out, "header slot 1: {}", slot_status(&slots[DEVICE_HEADER_SIZE..], h))?;

    let mut errors: Vec<String> = Vec::new();
    match verify_snapshot(opened) {
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

    let kinds = |kind: BlockKind| scan.blocks.iter().filter(|b| b.kind == kind).count();
    let data = scan.data_blocks();
    let data_empty =
        scan.blocks.iter().zip(&live).filter(|(b, &l)| b.kind == BlockKind::Data && l == 0).count();
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

// ---------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------

const FILL_BUCKETS: usize = 10;
const HISTOGRAM_BAR_MAX: u64 = 50;

fn print_stats(opened: &Opened, scan: &Scan, out: &mut dyn Write) -> Result<()> {
    let h = &opened.header;
    let wbs = h.write_block_size as u64;
    let live = scan.live_bytes();
    let total = scan.blocks.len() as u64;
    let in_use = live.iter().filter(|&&l| l > 0).count() as u64;
    let data_empty =
        scan.blocks.iter().zip(&live).filter(|(b, &l)| b.kind == BlockKind::Data && l == 0).count();
    let live_total: u64 = live.iter().sum();
    let area = total * wbs;
    writeln!(out, "device            {}", opened.name())?;
    writeln!(
        out,
        "namespace         {:?}, device {} of {}",
        h.namespace_name, h.device_index, h.device_count
    )?;
    writeln!(out, "write blocks      {total} of {} ({} in all)", human_bytes(wbs), human_bytes(area))?;
    writeln!(out, "  in use          {in_use} (holding newest copies: live records or tombstones)")?;
    writeln!(out, "  free            {}", total - in_use)?;
    if data_empty > 0 {
        writeln!(
            out,
            "                  ({data_empty} of them still hold data the engine frees at its next open)"
        )?;
    }
    writeln!(
        out,
        "live bytes        {live_total} ({}, {:.1}% of the block area)",
        human_bytes(live_total),
        percent(live_total, area)
    )?;
    if let Some(average) = live_total.checked_div(in_use) {
        writeln!(out, "  per block in use {} on average", human_bytes(average))?;
    }
    let mut buckets = [0u64; FILL_BUCKETS];
    for &bytes in live.iter().filter(|&&l| l > 0) {
        buckets[((bytes * FILL_BUCKETS as u64 / wbs) as usize).min(FILL_BUCKETS - 1)] += 1;
    }
    writeln!(out, "fill of blocks in use (live bytes / block size)")?;
    let widest = buckets.iter().copied().max().unwrap_or(0).max(1);
    for (i, &n) in buckets.iter().enumerate() {
        let label = format!("{}-{}%", i * 10, (i + 1) * 10);
        let bar = "#".repeat((n * HISTOGRAM_BAR_MAX).div_ceil(widest) as usize);
        writeln!(out, "{}", format!("  {label:>7} {n:>8} {bar}").trim_end())?;
    }
    let (records, tombstones, expired) = scan.record_kinds();
    writeln!(out, "records           {records} live")?;
    writeln!(out, "tombstones        {tombstones}")?;
    writeln!(out, "expired           {expired} (kept as tombstones until rewritten)")?;
    let c = &scan.counts;
    writeln!(
        out,
        "copies on device  {} valid, {} superseded, {} stale, {} damaged region(s)",
        c.records_found,
        c.records_found - scan.winners.len() as u64,
        c.stale_records,
        scan.damage_total
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// records
// ---------------------------------------------------------------------------------------

fn print_records(scan: &Scan, out: &mut dyn Write) -> Result<()> {
    let mut live: Vec<&RecordCopy> =
        scan.winners.values().filter(|c| !c.tombstone && !is_expired(c.void_time, scan.now_s)).collect();
    live.sort_unstable_by_key(|copy| copy.digest);
    for copy in live {
        writeln!(
            out,
            "{} gen={} void={} len={} xxh3={:016x}",
            hex(&copy.digest),
            copy.generation,
            copy.void_time,
            copy.value_len,
            copy.value_xxh3
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `YYYY-MM-DD hh:mm:ss UTC` for Unix seconds (days to civil date: Howard Hinnant's algorithm).
fn utc_time(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spike::format::{encode_record, record_size, RecordMeta};

    const WBS: usize = 128 * 1024;

    /// A block with `records` of the given value lengths, tagged `seq`; returns the block
    /// and each record's offset.
    fn block_with(seq: u64, value_lens: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; WBS];
        let mut at = WBLOCK_HEADER_SIZE;
        let mut offsets = Vec::new();
        for (i, &len) in value_lens.iter().enumerate() {
            let meta = RecordMeta {
                digest: [i as u8 + 1; 16],
                generation: 1,
                void_time: 0,
                last_update_ms: 5,
                tombstone: false,
                wblock_seq_lo: seq as u32,
            };
            let size = record_size(3, len);
            encode_record(&meta, b"key", &vec![7u8; len], &mut buf[at..at + size]);
            offsets.push(at);
            at += size;
        }
        (buf, offsets)
    }

    #[test]
    fn a_cleanly_written_block_has_no_damage() {
        let (buf, offsets) = block_with(9, &[100, 2000, 5000, 30]);
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.records.len(), offsets.len());
        assert!(walk.damage.is_empty());
    }

    #[test]
    fn leftovers_past_the_last_page_are_not_damage() {
        // A partial flush of a reused block: its records, zero padding to 4 KiB, then what
        // an earlier use of the block left there.
        let (old, _) = block_with(3, &[700; 40]);
        let (mut buf, _) = block_with(9, &[100, 200]);
        buf[IO_ALIGN..].copy_from_slice(&old[IO_ALIGN..]);
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.records.len(), 2);
        assert!(walk.stale > 0);
        assert!(walk.damage.is_empty(), "{:?}", walk.damage);
    }

    #[test]
    fn a_flipped_bit_mid_block_is_a_hole_naming_the_record() {
        let (mut buf, offsets) = block_with(9, &[100, 2000, 5000, 30]);
        buf[offsets[1] + 100] ^= 4;
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.records.len(), 3);
        assert_eq!(walk.damage.len(), 1);
        let span = &walk.damage[0];
        assert_eq!((span.start as usize, span.end as usize, span.tail), (offsets[1], offsets[2], false));
        assert_eq!(span.reason, "record checksum mismatch");
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
        let (mut buf, offsets) = block_with(9, &[100, 2000, 5000, 30]);
        buf[offsets[3] + 60] ^= 1;
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.damage.len(), 1);
        assert!(walk.damage[0].tail);
        assert_eq!(walk.damage[0].start as usize, offsets[3]);
    }

    #[test]
    fn a_damaged_last_record_on_a_page_boundary_is_still_damage() {
        // The last record starts exactly at 4 KiB, so the padding rule alone would miss it:
        // its header still carries the block's sequence.
        let first = IO_ALIGN - WBLOCK_HEADER_SIZE - 56 - 3;
        let (mut buf, offsets) = block_with(9, &[first, 300]);
        assert_eq!(offsets[1], IO_ALIGN);
        buf[offsets[1] + 100] ^= 1;
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.damage.len(), 1, "{:?}", walk.damage);
        assert!(walk.damage[0].tail);
    }

    #[test]
    fn newest_copy_rule_orders_generation_then_update_time_then_block_sequence() {
        let base = RecordCopy {
            digest: [0; 16],
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
    fn formatting_helpers() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
        assert_eq!(human_bytes(128 * 1024), "128 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(device_of(&[0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 3), (0x0105 % 3));
    }
}
