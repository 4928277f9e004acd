//! One device of a namespace at run time: its geometry, the live byte count of every
//! write block, the block table and free list, and the write buffer state the write path
//! (`write`) and the read path (`read`) share.
//!
//! Invariants:
//! - A block is in exactly one state (`block_table`): free (on the free list), open
//!   (being filled in RAM), in use (sealed, possibly still queued for writing) or
//!   quarantined; every change of state is a checked transition.
//! - `live_bytes[b]` is the sum of the sizes of index entries pointing into block `b`.
//!   A sealed block whose count reaches 0 stays at 0 (nothing is ever placed into a sealed
//!   block), and is freed only once every write before that moment is durable and its
//!   header has been overwritten as free on the device (so its stale records can never be
//!   recovered).
//! - After a failed write or sync the disk is latched failed and takes no more writes.

use crate::block_table::BlockTable;
use crate::change_bitmap::{ChangeBitmap, MARK_AHEAD_BLOCKS};
use crate::config::Config;
use crate::defrag_policy::{DefragPolicy, EmptiestFirst};
use crate::device::{AlignedBuf, Device};
use crate::error::{Error, Result};
use crate::format::{
    classify_block, encode_free_page, BlockClass, DeviceHeader, Geometry, RECORD_ALIGN, RECORD_HEADER_SIZE,
    WBLOCK_HEADER_SIZE,
};
use crate::index::Location;
pub use crate::post_write_cache::{PostWriteCache, SealedBlock};
use crate::sync::{AtomicBool, AtomicU32, Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A point in a device's write history: block sequence number, then bytes into the block.
/// Everything at or before `DiskState::durable` survives a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub seq: u64,
    pub fill: u32,
}

pub use crate::block_table::BlockState;

/// The block being filled in RAM.
pub struct OpenBlock {
    pub wblock: u32,
    pub seq: u64,
    pub buf: AlignedBuf,
    pub fill: u32,
    /// Bytes already written to the device by partial flushes.
    pub flushed_fill: u32,
    /// When the oldest record not yet written was appended.
    pub unflushed_since: Option<Instant>,
}

pub struct DiskState {
    pub open: Option<OpenBlock>,
    pub to_write: VecDeque<Arc<SealedBlock>>,
    pub cache: PostWriteCache,
    /// Every block's state and write sequence, and the free list.
    pub blocks: BlockTable,
    pub next_seq: u64,
    /// The header's `write_seq_reserved` as last written: a block is opened at a sequence
    /// below it only (`open_new_block` raises it first).
    pub write_seq_reserved: u64,
    pub durable: Position,
    /// Empty blocks waiting for everything written before them to be durable.
    pub pending_free: Vec<(u32, Position)>,
    pub commit_waiters: usize,
    pub buffer_pool: Vec<AlignedBuf>,
    pub failure: Option<String>,
    pub shutdown: bool,
}

pub struct Disk {
    pub index: u8,
    pub device: Arc<dyn Device>,
    pub geometry: Geometry,
    pub header: Mutex<DeviceHeader>,
    /// Blocks written since the last backup (see `change_bitmap`).
    pub change: Mutex<ChangeBitmap>,
    pub live_bytes: Box<[AtomicU32]>,
    /// Whether a block's bytes are in RAM (open, queued or in the post-write cache): lets
    /// the read path skip the disk lock for the blocks that are not, nearly every read.
    /// Set when the block is opened (under the lock), cleared when it leaves the cache.
    pub in_memory: Box<[AtomicBool]>,
    pub state: Mutex<DiskState>,
    /// Wakes the flusher: work queued, a commit waiting, a block emptied, shutdown.
    pub wake_flusher: Condvar,
    /// Wakes writers: durability advanced, room in the write queue, failure.
    pub progress: Condvar,
    pub failed: AtomicBool,
    /// Defrag victims, kept up to date by events (a block written, its live bytes
    /// dropping, a block leaving use), so that finding them costs nothing in proportion to
    /// the device.
    pub victims: Box<dyn DefragPolicy>,
    /// The low-water marks in live bytes: the configured one and the one used when free
    /// space is low (see `defrag`).
    pub defrag_lwm_bytes: [u32; 2],
    pub cache_blocks_max: usize,
    pub write_queue_blocks_max: usize,
    pub overload_wait_ms: u64,
    pub flush_max_ms: u64,
    pub defrag_reserve_blocks: usize,
    pub stop_writes_blocks: usize,
}

