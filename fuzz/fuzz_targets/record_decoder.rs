//! `decode_record` on arbitrary bytes: it never panics, and a record it accepts re-encodes
//! (`encode_record` into `record_size(key, value)` bytes) to exactly the bytes it was
//! decoded from, padding included.
//!
//! Random bytes almost never carry a valid xxh3 checksum, so every input is tried twice:
//! as given, and re-sealed (the checksum recomputed over the lengths its header claims),
//! so that the fuzzer also explores what the decoder checks after the checksum: lengths,
//! flags, reserved bytes. The input is also walked as a write block with `block_records`. `tests/tests/fuzz_regressions.rs` replays saved inputs.
//!
//! Known finding (fuzz/README.md): the decoder accepts bytes the encoder never writes
//! (non-zero padding, reserved bytes 6..8, unknown flag bits), so such records do not
//! re-encode to their input. `SPIKE_FUZZ_ALLOW_NONCANONICAL=1` tolerates exactly those
//! bytes, to keep fuzzing for other problems until the decoder rejects them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike::offline::format::{
    block_records, decode_record, encode_record, record_size, BlockItem, FLAG_TOMBSTONE, RECORD_ALIGN,
    RECORD_HEADER_SIZE, WBLOCK_HEADER_SIZE,
};
use std::sync::OnceLock;

fn allow_noncanonical() -> bool {
    static ALLOW: OnceLock<bool> = OnceLock::new();
    *ALLOW.get_or_init(|| std::env::var_os("SPIKE_FUZZ_ALLOW_NONCANONICAL").is_some_and(|v| v == "1"))
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(sealed) = reseal(data) {
        check(&sealed);
    }
    check_block_walk(data);
    // The same with the block's first record (after its 64-byte header) re-sealed.
    if let Some(sealed) = data.get(WBLOCK_HEADER_SIZE..).and_then(reseal) {
        check_block_walk(&[&data[..WBLOCK_HEADER_SIZE], &sealed[..]].concat());
    }
});

/// The block walker (recovery's and defrag's) over the input as a block: it moves forward
/// in 16-byte steps and every record it yields lies inside the block.
fn check_block_walk(block: &[u8]) {
    let seq = block.get(8..16).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let mut last = None;
    for item in block_records(block, seq) {
        let offset = match item {
            BlockItem::Record { offset, view } => {
                assert_eq!(view.meta.wblock_seq_lo, seq as u32);
                assert!(offset + RECORD_HEADER_SIZE + view.key.len() + view.value.len() <= block.len());
                offset
            }
            BlockItem::Stale { offset } | BlockItem::Corrupt { offset, .. } => offset,
        };
        assert!(offset % RECORD_ALIGN == 0 && offset < block.len(), "walker offset {offset}");
        assert!(last.is_none_or(|l| offset > l), "walker went back from {last:?} to {offset}");
        last = Some(offset);
    }
}

fn check(data: &[u8]) {
    let Ok(view) = decode_record(data) else { return };
    let size = record_size(view.key.len(), view.value.len());
    assert_eq!(view.size_bytes, size, "size_bytes disagrees with record_size");
    let mut encoded = vec![0u8; size];
    encode_record(&view.meta, view.key, view.value, &mut encoded);
    // The input may stop inside the padding; compare what it has.
    let compared = size.min(data.len());
    let body_end = RECORD_HEADER_SIZE + view.key.len() + view.value.len();
    let noncanonical = |at: usize| match at {
        3 => (encoded[3] ^ data[3]) & FLAG_TOMBSTONE == 0,
        6 | 7 => true,
        _ => at >= body_end,
    };
    // Bytes 3, 6 and 7 are checksummed: when they differ, so does the checksum.
    let header_differs = [3, 6, 7].iter().any(|&at| encoded[at] != data[at] && noncanonical(at));
    let tolerated =
        |at: usize| allow_noncanonical() && (noncanonical(at) || (header_differs && (48..56).contains(&at)));
    let differing = (0..compared).find(|&at| encoded[at] != data[at] && !tolerated(at));
    assert!(
        differing.is_none(),
        "decoded record re-encodes differently: byte {differing:?} of {size} (body ends at {body_end})"
    );
    let again = decode_record(&encoded).expect("a re-encoded record decodes");
    assert_eq!(again, view, "decode(encode(decode(x))) != decode(x)");
}

/// The input with its record checksum recomputed, when its claimed lengths fit in it.
fn reseal(data: &[u8]) -> Option<Vec<u8>> {
    let header = data.get(..RECORD_HEADER_SIZE)?;
    let key_len = u16::from_le_bytes([header[4], header[5]]) as usize;
    let value_len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let body_end = RECORD_HEADER_SIZE.checked_add(key_len)?.checked_add(value_len)?;
    let body = data.get(RECORD_HEADER_SIZE..body_end)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(&header[..48]);
    hasher.update(body);
    let mut sealed = data.to_vec();
    sealed[48..56].copy_from_slice(&hasher.digest().to_le_bytes());
    Some(sealed)
}
