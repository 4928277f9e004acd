//! The write path: records appended into a per-device write buffer (the open block),
//! full blocks queued to the device, and the flusher thread that writes them.
//!
//! Cost per put: one encode and copy into the buffer under the disk lock (about the
//! record's size in bytes moved), no allocation, no I/O on the caller's thread. Buffers are
//! recycled unzeroed; only the unused tail is zeroed, when a block is sealed. Each
//! block reaches the device in one direct write of the whole block; a buffered write
//! waits at most `flush_max_ms` before a partial flush writes the dirty 4 KiB span.
//!
//! Group commit: a commit-to-device writer registers and sleeps; the flusher writes every
//! queued block and the open block's dirty span, syncs once, advances `durable`, and wakes
//! all writers whose records are now durable. Many writers share one write and one sync.
//!
//! Bounds: at most `write_queue_blocks_max` sealed blocks wait for the device; a writer
//! finding the queue full waits up to `overload_wait_ms`, then gets `DeviceOverloaded`.
//!
//! Ordering: the flusher writes blocks in sequence order and syncs before advancing
//! `durable`, so `durable` only moves forward and covers a prefix of the history.

use crate::device::{AlignedBuf, IO_ALIGN};
use crate::disk::{BlockState, Disk, DiskState, OpenBlock, Position, SealedBlock};
use crate::error::{Error, Result};
use crate::format::{
    encode_record, record_size, BlockClass, RecordMeta, WblockHeader, WBLOCK_HEADER_SIZE, WBLOCK_KIND_DATA,
};
use crate::index::Location;
use crate::stats::Counters;
use crate::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on a commit-to-device writer's wait for durability: a healthy device makes a
/// record durable within one block write and one sync, far less than this.
pub use crate::limits::COMMIT_WAIT_MAX;

/// Who appends a record: decides which space limits apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Client,
    Delete,
    Defrag,
}

impl Disk {
    /// Largest record that fits in a block.
    pub fn record_size_max(&self) -> usize {
        self.geometry.wblock_size as usize - WBLOCK_HEADER_SIZE
    }

    /// Appends one record to the open block and counts its bytes live; returns where it
    /// lies and the position that must be durable for it to survive a crash. `meta.wblock_seq_lo` is filled in here.
    /// Client writes stop when free blocks fall under `stop_writes_blocks`; deletes go on
    /// (they are how space comes back); only the defragmenter may take the last
    /// `defrag_reserve_blocks`, so that it can always progress.
    pub fn append(
        &self,
        meta: &RecordMeta,
        key: &[u8],
        value: &[u8],
        kind: WriteKind,
    ) -> Result<(Location, Position)> {
        let size = record_size(key.len(), value.len());
        if size > self.record_size_max() {
            return Err(Error::RecordTooBig { size_bytes: size, max_bytes: self.record_size_max() });
        }
        let mut state = self.lock();
        self.check_writable(&state)?;
        let fits =
            state.open.as_ref().is_some_and(|o| o.fill as usize + size <= self.geometry.wblock_size as usize);
        if let Err(err) = self.space_allows(&state, kind, fits) {
            if !fits {
                // Let the open block reach the device, so that blocks waiting on it can be freed.
                self.seal_open_block(&mut state);
            }
            return Err(err);
        }
        if !fits {
            // Never wait here: the caller holds a partition lock, and every reader of that
            // partition would wait with it. It waits for room with no lock and retries.
            if state.to_write.len() >= self.write_queue_blocks_max {
                self.wake_flusher.notify_one();
                return Err(self.overloaded(&state, 0));
            }
            self.seal_open_block(&mut state);
            self.space_allows(&state, kind, false)?;
            self.open_new_block(&mut state)?;
        }
        let open = state.open.as_mut().ok_or(Error::ShutDown)?;
        let start = open.fill as usize;
        let meta = RecordMeta { wblock_seq_lo: open.seq as u32, ..*meta };
        encode_record(&meta, key, value, &mut open.buf[start..start + size]);
        // The pair of the read path's check, in debug builds: what was encoded decodes to
        // the same metadata (in release the flusher checks every block header instead).
        debug_assert!(
            crate::format::decode_record(&open.buf[start..start + size]).is_ok_and(|view| view.meta == meta),
            "record encoded at {start} of block {} does not decode to its metadata",
            open.wblock
        );
        open.fill += size as u32;
        // Counted under the disk lock: a block sealed by another writer a moment later must
        // not look empty (and be freed) before this record's bytes are in its count.
        self.live_bytes[open.wblock as usize].fetch_add(size as u32, Ordering::Relaxed);
        open.unflushed_since.get_or_insert_with(Instant::now);
        let location = Location {
            device: self.index,
            offset_bytes: self.geometry.wblock_offset(open.wblock) + start as u64,
            size_bytes: size as u32,
        };
        Ok((location, Position { seq: open.seq, fill: open.fill }))
    }

