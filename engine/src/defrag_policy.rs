//! Which blocks the defragmenter empties next: a policy fed by events, so that finding
//! victims (and counting them for stats) costs nothing in proportion to the device.
//!
//! The disk reports three events: a block was written to the device and is in use
//! (`track`), a block's live bytes dropped (`live_dropped`), a block left use (freed,
//! emptied, quarantined: `untrack`). `pick` names victims under a low-water mark,
//! emptiest first. The policy never decides that a block is safe to free; that stays with
//! the free path, which checks live bytes and durability itself.
//!
//! `EmptiestFirst` keeps tracked blocks in `BUCKETS` buckets by live bytes (1/64 of a
//! block each). A live-byte change takes its lock only when it crosses a bucket boundary,
//! at most `BUCKETS` times in a block's life, so an overwrite almost never touches it.
//! The bucket is always recomputed from the block's current live bytes under the lock, so
//! racing updates settle on the right bucket whatever their order. Cost: 9 bytes a block.

use crate::sync::{AtomicU32, Mutex};
use std::sync::atomic::Ordering;

/// When free space runs low, any block at most this full is a victim: the device can then
/// fill to nearly its capacity, at a higher write amplification only when it is nearly full.
pub const URGENT_LWM_PCT: u32 = 95;

/// A low-water mark in live bytes of a block of `wblock_size` bytes.
pub fn lwm_bytes(wblock_size: u32, lwm_pct: u32) -> u32 {
    ((wblock_size as usize - crate::limits::WBLOCK_HEADER_SIZE) as u64 * lwm_pct as u64 / 100) as u32
}

/// How a disk chooses its defrag victims.
pub trait DefragPolicy: Send + Sync {
    /// `block` was written to the device and is in use: it may become a victim.
    fn track(&self, block: u32, live_bytes: &[AtomicU32]);
    /// `block`'s live bytes went from `before` to `after` (any block, tracked or not).
    fn live_dropped(&self, block: u32, before: u32, after: u32, live_bytes: &[AtomicU32]);
    /// `block` is no longer a possible victim.
    fn untrack(&self, block: u32);
    /// Up to `count` tracked blocks with live bytes in `1..lwm_bytes`, emptiest first.
    fn pick(&self, lwm_bytes: u32, count: usize, live_bytes: &[AtomicU32]) -> Vec<u32>;
    /// How many tracked blocks have live bytes in `1..lwm_bytes`.
    fn count_below(&self, lwm_bytes: u32, live_bytes: &[AtomicU32]) -> usize;
}

const BUCKETS: usize = 64;
const UNTRACKED: u8 = u8::MAX;

/// Victims by bucket of live bytes, emptiest bucket first; exact order within the buckets
/// a pick draws from.
pub struct EmptiestFirst {
    capacity_bytes: u32,
    inner: Mutex<Buckets>,
}

struct Buckets {
    bucket_of: Vec<u8>,
    /// Position of each tracked block in its bucket (for O(1) removal).
    slot_of: Vec<u32>,
    buckets: Vec<Vec<u32>>,
}

impl EmptiestFirst {
    /// For `block_count` blocks of `capacity_bytes` of records each.
    pub fn new(block_count: u32, capacity_bytes: u32) -> Self {
        let n = block_count as usize;
        EmptiestFirst {
            capacity_bytes: capacity_bytes.max(1),
            inner: Mutex::new(Buckets {
                bucket_of: vec![UNTRACKED; n],
                slot_of: vec![0; n],
                buckets: vec![Vec::new(); BUCKETS],
            }),
        }
    }

