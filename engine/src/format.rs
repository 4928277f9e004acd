//! The on-device format, byte by byte (ARCHITECTURE.md has the same tables).
//!
//! Every structure that lands on a device carries a magic, a version and an xxh3
//! checksum, and every integer is little-endian. Decoders never panic on any input: they
//! return `None` or a reason, which the fuzz targets check.
//!
//! Layout of a device: the reserved area (two device-header copies at 0 and 4096, then the
//! change bitmap), then `wblock_count` write blocks. Each write block starts with a 64-byte
//! header; records follow, 16-byte aligned, never spanning a block.

use xxhash_rust::xxh3::xxh3_64;

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

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// Device header
// ---------------------------------------------------------------------------------------

pub const HEADER_FLAG_CLEAN: u32 = 1;

/// Where a fast-restart index snapshot lies (written at clean shutdown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRef {
    pub offset: u64,
    pub len_bytes: u64,
    pub checksum: u64,
    /// The `open_count` of the run that wrote it: a snapshot of another run is stale.
    pub open_count: u64,
}

/// Device header; two copies, the valid one with the higher `sequence` wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceHeader {
    pub format_version: u32,
    pub sequence: u64,
    pub device_uuid: [u8; 16],
    pub namespace_uuid: [u8; 16],
    pub namespace_name: String,
    pub device_index: u32,
    pub device_count: u32,
    pub write_block_size: u32,
    pub flags: u32,
    pub first_wblock_offset: u64,
    pub wblock_count: u64,
    pub open_count: u64,
    pub snapshot: SnapshotRef,
    pub bitmap_len_bytes: u64,
    pub bitmap_generation: u64,
    pub bitmap_reset_image_uuid: [u8; 16],
    pub created_unix_s: u64,
    pub digest_secret: [u8; DIGEST_SECRET_SIZE],
}

// Field offsets of the device header.
const H_VERSION: usize = 8;
const H_HEADER_SIZE: usize = 12;
const H_SEQUENCE: usize = 16;
const H_DEVICE_UUID: usize = 24;
const H_NAMESPACE_UUID: usize = 40;
const H_NAMESPACE_NAME: usize = 56;
const H_DEVICE_INDEX: usize = 88;
const H_DEVICE_COUNT: usize = 92;
const H_WBLOCK_SIZE: usize = 96;
const H_FLAGS: usize = 100;
const H_FIRST_WBLOCK: usize = 104;
const H_WBLOCK_COUNT: usize = 112;
const H_OPEN_COUNT: usize = 120;
const H_SNAPSHOT: usize = 128; // offset, len, checksum, open_count: 4 x u64
const H_BITMAP_LEN: usize = 160;
const H_BITMAP_GENERATION: usize = 168;
const H_BITMAP_RESET_IMAGE: usize = 176;
const H_CREATED: usize = 192;
const H_SECRET: usize = 256;
const H_CHECKSUM: usize = DEVICE_HEADER_SIZE - 8;
const _: () = assert!(H_SECRET + DIGEST_SECRET_SIZE <= H_CHECKSUM);

/// Why a header slot did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// No Spike magic: blank or foreign.
    NoMagic,
    /// Spike magic but a checksum or field that does not hold.
    Damaged(String),
    /// A valid Spike header of a format version this build does not read.
    Version(u32),
}

