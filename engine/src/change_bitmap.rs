//! Change tracking for incremental backups: one bit per write block, set for every block
//! written since the last backup, kept in the device's reserved area.
//!
//! Invariant: a block's bit is durable before any write to that block can land (data,
//! partial flush, free marking, snapshot). The flusher calls [`Disk::mark_changed`] before
//! each write; a block whose bit is not yet set costs one bitmap page write and one sync,
//! amortised by also marking the next `MARK_AHEAD_BLOCKS` blocks of the free list, which
//! are the next to be written. A crash can therefore set bits for blocks never written
//! (harmless: the backup copies a few more blocks) but never miss one that was.
//!
//! Page layout (4096 bytes each, from `BITMAP_OFFSET`): the bitmap generation (u64 LE),
//! an xxh3-64 of the generation and the bits (u64 LE), then 4080 bytes of bits, block `b`
//! at bit `b % 32640` (least significant first) of page `b / 32640`. Generation 0 means no
//! backup has started a generation (or the bitmap was found damaged): the next backup must
//! be full. The backup tool starts a new generation by rewriting every page with zeroed
//! bits and the new generation, syncing, then updating the header.

use crate::device::{AlignedBuf, Device};
use crate::disk::Disk;
use crate::error::Result;
use crate::format::{DeviceHeader, BITMAP_OFFSET};
use xxhash_rust::xxh3::Xxh3Default;

pub const PAGE_SIZE: usize = crate::limits::BITMAP_PAGE_SIZE;
const PAGE_HEADER_SIZE: usize = 16;
pub const BLOCKS_PER_PAGE: u64 = ((PAGE_SIZE - PAGE_HEADER_SIZE) * 8) as u64;
/// Free blocks marked along with a block about to be written (the next ones to be used).
pub const MARK_AHEAD_BLOCKS: usize = 16;

/// Bytes of bitmap for `wblock_count` blocks: whole pages.
pub fn bitmap_len_bytes(wblock_count: u64) -> u64 {
    wblock_count.div_ceil(BLOCKS_PER_PAGE).max(1) * PAGE_SIZE as u64
}

fn page_checksum(generation: u64, bits: &[u8]) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(bits);
    hasher.digest()
}

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
        ChangeBitmap { generation, block_count, bits: vec![0; pages * (PAGE_SIZE - PAGE_HEADER_SIZE)] }
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by spike-backup
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Decodes the bitmap region; `Err` names why it cannot be trusted.
    pub fn decode(region: &[u8], header: &DeviceHeader) -> std::result::Result<Self, String> {
        let mut bitmap = ChangeBitmap::new(header.bitmap_generation, header.wblock_count);
        let pages = bitmap.bits.len() / (PAGE_SIZE - PAGE_HEADER_SIZE);
        if region.len() < pages * PAGE_SIZE {
            return Err(format!("bitmap region is {} bytes, {} expected", region.len(), pages * PAGE_SIZE));
        }
        for (page, chunk) in region.chunks(PAGE_SIZE).take(pages).enumerate() {
            let generation = u64::from_le_bytes(chunk[0..8].try_into().unwrap_or_default());
            let checksum = u64::from_le_bytes(chunk[8..16].try_into().unwrap_or_default());
            let bits = &chunk[PAGE_HEADER_SIZE..];
            if checksum != page_checksum(generation, bits) {
                return Err(format!("bitmap page {page} fails its checksum"));
            }
            if generation != header.bitmap_generation {
                return Err(format!(
                    "bitmap page {page} is of generation {generation}, the header says {}",
                    header.bitmap_generation
                ));
            }
            let span = PAGE_SIZE - PAGE_HEADER_SIZE;
            bitmap.bits[page * span..(page + 1) * span].copy_from_slice(bits);
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
    pub fn encode_page(&self, page: usize) -> Vec<u8> {
        let span = PAGE_SIZE - PAGE_HEADER_SIZE;
        let bits = &self.bits[page * span..(page + 1) * span];
        let mut out = Vec::with_capacity(PAGE_SIZE);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&page_checksum(self.generation, bits).to_le_bytes());
        out.extend_from_slice(bits);
        out
    }

    /// Writes the given pages (not synced).
    pub fn write_pages(&self, device: &dyn Device, pages: &[usize]) -> Result<()> {
        let mut buf = AlignedBuf::zeroed(PAGE_SIZE);
        for &page in pages {
            buf.copy_from_slice(&self.encode_page(page));
            device.write_at(&buf, BITMAP_OFFSET + (page * PAGE_SIZE) as u64)?;
        }
        Ok(())
    }

    /// Writes every page (not synced).
    pub fn write_all(&self, device: &dyn Device) -> Result<()> {
        let pages: Vec<usize> = (0..self.bits.len() / (PAGE_SIZE - PAGE_HEADER_SIZE)).collect();
        self.write_pages(device, &pages)
    }
}

/// Starts a new bitmap generation on an offline device (the backup tool's step once its
/// image is safely written): every page rewritten with zeroed bits and `generation`, synced,
/// then the header records the generation and the image that started it. A crash between
/// the two leaves pages and header of different generations: untrusted, so the next backup
/// is full, never one that misses a change.
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by spike-backup
pub fn start_generation(
    device: &dyn Device,
    header: &mut DeviceHeader,
    generation: u64,
    image_uuid: [u8; 16],
) -> Result<()> {
    ChangeBitmap::new(generation, header.wblock_count).write_all(device)?;
    device.sync()?;
    header.bitmap_generation = generation;
    header.bitmap_reset_image_uuid = image_uuid;
    crate::namespace::write_header(device, header)
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
        let region: Vec<u8> = (0..3).flat_map(|p| bitmap.encode_page(p)).collect();
        let decoded = ChangeBitmap::decode(&region, &header).unwrap();
        assert_eq!(decoded.changed_blocks().collect::<Vec<_>>(), vec![0, 1, 32_639, 32_640, 69_999]);
        let mut damaged = region.clone();
        damaged[5000] ^= 1;
        assert!(ChangeBitmap::decode(&damaged, &header).unwrap_err().contains("page 1"));
        let other = DeviceHeader { bitmap_generation: 8, ..header };
        assert!(ChangeBitmap::decode(&region, &other).unwrap_err().contains("generation 7"));
    }
}
