//! The post-write cache: the most recently written blocks of one device, kept in RAM so
//! that a read of a record written lately (an update merging into it, a defrag pass over
//! its block) costs no device read.
//!
//! Owns the written blocks from the moment the flusher has written them until they are
//! evicted (oldest first, past `Config::post_write_cache_blocks`) or freed. Invariant: a
//! block is cached at most once, under its block number, and `order` holds exactly the
//! cached block numbers, oldest first. Lives inside `DiskState`, so every call is made
//! under the disk lock; a lookup is one hash probe whatever the cache's size (it was a
//! walk over the blocks, fine at 8 blocks, not at the hundreds a server keeps).

use crate::device::AlignedBuf;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A full (or closed) block: queued for the device, then kept here.
pub struct SealedBlock {
    pub wblock: u32,
    pub seq: u64,
    pub buf: AlignedBuf,
    pub fill: u32,
}

#[derive(Default)]
pub struct PostWriteCache {
    by_block: HashMap<u32, Arc<SealedBlock>>,
    order: VecDeque<u32>,
}

impl PostWriteCache {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Caches a block just written. A block is freed (and so leaves the cache) before it
    /// can be written again, so it is never cached twice; if it were, the newer copy wins.
    pub fn push(&mut self, block: Arc<SealedBlock>) {
        let wblock = block.wblock;
        if self.by_block.insert(wblock, block).is_some() {
            debug_assert!(false, "block {wblock} cached twice");
            self.order.retain(|&b| b != wblock);
        }
        self.order.push_back(wblock);
    }

    pub fn get(&self, wblock: u32) -> Option<&Arc<SealedBlock>> {
        self.by_block.get(&wblock)
    }

    /// Takes out the oldest block.
    pub fn pop_oldest(&mut self) -> Option<Arc<SealedBlock>> {
        let wblock = self.order.pop_front()?;
        self.by_block.remove(&wblock)
    }

    /// Drops the blocks being freed.
    pub fn remove_all(&mut self, wblocks: &[u32]) {
        let removed = wblocks.iter().filter(|b| self.by_block.remove(b).is_some()).count();
        if removed > 0 {
            self.order.retain(|b| self.by_block.contains_key(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(wblock: u32) -> Arc<SealedBlock> {
        Arc::new(SealedBlock { wblock, seq: wblock as u64 + 100, buf: AlignedBuf::zeroed(4096), fill: 0 })
    }

    #[test]
    fn blocks_leave_oldest_first_and_freed_blocks_leave_at_once() {
        let mut cache = PostWriteCache::default();
        for wblock in [5, 9, 2, 7] {
            cache.push(sealed(wblock));
        }
        assert_eq!(cache.get(2).map(|b| b.seq), Some(102));
        cache.remove_all(&[9, 40, 5]);
        assert!(cache.get(9).is_none());
        assert!(cache.get(5).is_none());
        assert_eq!(cache.len(), 2);
        let evicted: Vec<u32> = std::iter::from_fn(|| cache.pop_oldest()).map(|b| b.wblock).collect();
        assert_eq!(evicted, [2, 7]);
        assert_eq!(cache.len(), 0);
    }
}
