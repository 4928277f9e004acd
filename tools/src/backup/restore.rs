//! `restore` (a chain onto a device or file) and `verify` (every checksum of a chain, and
//! optionally the chain's result against a device).
//!
//! Restore invariants:
//! - Nothing is written before the whole chain checks out ([`Chain::open`]), the last
//!   image's captured device header decodes and matches the images, the target is large
//!   enough, and a target holding anything (a Spike header, another signature, non-zero
//!   bytes at its start) was allowed with `--force`.
//! - The first write clears both header copies (and writes a generation-0 bitmap), synced
//!   before any block is written; the device header is written last, after every block is
//!   written and synced. A restore that fails on the way leaves a target without a valid
//!   header, which the engine refuses to open.
//! - Every block is written once, from the last image of the chain that lists it, after its
//!   checksum is verified. Every block the chain records as free gets a free block-header
//!   page (as the engine writes over a freed block), whatever the target held there.
//! - The restored device is a copy: same device and namespace UUIDs. Its bitmap is reset to
//!   generation 0, so its first backup is full (an incremental against the source's images
//!   is refused): the copy and the source may diverge from here on.
//!
//! Cost: one read of each block's final copy from the images (decompression and xxh3 on a
//! reader thread) overlapped with large sequential writes of runs of consecutive blocks
//! (up to `RUN_BYTES`) on this thread; a free block costs one 4 KiB write.

use super::chain::{uuid_string, Chain, Final};
use super::image;
use super::progress::{Progress, Throttle};
use super::source::{classify, open_device, open_spike, read_blocks, BlockUse};
use anyhow::{bail, Context, Result};
use spike::device::{AlignedBuf, IO_ALIGN};
use spike::offline::change_bitmap::ChangeBitmap;
use spike::offline::format::{encode_free_page, pick_header, DeviceHeader, DEVICE_HEADER_SIZE};
use spike::offline::namespace::{probe, random_bytes, write_header, DeviceContent};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use xxhash_rust::xxh3::xxh3_64;

/// Longest run of consecutive blocks written with one direct write.
const RUN_BYTES: usize = 16 << 20;
/// Runs prepared ahead of the writer.
const RUNS_AHEAD: usize = 2;
/// Mismatches named one per line by `verify --device`; past it only counted.
const MISMATCHES_NAMED_MAX: usize = 20;

/// The device header the chain's last image captured, checked against the images.
fn captured_header(chain: &Chain) -> Result<(DeviceHeader, Vec<u8>)> {
    let last = chain.last();
    let reserved = image::read_reserved(&last.source, &last.meta)?;
    let header =
        pick_header(&reserved[..DEVICE_HEADER_SIZE], &reserved[DEVICE_HEADER_SIZE..2 * DEVICE_HEADER_SIZE])
            .map_err(|problem| {
            anyhow::anyhow!("{}: the captured device header is unusable: {problem:?}", last.meta.path)
        })?;
    let h = &last.meta.header;
    if header.device_uuid != h.device_uuid
        || header.write_block_size != h.write_block_size
        || header.wblock_count != h.wblock_count
        || header.first_wblock_offset != h.first_wblock_offset
    {
        bail!("{}: the captured device header disagrees with the image header", last.meta.path);
    }
    Ok((header, reserved))
}

/// The restored header's reserved write sequence (see `DeviceHeader::write_seq_reserved`).
/// The device the image was taken of may have gone on writing, at higher sequences, on
/// this very target; a block the restore leaves free keeps those records past its free
/// header page, so the restored device must continue above them. Known from the target's
/// header when it is the same device; unknown when the target's header is unreadable
/// (an interrupted restore clears it first) or predates the field: then a jump of 2^32
/// plus a random u32, so that the low 32 bits records carry meet a stale block's only by
/// chance. Blocks of another device are foreign to the restored one anyway.
fn restored_write_seq_reserved(captured: &DeviceHeader, target: &DeviceContent) -> Result<u64> {
    match target {
        DeviceContent::Spike(h) if h.device_uuid != captured.device_uuid => Ok(captured.write_seq_reserved),
        DeviceContent::Spike(h) if h.write_seq_reserved > 0 => {
            Ok(captured.write_seq_reserved.max(h.write_seq_reserved))
        }
        _ => {
            let mut random = [0u8; 4];
            random_bytes(&mut random)?;
            Ok(captured.write_seq_reserved + (1 << 32) + u32::from_le_bytes(random) as u64)
        }
    }
}

/// A free block-header page, as the engine writes over a block it frees.
fn free_page(header: &DeviceHeader, wblock: u32) -> AlignedBuf {
    let mut page = AlignedBuf::zeroed(IO_ALIGN);
    encode_free_page(header.device_uuid, wblock, &mut page);
    page
}