impl DeviceHeader {
    pub fn is_clean(&self) -> bool {
        self.flags & HEADER_FLAG_CLEAN != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; DEVICE_HEADER_SIZE];
        b[0..8].copy_from_slice(&DEVICE_MAGIC);
        put_u32(&mut b, H_VERSION, self.format_version);
        put_u32(&mut b, H_HEADER_SIZE, DEVICE_HEADER_SIZE as u32);
        put_u64(&mut b, H_SEQUENCE, self.sequence);
        b[H_DEVICE_UUID..H_DEVICE_UUID + 16].copy_from_slice(&self.device_uuid);
        b[H_NAMESPACE_UUID..H_NAMESPACE_UUID + 16].copy_from_slice(&self.namespace_uuid);
        let name = self.namespace_name.as_bytes();
        let name_len = name.len().min(NAMESPACE_NAME_MAX);
        b[H_NAMESPACE_NAME..H_NAMESPACE_NAME + name_len].copy_from_slice(&name[..name_len]);
        put_u32(&mut b, H_DEVICE_INDEX, self.device_index);
        put_u32(&mut b, H_DEVICE_COUNT, self.device_count);
        put_u32(&mut b, H_WBLOCK_SIZE, self.write_block_size);
        put_u32(&mut b, H_FLAGS, self.flags);
        put_u64(&mut b, H_FIRST_WBLOCK, self.first_wblock_offset);
        put_u64(&mut b, H_WBLOCK_COUNT, self.wblock_count);
        put_u64(&mut b, H_OPEN_COUNT, self.open_count);
        put_u64(&mut b, H_SNAPSHOT, self.snapshot.offset);
        put_u64(&mut b, H_SNAPSHOT + 8, self.snapshot.len_bytes);
        put_u64(&mut b, H_SNAPSHOT + 16, self.snapshot.checksum);
        put_u64(&mut b, H_SNAPSHOT + 24, self.snapshot.open_count);
        put_u64(&mut b, H_BITMAP_LEN, self.bitmap_len_bytes);
        put_u64(&mut b, H_BITMAP_GENERATION, self.bitmap_generation);
        b[H_BITMAP_RESET_IMAGE..H_BITMAP_RESET_IMAGE + 16].copy_from_slice(&self.bitmap_reset_image_uuid);
        put_u64(&mut b, H_CREATED, self.created_unix_s);
        b[H_SECRET..H_SECRET + DIGEST_SECRET_SIZE].copy_from_slice(&self.digest_secret);
        let checksum = xxh3_64(&b[..H_CHECKSUM]);
        put_u64(&mut b, H_CHECKSUM, checksum);
        b
    }

    /// Decodes one header slot (`bytes` at least `DEVICE_HEADER_SIZE` long).
    pub fn decode(bytes: &[u8]) -> Result<DeviceHeader, HeaderProblem> {
        if bytes.len() < DEVICE_HEADER_SIZE || bytes[0..8] != DEVICE_MAGIC {
            return Err(HeaderProblem::NoMagic);
        }
        let b = &bytes[..DEVICE_HEADER_SIZE];
        if le_u64(b, H_CHECKSUM) != xxh3_64(&b[..H_CHECKSUM]) {
            return Err(HeaderProblem::Damaged("header checksum mismatch".into()));
        }
        let version = le_u32(b, H_VERSION);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::Version(version));
        }
        let unused_zero = [H_CREATED + 8..H_SECRET, H_SECRET + DIGEST_SECRET_SIZE..H_CHECKSUM]
            .into_iter()
            .all(|range| b[range].iter().all(|&x| x == 0));
        if le_u32(b, H_HEADER_SIZE) != DEVICE_HEADER_SIZE as u32 || !unused_zero {
            return Err(HeaderProblem::Damaged("header size or reserved bytes not as written".into()));
        }
        let name_bytes = &b[H_NAMESPACE_NAME..H_NAMESPACE_NAME + NAMESPACE_NAME_MAX + 1];
        let name_len = name_bytes
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| HeaderProblem::Damaged("namespace name is not NUL-terminated".into()))?;
        if name_bytes[name_len..].iter().any(|&c| c != 0) {
            return Err(HeaderProblem::Damaged("bytes after the namespace name".into()));
        }
        let namespace_name = std::str::from_utf8(&name_bytes[..name_len])
            .map_err(|_| HeaderProblem::Damaged("namespace name is not UTF-8".into()))?
            .to_string();
        let header = DeviceHeader {
            format_version: version,
            sequence: le_u64(b, H_SEQUENCE),
            device_uuid: b[H_DEVICE_UUID..H_DEVICE_UUID + 16].try_into().unwrap_or_default(),
            namespace_uuid: b[H_NAMESPACE_UUID..H_NAMESPACE_UUID + 16].try_into().unwrap_or_default(),
            namespace_name,
            device_index: le_u32(b, H_DEVICE_INDEX),
            device_count: le_u32(b, H_DEVICE_COUNT),
            write_block_size: le_u32(b, H_WBLOCK_SIZE),
            flags: le_u32(b, H_FLAGS),
            first_wblock_offset: le_u64(b, H_FIRST_WBLOCK),
            wblock_count: le_u64(b, H_WBLOCK_COUNT),
            open_count: le_u64(b, H_OPEN_COUNT),
            snapshot: SnapshotRef {
                offset: le_u64(b, H_SNAPSHOT),
                len_bytes: le_u64(b, H_SNAPSHOT + 8),
                checksum: le_u64(b, H_SNAPSHOT + 16),
                open_count: le_u64(b, H_SNAPSHOT + 24),
            },
            bitmap_len_bytes: le_u64(b, H_BITMAP_LEN),
            bitmap_generation: le_u64(b, H_BITMAP_GENERATION),
            bitmap_reset_image_uuid: b[H_BITMAP_RESET_IMAGE..H_BITMAP_RESET_IMAGE + 16]
                .try_into()
                .unwrap_or_default(),
            created_unix_s: le_u64(b, H_CREATED),
            digest_secret: b[H_SECRET..H_SECRET + DIGEST_SECRET_SIZE]
                .try_into()
                .unwrap_or([0; DIGEST_SECRET_SIZE]),
        };
        header.check_geometry().map_err(HeaderProblem::Damaged)?;
        Ok(header)
    }

    /// The relations between fields that every valid header keeps.
    fn check_geometry(&self) -> Result<(), String> {
        let wbs = self.write_block_size;
        if !wbs.is_power_of_two() || !(WBLOCK_SIZE_MIN..=WBLOCK_SIZE_MAX).contains(&wbs) {
            return Err(format!("write-block size {wbs} out of range"));
        }
        if self.device_count == 0
            || self.device_index >= self.device_count
            || self.device_count as usize > crate::index::DEVICES_MAX
        {
            return Err(format!("device {} of {}", self.device_index, self.device_count));
        }
        if self.wblock_count == 0 || self.wblock_count > u32::MAX as u64 {
            return Err(format!("{} write blocks", self.wblock_count));
        }
        let bitmap_needed = crate::change_bitmap::bitmap_len_bytes(self.wblock_count);
        if self.bitmap_len_bytes % 4096 != 0 || self.bitmap_len_bytes < bitmap_needed {
            return Err(format!(
                "bitmap of {} bytes for {} write blocks",
                self.bitmap_len_bytes, self.wblock_count
            ));
        }
        let reserved_end = BITMAP_OFFSET.checked_add(self.bitmap_len_bytes);
        if self.first_wblock_offset % wbs as u64 != 0
            || reserved_end.is_none_or(|end| self.first_wblock_offset < end)
        {
            return Err(format!(
                "first write block at {} overlaps the reserved area",
                self.first_wblock_offset
            ));
        }
        let span = (self.wblock_count * wbs as u64).checked_add(self.first_wblock_offset);
        if span.is_none_or(|span| span > crate::index::DEVICE_BYTES_MAX) {
            return Err(format!(
                "{} write blocks from offset {} exceed the largest device Spike addresses",
                self.wblock_count, self.first_wblock_offset
            ));
        }
        Ok(())
    }

    /// Bytes of device this header describes.
    /// Bytes of device this header describes (a decoded header is checked not to overflow).
    pub fn device_span_bytes(&self) -> u64 {
        self.first_wblock_offset
            .saturating_add(self.wblock_count.saturating_mul(self.write_block_size as u64))
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))] // used by the tools (`offline`)
    pub fn wblock_offset(&self, wblock: u32) -> u64 {
        self.first_wblock_offset + wblock as u64 * self.write_block_size as u64
    }
}

