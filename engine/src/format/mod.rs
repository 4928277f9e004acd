//! The layout layer: every byte format of a device, pure (no locks, threads or I/O), so
//! that the engine, the tools and the fuzz targets decode with the same code.
//! ARCHITECTURE.md has the same tables.
//!
//! Modules: `device_header` (the two header slots), `wblock` (the write-block header and
//! the one block classifier), `record` (the record codec, the block walker and the one
//! newest-copy order), `bitmap_page` (change-bitmap pages), `snapshot_payload` (the
//! fast-restart snapshot's payload and chain headers) and `placement` (digest →
//! partition and device).
//!
//! Every structure that lands on a device carries a magic, a version and an xxh3
//! checksum, and every integer is little-endian. Decoders never panic on any input: they
//! return `None` or a reason, which the fuzz targets check.
//!
//! Layout of a device: the reserved area (two device-header copies at 0 and 4096, then the
//! change bitmap), then `wblock_count` write blocks. Each write block starts with a 64-byte
//! header; records follow, 16-byte aligned, never spanning a block.

mod bitmap_page;
mod device_header;
mod placement;
mod record;
mod snapshot_payload;
mod wblock;

pub use bitmap_page::*;
pub use device_header::*;
pub use placement::*;
pub use record::*;
pub use snapshot_payload::*;
pub use wblock::*;

// The tools read these through `offline::format`.
#[cfg_attr(not(feature = "offline"), allow(unused_imports))]
pub use crate::limits::{
    DEVICE_HEADER_SIZE, DIGEST_SECRET_SIZE, DIGEST_SIZE, KEY_SIZE_MAX, NAMESPACE_NAME_MAX, RECORD_ALIGN,
    RECORD_HEADER_SIZE, WBLOCK_HEADER_SIZE, WBLOCK_SIZE_DEFAULT, WBLOCK_SIZE_MAX, WBLOCK_SIZE_MIN,
};

/// Version 2: records carry 20-byte digests (record version 2).
pub const FORMAT_VERSION: u32 = 2;
pub const DEVICE_MAGIC: [u8; 8] = *b"SPIKEDEV";
/// Offset of the change bitmap: after the two header copies.
pub const BITMAP_OFFSET: u64 = 2 * DEVICE_HEADER_SIZE as u64;

pub const WBLOCK_MAGIC: u32 = u32::from_le_bytes(*b"SPWB");

pub const RECORD_MAGIC: u16 = 0x5352;
/// Version 2 widened the digest to 20 bytes (a caller's RIPEMD-160 digest, kept whole).
pub const RECORD_VERSION: u8 = 2;
/// Where a record header keeps the low 32 bits of its block's sequence (LE).
pub const RECORD_SEQ_LO_OFFSET: usize = 40;
/// Header bytes the checksum covers (everything before the checksum field).
const RECORD_CHECKSUMMED_HEADER: usize = 56;
pub const FLAG_TOMBSTONE: u8 = 1;
/// The copy was written while its index tag was shared with another digest
/// (`index::shared`): a cold start must compare its full digest with the other copies'.
pub const FLAG_SHARED_TAG: u8 = 2;

/// A record's identity: a caller's 20-byte digest (Aerospike's RIPEMD-160), or the keyed
/// xxh3-128 of a key in its first 16 bytes with zeros after.
pub type Digest = [u8; DIGEST_SIZE];

/// Size on device of a record with this key and value length.
pub fn record_size(key_len: usize, value_len: usize) -> usize {
    (RECORD_HEADER_SIZE + key_len + value_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Keyed 128-bit digest: the namespace secret keeps crafted keys from colliding.
pub fn digest(secret: &[u8; DIGEST_SECRET_SIZE], key: &[u8]) -> Digest {
    let mut digest = [0u8; DIGEST_SIZE];
    digest[..16].copy_from_slice(&xxhash_rust::xxh3::xxh3_128_with_secret(key, secret).to_le_bytes());
    digest
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A valid header for unit tests.
#[cfg(test)]
pub(crate) fn test_header() -> DeviceHeader {
    DeviceHeader {
        format_version: FORMAT_VERSION,
        sequence: 1,
        device_uuid: [1; 16],
        namespace_uuid: [2; 16],
        namespace_name: "test".into(),
        device_index: 0,
        device_count: 1,
        write_block_size: WBLOCK_SIZE_MIN,
        flags: 0,
        first_wblock_offset: WBLOCK_SIZE_MIN as u64,
        wblock_count: 4,
        open_count: 1,
        snapshot: SnapshotRef::default(),
        bitmap_len_bytes: 4096,
        bitmap_generation: 0,
        bitmap_reset_image_uuid: [0; 16],
        created_unix_s: 0,
        write_seq_reserved: 0,
        digest_secret: [3; DIGEST_SECRET_SIZE],
    }
}

#[cfg(test)]
mod tests;