    fn bucket(&self, live: u32) -> u8 {
        ((live as u64 * BUCKETS as u64 / self.capacity_bytes as u64) as usize).min(BUCKETS - 1) as u8
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Buckets> {
        // The buckets are a cache of live bytes; a panic half-way through leaves at worst
        // a block in a wrong bucket, which `pick` filters by its real live bytes.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Buckets {
    fn remove(&mut self, block: u32) {
        let bucket = self.bucket_of[block as usize];
        if bucket == UNTRACKED {
            return;
        }
        let slot = self.slot_of[block as usize] as usize;
        let list = &mut self.buckets[bucket as usize];
        debug_assert_eq!(list[slot], block);
        list.swap_remove(slot);
        if let Some(&moved) = list.get(slot) {
            self.slot_of[moved as usize] = slot as u32;
        }
        self.bucket_of[block as usize] = UNTRACKED;
    }

    fn insert(&mut self, block: u32, bucket: u8) {
        debug_assert_eq!(self.bucket_of[block as usize], UNTRACKED);
        let list = &mut self.buckets[bucket as usize];
        self.slot_of[block as usize] = list.len() as u32;
        list.push(block);
        self.bucket_of[block as usize] = bucket;
    }
}

impl DefragPolicy for EmptiestFirst {
    fn track(&self, block: u32, live_bytes: &[AtomicU32]) {
        let mut inner = self.lock();
        inner.remove(block);
        let live = live_bytes[block as usize].load(Ordering::Acquire);
        // An empty block goes to the free path, not to defrag.
        if live > 0 {
            inner.insert(block, self.bucket(live));
        }
    }

    fn live_dropped(&self, block: u32, before: u32, after: u32, live_bytes: &[AtomicU32]) {
        if self.bucket(before) == self.bucket(after) && after > 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.bucket_of[block as usize] == UNTRACKED {
            return;
        }
        inner.remove(block);
        let live = live_bytes[block as usize].load(Ordering::Acquire);
        if live > 0 {
            inner.insert(block, self.bucket(live));
        }
    }

    fn untrack(&self, block: u32) {
        self.lock().remove(block);
    }

    fn pick(&self, lwm_bytes: u32, count: usize, live_bytes: &[AtomicU32]) -> Vec<u32> {
        let inner = self.lock();
        let mut picked: Vec<(u32, u32)> = Vec::new();
        for bucket in 0..=self.bucket(lwm_bytes) as usize {
            // Whole buckets, then the exact order among them: a pick is emptiest first.
            picked.extend(
                inner.buckets[bucket].iter().map(|&b| (live_bytes[b as usize].load(Ordering::Relaxed), b)),
            );
            if picked.len() >= count {
                break;
            }
        }
        drop(inner);
        picked.retain(|&(live, _)| live > 0 && live < lwm_bytes);
        picked.sort_unstable();
        picked.into_iter().take(count).map(|(_, b)| b).collect()
    }

    fn count_below(&self, lwm_bytes: u32, live_bytes: &[AtomicU32]) -> usize {
        let inner = self.lock();
        let top = self.bucket(lwm_bytes) as usize;
        let below: usize = inner.buckets[..top].iter().map(Vec::len).sum();
        let edge = inner.buckets[top]
            .iter()
            .filter(|&&b| (1..lwm_bytes).contains(&live_bytes[b as usize].load(Ordering::Relaxed)))
            .count();
        below + edge
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn live(values: &[u32]) -> Vec<AtomicU32> {
        values.iter().map(|&v| AtomicU32::new(v)).collect()
    }

    fn drop_live(policy: &EmptiestFirst, live: &[AtomicU32], block: u32, by: u32) {
        let before = live[block as usize].fetch_sub(by, Ordering::AcqRel);
        policy.live_dropped(block, before, before - by, live);
    }

    #[test]
    fn picks_the_emptiest_tracked_blocks_under_the_mark_and_follows_every_drop() {
        let capacity = 64_000;
        let live = live(&[60_000, 10_000, 30_000, 5_000, 64_000, 1_000]);
        let policy = EmptiestFirst::new(6, capacity);
        for block in 0..5 {
            policy.track(block, &live);
        }
        // Block 5 is not tracked (still queued): never a victim.
        assert_eq!(policy.pick(32_000, 16, &live), vec![3, 1, 2]);
        assert_eq!(policy.count_below(32_000, &live), 3);
        assert_eq!(policy.pick(32_000, 2, &live), vec![3, 1]);
        // A drop across the mark makes a victim; one within a bucket changes the order.
        drop_live(&policy, &live, 0, 55_000);
        drop_live(&policy, &live, 1, 9_990);
        assert_eq!(policy.pick(32_000, 16, &live), vec![1, 0, 3, 2]);
        // Emptied blocks leave (the free path takes them), untracked ones too.
        drop_live(&policy, &live, 3, 5_000);
        policy.untrack(2);
        assert_eq!(policy.pick(32_000, 16, &live), vec![1, 0]);
        assert_eq!(policy.count_below(32_000, &live), 2);
        // The urgent mark reaches the fuller blocks.
        assert_eq!(policy.pick(60_800, 16, &live), vec![1, 0]);
        drop_live(&policy, &live, 4, 4_000);
        assert_eq!(policy.pick(60_800, 16, &live), vec![1, 0, 4]);
    }
}