/// Picks the newer valid header of the two slots; reports the first slot's problem when
/// neither decodes.
pub fn pick_header(slot_a: &[u8], slot_b: &[u8]) -> Result<DeviceHeader, HeaderProblem> {
    match (DeviceHeader::decode(slot_a), DeviceHeader::decode(slot_b)) {
        (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(HeaderProblem::NoMagic), Err(problem)) | (Err(problem), Err(_)) => Err(problem),
    }
}

// ---------------------------------------------------------------------------------------
// Write-block header
// ---------------------------------------------------------------------------------------

pub const WBLOCK_KIND_DATA: u16 = 1;
/// Written over a freed block so that none of its stale records can come back.
pub const WBLOCK_KIND_FREE: u16 = 2;
/// A block holding part of an index snapshot.
pub const WBLOCK_KIND_SNAPSHOT: u16 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WblockHeader {
    pub kind: u16,
    pub write_seq: u64,
    pub device_uuid: [u8; 16],
    pub wblock_index: u32,
}

impl WblockHeader {
    pub fn encode_into(&self, b: &mut [u8]) {
        b[..WBLOCK_HEADER_SIZE].fill(0);
        put_u32(b, 0, WBLOCK_MAGIC);
        b[4..6].copy_from_slice(&1u16.to_le_bytes());
        b[6..8].copy_from_slice(&self.kind.to_le_bytes());
        put_u64(b, 8, self.write_seq);
        b[16..32].copy_from_slice(&self.device_uuid);
        put_u32(b, 32, self.wblock_index);
        let checksum = xxh3_64(&b[..56]);
        put_u64(b, 56, checksum);
    }