impl Disk {
    pub fn new(index: u8, device: Arc<dyn Device>, header: DeviceHeader, config: &Config) -> Self {
        let geometry = Geometry::of(&header);
        let count = geometry.wblock_count as usize;
        Disk {
            index,
            device,
            geometry,
            change: Mutex::new(ChangeBitmap::new(header.bitmap_generation, header.wblock_count)),
            header: Mutex::new(header),
            live_bytes: (0..count).map(|_| AtomicU32::new(0)).collect(),
            in_memory: (0..count).map(|_| AtomicBool::new(false)).collect(),
            state: Mutex::new(DiskState {
                open: None,
                to_write: VecDeque::new(),
                cache: PostWriteCache::default(),
                blocks: BlockTable::new(geometry.wblock_count),
                next_seq: 1,
                write_seq_reserved: 0,
                durable: Position::default(),
                pending_free: Vec::new(),
                commit_waiters: 0,
                buffer_pool: Vec::new(),
                failure: None,
                shutdown: false,
            }),
            wake_flusher: Condvar::new(),
            progress: Condvar::new(),
            failed: AtomicBool::new(false),
            victims: Box::new(EmptiestFirst::new(
                geometry.wblock_count,
                geometry.wblock_size - WBLOCK_HEADER_SIZE as u32,
            )),
            defrag_lwm_bytes: [
                config.defrag_lwm_pct,
                crate::defrag_policy::URGENT_LWM_PCT.max(config.defrag_lwm_pct),
            ]
            .map(|pct| crate::defrag_policy::lwm_bytes(geometry.wblock_size, pct)),
            cache_blocks_max: config.post_write_cache_blocks,
            write_queue_blocks_max: config.write_queue_blocks_max,
            overload_wait_ms: config.overload_wait_ms,
            flush_max_ms: config.flush_max_ms,
            defrag_reserve_blocks: (config.defrag_reserve_blocks as usize).min(count / 4),
            stop_writes_blocks: (count * config.stop_writes_free_pct as usize).div_ceil(100),
        }
    }

    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The disk state. A poisoned lock (a thread panicked half-way through an update)
    /// latches the disk failed: the state may be inconsistent, so no more writes.
    pub fn lock(&self) -> MutexGuard<'_, DiskState> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => {
                let mut state = poisoned.into_inner();
                self.latch_poisoned(&mut state, "disk state");
                state
            }
        }
    }

    /// Waits on `condvar` (`progress` or `wake_flusher`) for at most `timeout`, latching
    /// the disk failed if the lock comes back poisoned.
    pub fn wait_on<'a>(
        &'a self,
        condvar: &Condvar,
        state: MutexGuard<'a, DiskState>,
        timeout: Duration,
    ) -> MutexGuard<'a, DiskState> {
        match condvar.wait_timeout(state, timeout) {
            Ok((state, _)) => state,
            Err(poisoned) => {
                let mut state = poisoned.into_inner().0;
                self.latch_poisoned(&mut state, "disk state");
                state
            }
        }
    }

    /// The device header. Poisoning latches the disk failed, as for the disk state, but
    /// through the `failed` flag alone: the header lock is taken under the state lock
    /// (lock order), so taking the state lock here could deadlock.
    pub fn header(&self) -> MutexGuard<'_, DeviceHeader> {
        self.header.lock().unwrap_or_else(|poisoned| {
            self.latch_failed_flag("device header");
            poisoned.into_inner()
        })
    }

    /// The change bitmap. Poisoning latches the disk failed, as for the header.
    pub fn change_bitmap(&self) -> MutexGuard<'_, ChangeBitmap> {
        self.change.lock().unwrap_or_else(|poisoned| {
            self.latch_failed_flag("change bitmap");
            poisoned.into_inner()
        })
    }

    fn latch_poisoned(&self, state: &mut DiskState, what: &str) {
        if !self.failed.load(Ordering::Acquire) {
            let reason = format!("a thread panicked while updating the {what}");
            self.latch_failure(state, &Error::EngineFailed { reason });
        }
    }

    /// Latches the disk failed without its state lock: writers see `failed`, and the
    /// flusher and commit waiters check it as well as `DiskState::failure`.
    fn latch_failed_flag(&self, what: &str) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            log::error!(
                "device {} failed, no more writes: a thread panicked while updating the {what}",
                self.name()
            );
        }
        self.progress.notify_all();
        self.wake_flusher.notify_all();
    }

    pub fn check_writable(&self, state: &DiskState) -> Result<()> {
        if state.shutdown {
            return Err(Error::ShutDown);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::DeviceFailed { device: self.name().to_string() });
        }
        Ok(())
    }

    /// Latches the disk failed after a write or sync error: the on-device state is unknown.
    pub fn latch_failure(&self, state: &mut DiskState, err: &Error) {
        log::error!("device {} failed, no more writes: {err}", self.name());
        state.failure.get_or_insert_with(|| err.to_string());
        self.failed.store(true, Ordering::Release);
        self.progress.notify_all();
        self.wake_flusher.notify_all();
    }

    /// Block holding a location (`None` for a location outside this disk's block area).
    pub fn block_of(&self, location: Location) -> Option<u32> {
        self.geometry.locate(location.offset_bytes).map(|(block, _)| block)
    }

    /// Whether `location` could hold a record of this disk: inside one block's record
    /// area, aligned, at least a record header long. Checked on every snapshot entry.
    pub fn location_is_valid(&self, location: Location) -> bool {
        let Some((_, in_block)) = self.geometry.locate(location.offset_bytes) else { return false };
        let size = location.size_bytes as usize;
        location.device == self.index
            && in_block as usize >= WBLOCK_HEADER_SIZE
            && in_block as usize % RECORD_ALIGN == 0
            && size >= RECORD_HEADER_SIZE
            && size % RECORD_ALIGN == 0
            && in_block as usize + size <= self.geometry.wblock_size as usize
    }

    pub fn add_live(&self, location: Location) {
        if let Some(block) = self.block_of(location) {
            self.live_bytes[block as usize].fetch_add(location.size_bytes, Ordering::Relaxed);
        }
    }

    /// Drops a location's bytes from its block; an emptied sealed block is queued to be freed.
    pub fn remove_live(&self, location: Location) {
        let Some(block) = self.block_of(location) else { return };
        let before = self.live_bytes[block as usize].fetch_sub(location.size_bytes, Ordering::AcqRel);
        debug_assert!(before >= location.size_bytes, "live bytes of block {block} went negative");
        let after = before - location.size_bytes;
        self.victims.live_dropped(block, before, after, &self.live_bytes);
        if after == 0 {
            let mut state = self.lock();
            self.queue_free_if_empty(&mut state, block);
        }
    }

    /// Queues `block` for freeing if it is sealed and empty. The free waits until every
    /// write appended so far is durable: the writes that emptied it must not be lost
    /// while its old copies are already gone.
    pub fn queue_free_if_empty(&self, state: &mut DiskState, block: u32) {
        if !matches!(state.blocks.state(block), BlockState::InUse | BlockState::Quarantined)
            || self.live_bytes[block as usize].load(Ordering::Acquire) != 0
            || state.pending_free.iter().any(|&(b, _)| b == block)
        {
            return;
        }
        let now = state.open.as_ref().map_or(state.durable, |o| Position { seq: o.seq, fill: o.fill });
        state.pending_free.push((block, now));
        self.wake_flusher.notify_one();
    }

    /// Blocks holding records (in use or quarantined).
    pub fn blocks_in_use(&self) -> u64 {
        let state = self.lock();
        (state.blocks.len() as usize - state.blocks.free_count() - state.open.is_some() as usize) as u64
    }

    /// Offers every in-use block to the defrag policy: after a restore, when the block
    /// table was rebuilt from the device or a snapshot.
    pub fn track_blocks_in_use(&self) {
        let state = self.lock();
        for block in 0..state.blocks.len() {
            if state.blocks.state(block) == BlockState::InUse {
                self.victims.track(block, &self.live_bytes);
            }
        }
    }

    /// Takes `block` out of defrag after its header failed to verify; says so once per block.
    pub fn quarantine(&self, block: u32) -> bool {
        let mut state = self.lock();
        if !state.blocks.quarantine(block) {
            return false;
        }
        self.victims.untrack(block);
        log::error!(
            "{}: write block {block} at offset {} has a header that no longer verifies; quarantined \
             (its records stay readable through the index, each checked on read)",
            self.name(),
            self.geometry.wblock_offset(block)
        );
        true
    }

    /// Whether `free_blocks` free blocks is short of space: near enough the stop-writes
    /// mark that defrag runs flat out with its low-water mark raised (`defrag`).
    pub fn short_of_space(&self, free_blocks: usize) -> bool {
        free_blocks <= 2 * self.stop_writes_blocks + self.defrag_reserve_blocks + 1
    }

    /// For stats: live bytes, then free, pending-free, queued and quarantined blocks.
    /// Takes the disk lock only for counters (O(1)); the live bytes are summed outside it.
    pub fn usage(&self) -> DiskUsage {
        let live_bytes: u64 = self.live_bytes.iter().map(|b| b.load(Ordering::Relaxed) as u64).sum();
        let state = self.lock();
        DiskUsage {
            live_bytes,
            free_blocks: state.blocks.free_count() as u64,
            pending_free_blocks: state.pending_free.len() as u64,
            queued_blocks: state.to_write.len() as u64,
            quarantined_blocks: state.blocks.quarantined_count() as u64,
            short_of_space: self.short_of_space(state.blocks.free_count()),
        }
    }
}

