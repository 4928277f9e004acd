//! The one read-only device scan: streams write blocks off a device in order, in runs of
//! consecutive blocks, with a bounded pool of buffers, for every reader of a whole
//! device: cold start (`recovery`, all blocks, its parser threads behind the visitor),
//! `spike-inspect` (all blocks, tolerating unreadable ones) and `spike-backup` (the
//! blocks an image needs, paced). What a block holds is then judged by the layout layer's
//! one classifier (`format::classify_block`) and walker (`format::block_copies`), and
//! copies are ordered by `format::CopyOrder`, so all three apply the rules of a restart.
//!
//! Reads go through `Device::read_stream`: up to `in_flight_bytes` of reads in flight,
//! a finished read's slot refilled at once (the device never waits for a batch's slowest
//! read). Buffers: at most `depth + consumer_holds` runs exist; a run's buffer goes back
//! to the scan when the run is dropped (on any thread, also by a consumer that fails or
//! a channel that is dropped with runs queued in it), and reading waits for one when all
//! are out, which bounds memory and lets a slow consumer set the pace without ever
//! waiting for a buffer that cannot come back.
//!
//! Errors: the first error of a read or of the visitor ends the scan and is returned,
//! unless `tolerate_read_errors` is set: then a run whose read fails is read again block
//! by block, and each unreadable block is delivered alone with its error.

use crate::device::{AlignedBuf, Device, ReadRequest, StreamRead, IO_ALIGN};
use crate::error::{Error, Result};
use crate::format::Geometry;
use std::ops::Range;
use std::sync::mpsc;

/// How a scan reads.
#[derive(Clone, Copy, Debug)]
pub struct ScanShape {
    /// Longest run of consecutive blocks read as one (at least one block).
    pub run_bytes_max: usize,
    /// Bytes of reads kept in flight (at least two runs).
    pub in_flight_bytes: usize,
    /// Runs the visitor may hold before giving any back.
    pub consumer_holds: usize,
    /// Read a failed run block by block and deliver unreadable blocks with their error,
    /// instead of ending the scan.
    pub tolerate_read_errors: bool,
}

/// A run of consecutive write blocks, read together. Dropping it gives its buffer back.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // `error` and `last` serve the tools
pub struct BlockRun {
    /// The run's first block; the others follow it.
    pub first: u32,
    pub count: usize,
    /// `None` only once dropped.
    buf: Option<AlignedBuf>,
    home: mpsc::Sender<AlignedBuf>,
    block_bytes: usize,
    /// The read of this run (then one block) failed; its bytes are meaningless.
    pub error: Option<Error>,
    /// No run follows this one.
    pub last: bool,
}

impl BlockRun {
    fn new(
        home: &mpsc::Sender<AlignedBuf>,
        (first, count): (u32, usize),
        buf: AlignedBuf,
        block_bytes: usize,
    ) -> Self {
        BlockRun { first, count, buf: Some(buf), home: home.clone(), block_bytes, error: None, last: false }
    }

    /// Each block of the run with its bytes.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let bytes = self.buf.as_deref().unwrap_or_default();
        (self.first..).zip(bytes.chunks(self.block_bytes).take(self.count))
    }

    /// Bytes of the run's blocks.
    pub fn bytes(&self) -> u64 {
        (self.count * self.block_bytes) as u64
    }
}

impl Drop for BlockRun {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // The scan may have ended already; then the buffer is simply freed.
            let _ = self.home.send(buf);
        }
    }
}

/// Which blocks a scan reads.
#[derive(Clone, Copy, Debug)]
pub enum Blocks<'a> {
    /// Blocks `0..count`, in order (no list: a large device has tens of millions).
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // spike-inspect's
    All { count: u32 },
    /// These blocks, in this order (cold start's and spike-backup's).
    Only(&'a [u32]),
}

/// The runs of a scan, each (first block, blocks).
struct Runs<'a> {
    blocks: Blocks<'a>,
    per_run: usize,
    /// For `Only`: index ranges of the list.
    listed: Vec<Range<usize>>,
}

