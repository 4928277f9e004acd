use super::*;

fn sample_header() -> DeviceHeader {
    DeviceHeader {
        sequence: 3,
        device_count: 2,
        write_block_size: WBLOCK_SIZE_DEFAULT,
        flags: HEADER_FLAG_CLEAN,
        first_wblock_offset: WBLOCK_SIZE_DEFAULT as u64,
        wblock_count: 100,
        open_count: 7,
        snapshot: SnapshotRef { offset: 1, len_bytes: 2, checksum: 3, open_count: 7 },
        bitmap_generation: 9,
        bitmap_reset_image_uuid: [5; 16],
        created_unix_s: 1_700_000_000,
        write_seq_reserved: 0,
        digest_secret: [6; DIGEST_SECRET_SIZE],
        ..test_header()
    }
}

#[test]
fn device_header_round_trips_and_detects_any_flipped_bit() {
    let header = sample_header();
    let bytes = header.encode();
    assert_eq!(DeviceHeader::decode(&bytes), Ok(header));
    for bit in (0..DEVICE_HEADER_SIZE * 8).step_by(97) {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(DeviceHeader::decode(&damaged).is_err(), "bit {bit} flip went unnoticed");
    }
}

#[test]
fn newer_valid_header_copy_wins_and_a_damaged_one_is_ignored() {
    let mut older = sample_header();
    older.sequence = 4;
    let mut newer = sample_header();
    newer.sequence = 5;
    assert_eq!(pick_header(&older.encode(), &newer.encode()).unwrap().sequence, 5);
    let mut torn = newer.encode();
    torn[100] ^= 0xFF;
    assert_eq!(pick_header(&older.encode(), &torn).unwrap().sequence, 4);
    assert_eq!(pick_header(&[0; 4096], &[0; 4096]), Err(HeaderProblem::NoMagic));
}

#[test]
fn header_of_another_format_version_is_reported_as_such() {
    let mut header = sample_header();
    header.format_version = FORMAT_VERSION + 1;
    assert_eq!(DeviceHeader::decode(&header.encode()), Err(HeaderProblem::Version(FORMAT_VERSION + 1)));
}

#[test]
fn record_round_trips_with_padding_to_16_bytes() {
    let meta = RecordMeta {
        digest: [9; 20],
        generation: 42,
        void_time: 0,
        last_update_ms: 123,
        tombstone: false,
        wblock_seq_lo: 77,
        shared_tag: false,
    };
    for (key, value) in [(&b""[..], &b""[..]), (b"k", b"value"), (b"key!", &[7u8; 1000][..])] {
        let size = record_size(key.len(), value.len());
        assert_eq!(size % RECORD_ALIGN, 0);
        let mut buf = vec![0xAA; size + 32];
        encode_record(&meta, key, value, &mut buf[..size]);
        let view = decode_record(&buf).unwrap();
        assert_eq!((view.meta, view.key, view.value, view.size_bytes), (meta, key, value, size));
    }
}

#[test]
fn the_one_run_checksum_of_encode_equals_the_streaming_one_of_decode() {
    let meta = RecordMeta {
        digest: [3; 20],
        generation: 7,
        void_time: 9,
        last_update_ms: u64::MAX - 1,
        tombstone: true,
        wblock_seq_lo: 0xdead_beef,
        shared_tag: false,
    };
    for value_len in (0..300).chain([1000, 1023, 4096, 70_000]) {
        let key: Vec<u8> = (0..value_len % 40).map(|i| i as u8).collect();
        let value: Vec<u8> = (0..value_len).map(|i| (i * 31 % 251) as u8).collect();
        let size = record_size(key.len(), value.len());
        let mut buf = vec![0x55; size];
        encode_record(&meta, &key, &value, &mut buf);
        let view = decode_record(&buf).unwrap();
        assert_eq!((view.meta, view.key, view.value), (meta, &key[..], &value[..]), "value {value_len}");
        let mut header = buf[..56].to_vec();
        header.extend_from_slice(&buf[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + key.len() + value.len()]);
        assert_eq!(le_u64(&buf, 56), xxhash_rust::xxh3::xxh3_64(&header));
    }
}

#[test]
fn record_decoder_rejects_flipped_bits_and_truncation() {
    let meta = RecordMeta {
        digest: [1; 20],
        generation: 1,
        void_time: 5,
        last_update_ms: 6,
        tombstone: true,
        wblock_seq_lo: 1,
        shared_tag: false,
    };
    let size = record_size(3, 40);
    let mut buf = vec![0; size];
    encode_record(&meta, b"abc", &[1; 40], &mut buf);
    for bit in 0..(RECORD_HEADER_SIZE + 43) * 8 {
        let mut damaged = buf.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(decode_record(&damaged).is_err(), "bit {bit}");
    }
    assert_eq!(decode_record(&buf[..size - 16]), Err(RecordProblem::BadLength));
    assert_eq!(decode_record(&[0; 64]), Err(RecordProblem::End));
}

#[test]
fn wblock_header_round_trips() {
    let header =
        WblockHeader { kind: WBLOCK_KIND_DATA, write_seq: 99, device_uuid: [3; 16], wblock_index: 12 };
    let mut buf = [0u8; 64];
    header.encode_into(&mut buf);
    assert_eq!(WblockHeader::decode(&buf), Some(header));
    buf[9] ^= 1;
    assert_eq!(WblockHeader::decode(&buf), None);
}

#[test]
fn digest_depends_on_the_namespace_secret() {
    let secret = |seed| {
        let mut rng = crate::device::sim::SimRng::new(seed);
        std::array::from_fn::<u8, DIGEST_SECRET_SIZE, _>(|_| rng.next_u64() as u8)
    };
    for key in [&b"k"[..], b"key", b"a longer key of several words", &[0u8; 300]] {
        let a = digest(&secret(1), key);
        assert_ne!(a, digest(&secret(2), key));
        assert_eq!(a, digest(&secret(1), key));
    }
}

#[test]
fn copy_order_is_generation_then_update_time_then_block_sequence() {
    let base = CopyOrder { generation: 5, last_update_ms: 100, block_seq: 7 };
    // A higher generation wins whatever its time and block.
    assert!(CopyOrder { generation: 6, last_update_ms: 0, block_seq: 0 } > base);
    // Equal generations: the later update, then the later block.
    assert!(CopyOrder { last_update_ms: 101, block_seq: 0, ..base } > base);
    assert!(CopyOrder { block_seq: 8, ..base } > base);
    assert!(CopyOrder { block_seq: 6, ..base } < base);
    // Comparing by generation alone gives the same answer when generations differ.
    assert!(base > CopyOrder::by_generation(4));
    assert!(base < CopyOrder::by_generation(6));
}