    /// Whether a write of `kind` may proceed: client writes stop under the stop-writes
    /// mark, and opening a block must leave the defrag reserve to the defragmenter.
    fn space_allows(&self, state: &DiskState, kind: WriteKind, fits: bool) -> Result<()> {
        let free = state.blocks.free_count();
        let reserve = if kind == WriteKind::Defrag { 0 } else { self.defrag_reserve_blocks };
        let detail = if kind == WriteKind::Client && free < self.stop_writes_blocks {
            format!(
                "stop-writes: {free} of {} write blocks free, under the stop-writes mark of {}",
                self.geometry.wblock_count, self.stop_writes_blocks
            )
        } else if !fits && free <= reserve {
            format!("{free} free write blocks, {reserve} of them reserved for defrag")
        } else {
            return Ok(());
        };
        Err(Error::OutOfSpace { device: self.name().to_string(), detail })
    }

    /// Waits until a write of `kind` could open a block, or until `deadline`. Called with
    /// no partition lock held: the defragmenter needs those locks to free space.
    pub fn wait_for_space(&self, kind: WriteKind, deadline: Instant) {
        let mut state = self.lock();
        while self.space_allows(&state, kind, false).is_err() && self.check_writable(&state).is_ok() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            // A waiter counts as a commit waiter: the flusher then writes the open block
            // now, which is what pending frees wait for.
            state.commit_waiters += 1;
            self.wake_flusher.notify_one();
            let pause = (deadline - now).min(Duration::from_millis(10));
            state = self.wait_on(&self.progress, state, pause);
            state.commit_waiters -= 1;
        }
    }

    /// The bound on waiting for space or queue room.
    pub fn overload_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.overload_wait_ms)
    }

    fn overloaded(&self, state: &DiskState, waited_ms: u64) -> Error {
        Error::DeviceOverloaded { device: self.name().to_string(), queued: state.to_write.len(), waited_ms }
    }

    /// Waits until the write queue has room, the disk fails, or `deadline` passes. Called
    /// with no partition lock held (see `append`).
    pub fn wait_for_queue_room(&self, deadline: Instant) {
        let mut state = self.lock();
        while state.to_write.len() >= self.write_queue_blocks_max && self.check_writable(&state).is_ok() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            self.wake_flusher.notify_one();
            state = self.wait_on(&self.progress, state, deadline - now);
        }
    }

    /// Opens a free block (the previous one is already sealed).
    fn open_new_block(&self, state: &mut DiskState) -> Result<()> {
        debug_assert!(state.open.is_none());
        let seq = state.next_seq;
        if seq >= state.write_seq_reserved {
            self.reserve_write_seqs(state, seq)?;
        }
        // Armed to fail, this failpoint refuses the next free block in order and takes the
        // last one instead: a test reaches the top of a device without filling it first.
        let opened = match crate::failpoint::hit("write::open_block::next_free") {
            Ok(()) => state.blocks.open_next(seq),
            Err(_) => state.blocks.open_last(seq),
        };
        let Some(wblock) = opened else {
            return Err(Error::OutOfSpace {
                device: self.name().to_string(),
                detail: "no free write block".into(),
            });
        };
        state.next_seq += 1;
        // A recycled buffer keeps its old bytes: records overwrite every byte they cover,
        // and what lies past `fill` is zeroed when it leaves for the device (seal, partial
        // flush). Zeroing the whole block here would hold every writer up for a 1 MiB
        // memset per block.
        let mut buf =
            state.buffer_pool.pop().unwrap_or_else(|| AlignedBuf::zeroed(self.geometry.wblock_size as usize));
        let header = self.wblock_header(WBLOCK_KIND_DATA, seq, wblock);
        header.encode_into(&mut buf[..WBLOCK_HEADER_SIZE]);
        self.in_memory[wblock as usize].store(true, Ordering::Release);
        debug_assert_eq!(self.live_bytes[wblock as usize].load(Ordering::Relaxed), 0);
        state.open = Some(OpenBlock {
            wblock,
            seq,
            buf,
            fill: WBLOCK_HEADER_SIZE as u32,
            flushed_fill: 0,
            unflushed_since: None,
        });
        Ok(())
    }

    /// Raises the header's `write_seq_reserved` above `seq` before a block is opened at
    /// it (once every `WRITE_SEQS_RESERVED_AT_ONCE` blocks): a header write and a sync under
    /// the disk lock, so that no later start can reuse the sequence (see the field).
    fn reserve_write_seqs(&self, state: &mut DiskState, seq: u64) -> Result<()> {
        let mut header = self.header();
        header.write_seq_reserved = seq + crate::limits::WRITE_SEQS_RESERVED_AT_ONCE;
        crate::namespace::write_header(self.device.as_ref(), &mut header)?;
        state.write_seq_reserved = header.write_seq_reserved;
        Ok(())
    }

    pub fn wblock_header(&self, kind: u16, write_seq: u64, wblock: u32) -> WblockHeader {
        let device_uuid = self.header().device_uuid;
        WblockHeader { kind, write_seq, device_uuid, wblock_index: wblock }
    }

    /// Moves the open block (if any) to the write queue.
    pub fn seal_open_block(&self, state: &mut DiskState) {
        let Some(mut open) = state.open.take() else { return };
        // The block is written whole: no bytes of the buffer's earlier use may follow the
        // records (recovery would count them as stale or corrupt).
        open.buf[open.fill as usize..].fill(0);
        state.blocks.seal(open.wblock);
        state.to_write.push_back(Arc::new(SealedBlock {
            wblock: open.wblock,
            seq: open.seq,
            buf: open.buf,
            fill: open.fill,
        }));
        self.queue_free_if_empty(state, open.wblock);
        self.wake_flusher.notify_one();
    }

    /// Blocks until `position` is durable (commit-to-device mode), at most
    /// `COMMIT_WAIT_MAX`. The record is already appended, so a failure or timeout here
    /// leaves the write in doubt (it may still reach the device), which `InDoubt` says.
    pub fn wait_durable(&self, position: Position) -> Result<()> {
        let deadline = Instant::now() + COMMIT_WAIT_MAX;
        let mut state = self.lock();
        state.commit_waiters += 1;
        self.wake_flusher.notify_one();
        while state.durable < position && state.failure.is_none() && !self.failed.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self.wait_on(&self.progress, state, deadline - now);
        }
        state.commit_waiters -= 1;
        if state.durable >= position {
            return Ok(());
        }
        let reason = match &state.failure {
            Some(failure) => failure.clone(),
            None if self.failed.load(Ordering::Acquire) => "the device was latched failed".to_string(),
            None => format!("not durable after {} ms", COMMIT_WAIT_MAX.as_millis()),
        };
        Err(Error::InDoubt { device: self.name().to_string(), reason })
    }

    /// Returns once everything appended to this disk so far is durable (at most
    /// `COMMIT_WAIT_MAX`): a flush barrier, whatever the durability mode.
    pub fn flush_barrier(&self) -> Result<()> {
        let appended = {
            let state = self.lock();
            match (&state.open, state.to_write.back()) {
                (Some(open), _) => Position { seq: open.seq, fill: open.fill },
                (None, Some(sealed)) => Position { seq: sealed.seq, fill: sealed.fill },
                (None, None) => state.durable,
            }
        };
        self.wait_durable(appended)
    }

    /// Stops the flusher after it has written and synced everything appended so far.
    pub fn request_shutdown(&self) {
        let mut state = self.lock();
        self.seal_open_block(&mut state);
        state.shutdown = true;
        self.wake_flusher.notify_all();
    }
}

