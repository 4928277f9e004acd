//! The device side of a backup: opening a device under the engine's exclusive lock, telling
//! blocks in use from free ones, and reading many write blocks with large direct reads kept
//! in flight.
//!
//! Invariants: a device is only ever opened through `spike::device::open`, which takes the
//! same lock as the engine (`flock`, plus `O_EXCL` on block devices), so no engine can run
//! on it meanwhile and the tool refuses one that is running. Reads go through the engine's
//! `read_many`, 4096-aligned, into aligned buffers.
//!
//! Cost: the header scan reads 4 KiB per write block (`HEADER_BATCH` of them per
//! `read_many`), 1/256 of a device of 1 MiB blocks. The block reader keeps
//! `READ_BATCH_BYTES` of reads in one `read_many` and one more batch queued while the
//! caller works on the previous one, so the device never waits for checksumming,
//! compression or writing.

use super::progress::Throttle;
use anyhow::{anyhow, bail, Context, Result};
use spike::device::{self, AlignedBuf, Device, IoBackend, ReadRequest, IO_ALIGN};
use spike::format::{DeviceHeader, WblockHeader, WBLOCK_KIND_DATA, WBLOCK_KIND_SNAPSHOT};
use spike::namespace::{probe, DeviceContent};
use std::path::Path;
use std::sync::{mpsc, Arc};

/// Block headers read per `read_many` of the header scan.
const HEADER_BATCH: usize = 256;
/// Bytes of whole write blocks per `read_many`.
pub const READ_BATCH_BYTES: usize = 16 << 20;
/// Batches of buffers in circulation: one being read, one queued, one being checksummed,
/// one being written.
const BUFFER_SETS: usize = 4;

/// Opens a device or file for direct I/O under the exclusive lock.
pub fn open_device(path: &Path) -> Result<Arc<dyn Device>> {
    device::open(path, IoBackend::Auto).map_err(|err| match err {
        spike::Error::DeviceInUse { .. } => anyhow!(
            "{err}: an engine (or another spike tool) holds it; spike-backup works only on a device \
             nothing else has open (stop the engine first)"
        ),
        other => anyhow!(other),
    })
}

/// An opened Spike device and the header in force.
pub struct SpikeDevice {
    pub device: Arc<dyn Device>,
    pub header: DeviceHeader,
}

pub fn open_spike(path: &Path) -> Result<SpikeDevice> {
    let device = open_device(path)?;
    let content =
        probe(device.as_ref()).with_context(|| format!("reading the header of {}", path.display()))?;
    let header = match content {
        DeviceContent::Spike(header) => *header,
        DeviceContent::Blank => bail!("{}: not a Spike device (blank)", path.display()),
        DeviceContent::Foreign(reason) => bail!("{}: not a Spike device: {reason}", path.display()),
        DeviceContent::BadSpike(reason) => bail!("{}: unusable Spike device: {reason}", path.display()),
    };
    if header.device_span_bytes() > device.size_bytes() {
        bail!(
            "{}: the device is {} bytes but its header describes {} (truncated?)",
            path.display(),
            device.size_bytes(),
            header.device_span_bytes()
        );
    }
    Ok(SpikeDevice { device, header })
}

/// What one write block holds, judged from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockUse {
    Free,
    InUse { kind: u16, write_seq: u64 },
}

/// The rule of the module comment of `backup`: a data or snapshot block of this device at
/// its own index is in use; anything else is free.
pub fn classify(bytes: &[u8], header: &DeviceHeader, wblock: u32) -> BlockUse {
    match WblockHeader::decode(bytes) {
        Some(h)
            if (h.kind == WBLOCK_KIND_DATA || h.kind == WBLOCK_KIND_SNAPSHOT)
                && h.device_uuid == header.device_uuid
                && h.wblock_index == wblock =>
        {
            BlockUse::InUse { kind: h.kind, write_seq: h.write_seq }
        }
        _ => BlockUse::Free,
    }
}

