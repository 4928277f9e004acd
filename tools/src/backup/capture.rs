//! `full` and `incr`: a device (offline, locked) to an image, then a new bitmap generation.
//!
//! A full image lists every write block: those in use stored, the others recorded free. An
//! incremental lists the blocks the change bitmap marks since its base, plus every block
//! in use whose write sequence is newer than any its base chain recorded (the second
//! witness; if the bitmap missed one, the tool says so loudly); of those, the blocks now
//! free are recorded free. Both capture the whole reserved region (header copies, bitmap).
//!
//! Invariants:
//! - An incremental is taken only if the device's bitmap is trusted and is the one the base
//!   image started: same device UUID and geometry, header generation equal to the base's new
//!   generation (never 0), header naming the base's UUID as the image that reset it.
//!   Otherwise it is refused with the reason and "a full backup is needed" (`--auto-full`
//!   takes a full image instead, and says so).
//! - The new generation is started ([`start_generation`]) only after the image is durably in
//!   place under its final name; any failure before leaves the device exactly as it was, so
//!   the next attempt misses nothing.
//! - Every block read whole is classified again from its bytes; a block whose header
//!   differs from the header scan means something wrote to the device: the backup fails.
//!
//! Cost: the header scan (4 KiB per block), then one read of each block stored, streamed
//! by a reader thread (8 MiB in flight, see `source`) while this thread checks, checksums
//! (xxh3, ~4 GB/s on one core here: the SSE2 build) or compresses (zstd, on every core
//! when `--compress`) and places blocks in the image, and `IMAGE_WRITERS` threads copy them
//! into the file: three stages, so the slowest sets the pace. On a 2-core VM with the image
//! on tmpfs that is the copy into the page cache (one file's writes serialise on its inode
//! lock; README.md has the figures); with a disk destination it is the
//! device. An incremental reads only the changed blocks.

use super::chain::{uuid_string, OpenImage};
use super::image::{
    fingerprint, BlockEntry, ImageHeader, ImageMeta, ImageTail, COMPRESSION_NONE, COMPRESSION_ZSTD,
    FLAG_COMPRESSED, FLAG_INCREMENTAL, STATE_DATA,
};
use super::progress::{Progress, Throttle};
use super::source::{classify, open_spike, read_blocks, scan_headers, Batch, BlockUse, SpikeDevice};
use super::writer::ImageWriter;
use anyhow::{bail, Context, Result};
use spike::device::{AlignedBuf, Device};
use spike::offline::change_bitmap::ChangeBitmap;
use spike::offline::format::{DeviceHeader, WBLOCK_KIND_DATA, WBLOCK_KIND_SNAPSHOT};
use spike::offline::namespace::random_bytes;
use spike::offline::namespace::start_generation;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_64;

/// zstd level of `--compress` unless `--compress-level` says otherwise.
pub const COMPRESS_LEVEL_DEFAULT: i32 = 1;
/// Blocks named one per line in the second-witness warning; past it only counted.
const WITNESS_NAMED_MAX: usize = 20;

pub struct CaptureOptions {
    pub device: PathBuf,
    pub out: PathBuf,
    /// `None`: a full image.
    pub base: Option<PathBuf>,
    pub auto_full: bool,
    /// zstd level, or `None` for no compression.
    pub compress_level: Option<i32>,
    pub max_rate_mb_s: Option<f64>,
}

#[derive(Debug)]
pub struct CaptureReport {
    pub incremental: bool,
    /// Why an incremental was refused when `--auto-full` took a full image instead.
    pub fell_back: Option<String>,
    pub image_uuid: [u8; 16],
    pub new_generation: u64,
    pub wblock_count: u64,
    pub blocks_in_use: u64,
    pub blocks_listed: u64,
    pub blocks_stored: u64,
    /// Blocks in use newer than the base that the bitmap did not mark.
    pub missed_by_bitmap: Vec<u32>,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub elapsed: Duration,
    /// The image is in place, but the device's new generation could not be started.
    pub generation_error: Option<String>,
}