#[derive(Debug)]
pub struct RestoreReport {
    pub images: usize,
    pub blocks_written: u64,
    pub blocks_free: u64,
    pub bytes_written: u64,
    pub elapsed: Duration,
    pub device_uuid: [u8; 16],
}

/// One write for the target: `first` and the bytes of consecutive blocks, or a free page.
struct Run {
    first: u32,
    buf: AlignedBuf,
    blocks: u64,
    free: bool,
}

pub fn restore(
    paths: &[PathBuf],
    target: &Path,
    force: bool,
    max_rate_mb_s: Option<f64>,
) -> Result<RestoreReport> {
    let start = std::time::Instant::now();
    let chain = Chain::open(paths)?;
    let (mut header, reserved) = captured_header(&chain)?;
    let device = open_device(target)?;
    let span = chain.header().span_bytes;
    if device.size_bytes() < span {
        bail!(
            "{}: target too small: {} bytes, the image needs at least {span} bytes",
            target.display(),
            device.size_bytes()
        );
    }
    let content =
        probe(device.as_ref()).with_context(|| format!("reading the start of {}", target.display()))?;
    header.write_seq_reserved = restored_write_seq_reserved(&header, &content)?;
    match content {
        DeviceContent::Blank => {}
        _ if force => {}
        DeviceContent::Spike(h) => bail!(
            "{}: holds a Spike device (namespace {:?}, device {}); restoring over it needs --force",
            target.display(),
            h.namespace_name,
            uuid_string(&h.device_uuid)
        ),
        DeviceContent::BadSpike(reason) | DeviceContent::Foreign(reason) => {
            bail!("{}: {reason}; restoring over it needs --force", target.display())
        }
    }

    // 1. No valid header from here on until the end; a generation-0 bitmap.
    let mut region = AlignedBuf::zeroed(reserved.len());
    region.copy_from_slice(&reserved);
    region[..2 * DEVICE_HEADER_SIZE].fill(0);
    device.write_at(&region, 0).context("clearing the target's header")?;
    header.bitmap_generation = 0;
    header.bitmap_reset_image_uuid = [0; 16];
    ChangeBitmap::new(0, header.wblock_count).write_all(device.as_ref()).context("writing the bitmap")?;
    device.sync().context("syncing the target")?;

    // 2. Every block, from its final image; free ones get a free header page.
    let map = chain.final_map();
    let wbs = header.write_block_size as usize;
    let per_run = (RUN_BYTES / wbs).max(1);
    let stored = map.iter().filter(|f| **f != Final::Free).count() as u64;
    let mut progress = Progress::new("restore", stored, stored * wbs as u64);
    let mut throttle = Throttle::new(max_rate_mb_s);
    let (tx, rx) = mpsc::sync_channel::<Result<Run>>(RUNS_AHEAD);
    let (recycle_tx, recycle_rx) = mpsc::channel::<AlignedBuf>();
    let mut report = RestoreReport {
        images: chain.images.len(),
        blocks_written: 0,
        blocks_free: 0,
        bytes_written: 0,
        elapsed: Duration::ZERO,
        device_uuid: header.device_uuid,
    };
    let header_ref = &header;
    let (chain_ref, map_ref) = (&chain, &map);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            let mut scratch = Vec::new();
            let mut wblock = 0usize;
            while wblock < map_ref.len() {
                let run = match map_ref[wblock] {
                    Final::Free => Ok(Run {
                        first: wblock as u32,
                        buf: free_page(header_ref, wblock as u32),
                        blocks: 1,
                        free: true,
                    }),
                    Final::Data { .. } => {
                        let n =
                            map_ref[wblock..].iter().take(per_run).take_while(|f| **f != Final::Free).count();
                        let mut buf =
                            recycle_rx.try_recv().unwrap_or_else(|_| AlignedBuf::zeroed(per_run * wbs));
                        let mut result = Ok(());
                        for i in 0..n {
                            let Final::Data { image, entry } = map_ref[wblock + i] else { break };
                            let (img, e) = chain_ref.entry(image, entry);
                            let out = &mut buf[i * wbs..(i + 1) * wbs];
                            if let Err(err) = image::read_block(&img.source, &img.meta, e, out, &mut scratch)
                            {
                                result = Err(err);
                                break;
                            }
                        }
                        result
                            .map(|()| Run { first: wblock as u32, buf, blocks: n as u64, free: false })
                            .map_err(Into::into)
                    }
                };
                let failed = run.is_err();
                wblock += run.as_ref().map_or(1, |r| r.blocks as usize);
                if tx.send(run).is_err() || failed {
                    return;
                }
            }
        });
        while let Ok(run) = rx.recv() {
            let run = run?;
            let offset = header_ref.wblock_offset(run.first);
            let len = if run.free { IO_ALIGN } else { run.blocks as usize * wbs };
            device
                .write_at(&run.buf[..len], offset)
                .with_context(|| format!("writing {}", target.display()))?;
            report.bytes_written += len as u64;
            if run.free {
                report.blocks_free += 1;
            } else {
                report.blocks_written += run.blocks;
                progress.add(run.blocks, len as u64);
                throttle.pass(len as u64);
                let _ = recycle_tx.send(run.buf);
            }
        }
        Ok(())
    })?;
    progress.finish();
    device.sync().context("syncing the target")?;

    // 3. The header, last.
    write_header(device.as_ref(), &mut header).context("writing the device header")?;
    report.elapsed = start.elapsed();
    Ok(report)
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub images: usize,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    /// With `--device`: blocks compared, and those that differ (block, what).
    pub device_blocks_compared: u64,
    pub device_bytes_compared: u64,
    /// Time spent checking the images, and reading and comparing the device.
    pub images_elapsed: std::time::Duration,
    pub device_elapsed: std::time::Duration,
    pub mismatches: Vec<(u32, String)>,
    pub mismatch_count: u64,
}