/// A partial flush of the open block: its dirty 4 KiB-aligned span, copied out so that
/// writers can keep appending while it is written.
struct PartialFlush {
    seq: u64,
    offset_bytes: u64,
    bytes: AlignedBuf,
    fill: u32,
}

/// The flusher thread of one disk. Returns when shut down and drained, or after a failure.
pub fn run_flusher(disk: &Disk, counters: &Counters) {
    let flush_max = Duration::from_millis(disk.flush_max_ms);
    loop {
        let mut state = disk.lock();
        let (blocks, partial) = loop {
            if state.failure.is_some() || disk.failed.load(Ordering::Acquire) {
                return;
            }
            let open_age = state.open.as_ref().and_then(|o| o.unflushed_since).map(|t| t.elapsed());
            let partial_due =
                open_age.is_some_and(|age| state.commit_waiters > 0 || state.shutdown || age >= flush_max);
            let free_due = state.pending_free.iter().any(|&(_, at)| at <= state.durable);
            if !state.to_write.is_empty() || partial_due || free_due {
                let blocks: Vec<Arc<SealedBlock>> = state.to_write.iter().cloned().collect();
                let partial = if partial_due { take_partial_flush(disk, &mut state) } else { None };
                break (blocks, partial);
            }
            if state.shutdown && state.pending_free.is_empty() {
                return;
            }
            if state.shutdown {
                // Pending frees wait on a durable position that a final sync provides.
                break (Vec::new(), None);
            }
            let timeout = open_age.map_or(flush_max, |age| flush_max.saturating_sub(age));
            state = disk.wait_on(&disk.wake_flusher, state, timeout.max(Duration::from_millis(1)));
        };
        drop(state);

        let written = crate::failpoint::hit("write::flusher::before_write")
            .and_then(|()| write_blocks(disk, &blocks, partial.as_ref(), counters));
        let mut state = disk.lock();
        if let Err(err) = written {
            disk.latch_failure(&mut state, &err);
            return;
        }
        let mut durable = state.durable;
        for block in &blocks {
            let front = state.to_write.pop_front();
            debug_assert!(front.is_some_and(|b| b.seq == block.seq));
            durable = durable.max(Position { seq: block.seq, fill: block.fill });
            state.cache.push(block.clone());
        }
        if let Some(partial) = &partial {
            durable = durable.max(Position { seq: partial.seq, fill: partial.fill });
            if let Some(open) = state.open.as_mut().filter(|o| o.seq == partial.seq) {
                open.flushed_fill = open.flushed_fill.max(partial.fill);
            }
        }
        if blocks.is_empty() && partial.is_none() && state.shutdown {
            // Nothing left unwritten: everything appended is durable once synced.
            durable = durable.max(Position { seq: state.next_seq, fill: 0 });
        }
        state.durable = durable;
        for block in &blocks {
            // Written, so a possible defrag victim now (a queued block is not).
            if state.blocks.state(block.wblock) == BlockState::InUse {
                disk.victims.track(block.wblock, &disk.live_bytes);
            }
        }
        trim_cache(disk, &mut state);
        disk.progress.notify_all();
        if let Err(err) = free_ready_blocks(disk, state, counters) {
            let mut state = disk.lock();
            disk.latch_failure(&mut state, &err);
            return;
        }
    }
}

