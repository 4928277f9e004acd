//! The layout layer's other decoders on arbitrary bytes: the block classifier, the
//! change-bitmap page codec, the snapshot payload parser and its chain header. None may
//! panic; what decodes re-encodes to the bytes it came from (a bitmap page, a snapshot
//! payload), and the classifier agrees with the write-block header decoder.
//!
//! Random bytes almost never carry a valid xxh3 checksum, so a bitmap page is also tried
//! re-sealed, and the input is also tried as a snapshot payload with a valid magic and
//! the block count it claims. `tests/tests/fuzz_regressions.rs` replays saved inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike::offline::format::{
    classify_block, decode_bitmap_page, decode_snapshot_chain, encode_bitmap_page, encode_snapshot_slot,
    encode_snapshot_payload, parse_snapshot_payload, BlockClass, WblockHeader, BITMAP_PAGE_BITS_BYTES,
};
use xxhash_rust::xxh3::Xxh3Default;

fuzz_target!(|data: &[u8]| {
    check_classifier(data);
    check_bitmap_page(data);
    check_bitmap_page(&reseal_page(data));
    check_snapshot(data);
    let mut with_magic = data.to_vec();
    if with_magic.len() >= 8 {
        for magic in [b"SPSNAP02", b"SPSNAP03"] {
            with_magic[..8].copy_from_slice(magic);
            check_snapshot(&with_magic);
        }
    }
    if let Ok((chunk, _next)) = decode_snapshot_chain(data) {
        assert!(chunk.len() <= data.len());
    }
});

fn check_classifier(data: &[u8]) {
    let uuid: [u8; 16] = data.get(16..32).and_then(|b| b.try_into().ok()).unwrap_or([0; 16]);
    let block = data.get(32..36).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    let class = classify_block(data, &uuid, block);
    let header = WblockHeader::decode(data);
    match class {
        BlockClass::NoHeader | BlockClass::DamagedHeader => assert!(header.is_none()),
        _ => assert!(header.is_some(), "{class:?} without a decodable header"),
    }
    if let (BlockClass::Data { write_seq } | BlockClass::Snapshot { open_count: write_seq }, Some(h)) =
        (class, header)
    {
        assert_eq!((h.write_seq, h.device_uuid, h.wblock_index), (write_seq, uuid, block));
    }
}

fn check_bitmap_page(data: &[u8]) {
    let Ok((generation, bits)) = decode_bitmap_page(data) else { return };
    let mut page = vec![0u8; 4096];
    encode_bitmap_page(generation, bits, &mut page);
    assert_eq!(&page[..], &data[..4096], "a decoded bitmap page re-encodes differently");
}

fn reseal_page(data: &[u8]) -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    let n = data.len().min(4096);
    page[..n].copy_from_slice(&data[..n]);
    let mut hasher = Xxh3Default::new();
    hasher.update(&page[..8]);
    hasher.update(&page[16..16 + BITMAP_PAGE_BITS_BYTES]);
    let checksum = hasher.digest();
    page[8..16].copy_from_slice(&checksum.to_le_bytes());
    page
}

fn check_snapshot(data: &[u8]) {
    let claimed = data.get(24..32).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    for wblock_count in [claimed, 0, 1, 4] {
        let Ok(contents) = parse_snapshot_payload(data, wblock_count) else { continue };
        assert_eq!(contents.block_seq.len() as u64, wblock_count);
        let mut entries = Vec::new();
        let mut whole = true;
        for slot in contents.entries() {
            match slot {
                Some(slot) => encode_snapshot_slot(&slot, &mut entries),
                None => whole = false,
            }
        }
        if whole {
            let again =
                encode_snapshot_payload(contents.next_seq, &contents.block_seq, &contents.generation_floors, &entries);
            // Every slot byte is checked, so a payload re-encodes exactly, but for the
            // magic: a version-2 payload is read and written as version 3.
            let mut expected = data.to_vec();
            expected[..8].copy_from_slice(b"SPSNAP03");
            assert_eq!(again, expected, "a parsed payload re-encodes differently");
        }
    }
}
