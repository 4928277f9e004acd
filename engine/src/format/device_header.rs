//! The device header: two 4096-byte slots at offsets 0 and 4096; the valid one with the
//! higher sequence is in force, so a torn header write leaves the other.

use super::*;
use xxhash_rust::xxh3::xxh3_64;

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
    /// Every write sequence a run of this device has used or may use lies below this (a
    /// run raises it before opening a block at it), and a start continues at or above it:
    /// a block is never reopened with the sequence of stale records it may still hold, after
    /// a crash or a re-format (`namespace::format` starts above the old header's value).
    /// 0 on a device formatted before the field existed.
    pub write_seq_reserved: u64,
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
const H_WRITE_SEQ_RESERVED: usize = 200;
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
        put_u64(&mut b, H_WRITE_SEQ_RESERVED, self.write_seq_reserved);
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
        let unused_zero = [H_WRITE_SEQ_RESERVED + 8..H_SECRET, H_SECRET + DIGEST_SECRET_SIZE..H_CHECKSUM]
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
            write_seq_reserved: le_u64(b, H_WRITE_SEQ_RESERVED),
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
            || self.device_count as usize > crate::limits::DEVICES_MAX
        {
            return Err(format!("device {} of {}", self.device_index, self.device_count));
        }
        if self.wblock_count == 0 || self.wblock_count > u32::MAX as u64 {
            return Err(format!("{} write blocks", self.wblock_count));
        }
        let bitmap_needed = bitmap_len_bytes(self.wblock_count);
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
        if span.is_none_or(|span| span > crate::limits::DEVICE_BYTES_MAX) {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub first_wblock_offset: u64,
    pub wblock_size: u32,
    pub wblock_count: u32,
}

impl Geometry {
    pub fn of(header: &DeviceHeader) -> Self {
        Geometry {
            first_wblock_offset: header.first_wblock_offset,
            wblock_size: header.write_block_size,
            wblock_count: header.wblock_count as u32,
        }
    }

    pub fn wblock_offset(&self, wblock: u32) -> u64 {
        self.first_wblock_offset + wblock as u64 * self.wblock_size as u64
    }

    /// (block, offset within block) of a device offset inside the block area.
    pub fn locate(&self, offset_bytes: u64) -> Option<(u32, u32)> {
        let rel = offset_bytes.checked_sub(self.first_wblock_offset)?;
        let block = rel / self.wblock_size as u64;
        (block < self.wblock_count as u64).then_some((block as u32, (rel % self.wblock_size as u64) as u32))
    }
}
