//! The backup image reader on arbitrary bytes: `spike_tools::backup::image::check_image_bytes`
//! (header, trailer, block list, summary, content digest, reserved region and every stored
//! block, zstd included) never panics and never allocates past what the input holds; an
//! image it accepts has its stored blocks inside the data area and a full image lists every
//! write block.
//!
//! Random bytes almost never carry valid xxh3 checksums, so every input is also tried
//! re-sealed: the image-header checksum (bytes 4088..4096) and the trailer's metadata
//! checksum (last 8 bytes, over header, block list, summary and trailer) recomputed, using
//! the offsets the trailer itself names, so the fuzzer reaches the structural checks behind
//! them. The layout is in ARCHITECTURE.md, "Backup image format".
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_tools::backup::image::{check_image_bytes, IMAGE_HEADER_SIZE, TRAILER_SIZE};
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&reseal(data));
});

fn check(data: &[u8]) {
    if let Ok(meta) = check_image_bytes(data) {
        let trailer_at = data.len() as u64 - TRAILER_SIZE as u64;
        for entry in meta.entries.iter().filter(|e| e.is_data()) {
            assert!(entry.offset >= IMAGE_HEADER_SIZE as u64);
            assert!(entry.offset + entry.stored_len as u64 <= trailer_at);
        }
        if !meta.header.is_incremental() {
            assert_eq!(meta.entries.len() as u64, meta.header.wblock_count);
        }
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}

fn reseal(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < IMAGE_HEADER_SIZE + TRAILER_SIZE {
        return out;
    }
    let checksum = xxh3_64(&out[..IMAGE_HEADER_SIZE - 8]);
    out[IMAGE_HEADER_SIZE - 8..IMAGE_HEADER_SIZE].copy_from_slice(&checksum.to_le_bytes());
    let trailer_at = out.len() - TRAILER_SIZE;
    let list_at = le_u64(&out[trailer_at..], 40) as usize;
    let tables = if list_at >= IMAGE_HEADER_SIZE && list_at <= trailer_at { list_at..trailer_at } else { 0..0 };
    let mut hasher = Xxh3Default::new();
    hasher.update(&out[..IMAGE_HEADER_SIZE]);
    hasher.update(&out[tables]);
    hasher.update(&out[trailer_at..trailer_at + TRAILER_SIZE - 8]);
    let checksum = hasher.digest();
    out[trailer_at + TRAILER_SIZE - 8..].copy_from_slice(&checksum.to_le_bytes());
    out
}
