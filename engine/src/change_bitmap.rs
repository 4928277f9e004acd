//! Change tracking for incremental backups: one bit per write block, set for every block
//! written since the last backup, kept in the device's reserved area.
//!
//! Invariant: a block's bit is durable before any write to that block can land (data,
//! partial flush, free marking, snapshot). The flusher calls `Disk::mark_changed` before
//! each write; a block whose bit is not yet set costs one bitmap page write and one sync,
//! amortised by also marking the next `MARK_AHEAD_BLOCKS` blocks of the free list, which
//! are the next to be written. A crash can therefore set bits for blocks never written
//! (harmless: the backup copies a few more blocks) but never miss one that was.
//!
//! The page codec is `format::bitmap_page`; this module keeps the bits in memory and
//! reads and writes the pages (`Disk::mark_changed` and the load at open are in `disk`,
//! starting a generation offline in `namespace`). Generation 0 means no
//! backup has started a generation (or the bitmap was found damaged): the next backup must
//! be full. The backup tool starts a new generation by rewriting every page with zeroed
//! bits and the new generation, syncing, then updating the header.

use crate::device::{AlignedBuf, Device};
use crate::error::Result;
use crate::format::{
    bitmap_len_bytes, decode_bitmap_page, encode_bitmap_page, DeviceHeader, BITMAP_BLOCKS_PER_PAGE,
    BITMAP_OFFSET, BITMAP_PAGE_BITS_BYTES,
};

pub const PAGE_SIZE: usize = crate::limits::BITMAP_PAGE_SIZE;
const PAGE_BITS: usize = BITMAP_PAGE_BITS_BYTES;
pub const BLOCKS_PER_PAGE: u64 = BITMAP_BLOCKS_PER_PAGE;
/// Free blocks marked along with a block about to be written (the next ones to be used).
pub const MARK_AHEAD_BLOCKS: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBitmap {
    generation: u64,
    block_count: u64,
    /// The bits of every page, pages concatenated (4080 bytes each).
    bits: Vec<u8>,
}

impl ChangeBitmap {
    /// All bits clear, at `generation`.
    pub fn new(generation: u64, block_count: u64) -> Self {
        let pages = bitmap_len_bytes(block_count) as usize / PAGE_SIZE;
        ChangeBitmap { generation, block_count, bits: vec![0; pages * PAGE_BITS] }
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by spike-backup
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Decodes the bitmap region; `Err` names why it cannot be trusted.
    pub fn decode(region: &[u8], header: &DeviceHeader) -> std::result::Result<Self, String> {
        let mut bitmap = ChangeBitmap::new(header.bitmap_generation, header.wblock_count);
        let pages = bitmap.bits.len() / PAGE_BITS;
        if region.len() < pages * PAGE_SIZE {
            return Err(format!("bitmap region is {} bytes, {} expected", region.len(), pages * PAGE_SIZE));
        }
        for (page, chunk) in region.chunks(PAGE_SIZE).take(pages).enumerate() {
            let (generation, bits) =
                decode_bitmap_page(chunk).map_err(|reason| format!("bitmap page {page}: {reason}"))?;
            if generation != header.bitmap_generation {
                return Err(format!(
                    "bitmap page {page} is of generation {generation}, the header says {}",
                    header.bitmap_generation
                ));
            }
            bitmap.bits[page * PAGE_BITS..(page + 1) * PAGE_BITS].copy_from_slice(bits);
        }
        Ok(bitmap)
    }

    /// Reads the bitmap of a device. The outer error is an I/O failure; the inner one says
    /// why the bitmap cannot be trusted.
    pub fn read(device: &dyn Device, header: &DeviceHeader) -> Result<std::result::Result<Self, String>> {
        let mut region = AlignedBuf::zeroed(bitmap_len_bytes(header.wblock_count) as usize);
        device.read_at(&mut region, BITMAP_OFFSET)?;
        Ok(Self::decode(&region, header))
    }

    pub fn is_set(&self, block: u32) -> bool {
        let b = block as usize;
        self.bits.get(b / 8).is_some_and(|byte| byte & (1 << (b % 8)) != 0)
    }

    /// Sets a bit; returns the page it lives on if it changed.
    pub fn set(&mut self, block: u32) -> Option<usize> {
        if self.is_set(block) || block as u64 >= self.block_count {
            return None;
        }
        self.bits[block as usize / 8] |= 1 << (block % 8);
        Some(block as usize / BLOCKS_PER_PAGE as usize)
    }

    /// Every block whose bit is set.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by spike-backup
    pub fn changed_blocks(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.block_count as u32).filter(|&b| self.is_set(b))
    }

    /// The encoded bytes of one page.
    pub fn encode_page(&self, page: usize, out: &mut [u8]) {
        encode_bitmap_page(self.generation, &self.bits[page * PAGE_BITS..(page + 1) * PAGE_BITS], out);
    }

    /// Writes the given pages (not synced).
    pub fn write_pages(&self, device: &dyn Device, pages: &[usize]) -> Result<()> {
        let mut buf = AlignedBuf::zeroed(PAGE_SIZE);
        for &page in pages {
            self.encode_page(page, &mut buf);
            device.write_at(&buf, BITMAP_OFFSET + (page * PAGE_SIZE) as u64)?;
        }
        Ok(())
    }

    /// Writes every page (not synced).
    pub fn write_all(&self, device: &dyn Device) -> Result<()> {
        let pages: Vec<usize> = (0..self.bits.len() / PAGE_BITS).collect();
        self.write_pages(device, &pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_and_reject_damage_and_other_generations() {
        let header =
            DeviceHeader { bitmap_generation: 7, wblock_count: 70_000, ..crate::format::test_header() };
        let mut bitmap = ChangeBitmap::new(7, 70_000);
        for block in [0, 1, 32_639, 32_640, 69_999] {
            assert!(bitmap.set(block).is_some());
            assert!(bitmap.set(block).is_none());
        }
        let mut region = vec![0u8; 3 * PAGE_SIZE];
        for (p, page) in region.chunks_mut(PAGE_SIZE).enumerate() {
            bitmap.encode_page(p, page);
        }
        let decoded = ChangeBitmap::decode(&region, &header).unwrap();
        assert_eq!(decoded.changed_blocks().collect::<Vec<_>>(), vec![0, 1, 32_639, 32_640, 69_999]);
        let mut damaged = region.clone();
        damaged[5000] ^= 1;
        assert!(ChangeBitmap::decode(&damaged, &header).unwrap_err().contains("page 1"));
        let other = DeviceHeader { bitmap_generation: 8, ..header };
        assert!(ChangeBitmap::decode(&region, &other).unwrap_err().contains("generation 7"));
    }
}