fn take_partial_flush(disk: &Disk, state: &mut DiskState) -> Option<PartialFlush> {
    let open = state.open.as_mut()?;
    let start = (open.flushed_fill as usize) / IO_ALIGN * IO_ALIGN;
    let end = (open.fill as usize).div_ceil(IO_ALIGN) * IO_ALIGN;
    open.unflushed_since = None;
    if start >= end {
        return None;
    }
    // Past `fill` the buffer may hold bytes of its earlier use: the copy has zeros there.
    let fill = open.fill as usize;
    let mut bytes = AlignedBuf::zeroed(end - start);
    bytes[..fill - start].copy_from_slice(&open.buf[start..fill]);
    Some(PartialFlush {
        seq: open.seq,
        offset_bytes: disk.geometry.wblock_offset(open.wblock) + start as u64,
        bytes,
        fill: open.fill,
    })
}

/// Writes the queued blocks in order, then the partial span, then syncs once.
fn write_blocks(
    disk: &Disk,
    blocks: &[Arc<SealedBlock>],
    partial: Option<&PartialFlush>,
    counters: &Counters,
) -> Result<()> {
    let mut touched: Vec<u32> = blocks.iter().map(|b| b.wblock).collect();
    touched.extend(partial.and_then(|p| disk.geometry.locate(p.offset_bytes)).map(|(b, _)| b));
    disk.mark_changed(&touched)?;
    for block in blocks {
        check_block_header(disk, block)?;
        disk.device.write_at(&block.buf, disk.geometry.wblock_offset(block.wblock))?;
        Counters::add(&counters.device_bytes_written, block.buf.len() as u64);
    }
    if let Some(partial) = partial {
        disk.device.write_at(&partial.bytes, partial.offset_bytes)?;
        Counters::add(&counters.device_bytes_written, partial.bytes.len() as u64);
    }
    disk.device.sync()
}

/// The pair of recovery's block check, right before the write: the block's header must be
/// this device's data header for this block and this use of it. A mismatch is a bug in
/// the engine (a buffer mixed up between blocks); writing it would lose the block's
/// records at the next cold start, so the disk is latched failed instead.
fn check_block_header(disk: &Disk, block: &SealedBlock) -> Result<()> {
    let class = disk.classify(&block.buf, block.wblock);
    if class != (BlockClass::Data { write_seq: block.seq }) {
        return Err(Error::EngineFailed {
            reason: format!(
                "{}: block {} (write sequence {}) about to be written with a header that says {class:?}",
                disk.name(),
                block.wblock,
                block.seq
            ),
        });
    }
    Ok(())
}

