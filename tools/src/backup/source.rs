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
//! `read_many`), 1/256 of a device of 1 MiB blocks. The block reader keeps `READERS`
//! batches of `READ_BATCH_BYTES` in flight, issued in block order from as many threads (a
//! `read_many` returns only when its whole batch is done, so one thread alone lets the
//! queue drain at each batch end), and hands them on in order while the caller works on
//! earlier ones, so the device never waits for checksumming, compression or writing.

use super::progress::Throttle;
use anyhow::{anyhow, bail, Context, Result};
use spike::device::{self, AlignedBuf, Device, IoBackend, ReadRequest, IO_ALIGN};
use spike::format::{DeviceHeader, WblockHeader, WBLOCK_KIND_DATA, WBLOCK_KIND_SNAPSHOT};
use spike::namespace::{probe, DeviceContent};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

/// Block headers read per `read_many` of the header scan.
const HEADER_BATCH: usize = 256;
/// Bytes of whole write blocks per `read_many`. Small, so that `READERS` of them keep
/// about as much in flight as a streaming reader (8 MiB), with no drain at a batch end:
/// one `read_many` of 16 reads, waited for whole, read this file at half fio's speed.
pub const READ_BATCH_BYTES: usize = 2 << 20;
/// Reader threads, each with its own ring (the engine keeps one per thread), each with one
/// batch in flight.
const READERS: usize = 4;
/// Batches of buffers in circulation: per reader one being read and one waiting its turn,
/// one being checksummed, one being written.
const BUFFER_SETS: usize = 2 * READERS + 2;

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

/// Reads `blocks` (whole write blocks, in the given order) with `READERS` reader threads
/// and hands each batch, in order, to `visit` on the calling thread, which passes it on
/// (another thread may write it out) and gives the buffers back through [`Recycle`]. A
/// reader takes the next batch and a free buffer set together, so batches are issued in
/// order and up to `READERS` of them are in flight (each thread has its own ring); one
/// finishing early waits here until those before it are visited. At most `BUFFER_SETS`
/// batches exist at once: being read, waiting, being checksummed or being written.
/// `throttle` paces the reads. The first error (a read's or `visit`'s) stops everything and
/// is returned.
pub fn read_blocks(
    device: &dyn Device,
    header: &DeviceHeader,
    blocks: &[u32],
    throttle: &mut Throttle,
    visit: &mut dyn FnMut(Batch, &Recycle) -> Result<()>,
) -> Result<()> {
    let wbs = header.write_block_size as usize;
    let per_batch = (READ_BATCH_BYTES / wbs).max(1);
    let chunks: Vec<&[u32]> = blocks.chunks(per_batch).collect();
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<AlignedBuf>>();
    let recycle = Recycle(empty_tx);
    for _ in 0..BUFFER_SETS {
        recycle.give(Vec::new());
    }
    // The next batch to issue and the free buffer sets, taken together.
    let next = Mutex::new((0usize, empty_rx));
    let throttle = Mutex::new(throttle);
    let (full_tx, full_rx) = mpsc::channel::<(usize, Result<Batch>)>();
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            let full_tx = full_tx.clone();
            let (chunks, next, throttle) = (&chunks, &next, &throttle);
            scope.spawn(move || loop {
                let (index, mut bufs) = {
                    let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                    let index = next.0;
                    if index >= chunks.len() {
                        return;
                    }
                    let Ok(bufs) = next.1.recv() else { return };
                    next.0 += 1;
                    (index, bufs)
                };
                let chunk = chunks[index];
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
                throttle.lock().unwrap_or_else(|e| e.into_inner()).pass((chunk.len() * wbs) as u64);
                let batch = result
                    .map(|()| Batch { blocks: chunk.to_vec(), bufs })
                    .with_context(|| format!("reading write blocks of {}", device.name()));
                let failed = batch.is_err();
                if full_tx.send((index, batch)).is_err() || failed {
                    return;
                }
            });
        }
        drop(full_tx);
        // Batches that came in ahead of their turn; at most BUFFER_SETS.
        let mut early = BTreeMap::new();
        let mut outcome = Ok(());
        for index in 0..chunks.len() {
            let batch = loop {
                if let Some(batch) = early.remove(&index) {
                    break Some(batch);
                }
                match full_rx.recv() {
                    Ok((i, batch)) if i == index => break Some(batch),
                    Ok((i, batch)) => {
                        early.insert(i, batch);
                    }
                    // Every reader stopped: one failed on a batch before this one (its
                    // error was visited already), or this thread's side is gone.
                    Err(_) => break None,
                }
            };
            let Some(batch) = batch else { break };
            outcome = batch.and_then(|batch| visit(batch, &recycle));
            if outcome.is_err() {
                break;
            }
        }
        // Dropping the receivers and the last sender stops the readers at their next step.
        drop(full_rx);
        drop(early);
        drop(recycle);
        outcome
    })
}