/// A disk's space figures, for stats (`Disk::usage`).
pub struct DiskUsage {
    pub live_bytes: u64,
    pub free_blocks: u64,
    pub pending_free_blocks: u64,
    pub queued_blocks: u64,
    pub quarantined_blocks: u64,
    pub short_of_space: bool,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::device::sim::SimDevice;

    fn test_disk() -> Disk {
        let header = crate::format::test_header();
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let device: Arc<dyn Device> = Arc::new(SimDevice::new("sim", size, 1));
        Disk::new(0, device, header, &Config::default())
    }

    #[test]
    fn a_poisoned_header_lock_latches_the_disk_even_under_the_state_lock() {
        let disk = test_disk();
        std::thread::scope(|scope| {
            let poisoner = scope.spawn(|| {
                let _header = disk.header.lock();
                panic!("poison the header lock");
            });
            assert!(poisoner.join().is_err());
        });
        // The header is taken under the state lock (opening a block does): latching must
        // not take the state lock again.
        let state = disk.lock();
        let uuid = disk.header().device_uuid;
        assert_eq!(uuid, crate::format::test_header().device_uuid);
        assert!(matches!(disk.check_writable(&state), Err(Error::DeviceFailed { .. })));
    }

    #[test]
    fn a_poisoned_state_lock_latches_the_disk_with_its_reason() {
        let disk = test_disk();
        std::thread::scope(|scope| {
            let poisoner = scope.spawn(|| {
                let _state = disk.state.lock();
                panic!("poison the state lock");
            });
            assert!(poisoner.join().is_err());
        });
        let state = disk.lock();
        assert!(disk.check_writable(&state).is_err());
        assert!(state.failure.as_deref().is_some_and(|f| f.contains("disk state")), "{:?}", state.failure);
    }
}

