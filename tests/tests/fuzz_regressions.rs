//! Replays the inputs saved under `fuzz/regressions/` (what the fuzz targets found) and a
//! few hand-written nasty ones through the on-device decoders: none of them may panic.
//! The fuzz targets check more (exact round trips); this keeps the no-panic promise in
//! `cargo test`, which needs no nightly toolchain.
//!
//! Like the targets, each input is tried as given and re-sealed (its checksum recomputed),
//! since a saved input may only reach the checks behind the checksum once re-sealed.

use spike::device::sim::SimDevice;
use spike::device::Device;
use spike::offline::format::{
    block_records, classify_block, decode_bitmap_page, decode_record, decode_snapshot_chain, encode_record,
    parse_snapshot_payload, pick_header, record_size, DeviceHeader, HeaderProblem, RecordMeta, RecordProblem,
    WblockHeader, DEVICE_HEADER_SIZE, RECORD_HEADER_SIZE,
};
use spike::{Config, Engine};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

/// Saved inputs that still panic the engine, so that a crash can be saved before its fix
/// without failing every other replay; `known_panicking_inputs_no_longer_panic` replays
/// them. Empty: the inputs found so far were fixed in 7ce8557.
const KNOWN_PANICS: &[&str] = &[];

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        })
        .collect();
    files.sort();
    files
}

/// The record with its checksum recomputed over the lengths its header claims.
fn reseal_record(data: &[u8]) -> Option<Vec<u8>> {
    let header = data.get(..RECORD_HEADER_SIZE)?;
    let key_len = u16::from_le_bytes([header[4], header[5]]) as usize;
    let value_len = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
    let body =
        data.get(RECORD_HEADER_SIZE..RECORD_HEADER_SIZE.checked_add(key_len)?.checked_add(value_len)?)?;
    let mut hasher = Xxh3Default::new();
    hasher.update(&header[..48]);
    hasher.update(body);
    let mut sealed = data.to_vec();
    sealed[48..56].copy_from_slice(&hasher.digest().to_le_bytes());
    Some(sealed)
}

/// The two header slots, each zero-padded to a whole header and re-sealed.
fn reseal_headers(data: &[u8]) -> Vec<u8> {
    let mut sealed = vec![0u8; 2 * DEVICE_HEADER_SIZE];
    let n = data.len().min(sealed.len());
    sealed[..n].copy_from_slice(&data[..n]);
    for slot in sealed.chunks_mut(DEVICE_HEADER_SIZE) {
        let checksum = xxh3_64(&slot[..DEVICE_HEADER_SIZE - 8]);
        slot[DEVICE_HEADER_SIZE - 8..].copy_from_slice(&checksum.to_le_bytes());
    }
    if data.starts_with(b"SPWB") {
        let checksum = xxh3_64(&sealed[..56]);
        sealed[56..64].copy_from_slice(&checksum.to_le_bytes());
    }
    sealed
}

fn decode_records(data: &[u8]) {
    for bytes in std::iter::once(data.to_vec()).chain(reseal_record(data)) {
        if let Ok(view) = decode_record(&bytes) {
            assert!(view.size_bytes >= RECORD_HEADER_SIZE + view.key.len() + view.value.len());
        }
        for seq in [0, 1] {
            block_records(&bytes, seq).for_each(drop);
        }
    }
}

fn decode_headers(data: &[u8]) {
    for bytes in [data.to_vec(), reseal_headers(data)] {
        let _ = DeviceHeader::decode(&bytes);
        let _ = WblockHeader::decode(&bytes);
        let slot = |i: usize| bytes.get(i * DEVICE_HEADER_SIZE..).unwrap_or_default();
        let _ = pick_header(slot(0), slot(1));
    }
}

/// The layout layer's other decoders (`layout_decoders` target), as given and with a
/// snapshot magic in front.
fn decode_layout(data: &[u8]) {
    let with_magic = |magic: &[u8; 8]| {
        let mut bytes = data.to_vec();
        if bytes.len() >= 8 {
            bytes[..8].copy_from_slice(magic);
        }
        bytes
    };
    for bytes in [data, &with_magic(b"SPSNAP02"), &with_magic(b"SPSNAP03")] {
        let _ = classify_block(bytes, &[0; 16], 0);
        let _ = decode_bitmap_page(bytes);
        let _ = decode_snapshot_chain(bytes);
        let claimed = bytes.get(24..32).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        for count in [claimed, 0, 1, u64::MAX] {
            if let Ok(contents) = parse_snapshot_payload(bytes, count) {
                contents.entries().for_each(drop);
            }
        }
    }
}

/// Runs `decode` on the saved inputs of `target` that `pick` names; returns those that panicked.
fn panicking(target: &str, pick: fn(&str) -> bool, decode: fn(&[u8])) -> Vec<String> {
    regressions(target)
        .into_iter()
        .filter(|(name, _)| pick(name))
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| decode(data))).is_err())
        .map(|(name, _)| format!("fuzz/regressions/{target}/{name}"))
        .collect()
}

#[test]
fn saved_record_decoder_inputs_do_not_panic() {
    assert!(!regressions("record_decoder").is_empty());
    let failed = panicking("record_decoder", |name| !KNOWN_PANICS.contains(&name), decode_records);
    assert!(failed.is_empty(), "decoders panicked on {failed:?}");
}

