//! The device side of a backup: opening a device under the engine's exclusive lock, telling
//! blocks in use from free ones, and reading many write blocks with large direct reads kept
//! in flight.
//!
//! Invariants: a device is only ever opened through `spike::device::open`, which takes the
//! same lock as the engine (`flock`, plus `O_EXCL` on block devices), so no engine can run
//! on it meanwhile and the tool refuses one that is running. Reads go through the engine's
//! device layer (`read_many` for the header scan, `read_stream` for whole blocks),
//! 4096-aligned, into aligned buffers.
//!
//! Cost: the header scan reads 4 KiB per write block (`HEADER_BATCH` of them per
//! `read_many`), 1/256 of a device of 1 MiB blocks. The block reader keeps
//! `IN_FLIGHT_BYTES` of 1 MiB reads in flight as a stream (a finished read's slot is
//! refilled at once, as fio does; batches of reads waited for whole, even from four threads,
//! got 75% of fio's rate here) and hands units, in order, to the caller's work between
//! reads, so the device keeps reading while the caller checksums.

use super::progress::Throttle;
use anyhow::{anyhow, bail, Context, Result};
use spike::device::{self, AlignedBuf, Device, IoBackend, ReadRequest, StreamRead, IO_ALIGN};
use spike::offline::format::{DeviceHeader, WblockHeader, WBLOCK_KIND_DATA, WBLOCK_KIND_SNAPSHOT};
use spike::offline::namespace::{probe, DeviceContent};
use std::path::Path;
use std::sync::{mpsc, Arc};

/// Block headers read per `read_many` of the header scan.
const HEADER_BATCH: usize = 256;
/// Bytes per read: consecutive write blocks are read together up to this; a larger block is
/// read alone. 1 MiB is where this kind of device reaches its sequential rate.
const READ_UNIT_BYTES: usize = 1 << 20;
/// Bytes of reads kept in flight (fio's 1 MiB at queue depth 8).
const IN_FLIGHT_BYTES: usize = 8 << 20;
/// Units past the reader besides those the consumer holds: queued for the image writers and
/// being written by them (two of each in `capture`).
const UNITS_DOWNSTREAM: usize = 4;

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

/// One unit handed to the consumer: a run of consecutive write blocks read together, and
/// their bytes, block after block.
pub struct Batch {
    pub blocks: Vec<u32>,
    pub buf: AlignedBuf,
    block_bytes: usize,
    /// No unit follows this one.
    pub last: bool,
}

impl Batch {
    /// Each block of the run with its bytes.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.blocks.iter().copied().zip(self.buf.chunks(self.block_bytes))
    }

    pub fn bytes(&self) -> u64 {
        (self.blocks.len() * self.block_bytes) as u64
    }
}

/// Hands a unit's buffer back to the reader once the consumer is done with it (from any
/// thread). A buffer not given back is replaced by a fresh one only while fewer than the
/// pool's size exist, so forgetting one costs an allocation, never correctness.
#[derive(Clone)]
pub struct Recycle(mpsc::Sender<AlignedBuf>);

impl Recycle {
    pub fn give(&self, buf: AlignedBuf) {
        // The reader may be done already; then the buffer is simply dropped.
        let _ = self.0.send(buf);
    }
}

/// Splits `blocks` into runs of consecutive blocks of at most `per_unit`, as index ranges.
fn units(blocks: &[u32], per_unit: usize) -> Vec<std::ops::Range<usize>> {
    let mut units = Vec::new();
    let mut first = 0;
    for i in 1..=blocks.len() {
        let ends =
            i == blocks.len() || blocks[i - 1].checked_add(1) != Some(blocks[i]) || i - first == per_unit;
        if ends {
            units.push(first..i);
            first = i;
        }
    }
    units
}

/// Reads `blocks` (whole write blocks, in the given order) keeping `IN_FLIGHT_BYTES` of
/// reads in flight ([`Device::read_stream`]: a finished read's slot is reused at once) and
/// hands each unit, in order, to `visit`, on this same thread between reads: no hand-off to
/// another thread, which on a small VM costs a wake-up of tens of microseconds per unit.
/// `visit` passes the unit on (another thread may write it out) and gives the buffer back
/// through [`Recycle`]. It may keep up to `consumer_holds` units before giving any back; at
/// most `depth + consumer_holds + UNITS_DOWNSTREAM` buffers exist, and reading waits for
/// one to come back when all are out, which bounds memory and lets a slow consumer set the
/// pace. `throttle` paces the reads. The first error (a read's or `visit`'s) stops
/// everything and is returned.
pub fn read_blocks(
    device: &dyn Device,
    header: &DeviceHeader,
    blocks: &[u32],
    consumer_holds: usize,
    throttle: &mut Throttle,
    visit: &mut dyn FnMut(Batch, &Recycle) -> Result<()>,
) -> Result<()> {
    let wbs = header.write_block_size as usize;
    let per_unit = (READ_UNIT_BYTES / wbs).max(1);
    let unit_bytes = per_unit * wbs;
    let depth = (IN_FLIGHT_BYTES / unit_bytes).max(2);
    let pool = depth + consumer_holds + UNITS_DOWNSTREAM;
    let units = units(blocks, per_unit);
    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    let recycle = Recycle(free_tx);
    let (mut issued, mut allocated, mut delivered) = (0usize, 0usize, 0usize);
    // `visit`'s error, kept whole (the stream's error type is the engine's).
    let mut visit_error = None;
    let mut next = || -> spike::Result<Option<StreamRead>> {
        let Some(unit) = units.get(issued) else { return Ok(None) };
        let buf = match free_rx.try_recv() {
            Ok(buf) => buf,
            Err(_) if allocated < pool => {
                allocated += 1;
                AlignedBuf::zeroed(unit_bytes)
            }
            // Cannot fail: `recycle` (a sender) lives as long as this function.
            Err(_) => free_rx.recv().map_err(|_| spike::Error::ShutDown)?,
        };
        issued += 1;
        let len = unit.len() * wbs;
        throttle.pass(len as u64);
        Ok(Some(StreamRead { offset: header.wblock_offset(blocks[unit.start]), buf, len }))
    };
    let mut done = |read: StreamRead| -> spike::Result<()> {
        let unit = units[delivered].clone();
        delivered += 1;
        let last = delivered == units.len();
        let batch = Batch { blocks: blocks[unit].to_vec(), buf: read.buf, block_bytes: wbs, last };
        visit(batch, &recycle).map_err(|err| {
            visit_error = Some(err);
            spike::Error::ShutDown
        })
    };
    let read = device.read_stream(depth, &mut next, &mut done);
    if let Some(err) = visit_error {
        return Err(err);
    }
    read.with_context(|| format!("reading write blocks of {}", device.name()))
}

#[cfg(test)]
mod tests {
    use super::units;

    #[test]
    fn units_are_runs_of_consecutive_blocks_capped_in_length() {
        let blocks = [0, 1, 2, 3, 4, 7, 8, 10, 11, 12];
        let runs: Vec<&[u32]> = units(&blocks, 3).into_iter().map(|r| &blocks[r]).collect();
        assert_eq!(runs, [&[0, 1, 2][..], &[3, 4], &[7, 8], &[10, 11, 12]]);
        assert_eq!(units(&blocks, 1).len(), blocks.len());
        assert!(units(&[], 4).is_empty());
        // Never merged across a wrap of the block number.
        assert_eq!(units(&[u32::MAX, 0], 4).len(), 2);
    }
}