/// Reads the first 4 KiB of every write block and classifies it.
pub fn scan_headers(device: &dyn Device, header: &DeviceHeader) -> Result<Vec<BlockUse>> {
    let count = header.wblock_count as usize;
    let mut uses = Vec::with_capacity(count);
    let mut bufs: Vec<AlignedBuf> =
        (0..HEADER_BATCH.min(count)).map(|_| AlignedBuf::zeroed(IO_ALIGN)).collect();
    let mut first = 0usize;
    while first < count {
        let n = HEADER_BATCH.min(count - first);
        let mut requests: Vec<ReadRequest<'_>> = bufs[..n]
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| ReadRequest { offset: header.wblock_offset((first + i) as u32), buf })
            .collect();
        device
            .read_many(&mut requests)
            .with_context(|| format!("reading block headers of {}", device.name()))?;
        drop(requests);
        for (i, buf) in bufs[..n].iter().enumerate() {
            uses.push(classify(buf, header, (first + i) as u32));
        }
        first += n;
    }
    Ok(uses)
}

/// One batch handed to the consumer: the blocks and their bytes, in the order asked.
pub struct Batch {
    pub blocks: Vec<u32>,
    pub bufs: Vec<AlignedBuf>,
}

/// Hands a batch's buffers back to the reader once the consumer is done with them (from
/// any thread). Buffers not given back are replaced by fresh ones, so forgetting costs
/// allocations, not correctness.
#[derive(Clone)]
pub struct Recycle(mpsc::Sender<Vec<AlignedBuf>>);

impl Recycle {
    pub fn give(&self, bufs: Vec<AlignedBuf>) {
        // The reader may be done already; then the buffers are simply dropped.
        let _ = self.0.send(bufs);
    }
}

/// Reads `blocks` (whole write blocks, in the given order) with a reader thread and hands
/// each batch to `visit` on the calling thread, which passes it on (another thread may
/// write it out) and gives the buffers back through [`Recycle`]. At most `BUFFER_SETS`
/// batches exist at once: one being read, the others queued, being checksummed or being
/// written. `throttle` paces the reads. The first error (a read's or `visit`'s) stops
/// everything and is returned.
pub fn read_blocks(
    device: &dyn Device,
    header: &DeviceHeader,
    blocks: &[u32],
    throttle: &mut Throttle,
    visit: &mut dyn FnMut(Batch, &Recycle) -> Result<()>,
) -> Result<()> {
    let wbs = header.write_block_size as usize;
    let per_batch = (READ_BATCH_BYTES / wbs).max(1);
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Batch>>(1);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<AlignedBuf>>();
    let recycle = Recycle(empty_tx);
    for _ in 0..BUFFER_SETS {
        recycle.give(Vec::new());
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for chunk in blocks.chunks(per_batch) {
                let Ok(mut bufs) = empty_rx.recv() else { return };
                while bufs.len() < chunk.len() {
                    bufs.push(AlignedBuf::zeroed(wbs));
                }
                bufs.truncate(chunk.len());
                let mut requests: Vec<ReadRequest<'_>> = bufs
                    .iter_mut()
                    .zip(chunk)
                    .map(|(buf, &b)| ReadRequest { offset: header.wblock_offset(b), buf })
                    .collect();
                let result = device.read_many(&mut requests);
                drop(requests);
                throttle.pass((chunk.len() * wbs) as u64);
                let batch = result
                    .map(|()| Batch { blocks: chunk.to_vec(), bufs })
                    .with_context(|| format!("reading write blocks of {}", device.name()));
                let failed = batch.is_err();
                if full_tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        let mut outcome = Ok(());
        while let Ok(batch) = full_rx.recv() {
            outcome = batch.and_then(|batch| visit(batch, &recycle));
            if outcome.is_err() {
                break;
            }
        }
        // Dropping the receiver and the last sender stops the reader at its next step.
        drop(full_rx);
        drop(recycle);
        outcome
    })
}