#[test]
fn saved_header_decoder_inputs_do_not_panic() {
    assert!(!regressions("header_decoder").is_empty());
    let failed = panicking("header_decoder", |name| !KNOWN_PANICS.contains(&name), decode_headers);
    assert!(failed.is_empty(), "decoders panicked on {failed:?}");
}

#[test]
fn saved_layout_decoder_inputs_do_not_panic() {
    assert!(!regressions("layout_decoders").is_empty());
    let failed = panicking("layout_decoders", |name| !KNOWN_PANICS.contains(&name), decode_layout);
    assert!(failed.is_empty(), "decoders panicked on {failed:?}");
}

#[test]
fn known_panicking_inputs_no_longer_panic() {
    let known = |name: &str| KNOWN_PANICS.contains(&name);
    let mut failed = panicking("record_decoder", known, decode_records);
    failed.extend(panicking("header_decoder", known, decode_headers));
    failed.extend(panicking("layout_decoders", known, decode_layout));
    assert!(failed.is_empty(), "still panicking: {failed:?}");
}

fn sample_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let meta = RecordMeta {
        digest: [7; 20],
        generation: 3,
        void_time: 0,
        last_update_ms: 1_700_000_000_000,
        tombstone: false,
        wblock_seq_lo: 9,
        shared_tag: false,
    };
    let mut out = vec![0u8; record_size(key.len(), value.len())];
    encode_record(&meta, key, value, &mut out);
    out
}

/// A real device header: the one `Engine::format_devices` writes on a simulated device.
fn formatted_device() -> (Config, Vec<u8>) {
    let config = Config { namespace: "fuzz".into(), write_block_size: 128 * 1024, ..Config::default() };
    let sim = Arc::new(SimDevice::new("sim0", 4 << 20, 1));
    Engine::format_devices(&config, &[sim.clone() as Arc<dyn Device>], false).expect("format");
    (config, sim.live_image())
}

#[test]
fn nasty_inputs_do_not_panic_the_decoders() {
    for data in [vec![], vec![0xFF; 1], vec![0xFF; 64], vec![0xFF; 4096], vec![0xFF; 8192], vec![0; 8192]] {
        decode_records(&data);
        decode_headers(&data);
        decode_layout(&data);
    }

    let record = sample_record(b"key", &[0xAB; 100]);
    assert!(decode_record(&record).is_ok());
    let body_end = RECORD_HEADER_SIZE + 3 + 100;
    for len in 0..record.len() {
        decode_records(&record[..len]);
        if len < body_end {
            assert!(decode_record(&record[..len]).is_err(), "record truncated to {len} bytes decoded");
        }
    }
    let mut huge_lengths = record.clone();
    huge_lengths[4..6].copy_from_slice(&u16::MAX.to_le_bytes());
    huge_lengths[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode_record(&huge_lengths), Err(RecordProblem::BadLength));
    decode_records(&huge_lengths);

    let (_, image) = formatted_device();
    let slots = &image[..2 * DEVICE_HEADER_SIZE];
    let header =
        pick_header(&slots[..DEVICE_HEADER_SIZE], &slots[DEVICE_HEADER_SIZE..]).expect("fresh header");
    let mut flipped = header.encode();
    flipped[DEVICE_HEADER_SIZE - 1] ^= 0x01;
    assert!(matches!(DeviceHeader::decode(&flipped), Err(HeaderProblem::Damaged(_))));
    assert_eq!(pick_header(&flipped, &header.encode()), Ok(header.clone()));
    decode_headers(&flipped);
    for len in [0, 8, DEVICE_HEADER_SIZE - 1] {
        assert_eq!(DeviceHeader::decode(&header.encode()[..len]), Err(HeaderProblem::NoMagic));
    }
}

#[test]
fn header_whose_device_span_overflows_is_refused_at_open() {
    let (config, mut image) = formatted_device();
    let slot = DEVICE_HEADER_SIZE;
    let mut header = DeviceHeader::decode(&image[slot..slot + DEVICE_HEADER_SIZE]).expect("slot 1 header");
    // Passes check_geometry (aligned, past the reserved area, a few blocks), but
    // first_wblock_offset + wblock_count * write_block_size wraps past u64::MAX.
    header.first_wblock_offset = 0u64.wrapping_sub(config.write_block_size as u64);
    header.wblock_count = 4;
    image[slot..slot + DEVICE_HEADER_SIZE].copy_from_slice(&header.encode());
    let device: Arc<dyn Device> = Arc::new(SimDevice::from_image("sim0", image, 2));
    let opened = catch_unwind(AssertUnwindSafe(|| Engine::open_devices(config, vec![device]).map(drop)));
    assert!(matches!(opened, Ok(Err(_))), "open must refuse the header, not panic or accept it");
}

#[test]
fn namespace_name_filling_its_whole_field_is_damaged() {
    let (_, image) = formatted_device();
    let mut bytes = image[DEVICE_HEADER_SIZE..2 * DEVICE_HEADER_SIZE].to_vec();
    // The name field is bytes 56..88: 31 bytes of name and room for its NUL.
    bytes[56..88].fill(b'n');
    let checksum = xxh3_64(&bytes[..DEVICE_HEADER_SIZE - 8]);
    bytes[DEVICE_HEADER_SIZE - 8..].copy_from_slice(&checksum.to_le_bytes());
    assert!(matches!(DeviceHeader::decode(&bytes), Err(HeaderProblem::Damaged(_))));
}