/// Keeps at most `cache_blocks_max` written blocks for reads; recycles the rest's buffers.
fn trim_cache(disk: &Disk, state: &mut DiskState) {
    while state.cache.len() > disk.cache_blocks_max {
        let Some(oldest) = state.cache.pop_oldest() else { break };
        disk.in_memory[oldest.wblock as usize].store(false, Ordering::Release);
        if let Ok(block) = Arc::try_unwrap(oldest) {
            if state.buffer_pool.len() < disk.write_queue_blocks_max {
                state.buffer_pool.push(block.buf);
            }
        }
    }
}

/// Frees the empty blocks whose emptying writes are durable: overwrite each one's header
/// as free on the device, sync, and only then put it on the free list.
fn free_ready_blocks(disk: &Disk, mut state: MutexGuard<'_, DiskState>, counters: &Counters) -> Result<()> {
    let durable = state.durable;
    let ready: Vec<u32> =
        state.pending_free.iter().filter(|&&(_, at)| at <= durable).map(|&(b, _)| b).collect();
    if ready.is_empty() {
        return Ok(());
    }
    state.pending_free.retain(|&(_, at)| at > durable);
    state.cache.remove_all(&ready);
    for &block in &ready {
        disk.in_memory[block as usize].store(false, Ordering::Release);
    }
    drop(state);
    disk.write_free_pages(&ready)?;
    crate::failpoint::hit("write::free::before_sync")?;
    disk.device.sync()?;
    let mut state = disk.lock();
    for &block in &ready {
        state.blocks.release(block);
        disk.victims.untrack(block);
    }
    Counters::add(&counters.blocks_freed, ready.len() as u64);
    disk.progress.notify_all();
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::device::sim::SimDevice;
    use crate::device::Device;

    #[test]
    fn a_block_whose_header_names_another_block_or_use_is_not_written() {
        let header = crate::format::test_header();
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let device: Arc<dyn Device> = Arc::new(SimDevice::new("sim", size, 1));
        let disk = Disk::new(0, device, header, &Config::default());
        let sealed = |wblock: u32, seq: u64, header_of: (u32, u64)| {
            let mut buf = AlignedBuf::zeroed(disk.geometry.wblock_size as usize);
            disk.wblock_header(WBLOCK_KIND_DATA, header_of.1, header_of.0)
                .encode_into(&mut buf[..WBLOCK_HEADER_SIZE]);
            SealedBlock { wblock, seq, buf, fill: WBLOCK_HEADER_SIZE as u32 }
        };
        assert!(check_block_header(&disk, &sealed(1, 7, (1, 7))).is_ok());
        for (what, block) in [("another block", sealed(2, 7, (1, 7))), ("another use", sealed(1, 8, (1, 7)))]
        {
            let refused = check_block_header(&disk, &block);
            assert!(matches!(refused, Err(Error::EngineFailed { .. })), "{what}: {refused:?}");
        }
        let mut zeroed = sealed(1, 7, (1, 7));
        zeroed.buf[..WBLOCK_HEADER_SIZE].fill(0);
        assert!(check_block_header(&disk, &zeroed).is_err(), "a block with no header was accepted");
    }

    #[test]
    fn a_block_is_opened_only_at_a_sequence_the_device_header_has_reserved() {
        let header = crate::format::test_header();
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let sim = Arc::new(SimDevice::new("sim", size, 1));
        let device: Arc<dyn Device> = sim.clone();
        let disk = Disk::new(0, device, header, &Config::default());
        let mut state = disk.lock();
        state.blocks.restore_all_free();
        state.next_seq = 40;
        state.write_seq_reserved = 41;
        disk.open_new_block(&mut state).unwrap();
        assert_eq!(state.write_seq_reserved, 41, "a reserved sequence needs no header write");
        disk.seal_open_block(&mut state);
        let syncs = sim.counts().syncs;
        disk.open_new_block(&mut state).unwrap();
        let reserved = 41 + crate::limits::WRITE_SEQS_RESERVED_AT_ONCE;
        assert_eq!(state.write_seq_reserved, reserved);
        assert!(sim.counts().syncs > syncs, "the raised reservation was not synced");
        let on_device = crate::namespace::probe(sim.as_ref()).unwrap();
        let crate::namespace::DeviceContent::Spike(written) = on_device else {
            panic!("no header: {on_device:?}")
        };
        assert_eq!(written.write_seq_reserved, reserved);
    }
}
