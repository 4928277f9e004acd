//! Unit tests of the image layout: round trip, every flipped byte and cut caught, future
//! versions named, unfinished writers leave nothing.

use super::super::writer::ImageWriter;
use super::*;

fn header(flags: u32) -> ImageHeader {
    ImageHeader {
        flags,
        image_uuid: [1; 16],
        parent_uuid: if flags & FLAG_INCREMENTAL != 0 { [2; 16] } else { [0; 16] },
        parent_digest: [0; 16],
        device_uuid: [3; 16],
        namespace_uuid: [4; 16],
        namespace_name: "ns".into(),
        device_size_bytes: 6 * 131072,
        span_bytes: 6 * 131072,
        write_block_size: 131072,
        device_index: 0,
        first_wblock_offset: 131072,
        wblock_count: 5,
        base_generation: 0,
        new_generation: 9,
        created_unix_s: 1,
    }
}

/// A full image of 5 blocks: 0 and 3 stored (3 compressed), the rest free.
fn sample(dir: &Path) -> Vec<u8> {
    let out = dir.join("img");
    let mut w = ImageWriter::create(&out, header(FLAG_COMPRESSED)).unwrap();
    let reserved = vec![7u8; 131072];
    w.write_reserved(&reserved, COMPRESSION_NONE, xxh3_64(&reserved)).unwrap();
    let block0 = vec![5u8; 131072];
    let block3 = vec![0u8; 131072];
    let mut summary = vec![0u64; 5];
    let e0 = BlockEntry {
        state: STATE_DATA,
        kind: 1,
        write_seq: 4,
        checksum: xxh3_64(&block0),
        ..BlockEntry::free(0)
    };
    w.write_block(e0, &block0).unwrap();
    summary[0] = fingerprint(&e0);
    w.write_free(1);
    w.write_free(2);
    let packed = zstd::bulk::compress(&block3, 1).unwrap();
    let e3 = BlockEntry {
        state: STATE_DATA,
        compression: COMPRESSION_ZSTD,
        kind: 1,
        write_seq: 5,
        checksum: xxh3_64(&block3),
        ..BlockEntry::free(3)
    };
    w.write_block(e3, &packed).unwrap();
    summary[3] = fingerprint(&e3);
    w.write_free(4);
    w.finish(&ImageTail { summary, max_data_seq: 5, max_snapshot_seq: 0 }).unwrap();
    std::fs::read(&out).unwrap()
}

#[test]
fn an_image_round_trips_and_every_flipped_byte_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = sample(dir.path());
    let meta = check_image_bytes(&bytes).unwrap();
    assert_eq!(meta.stored_blocks(), 2);
    assert_eq!(meta.compressed_blocks(), 1);
    assert_eq!(meta.max_data_seq, 5);
    for at in (0..bytes.len()).step_by(97).chain([8, bytes.len() - 1]) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(check_image_bytes(&bad).is_err(), "flip at {at} not caught");
    }
    for cut in [0, 7, 100, 4096, bytes.len() / 2, bytes.len() - 1] {
        assert!(check_image_bytes(&bytes[..cut]).is_err(), "cut at {cut} not caught");
    }
}

#[test]
fn a_future_version_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = sample(dir.path());
    put_u32(&mut bytes, H_VERSION, 2);
    let checksum = xxh3_64(&bytes[..H_CHECKSUM]);
    put_u64(&mut bytes, H_CHECKSUM, checksum);
    assert!(matches!(check_image_bytes(&bytes), Err(ImageError::Version { found: 2, .. })));
}

#[test]
fn an_unfinished_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    drop(ImageWriter::create(&out, header(0)).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(ImageWriter::create(&out, header(0)).is_ok());
}
