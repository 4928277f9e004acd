//! The device side of a backup: opening a device under the engine's exclusive lock, telling
//! blocks in use from free ones, and reading many write blocks with large direct reads kept
//! in flight.
//!
//! Invariants: a device is only ever opened through `spike::device::open`, which takes the
//! same lock as the engine (`flock`, plus `O_EXCL` on block devices), so no engine can run
//! on it meanwhile and the tool refuses one that is running. Reads go through the engine's
//! device layer (`read_many` for the header scan, the engine's device scan for whole blocks),
//! 4096-aligned, into aligned buffers.
//!
//! Cost: the header scan reads 4 KiB per write block (`HEADER_BATCH` of them per
//! `read_many`), 1/256 of a device of 1 MiB blocks. The block reader keeps
//! `IN_FLIGHT_BYTES` of 1 MiB reads in flight as a stream (a finished read's slot is
//! refilled at once, as fio does; batches of reads waited for whole, even from four threads,
//! got 75% of fio's rate here) and hands units, in order, to the caller's work between
//! reads, so the device keeps reading while the caller checksums.

use super::progress::Throttle;
use anyhow::{anyhow, Context, Result};
use spike::device::{self, Device, IoBackend};
use spike::offline::device_scan::{scan_block_headers, stream_blocks, Blocks, ScanShape};
use spike::offline::format::{
    classify_block, BlockClass, DeviceHeader, Geometry, WBLOCK_KIND_DATA, WBLOCK_KIND_SNAPSHOT,
};
use std::path::Path;
use std::sync::Arc;

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
    device::open(path, IoBackend::Auto).map_err(in_use_hint)
}

fn in_use_hint(err: spike::Error) -> anyhow::Error {
    match err {
        spike::Error::DeviceInUse { .. } => anyhow!(
            "{err}: an engine (or another spike tool) holds it; spike-backup works only on a device \
             nothing else has open (stop the engine first)"
        ),
        other => anyhow!(other),
    }
}

/// An opened Spike device and the header in force: the engine's one offline open.
pub use spike::offline::namespace::OfflineDevice as SpikeDevice;

/// Opens a Spike device whose block area lies on it, under the exclusive lock.
pub fn open_spike(path: &Path) -> Result<SpikeDevice> {
    let opened = spike::offline::namespace::open_offline(path).map_err(in_use_hint)?;
    opened.check_span()?;
    Ok(opened)
}

/// What one write block holds, judged from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockUse {
    Free,
    InUse { kind: u16, write_seq: u64 },
}

/// The rule of the module comment of `backup`, which is the engine's block classifier: a
/// data or snapshot block of this device at its own index is in use; anything else is free.
pub fn classify(bytes: &[u8], header: &DeviceHeader, wblock: u32) -> BlockUse {
    match classify_block(bytes, &header.device_uuid, wblock) {
        BlockClass::Data { write_seq } => BlockUse::InUse { kind: WBLOCK_KIND_DATA, write_seq },
        BlockClass::Snapshot { open_count } => {
            BlockUse::InUse { kind: WBLOCK_KIND_SNAPSHOT, write_seq: open_count }
        }
        _ => BlockUse::Free,
    }
}

/// Reads the first 4 KiB of every write block and classifies it.
pub fn scan_headers(device: &dyn Device, header: &DeviceHeader) -> Result<Vec<BlockUse>> {
    let mut uses = Vec::with_capacity(header.wblock_count as usize);
    scan_block_headers(device, &Geometry::of(header), HEADER_BATCH, &mut |block, page| {
        uses.push(classify(page, header, block))
    })
    .with_context(|| format!("reading block headers of {}", device.name()))?;
    Ok(uses)
}

/// A run of consecutive write blocks read together (the engine's one device scan,
/// `spike::offline::device_scan`); dropping it gives its buffer back to the reader.
pub use spike::offline::device_scan::BlockRun as Batch;

/// Reads `blocks` (whole write blocks, in the given order) with the engine's one device
/// scan, keeping `IN_FLIGHT_BYTES` of reads in flight, and hands each unit, in order, to
/// `visit`, on this same thread between reads: no hand-off to another thread, which on a
/// small VM costs a wake-up of tens of microseconds per unit.
/// `visit` passes the unit on (another thread may write it out); dropping it gives the
/// buffer back. It may keep up to `consumer_holds` units before dropping any; at
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
    visit: &mut dyn FnMut(Batch) -> Result<()>,
) -> Result<()> {
    let shape = ScanShape {
        run_bytes_max: READ_UNIT_BYTES,
        in_flight_bytes: IN_FLIGHT_BYTES,
        consumer_holds: consumer_holds + UNITS_DOWNSTREAM,
        tolerate_read_errors: false,
    };
    // `visit`'s error, kept whole (the scan's error type is the engine's).
    let mut visit_error = None;
    let mut pace = |bytes| throttle.pass(bytes);
    let read =
        stream_blocks(device, &Geometry::of(header), Blocks::Only(blocks), shape, &mut pace, &mut |run| {
            visit(run).map_err(|err| {
                visit_error = Some(err);
                spike::Error::ShutDown
            })
        });
    if let Some(err) = visit_error {
        return Err(err);
    }
    read.with_context(|| format!("reading write blocks of {}", device.name()))
}
