//! Change-bitmap pages (4096 bytes each, from `BITMAP_OFFSET`): the bitmap generation
//! (u64 LE), an xxh3-64 of the generation and the bits (u64 LE), then 4080 bytes of bits,
//! block `b` at bit `b % 32640` (least significant first) of page `b / 32640`.

use super::*;
use crate::limits::BITMAP_PAGE_SIZE;
use xxhash_rust::xxh3::Xxh3Default;

const BITMAP_PAGE_HEADER_SIZE: usize = 16;
/// Bytes of bits in one page.
pub const BITMAP_PAGE_BITS_BYTES: usize = BITMAP_PAGE_SIZE - BITMAP_PAGE_HEADER_SIZE;
pub const BITMAP_BLOCKS_PER_PAGE: u64 = (BITMAP_PAGE_BITS_BYTES * 8) as u64;

/// Bytes of bitmap for `wblock_count` blocks: whole pages, at least one.
pub fn bitmap_len_bytes(wblock_count: u64) -> u64 {
    wblock_count.div_ceil(BITMAP_BLOCKS_PER_PAGE).max(1) * BITMAP_PAGE_SIZE as u64
}

fn page_checksum(generation: u64, bits: &[u8]) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(bits);
    hasher.digest()
}

/// Encodes one page of `BITMAP_PAGE_BITS_BYTES` bits at `generation` into `out` (one page).
pub fn encode_bitmap_page(generation: u64, bits: &[u8], out: &mut [u8]) {
    assert_eq!(bits.len(), BITMAP_PAGE_BITS_BYTES, "a bitmap page holds exactly its bits");
    put_u64(out, 0, generation);
    put_u64(out, 8, page_checksum(generation, bits));
    out[BITMAP_PAGE_HEADER_SIZE..BITMAP_PAGE_SIZE].copy_from_slice(bits);
}

/// Decodes one page: its generation and its bits, or why the page cannot be trusted.
pub fn decode_bitmap_page(page: &[u8]) -> Result<(u64, &[u8]), String> {
    if page.len() < BITMAP_PAGE_SIZE {
        return Err(format!("a bitmap page is {BITMAP_PAGE_SIZE} bytes, {} given", page.len()));
    }
    let generation = le_u64(page, 0);
    let bits = &page[BITMAP_PAGE_HEADER_SIZE..BITMAP_PAGE_SIZE];
    if le_u64(page, 8) != page_checksum(generation, bits) {
        return Err("fails its checksum".into());
    }
    Ok((generation, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_round_trips_and_any_flipped_bit_is_refused() {
        let bits: Vec<u8> = (0..BITMAP_PAGE_BITS_BYTES).map(|i| (i * 7) as u8).collect();
        let mut page = vec![0u8; BITMAP_PAGE_SIZE];
        encode_bitmap_page(9, &bits, &mut page);
        assert_eq!(decode_bitmap_page(&page), Ok((9, &bits[..])));
        for bit in [0, 70, 130, BITMAP_PAGE_SIZE * 8 - 1] {
            page[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_bitmap_page(&page).is_err(), "flipped bit {bit}");
            page[bit / 8] ^= 1 << (bit % 8);
        }
        assert!(decode_bitmap_page(&page[..100]).is_err());
        assert_eq!(bitmap_len_bytes(0), 4096);
        assert_eq!(bitmap_len_bytes(BITMAP_BLOCKS_PER_PAGE + 1), 8192);
    }
}