impl Runs<'_> {
    fn len(&self) -> usize {
        match self.blocks {
            Blocks::All { count } => (count as usize).div_ceil(self.per_run),
            Blocks::Only(_) => self.listed.len(),
        }
    }

    fn get(&self, run: usize) -> Option<(u32, usize)> {
        match self.blocks {
            Blocks::All { count } => {
                let first = run.checked_mul(self.per_run).filter(|&first| first < count as usize)?;
                Some((first as u32, self.per_run.min(count as usize - first)))
            }
            Blocks::Only(list) => self.listed.get(run).map(|r| (list[r.start], r.len())),
        }
    }
}

/// Runs of at most `per_run` consecutive blocks of `blocks` (in the given order).
pub fn runs(blocks: &[u32], per_run: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=blocks.len() {
        let breaks =
            i == blocks.len() || i - start >= per_run || blocks[i - 1].checked_add(1) != Some(blocks[i]);
        if breaks {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

/// Reads the first 4 KiB (the header page) of every write block, `reads_at_once` of them
/// in flight (`Device::read_many`), and hands each page to `visit` in block order: the
/// pass that tells blocks in use from free ones without reading them whole (cold start,
/// `spike-backup`). The first read error ends it.
pub fn scan_block_headers(
    device: &dyn Device,
    geometry: &Geometry,
    reads_at_once: usize,
    visit: &mut dyn FnMut(u32, &[u8]),
) -> Result<()> {
    let count = geometry.wblock_count;
    let at_once = reads_at_once.clamp(1, count.max(1) as usize);
    let mut bufs: Vec<AlignedBuf> = (0..at_once).map(|_| AlignedBuf::zeroed(IO_ALIGN)).collect();
    let mut first = 0u32;
    while first < count {
        let n = at_once.min((count - first) as usize);
        let mut requests: Vec<ReadRequest<'_>> = bufs[..n]
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| ReadRequest { offset: geometry.wblock_offset(first + i as u32), buf })
            .collect();
        device.read_many(&mut requests)?;
        drop(requests);
        for (i, buf) in bufs[..n].iter().enumerate() {
            visit(first + i as u32, buf);
        }
        first += n as u32;
    }
    Ok(())
}

/// Streams `blocks` of the device (see the module comment). `pace` is told the bytes of
/// each run before it is read, and may wait.
pub fn stream_blocks(
    device: &dyn Device,
    geometry: &Geometry,
    blocks: Blocks<'_>,
    shape: ScanShape,
    pace: &mut dyn FnMut(u64),
    visit: &mut dyn FnMut(BlockRun) -> Result<()>,
) -> Result<()> {
    let wbs = geometry.wblock_size as usize;
    let per_run = (shape.run_bytes_max / wbs).max(1);
    let run_bytes = per_run * wbs;
    let depth = (shape.in_flight_bytes / run_bytes).max(2);
    let pool = Pool { free: mpsc::channel(), allocated: 0, max: depth + shape.consumer_holds, run_bytes };
    let listed = match blocks {
        Blocks::All { .. } => Vec::new(),
        Blocks::Only(list) => runs(list, per_run),
    };
    let runs = Runs { blocks, per_run, listed };
    let mut scan = Scan { device, geometry, runs: &runs, next_run: 0, pool, depth };
    loop {
        match scan.stream(pace, visit) {
            Ok(()) => return Ok(()),
            Err(Failed::Visit(err)) => return Err(err),
            Err(Failed::Read(err)) if !shape.tolerate_read_errors => return Err(err),
            Err(Failed::Read(_)) => scan.read_failed_run_block_by_block(visit)?,
        }
    }
}

struct Pool {
    free: (mpsc::Sender<AlignedBuf>, mpsc::Receiver<AlignedBuf>),
    allocated: usize,
    max: usize,
    run_bytes: usize,
}

impl Pool {
    fn take(&mut self) -> Result<AlignedBuf> {
        match self.free.1.try_recv() {
            Ok(buf) => Ok(buf),
            Err(_) if self.allocated < self.max => {
                self.allocated += 1;
                Ok(AlignedBuf::zeroed(self.run_bytes))
            }
            // Cannot fail: the pool holds a sender as long as it lives. Every buffer out
            // comes back when its run is dropped, wherever that happens.
            Err(_) => self.free.1.recv().map_err(|_| Error::ShutDown),
        }
    }
}

enum Failed {
    Read(Error),
    Visit(Error),
}

struct Scan<'a> {
    device: &'a dyn Device,
    geometry: &'a Geometry,
    runs: &'a Runs<'a>,
    /// The first run not yet delivered.
    next_run: usize,
    pool: Pool,
    depth: usize,
}

impl Scan<'_> {
    /// Streams the runs from `next_run` on, until the end or the first error.
    fn stream(
        &mut self,
        pace: &mut dyn FnMut(u64),
        visit: &mut dyn FnMut(BlockRun) -> Result<()>,
    ) -> std::result::Result<(), Failed> {
        let wbs = self.geometry.wblock_size as usize;
        let (runs, geometry) = (self.runs, self.geometry);
        let mut issued = self.next_run;
        let home = self.pool.free.0.clone();
        let pool = &mut self.pool;
        let mut next = || -> Result<Option<StreamRead>> {
            let Some((first, count)) = runs.get(issued) else { return Ok(None) };
            let buf = pool.take()?;
            issued += 1;
            let len = count * wbs;
            pace(len as u64);
            Ok(Some(StreamRead { offset: geometry.wblock_offset(first), buf, len }))
        };
        let next_run = &mut self.next_run;
        let mut visit_error = None;
        let mut done = |read: StreamRead| -> Result<()> {
            let (first, count) = runs.get(*next_run).ok_or(Error::ShutDown)?;
            *next_run += 1;
            let mut run = BlockRun::new(&home, (first, count), read.buf, wbs);
            run.last = *next_run == runs.len();
            visit(run).map_err(|err| {
                visit_error = Some(err);
                Error::ShutDown
            })
        };
        let streamed = self.device.read_stream(self.depth, &mut next, &mut done);
        match (visit_error, streamed) {
            (Some(err), _) => Err(Failed::Visit(err)),
            (None, Err(err)) => Err(Failed::Read(err)),
            (None, Ok(())) => Ok(()),
        }
    }

    /// Reads the run the stream failed on one block at a time, delivering each block alone
    /// (unreadable ones with their error), and moves past it.
    fn read_failed_run_block_by_block(
        &mut self,
        visit: &mut dyn FnMut(BlockRun) -> Result<()>,
    ) -> Result<()> {
        let wbs = self.geometry.wblock_size as usize;
        let Some((first, count)) = self.runs.get(self.next_run) else { return Ok(()) };
        self.next_run += 1;
        for i in 0..count {
            let block = first + i as u32;
            let mut buf = self.pool.take()?;
            let error = self.device.read_at(&mut buf[..wbs], self.geometry.wblock_offset(block)).err();
            let last = self.next_run == self.runs.len() && i + 1 == count;
            let mut run = BlockRun::new(&self.pool.free.0, (block, 1), buf, wbs);
            (run.error, run.last) = (error, last);
            visit(run)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::{SimDevice, SimFaults};

    #[test]
    fn runs_are_consecutive_blocks_capped_in_length() {
        let blocks = [0, 1, 2, 3, 4, 7, 8, 10, 11, 12];
        let got: Vec<&[u32]> = runs(&blocks, 3).into_iter().map(|r| &blocks[r]).collect();
        assert_eq!(got, [&[0, 1, 2][..], &[3, 4], &[7, 8], &[10, 11, 12]]);
        assert_eq!(runs(&blocks, 1).len(), blocks.len());
        assert!(runs(&[], 4).is_empty());
        // Never merged across a wrap of the block number.
        assert_eq!(runs(&[u32::MAX, 0], 4).len(), 2);
    }

    fn device_of_numbered_blocks(blocks: u32, wbs: usize) -> (SimDevice, Geometry) {
        let geometry =
            Geometry { first_wblock_offset: wbs as u64, wblock_size: wbs as u32, wblock_count: blocks };
        let device = SimDevice::new("scan", (blocks as u64 + 1) * wbs as u64, 1);
        let mut buf = AlignedBuf::zeroed(wbs);
        for block in 0..blocks {
            buf.fill(block as u8 + 1);
            device.write_at(&buf, geometry.wblock_offset(block)).unwrap();
        }
        (device, geometry)
    }

    #[test]
    fn every_block_arrives_once_in_order_and_the_pool_stays_bounded() {
        let wbs = 4096;
        let (device, geometry) = device_of_numbered_blocks(40, wbs);
        let blocks: Vec<u32> = (0..40).filter(|b| b % 7 != 3).collect();
        let shape = ScanShape {
            run_bytes_max: 3 * wbs,
            in_flight_bytes: 6 * wbs,
            consumer_holds: 1,
            tolerate_read_errors: false,
        };
        let (mut seen, mut paced, mut held) = (Vec::new(), 0, Vec::new());
        let only = Blocks::Only(&blocks);
        stream_blocks(&device, &geometry, only, shape, &mut |bytes| paced += bytes, &mut |run| {
            for (block, bytes) in run.iter() {
                assert!(bytes.iter().all(|&b| b == block as u8 + 1), "block {block}");
                seen.push(block);
            }
            assert_eq!(run.last, seen.len() == blocks.len());
            // Hold one run, give the one before back: the scan must not need more.
            held.push(run);
            if held.len() > 1 {
                drop(held.remove(0));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, blocks);
        assert_eq!(paced, (blocks.len() * wbs) as u64);
    }

    #[test]
    fn an_unreadable_block_ends_a_strict_scan_and_is_named_by_a_tolerant_one() {
        let wbs = 4096;
        let (device, geometry) = device_of_numbered_blocks(12, wbs);
        let bad_sector = geometry.wblock_offset(5) + 512..geometry.wblock_offset(5) + 1024;
        device.set_faults(SimFaults { unreadable: vec![bad_sector], ..Default::default() });
        let blocks = Blocks::All { count: 12 };
        let mut shape = ScanShape {
            run_bytes_max: 4 * wbs,
            in_flight_bytes: 8 * wbs,
            consumer_holds: 0,
            tolerate_read_errors: false,
        };
        let strict = stream_blocks(&device, &geometry, blocks, shape, &mut |_| {}, &mut |_run| Ok(()));
        assert!(matches!(strict, Err(Error::Io { .. })), "{strict:?}");
        shape.tolerate_read_errors = true;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        stream_blocks(&device, &geometry, blocks, shape, &mut |_| {}, &mut |run| {
            match run.error {
                Some(_) => bad.push(run.first),
                None => good.extend(run.iter().map(|(block, _)| block)),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(bad, [5]);
        assert_eq!(good, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn a_scan_whose_consumer_thread_dies_holding_runs_ends_instead_of_waiting_for_them() {
        // Recovery's parsers (or spike-backup's writers) may fail while they hold runs and
        // more wait queued for them: those buffers must come back, or the reader waits
        // for one forever.
        let (device, geometry) = device_of_numbered_blocks(64, 4096);
        let shape = ScanShape {
            run_bytes_max: 4096,
            in_flight_bytes: 2 * 4096,
            consumer_holds: 2,
            tolerate_read_errors: false,
        };
        let (ended_tx, ended_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (tx, rx) = mpsc::channel::<BlockRun>();
            let consumer = std::thread::spawn(move || {
                let held: Vec<BlockRun> = rx.iter().take(3).collect();
                drop((held, rx));
            });
            let blocks = Blocks::All { count: 64 };
            let scanned = stream_blocks(&device, &geometry, blocks, shape, &mut |_| {}, &mut |run| {
                tx.send(run).map_err(|_| Error::ShutDown)
            });
            let _ = consumer.join();
            let _ = ended_tx.send(scanned.is_err());
        });
        let ended = ended_rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(ended, Ok(true), "the scan must end with an error once its consumer is gone");
    }
}