    pub fn decode(b: &[u8]) -> Option<WblockHeader> {
        if b.len() < WBLOCK_HEADER_SIZE || le_u32(b, 0) != WBLOCK_MAGIC || le_u16(b, 4) != 1 {
            return None;
        }
        if le_u64(b, 56) != xxh3_64(&b[..56]) || b[36..56].iter().any(|&x| x != 0) {
            return None;
        }
        Some(WblockHeader {
            kind: le_u16(b, 6),
            write_seq: le_u64(b, 8),
            device_uuid: b[16..32].try_into().ok()?,
            wblock_index: le_u32(b, 32),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

/// The metadata of one record, as encoded in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub digest: Digest,
    pub generation: u32,
    /// Unix seconds after which the record is gone; 0 = never.
    pub void_time: u32,
    pub last_update_ms: u64,
    pub tombstone: bool,
    /// Low 32 bits of the sequence number of the write block holding this copy: a record
    /// left over from an earlier use of the block never matches the block's header.
    pub wblock_seq_lo: u32,
}

/// The one order of two copies of one record, used by cold start, `apply` and
/// `spike-inspect check` alike: the higher generation is newer; between equal generations
/// (a defrag copy, an interrupted defrag, another node's write) the later last-update
/// time, then the copy in the block of higher write sequence. Field order is the rule:
/// the derived `Ord` compares them in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CopyOrder {
    pub generation: u32,
    pub last_update_ms: u64,
    /// The write sequence of the block holding the copy; 0 where the copy is not on this
    /// device (another node's, in `apply`), so that an exact tie there is not newer.
    pub block_seq: u64,
}

impl CopyOrder {
    /// The order of a copy whose generation differs from the one it is compared with: the
    /// other fields cannot matter, so they need not be read.
    pub fn by_generation(generation: u32) -> Self {
        CopyOrder { generation, last_update_ms: 0, block_seq: 0 }
    }
}

/// A decoded, checksum-verified record borrowing from the block it was read from.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub meta: RecordMeta,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Bytes the record occupies on device, padding included.
    pub size_bytes: usize,
}

/// Why bytes at a record position are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordProblem {
    /// Zeroes where a record would start: the end of a block's records.
    End,
    BadMagic,
    BadLength,
    BadChecksum,
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordProblem::End => "no record here",
            RecordProblem::BadMagic => "bad record magic",
            RecordProblem::BadLength => "record length runs past its block",
            RecordProblem::BadChecksum => "record checksum mismatch",
        })
    }
}

/// Encodes a record into `out` (which must be exactly `record_size(key, value)` long and
/// is fully written, padding zeroed).
pub fn encode_record(meta: &RecordMeta, key: &[u8], value: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), record_size(key.len(), value.len()));
    out[0..2].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[2] = RECORD_VERSION;
    out[3] = if meta.tombstone { FLAG_TOMBSTONE } else { 0 };
    out[4..6].copy_from_slice(&(key.len() as u16).to_le_bytes());
    out[6..8].fill(0);
    put_u32(out, 8, value.len() as u32);
    put_u32(out, 12, meta.generation);
    out[16..36].copy_from_slice(&meta.digest);
    put_u32(out, 36, meta.void_time);
    put_u32(out, RECORD_SEQ_LO_OFFSET, meta.wblock_seq_lo);
    out[44..48].fill(0);
    put_u64(out, 48, meta.last_update_ms);
    let body_end = RECORD_HEADER_SIZE + key.len() + value.len();
    out[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + key.len()].copy_from_slice(key);
    out[RECORD_HEADER_SIZE + key.len()..body_end].copy_from_slice(value);
    out[body_end..].fill(0);
    // The checksum covers the header bytes before it and the body, which the checksum
    // field separates. Sliding those bytes up against the body for a moment makes them one
    // run, hashed in one call: the same value as `record_checksum`, at about half the
    // cost of the streaming hasher on the write path (here the buffer is ours to move).
    const H: usize = RECORD_CHECKSUMMED_HEADER;
    let mut header = [0u8; H];
    header.copy_from_slice(&out[..H]);
    out.copy_within(0..H, RECORD_HEADER_SIZE - H);
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[RECORD_HEADER_SIZE - H..body_end]);
    out[..H].copy_from_slice(&header);
    put_u64(out, H, checksum);
}

