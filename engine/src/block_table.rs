//! The block table of one device: each write block's state and write sequence, and the
//! free list, changed only through transitions that assert the state they leave (the
//! pattern of TigerBeetle's `free_set.zig`). Lives inside `DiskState`, under the disk lock.
//!
//! ```text
//!   Free --open--> Open --seal--> InUse --quarantine--> Quarantined
//!    ^                              |                        |
//!    +------------release-----------+------------------------+
//! ```
//!
//! `restore` sets a block's state wholesale, once, while a cold start or a snapshot
//! rebuilds the table (before any transition). Invariants, checked by `check` in tests:
//! a block is on the free list exactly when it is `Free`, at most once; a free block has
//! sequence 0; `quarantined` counts the `Quarantined` blocks. A broken precondition is a
//! bug in the engine, so it panics (in release builds too) under the disk lock, which
//! poisons the lock and latches the disk failed rather than letting it write on an
//! inconsistent table.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    Free,
    Open,
    InUse,
    /// In use, but its header no longer verifies on the device (corrupted at rest): the
    /// defragmenter leaves it alone (re-reading it would loop forever), its records stay
    /// reachable through the index (each is checksummed on read), and it is freed like
    /// any block once its live bytes reach zero.
    Quarantined,
}

pub struct BlockTable {
    state: Vec<BlockState>,
    /// Write sequence of each block's current contents (0 when free).
    seq: Vec<u64>,
    free: VecDeque<u32>,
    quarantined: u32,
}

impl BlockTable {
    /// A table of `count` blocks, all free but none on the free list yet: `restore` or
    /// `restore_all_free` decides.
    pub fn new(count: u32) -> Self {
        BlockTable {
            state: vec![BlockState::Free; count as usize],
            seq: vec![0; count as usize],
            free: VecDeque::new(),
            quarantined: 0,
        }
    }

    pub fn len(&self) -> u32 {
        self.state.len() as u32
    }

    pub fn state(&self, block: u32) -> BlockState {
        self.state[block as usize]
    }

    pub fn seq(&self, block: u32) -> u64 {
        self.seq[block as usize]
    }

    /// Every block's write sequence, in block order (the snapshot stores them).
    pub fn seqs(&self) -> &[u64] {
        &self.seq
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// The free blocks in the order they will be opened.
    pub fn free_blocks(&self) -> impl Iterator<Item = u32> + '_ {
        self.free.iter().copied()
    }

    pub fn quarantined_count(&self) -> u32 {
        self.quarantined
    }

    /// Free → Open: takes the next free block for contents of write sequence `seq`.
    pub fn open_next(&mut self, seq: u64) -> Option<u32> {
        let block = self.free.pop_front()?;
        self.expect(block, &[BlockState::Free], "open");
        assert!(seq > 0, "block {block} opened with write sequence 0");
        self.state[block as usize] = BlockState::Open;
        self.seq[block as usize] = seq;
        Some(block)
    }

    /// Free → Open, like `open_next` but the free block opened last in order (a failpoint's
    /// way to the top of a device).
    pub fn open_last(&mut self, seq: u64) -> Option<u32> {
        let block = self.free.pop_back()?;
        self.free.push_front(block);
        self.open_next(seq)
    }

    /// Open → InUse: the block is full (or closed) and goes to the device.
    pub fn seal(&mut self, block: u32) {
        self.expect(block, &[BlockState::Open], "seal");
        self.state[block as usize] = BlockState::InUse;
    }

    /// InUse → Quarantined; false (and no change) if the block is not in use.
    pub fn quarantine(&mut self, block: u32) -> bool {
        if self.state[block as usize] != BlockState::InUse {
            return false;
        }
        self.state[block as usize] = BlockState::Quarantined;
        self.quarantined += 1;
        true
    }

    /// InUse or Quarantined → Free: its header was overwritten as free and synced.
    pub fn release(&mut self, block: u32) {
        self.expect(block, &[BlockState::InUse, BlockState::Quarantined], "release");
        if self.state[block as usize] == BlockState::Quarantined {
            self.quarantined -= 1;
        }
        self.state[block as usize] = BlockState::Free;
        self.seq[block as usize] = 0;
        self.free.push_back(block);
    }

    /// While rebuilding the table: the block holds records of write sequence `seq`
    /// (`in_use`), or is free. Each block is restored once, in block order.
    pub fn restore(&mut self, block: u32, in_use: bool, seq: u64) {
        assert!(
            self.free.back().is_none_or(|&last| last < block),
            "block {block} restored out of order or twice"
        );
        self.expect(block, &[BlockState::Free], "restore");
        if in_use {
            self.state[block as usize] = BlockState::InUse;
            self.seq[block as usize] = seq;
        } else {
            self.seq[block as usize] = 0;
            self.free.push_back(block);
        }
    }

    /// While rebuilding: every block free (the first start since a format).
    pub fn restore_all_free(&mut self) {
        for block in 0..self.len() {
            self.restore(block, false, 0);
        }
    }

    fn expect(&self, block: u32, allowed: &[BlockState], transition: &str) {
        let state = self.state[block as usize];
        assert!(allowed.contains(&state), "block table: {transition} of block {block} in state {state:?}");
    }

    /// Checks every invariant by a full walk (tests only: O(blocks)).
    #[cfg(all(test, not(loom)))]
    pub fn check(&self) {
        let mut on_free_list = vec![false; self.state.len()];
        for &block in &self.free {
            assert!(!on_free_list[block as usize], "block {block} twice on the free list");
            on_free_list[block as usize] = true;
        }
        for (block, &state) in self.state.iter().enumerate() {
            assert_eq!(
                state == BlockState::Free,
                on_free_list[block],
                "block {block} ({state:?}) vs free list"
            );
            if state == BlockState::Free {
                assert_eq!(self.seq[block], 0, "free block {block} keeps a sequence");
            }
        }
        let quarantined = self.state.iter().filter(|&&s| s == BlockState::Quarantined).count();
        assert_eq!(quarantined, self.quarantined as usize);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn blocks_go_round_their_states_and_the_free_list_follows() {
        let mut table = BlockTable::new(3);
        table.restore(0, true, 7);
        table.restore(1, false, 0);
        table.restore(2, false, 0);
        table.check();
        assert_eq!(table.free_count(), 2);
        assert_eq!(table.open_next(8), Some(1));
        table.seal(1);
        assert_eq!(table.open_next(9), Some(2));
        assert_eq!(table.open_next(10), None);
        assert!(table.quarantine(0));
        assert!(!table.quarantine(2), "an open block is not quarantined");
        table.check();
        assert_eq!(table.quarantined_count(), 1);
        table.release(0);
        table.release(1);
        table.check();
        assert_eq!(table.free_blocks().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!((table.seq(0), table.seq(2)), (0, 9));
    }

    #[test]
    #[should_panic(expected = "release of block 1 in state Open")]
    fn releasing_an_open_block_is_refused() {
        let mut table = BlockTable::new(2);
        table.restore_all_free();
        table.open_next(1);
        table.open_next(2);
        table.release(1);
    }

    #[test]
    #[should_panic(expected = "seal of block 0 in state InUse")]
    fn sealing_twice_is_refused() {
        let mut table = BlockTable::new(1);
        table.restore_all_free();
        table.open_next(1);
        table.seal(0);
        table.seal(0);
    }

    #[test]
    #[should_panic(expected = "restored out of order or twice")]
    fn restoring_a_block_twice_is_refused() {
        let mut table = BlockTable::new(2);
        table.restore(1, false, 0);
        table.restore(1, false, 0);
    }
}