fn random_u64_nonzero() -> Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        random_bytes(&mut bytes)?;
        let v = u64::from_le_bytes(bytes);
        if v != 0 {
            return Ok(v);
        }
    }
}

fn random_uuid() -> Result<[u8; 16]> {
    let mut uuid = [0u8; 16];
    while uuid == [0; 16] {
        random_bytes(&mut uuid)?;
    }
    Ok(uuid)
}

/// Why an incremental against `base` cannot be taken of this device, or its bitmap.
fn incremental_bitmap(
    src: &SpikeDevice,
    base: &ImageMeta,
) -> Result<std::result::Result<ChangeBitmap, String>> {
    let (h, b) = (&src.header, &base.header);
    let refuse = |reason: String| Ok(Err(reason));
    if h.device_uuid != b.device_uuid {
        return refuse(format!(
            "base image {} is of device {}, this device is {}",
            base.path,
            uuid_string(&b.device_uuid),
            uuid_string(&h.device_uuid)
        ));
    }
    if h.write_block_size != b.write_block_size
        || h.wblock_count != b.wblock_count
        || h.first_wblock_offset != b.first_wblock_offset
    {
        return refuse(format!("the device's geometry differs from base image {}", base.path));
    }
    if h.bitmap_generation == 0 {
        return refuse(
            "the device's change bitmap is at generation 0 (never backed up, restored from an image, \
             or found damaged by the engine)"
                .into(),
        );
    }
    if h.bitmap_generation != b.new_generation || h.bitmap_reset_image_uuid != b.image_uuid {
        return refuse(format!(
            "base image {} is not the last image taken of this device: its change bitmap is at \
             generation {:#x}, started by image {} (the base started generation {:#x})",
            base.path,
            h.bitmap_generation,
            uuid_string(&h.bitmap_reset_image_uuid),
            b.new_generation
        ));
    }
    Ok(ChangeBitmap::read(src.device.as_ref(), h)
        .context("reading the change bitmap")?
        .map_err(|problem| format!("the device's change bitmap cannot be trusted: {problem}")))
}

/// Checksums and (optionally) compresses the blocks of a batch, on every core.
fn pack_batch(bufs: &[&[u8]], level: Option<i32>) -> Result<Vec<(u64, Option<Vec<u8>>)>> {
    let pack = |buf: &&[u8]| -> Result<(u64, Option<Vec<u8>>)> {
        let checksum = xxh3_64(buf);
        let Some(level) = level else { return Ok((checksum, None)) };
        let packed = zstd::bulk::compress(buf, level).context("zstd compression")?;
        Ok((checksum, (packed.len() < buf.len()).then_some(packed)))
    };
    if level.is_none() || bufs.len() < 2 {
        return bufs.iter().map(pack).collect();
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(bufs.len());
    let per_worker = bufs.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = bufs
            .chunks(per_worker)
            .map(|chunk| scope.spawn(move || chunk.iter().map(pack).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(bufs.len());
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part?),
                Err(_) => bail!("a compression thread panicked"),
            }
        }
        Ok(out)
    })
}

/// Threads copying stored blocks into the image file. Two: on tmpfs one thread's copy
/// (~2 GB/s here, noisy) is slower than the device; a disk destination gains nothing more.
const IMAGE_WRITERS: usize = 2;

/// A unit's stored blocks on their way to an image writer thread: the unit (dropping it
/// gives its buffer back to the reader), and per block its place in the image and its
/// compressed bytes when compression paid.
struct Placed {
    batch: Batch,
    blocks: Vec<(u64, Option<Vec<u8>>)>,
}