/// Checks every checksum of every image of the chain (metadata, reserved regions, every
/// stored block, superseded ones included) and, with `device`, the chain's final state
/// against the device block by block.
pub fn verify(paths: &[PathBuf], device: Option<&Path>) -> Result<VerifyReport> {
    let start = std::time::Instant::now();
    let chain = Chain::open(paths)?;
    let mut report = VerifyReport { images: chain.images.len(), ..Default::default() };
    let wbs = chain.header().write_block_size as usize;
    let mut plain = vec![0u8; wbs];
    let mut scratch = Vec::new();
    let total: u64 = chain.images.iter().map(|i| i.meta.stored_blocks() as u64).sum();
    let mut progress = Progress::new("verify", total, total * wbs as u64);
    for img in &chain.images {
        image::read_reserved(&img.source, &img.meta)?;
        for entry in img.meta.entries.iter().filter(|e| e.is_data()) {
            image::read_block(&img.source, &img.meta, entry, &mut plain, &mut scratch)?;
            report.blocks_checked += 1;
            report.bytes_checked += entry.stored_len as u64;
            progress.add(1, wbs as u64);
        }
    }
    progress.finish();
    report.images_elapsed = start.elapsed();
    if let Some(path) = device {
        let start = std::time::Instant::now();
        compare_device(&chain, path, &mut report)?;
        report.device_elapsed = start.elapsed();
    }
    Ok(report)
}

fn compare_device(chain: &Chain, path: &Path, report: &mut VerifyReport) -> Result<()> {
    let dev = open_spike(path)?;
    let (h, img) = (&dev.header, chain.header());
    let mismatch = |block: u32, what: String, report: &mut VerifyReport| {
        report.mismatch_count += 1;
        if report.mismatches.len() < MISMATCHES_NAMED_MAX {
            report.mismatches.push((block, what));
        }
    };
    if h.device_uuid != img.device_uuid
        || h.namespace_uuid != img.namespace_uuid
        || h.write_block_size != img.write_block_size
        || h.wblock_count != img.wblock_count
        || h.first_wblock_offset != img.first_wblock_offset
    {
        bail!(
            "{}: device {} (namespace {:?}) is not the device of these images ({})",
            path.display(),
            uuid_string(&h.device_uuid),
            h.namespace_name,
            uuid_string(&img.device_uuid)
        );
    }
    let map = chain.final_map();
    let all: Vec<u32> = (0..h.wblock_count as u32).collect();
    let mut progress = Progress::new("compare", h.wblock_count, h.wblock_count * h.write_block_size as u64);
    let mut throttle = Throttle::new(None);
    read_blocks(dev.device.as_ref(), h, &all, 1, &mut throttle, &mut |batch| {
        for (block, buf) in batch.iter() {
            let on_device = classify(buf, h, block);
            match map[block as usize] {
                Final::Free if on_device != BlockUse::Free => {
                    mismatch(block, "in use on the device, free in the images".into(), report)
                }
                Final::Data { image, entry } => {
                    let (_, e) = chain.entry(image, entry);
                    if on_device == BlockUse::Free {
                        mismatch(block, "free on the device, in use in the images".into(), report);
                    } else if xxh3_64(buf) != e.checksum {
                        mismatch(block, "bytes differ from the images".into(), report);
                    }
                }
                Final::Free => {}
            }
            report.device_blocks_compared += 1;
            report.device_bytes_compared += buf.len() as u64;
        }
        progress.add(batch.count as u64, batch.bytes());
        Ok(())
    })?;
    progress.finish();
    Ok(())
}