fn record_checksum(header: &[u8], body: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(header);
    hasher.update(body);
    hasher.digest()
}

/// Decodes and verifies the record at the start of `bytes`.
pub fn decode_record(bytes: &[u8]) -> Result<RecordView<'_>, RecordProblem> {
    if bytes.len() < RECORD_HEADER_SIZE {
        return Err(RecordProblem::End);
    }
    let magic = le_u16(bytes, 0);
    if magic != RECORD_MAGIC || bytes[2] != RECORD_VERSION {
        return Err(if magic == 0 { RecordProblem::End } else { RecordProblem::BadMagic });
    }
    let key_len = le_u16(bytes, 4) as usize;
    let value_len = le_u32(bytes, 8) as usize;
    let body_end = RECORD_HEADER_SIZE
        .checked_add(key_len)
        .and_then(|n| n.checked_add(value_len))
        .filter(|&n| n <= bytes.len() && key_len <= KEY_SIZE_MAX)
        .ok_or(RecordProblem::BadLength)?;
    const H: usize = RECORD_CHECKSUMMED_HEADER;
    if le_u64(bytes, H) != record_checksum(&bytes[..H], &bytes[RECORD_HEADER_SIZE..body_end]) {
        return Err(RecordProblem::BadChecksum);
    }
    // Only what the encoder writes is accepted: reserved bytes, unknown flags and the
    // padding (outside the checksum) must be zero, so every accepted record re-encodes to
    // the same bytes and a flipped padding bit is still noticed.
    let padded_end = body_end.div_ceil(RECORD_ALIGN) * RECORD_ALIGN;
    let padding = bytes.get(body_end..padded_end).ok_or(RecordProblem::BadLength)?;
    let reserved_zero = bytes[6..8] == [0, 0] && bytes[44..48] == [0; 4];
    if !reserved_zero || bytes[3] & !FLAG_TOMBSTONE != 0 || padding.iter().any(|&b| b != 0) {
        return Err(RecordProblem::BadChecksum);
    }
    Ok(RecordView {
        meta: RecordMeta {
            digest: bytes[16..36].try_into().map_err(|_| RecordProblem::BadLength)?,
            generation: le_u32(bytes, 12),
            void_time: le_u32(bytes, 36),
            last_update_ms: le_u64(bytes, 48),
            tombstone: bytes[3] & FLAG_TOMBSTONE != 0,
            wblock_seq_lo: le_u32(bytes, RECORD_SEQ_LO_OFFSET),
        },
        key: &bytes[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + key_len],
        value: &bytes[RECORD_HEADER_SIZE + key_len..body_end],
        size_bytes: body_end.div_ceil(RECORD_ALIGN) * RECORD_ALIGN,
    })
}

/// One step of walking the records of a block (the engine skips what is not a record;
/// `spike-inspect` reports where and why).
#[derive(Debug)]
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub enum BlockItem<'a> {
    /// A verified record of this use of the block, at `offset` bytes into the block.
    Record { offset: usize, view: RecordView<'a> },
    /// A valid record left from an earlier use of the block (its sequence tag differs).
    Stale { offset: usize },
    /// The start of a region of bytes that are neither a record nor zero (torn or corrupt).
    Corrupt { offset: usize, problem: RecordProblem },
}

/// Walks the records of a block whose header says `write_seq`. After a bad region it
/// resyncs at the next 16-byte boundary, so records after a torn sector are still found.
pub fn block_records(block: &[u8], write_seq: u64) -> impl Iterator<Item = BlockItem<'_>> {
    let mut at = WBLOCK_HEADER_SIZE;
    let mut in_bad_region = false;
    std::iter::from_fn(move || {
        while at + RECORD_ALIGN <= block.len() {
            let offset = at;
            match decode_record(&block[at..]) {
                Ok(view) => {
                    at += view.size_bytes;
                    in_bad_region = false;
                    if view.meta.wblock_seq_lo != write_seq as u32 {
                        return Some(BlockItem::Stale { offset });
                    }
                    return Some(BlockItem::Record { offset, view });
                }
                Err(problem) => {
                    at += RECORD_ALIGN;
                    if problem != RecordProblem::End && !in_bad_region {
                        in_bad_region = true;
                        return Some(BlockItem::Corrupt { offset, problem });
                    }
                }
            }
        }
        None
    })
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
        digest_secret: [3; DIGEST_SECRET_SIZE],
    }
}

#[cfg(test)]
mod tests;