/// Checks the blocks of one unit (each must still be what the header scan saw) and makes
/// their image entries, from the checksums and compressed bytes `pack_batch` made.
fn entries_of(
    batch: &Batch,
    h: &DeviceHeader,
    uses: &[BlockUse],
    packed: &mut impl Iterator<Item = (u64, Option<Vec<u8>>)>,
) -> Result<Vec<(BlockEntry, Option<Vec<u8>>)>> {
    let mut entries = Vec::with_capacity(batch.count);
    for ((block, buf), (checksum, compressed)) in batch.iter().zip(packed) {
        let found = classify(buf, h, block);
        let BlockUse::InUse { kind, write_seq } = found else {
            bail!("block {block} changed while being backed up: is something writing to the device?");
        };
        if uses[block as usize] != found {
            bail!("block {block} changed while being backed up: is something writing to the device?");
        }
        let entry = BlockEntry {
            state: STATE_DATA,
            compression: if compressed.is_some() { COMPRESSION_ZSTD } else { COMPRESSION_NONE },
            kind,
            write_seq,
            checksum,
            ..BlockEntry::free(block)
        };
        entries.push((entry, compressed));
    }
    Ok(entries)
}

/// Reads the `stored` blocks (a reader thread), checks, packs and places them in the image
/// with the free entries of `listed` (this thread), and copies them into the image file
/// (`IMAGE_WRITERS` threads), so reading, checksumming/compressing and writing overlap.
/// Returns the bytes stored.
#[allow(clippy::too_many_arguments)]
fn stream_blocks(
    device: &Arc<dyn Device>,
    h: &DeviceHeader,
    uses: &[BlockUse],
    listed: &[u32],
    stored: &[u32],
    writer: &mut ImageWriter,
    opts: &CaptureOptions,
    progress: &mut Progress,
    throttle: &mut Throttle,
) -> Result<u64> {
    let (tx, rx) = mpsc::sync_channel::<Placed>(IMAGE_WRITERS);
    let rx = Mutex::new(rx);
    // Set by a writer that failed; its error is the one to report.
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..IMAGE_WRITERS)
            .map(|_| {
                let sink = writer.sink()?;
                let (rx, failed) = (&rx, &failed);
                // After a failure a writer keeps taking units and giving their buffers
                // back unwritten: the reader may be waiting for one, and learns of the
                // failure only from `failed` when it next hands a unit on.
                Ok(scope.spawn(move || -> Result<()> {
                    let mut outcome = Ok(());
                    loop {
                        let Ok(placed) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
                            return outcome;
                        };
                        for ((_, buf), (at, compressed)) in placed.batch.iter().zip(&placed.blocks) {
                            if outcome.is_ok() && !failed.load(Ordering::Relaxed) {
                                outcome =
                                    sink.write_at(compressed.as_deref().unwrap_or(buf), *at).map_err(|err| {
                                        failed.store(true, Ordering::Relaxed);
                                        anyhow::Error::from(err)
                                    });
                            }
                        }
                    }
                }))
            })
            .collect::<Result<_>>()?;
        // Compression runs on every core over a group of units (one per core); checksums
        // alone keep up with the device on this thread, one unit at a time.
        let group_units = match opts.compress_level {
            Some(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
            None => 1,
        };
        let mut group: Vec<Batch> = Vec::with_capacity(group_units);
        let (mut next_listed, mut bytes_stored) = (0usize, 0u64);
        let mut send_group = |group: &mut Vec<Batch>| -> Result<()> {
            let bufs: Vec<&[u8]> = group.iter().flat_map(|batch| batch.iter().map(|(_, buf)| buf)).collect();
            let mut packed = pack_batch(&bufs, opts.compress_level)?.into_iter();
            for batch in group.drain(..) {
                let mut blocks = Vec::with_capacity(batch.count);
                for (entry, compressed) in entries_of(&batch, h, uses, &mut packed)? {
                    while listed[next_listed] < entry.wblock {
                        writer.write_free(listed[next_listed]);
                        next_listed += 1;
                    }
                    next_listed += 1;
                    let len = compressed.as_ref().map_or(h.write_block_size as usize, Vec::len);
                    bytes_stored += len as u64;
                    blocks.push((writer.place(entry, len), compressed));
                }
                progress.add(batch.count as u64, batch.bytes());
                if failed.load(Ordering::Relaxed) {
                    bail!("an image writer failed");
                }
                tx.send(Placed { batch, blocks })
                    .map_err(|_| anyhow::anyhow!("the image writers stopped"))?;
            }
            Ok(())
        };
        let read = read_blocks(device.as_ref(), h, stored, group_units, throttle, &mut |batch| {
            let last = batch.last;
            group.push(batch);
            if group.len() < group_units && !last {
                return Ok(());
            }
            send_group(&mut group)
        });
        drop(tx);
        // A writer's own error explains a "writer failed" read error: it comes first.
        for handle in writers {
            let written = handle.join().map_err(|_| anyhow::anyhow!("an image writer thread panicked"))?;
            written.with_context(|| format!("writing the image {}", opts.out.display()))?;
        }
        read?;
        for &block in &listed[next_listed..] {
            writer.write_free(block);
        }
        Ok(bytes_stored)
    })
}