impl Disk {
    /// Loads this device's bitmap at open. A damaged or mismatched bitmap cannot be
    /// trusted: the generation drops to 0 (the next backup must be full) and a fresh
    /// bitmap is written before any block write.
    pub fn load_change_bitmap(&self) -> Result<()> {
        let mut header = self.header();
        let bitmap = match ChangeBitmap::read(self.device.as_ref(), &header)? {
            Ok(bitmap) => bitmap,
            Err(problem) => {
                if header.bitmap_generation != 0 {
                    log::warn!(
                        "{}: change bitmap untrusted ({problem}); the next backup must be full",
                        self.name()
                    );
                }
                header.bitmap_generation = 0;
                let fresh = ChangeBitmap::new(0, header.wblock_count);
                fresh.write_all(self.device.as_ref())?;
                self.device.sync()?;
                fresh
            }
        };
        *self.change_bitmap() = bitmap;
        Ok(())
    }

    /// Makes the bits of `blocks` durable before they are written; marks the next free
    /// blocks along with them.
    pub fn mark_changed(&self, blocks: &[u32]) -> Result<()> {
        let mut change = self.change_bitmap();
        if blocks.iter().all(|&b| change.is_set(b)) {
            return Ok(());
        }
        let upcoming: Vec<u32> = self.lock().blocks.free_blocks().take(MARK_AHEAD_BLOCKS).collect();
        let mut pages: Vec<usize> = blocks.iter().chain(&upcoming).filter_map(|&b| change.set(b)).collect();
        pages.sort_unstable();
        pages.dedup();
        change.write_pages(self.device.as_ref(), &pages)?;
        self.device.sync()
    }
}

impl Disk {
    /// What block `block` of this device holds, from its first bytes (the one classifier).
    pub fn classify(&self, bytes: &[u8], block: u32) -> BlockClass {
        classify_block(bytes, &self.header().device_uuid, block)
    }

    /// Writes a free page over each of `blocks`, their change bits made durable first. Not
    /// synced: the caller syncs before the blocks are reused.
    pub fn write_free_pages(&self, blocks: &[u32]) -> Result<()> {
        self.mark_changed(blocks)?;
        let device_uuid = self.header().device_uuid;
        let mut page = AlignedBuf::zeroed(crate::limits::IO_ALIGN);
        for &block in blocks {
            encode_free_page(device_uuid, block, &mut page);
            self.device.write_at(&page, self.geometry.wblock_offset(block))?;
        }
        Ok(())
    }
}