/// Takes a full or incremental image (see the module comment).
pub fn capture(opts: &CaptureOptions) -> Result<CaptureReport> {
    let start = std::time::Instant::now();
    let mut src = open_spike(&opts.device)?;
    let base = opts.base.as_deref().map(OpenImage::open).transpose()?;
    let mut fell_back = None;
    let mut plan: Option<(&ImageMeta, ChangeBitmap)> = None;
    if let Some(base) = &base {
        match incremental_bitmap(&src, &base.meta)? {
            Ok(bitmap) => plan = Some((&base.meta, bitmap)),
            Err(reason) if opts.auto_full => {
                eprintln!("spike-backup: {reason}; --auto-full: taking a FULL image instead");
                fell_back = Some(reason);
            }
            Err(reason) => {
                bail!("{reason}. A full backup is needed: run `spike-backup full` (or `incr --auto-full`)")
            }
        }
    }
    let h = src.header.clone();
    let device = src.device.clone();
    let wbs = h.write_block_size as usize;

    let mut reserved = AlignedBuf::zeroed(h.first_wblock_offset as usize);
    device.read_at(&mut reserved, 0).context("reading the reserved region")?;
    let uses = scan_headers(device.as_ref(), &h)?;
    let blocks_in_use = uses.iter().filter(|u| **u != BlockUse::Free).count() as u64;

    // Which blocks the image lists, and which of those it stores.
    let mut missed_by_bitmap = Vec::new();
    let listed: Vec<u32> = match &plan {
        None => (0..h.wblock_count as u32).collect(),
        Some((base, bitmap)) => (0..h.wblock_count as u32)
            .filter(|&b| {
                let newer = match uses[b as usize] {
                    BlockUse::InUse { kind: WBLOCK_KIND_DATA, write_seq } => write_seq > base.max_data_seq,
                    BlockUse::InUse { kind: WBLOCK_KIND_SNAPSHOT, write_seq } => {
                        write_seq > base.max_snapshot_seq
                    }
                    _ => false,
                };
                if newer && !bitmap.is_set(b) {
                    missed_by_bitmap.push(b);
                }
                newer || bitmap.is_set(b)
            })
            .collect(),
    };
    if !missed_by_bitmap.is_empty() {
        let named: Vec<String> =
            missed_by_bitmap.iter().take(WITNESS_NAMED_MAX).map(|b| b.to_string()).collect();
        eprintln!(
            "spike-backup: WARNING: the change bitmap missed {} block(s) written since the base \
             (their write sequence is newer): {}{}; they are included. The engine's change tracking \
             did not record them: report this.",
            missed_by_bitmap.len(),
            named.join(", "),
            if missed_by_bitmap.len() > WITNESS_NAMED_MAX { ", ..." } else { "" }
        );
    }
    let stored: Vec<u32> = listed.iter().copied().filter(|&b| uses[b as usize] != BlockUse::Free).collect();

    let image_uuid = random_uuid()?;
    let new_generation = random_u64_nonzero()?;
    let base_meta = plan.as_ref().map(|(m, _)| *m);
    let header = ImageHeader {
        flags: if base_meta.is_some() { FLAG_INCREMENTAL } else { 0 }
            | if opts.compress_level.is_some() { FLAG_COMPRESSED } else { 0 },
        image_uuid,
        parent_uuid: base_meta.map_or([0; 16], |b| b.header.image_uuid),
        parent_digest: base_meta.map_or([0; 16], |b| b.content_digest),
        device_uuid: h.device_uuid,
        namespace_uuid: h.namespace_uuid,
        namespace_name: h.namespace_name.clone(),
        device_size_bytes: device.size_bytes(),
        span_bytes: h.device_span_bytes(),
        write_block_size: h.write_block_size,
        device_index: h.device_index,
        first_wblock_offset: h.first_wblock_offset,
        wblock_count: h.wblock_count,
        base_generation: base_meta.map_or(h.bitmap_generation, |b| b.header.new_generation),
        new_generation,
        created_unix_s: super::unix_now_s(),
    };
    let mut writer = ImageWriter::create(&opts.out, header)
        .with_context(|| format!("creating the image {}", opts.out.display()))?;
    let reserved_checksum = xxh3_64(&reserved);
    match opts.compress_level.map(|level| zstd::bulk::compress(&reserved, level)).transpose()? {
        Some(packed) if packed.len() < reserved.len() => {
            writer.write_reserved(&packed, COMPRESSION_ZSTD, reserved_checksum)?
        }
        _ => writer.write_reserved(&reserved, COMPRESSION_NONE, reserved_checksum)?,
    }

    let mut progress = Progress::new("backup", stored.len() as u64, (stored.len() * wbs) as u64);
    let mut throttle = Throttle::new(opts.max_rate_mb_s);
    let bytes_stored =
        stream_blocks(&device, &h, &uses, &listed, &stored, &mut writer, opts, &mut progress, &mut throttle)?;
    progress.finish();

    let mut summary = base_meta.map_or_else(|| vec![0u64; h.wblock_count as usize], |b| b.summary.clone());
    let (mut max_data_seq, mut max_snapshot_seq) =
        base_meta.map_or((0, 0), |b| (b.max_data_seq, b.max_snapshot_seq));
    for entry in writer.entries() {
        summary[entry.wblock as usize] = fingerprint(entry);
        match entry.kind {
            WBLOCK_KIND_DATA => max_data_seq = max_data_seq.max(entry.write_seq),
            WBLOCK_KIND_SNAPSHOT => max_snapshot_seq = max_snapshot_seq.max(entry.write_seq),
            _ => {}
        }
    }
    let blocks_listed = writer.entries().len() as u64;
    writer
        .finish(&ImageTail { summary, max_data_seq, max_snapshot_seq })
        .with_context(|| format!("writing the image {}", opts.out.display()))?;

    // The image is durable under its name: only now may the device forget what changed.
    let generation_error = start_generation(device.as_ref(), &mut src.header, new_generation, image_uuid)
        .err()
        .map(|e| e.to_string());
    Ok(CaptureReport {
        incremental: base_meta.is_some(),
        fell_back,
        image_uuid,
        new_generation,
        wblock_count: h.wblock_count,
        blocks_in_use,
        blocks_listed,
        blocks_stored: stored.len() as u64,
        missed_by_bitmap,
        bytes_read: reserved.len() as u64 + h.wblock_count * 4096 + (stored.len() * wbs) as u64,
        bytes_stored,
        elapsed: start.elapsed(),
        generation_error,
    })
}
