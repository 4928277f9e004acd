//! The backup image file: its byte layout, the reader that checks it, and the writer that
//! puts it in place atomically. ARCHITECTURE.md ("Backup image format") has the same tables.
//!
//! The writer that puts an image in place is `writer.rs`; the byte layout is all here.
//!
//! Layout: a 4096-byte header (identity, device geometry, generations), the data area (the
//! device's reserved region, then the stored blocks, each raw or zstd-compressed), the block
//! list (40 bytes per block the image mentions), the summary (8 bytes per write block of the
//! device: a fingerprint of its state in the device content the image represents), and a
//! 128-byte trailer (where everything is, the content digest, and one checksum over header,
//! block list, summary and trailer). All integers are little-endian.
//!
//! Invariants the reader keeps: it never panics and never allocates more than the file holds
//! (every count is checked against the file length first); nothing is returned before the
//! metadata checksum, the header checksum, the version and every structural rule hold
//! (entries sorted, in range, inside the data area; a full image lists every block; the
//! summary agrees with the entries and hashes to the content digest). A block's bytes are
//! returned only after their xxh3 (over the uncompressed bytes) matches its entry, and
//! decompression is bounded by the write-block size, so a crafted stream cannot inflate.
//! A file that lacks its trailer is never taken for an image.

use spike::offline::format::{WBLOCK_SIZE_MAX, WBLOCK_SIZE_MIN};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64, Xxh3Default};

pub const IMAGE_MAGIC: [u8; 8] = *b"SPKIMAGE";
pub const TRAILER_MAGIC: [u8; 8] = *b"SPKIMEND";
pub const IMAGE_VERSION: u32 = 1;
pub const IMAGE_HEADER_SIZE: usize = 4096;
pub const TRAILER_SIZE: usize = 128;
pub const ENTRY_SIZE: usize = 40;
pub const SUMMARY_ENTRY_SIZE: usize = 8;

/// The image holds only the blocks changed since its parent.
pub const FLAG_INCREMENTAL: u32 = 1;
/// Some stored blocks are zstd-compressed.
pub const FLAG_COMPRESSED: u32 = 2;
/// Made by `merge` from a chain, not read from a device.
pub const FLAG_SYNTHETIC: u32 = 4;
const FLAGS_KNOWN: u32 = FLAG_INCREMENTAL | FLAG_COMPRESSED | FLAG_SYNTHETIC;

pub const STATE_DATA: u8 = 1;
pub const STATE_FREE: u8 = 2;
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;

/// Largest stored (compressed) block: zstd never grows a block by more than this, and the
/// writer stores a block raw when compression does not shrink it.
pub const STORED_BLOCK_MAX: u64 = WBLOCK_SIZE_MAX as u64;

const _: () = assert!(IMAGE_HEADER_SIZE % 4096 == 0);
const _: () = assert!(TRAILER_SIZE >= 128);

// Header field offsets.
const H_VERSION: usize = 8;
const H_HEADER_SIZE: usize = 12;
const H_FLAGS: usize = 16;
const H_IMAGE_UUID: usize = 24;
const H_PARENT_UUID: usize = 40;
const H_PARENT_DIGEST: usize = 56;
const H_DEVICE_UUID: usize = 72;
const H_NAMESPACE_UUID: usize = 88;
const H_NAMESPACE_NAME: usize = 104;
const H_DEVICE_SIZE: usize = 136;
const H_SPAN: usize = 144;
const H_WBLOCK_SIZE: usize = 152;
const H_DEVICE_INDEX: usize = 156;
const H_FIRST_WBLOCK: usize = 160;
const H_WBLOCK_COUNT: usize = 168;
const H_BASE_GENERATION: usize = 176;
const H_NEW_GENERATION: usize = 184;
const H_CREATED: usize = 192;
const H_CHECKSUM: usize = IMAGE_HEADER_SIZE - 8;
const NAMESPACE_NAME_BYTES: usize = 32;

// Trailer field offsets.
const T_RESERVED_OFFSET: usize = 8;
const T_RESERVED_STORED: usize = 16;
const T_RESERVED_COMPRESSION: usize = 24;
const T_RESERVED_CHECKSUM: usize = 32;
const T_LIST_OFFSET: usize = 40;
const T_ENTRY_COUNT: usize = 48;
const T_SUMMARY_OFFSET: usize = 56;
const T_MAX_DATA_SEQ: usize = 64;
const T_MAX_SNAPSHOT_SEQ: usize = 72;
const T_CONTENT_DIGEST: usize = 80;
const T_FILE_LEN: usize = 96;
const T_STORED_BLOCKS: usize = 104;
const T_CHECKSUM: usize = TRAILER_SIZE - 8;

/// Why an image cannot be used. Corruption is distinct from I/O failure and from an image
/// this build does not read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: I/O error at offset {offset}: {source}")]
    Io { path: String, offset: u64, source: io::Error },
    #[error("{path}: not a Spike backup image (no image magic at offset 0)")]
    NotAnImage { path: String },
    #[error("{path}: image format version {found}, this build reads version {IMAGE_VERSION}")]
    Version { path: String, found: u32 },
    #[error("{path}: truncated or incomplete image: {reason}")]
    Truncated { path: String, reason: String },
    #[error("{path}: corrupt image at offset {offset}: {reason}")]
    Corrupt { path: String, offset: u64, reason: String },
}

pub type ImageResult<T> = Result<T, ImageError>;

/// Random-access bytes an image is read from: a file, or a byte slice (tests, fuzzing).
pub trait ReadAt {
    fn len_bytes(&self) -> u64;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn len_bytes(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// An image file opened for reading, with its length taken once.
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl ReadAt for FileSource {
    fn len_bytes(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}
fn uuid_at(b: &[u8], at: usize) -> [u8; 16] {
    b.get(at..at + 16).and_then(|s| s.try_into().ok()).unwrap_or([0; 16])
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// What the 4096-byte image header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub flags: u32,
    pub image_uuid: [u8; 16],
    /// Zero for a full image.
    pub parent_uuid: [u8; 16],
    /// The parent's content digest; zero for a full image.
    pub parent_digest: [u8; 16],
    pub device_uuid: [u8; 16],
    pub namespace_uuid: [u8; 16],
    pub namespace_name: String,
    /// Size of the source device when the image was taken.
    pub device_size_bytes: u64,
    /// Bytes the device header describes: the least a restore target must hold.
    pub span_bytes: u64,
    pub write_block_size: u32,
    pub device_index: u32,
    /// Length of the reserved region (header copies and change bitmap) at the device's start.
    pub first_wblock_offset: u64,
    pub wblock_count: u64,
    /// The bitmap generation this image's changes are counted from (its parent's new one).
    pub base_generation: u64,
    /// The bitmap generation this image started on the device once it was in place.
    pub new_generation: u64,
    pub created_unix_s: u64,
}

impl ImageHeader {
    pub fn is_incremental(&self) -> bool {
        self.flags & FLAG_INCREMENTAL != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IMAGE_HEADER_SIZE];
        b[0..8].copy_from_slice(&IMAGE_MAGIC);
        put_u32(&mut b, H_VERSION, IMAGE_VERSION);
        put_u32(&mut b, H_HEADER_SIZE, IMAGE_HEADER_SIZE as u32);
        put_u32(&mut b, H_FLAGS, self.flags);
        b[H_IMAGE_UUID..H_IMAGE_UUID + 16].copy_from_slice(&self.image_uuid);
        b[H_PARENT_UUID..H_PARENT_UUID + 16].copy_from_slice(&self.parent_uuid);
        b[H_PARENT_DIGEST..H_PARENT_DIGEST + 16].copy_from_slice(&self.parent_digest);
        b[H_DEVICE_UUID..H_DEVICE_UUID + 16].copy_from_slice(&self.device_uuid);
        b[H_NAMESPACE_UUID..H_NAMESPACE_UUID + 16].copy_from_slice(&self.namespace_uuid);
        let name = self.namespace_name.as_bytes();
        let name_len = name.len().min(NAMESPACE_NAME_BYTES - 1);
        b[H_NAMESPACE_NAME..H_NAMESPACE_NAME + name_len].copy_from_slice(&name[..name_len]);
        put_u64(&mut b, H_DEVICE_SIZE, self.device_size_bytes);
        put_u64(&mut b, H_SPAN, self.span_bytes);
        put_u32(&mut b, H_WBLOCK_SIZE, self.write_block_size);
        put_u32(&mut b, H_DEVICE_INDEX, self.device_index);
        put_u64(&mut b, H_FIRST_WBLOCK, self.first_wblock_offset);
        put_u64(&mut b, H_WBLOCK_COUNT, self.wblock_count);
        put_u64(&mut b, H_BASE_GENERATION, self.base_generation);
        put_u64(&mut b, H_NEW_GENERATION, self.new_generation);
        put_u64(&mut b, H_CREATED, self.created_unix_s);
        let checksum = xxh3_64(&b[..H_CHECKSUM]);
        put_u64(&mut b, H_CHECKSUM, checksum);
        b
    }

    /// Decodes a header; `Err` is (offset, reason) or the version it cannot read.
    fn decode(b: &[u8], path: &str) -> ImageResult<ImageHeader> {
        let corrupt = |offset: usize, reason: String| ImageError::Corrupt {
            path: path.to_string(),
            offset: offset as u64,
            reason,
        };
        if b.len() < IMAGE_HEADER_SIZE || b[0..8] != IMAGE_MAGIC {
            return Err(ImageError::NotAnImage { path: path.to_string() });
        }
        if le_u64(b, H_CHECKSUM) != xxh3_64(&b[..H_CHECKSUM]) {
            return Err(corrupt(H_CHECKSUM, "image header checksum mismatch".into()));
        }
        let version = le_u32(b, H_VERSION);
        if version != IMAGE_VERSION {
            return Err(ImageError::Version { path: path.to_string(), found: version });
        }
        if le_u32(b, H_HEADER_SIZE) != IMAGE_HEADER_SIZE as u32 {
            return Err(corrupt(H_HEADER_SIZE, format!("header size {}", le_u32(b, H_HEADER_SIZE))));
        }
        let name_bytes = &b[H_NAMESPACE_NAME..H_NAMESPACE_NAME + NAMESPACE_NAME_BYTES];
        let name_len = name_bytes.iter().position(|&c| c == 0).unwrap_or(NAMESPACE_NAME_BYTES);
        let namespace_name = std::str::from_utf8(&name_bytes[..name_len])
            .map_err(|_| corrupt(H_NAMESPACE_NAME, "namespace name is not UTF-8".into()))?
            .to_string();
        let header = ImageHeader {
            flags: le_u32(b, H_FLAGS),
            image_uuid: uuid_at(b, H_IMAGE_UUID),
            parent_uuid: uuid_at(b, H_PARENT_UUID),
            parent_digest: uuid_at(b, H_PARENT_DIGEST),
            device_uuid: uuid_at(b, H_DEVICE_UUID),
            namespace_uuid: uuid_at(b, H_NAMESPACE_UUID),
            namespace_name,
            device_size_bytes: le_u64(b, H_DEVICE_SIZE),
            span_bytes: le_u64(b, H_SPAN),
            write_block_size: le_u32(b, H_WBLOCK_SIZE),
            device_index: le_u32(b, H_DEVICE_INDEX),
            first_wblock_offset: le_u64(b, H_FIRST_WBLOCK),
            wblock_count: le_u64(b, H_WBLOCK_COUNT),
            base_generation: le_u64(b, H_BASE_GENERATION),
            new_generation: le_u64(b, H_NEW_GENERATION),
            created_unix_s: le_u64(b, H_CREATED),
        };
        header.check().map_err(|reason| corrupt(0, reason))?;
        Ok(header)
    }

    /// The relations every valid header keeps.
    fn check(&self) -> Result<(), String> {
        if self.flags & !FLAGS_KNOWN != 0 {
            return Err(format!("unknown flags {:#x}", self.flags & !FLAGS_KNOWN));
        }
        let wbs = self.write_block_size;
        if !wbs.is_power_of_two() || !(WBLOCK_SIZE_MIN..=WBLOCK_SIZE_MAX).contains(&wbs) {
            return Err(format!("write-block size {wbs} out of range"));
        }
        if self.wblock_count == 0 || self.wblock_count > u32::MAX as u64 {
            return Err(format!("{} write blocks", self.wblock_count));
        }
        if self.first_wblock_offset == 0 || self.first_wblock_offset % wbs as u64 != 0 {
            return Err(format!("first write block at {}", self.first_wblock_offset));
        }
        let span = (self.wblock_count as u128) * wbs as u128 + self.first_wblock_offset as u128;
        if span != self.span_bytes as u128 || self.span_bytes > self.device_size_bytes {
            return Err(format!(
                "span {} does not match {} blocks of {wbs} bytes after {} (device {} bytes)",
                self.span_bytes, self.wblock_count, self.first_wblock_offset, self.device_size_bytes
            ));
        }
        let has_parent = self.parent_uuid != [0; 16];
        if self.is_incremental() != has_parent {
            return Err("an incremental image names its parent and a full image none".into());
        }
        if self.image_uuid == [0; 16] || self.new_generation == 0 {
            return Err("image UUID or new generation is zero".into());
        }
        Ok(())
    }
}

/// One block the image mentions (40 bytes in the block list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry {
    pub wblock: u32,
    /// `STATE_DATA` (its bytes are stored here) or `STATE_FREE` (it reads as free).
    pub state: u8,
    pub compression: u8,
    /// Kind from the block's own header (data or snapshot); 0 for a free block.
    pub kind: u16,
    /// Write sequence from the block's own header; 0 for a free block.
    pub write_seq: u64,
    /// Where the stored bytes start in the image file.
    pub offset: u64,
    pub stored_len: u32,
    /// xxh3-64 of the uncompressed block.
    pub checksum: u64,
}

impl BlockEntry {
    pub fn free(wblock: u32) -> BlockEntry {
        BlockEntry {
            wblock,
            state: STATE_FREE,
            compression: COMPRESSION_NONE,
            kind: 0,
            write_seq: 0,
            offset: 0,
            stored_len: 0,
            checksum: 0,
        }
    }

    pub fn is_data(&self) -> bool {
        self.state == STATE_DATA
    }

    fn encode_into(&self, b: &mut [u8]) {
        put_u32(b, 0, self.wblock);
        b[4] = self.state;
        b[5] = self.compression;
        b[6..8].copy_from_slice(&self.kind.to_le_bytes());
        put_u64(b, 8, self.write_seq);
        put_u64(b, 16, self.offset);
        put_u32(b, 24, self.stored_len);
        put_u32(b, 28, 0);
        put_u64(b, 32, self.checksum);
    }

    fn decode(b: &[u8]) -> BlockEntry {
        BlockEntry {
            wblock: le_u32(b, 0),
            state: b.get(4).copied().unwrap_or(0),
            compression: b.get(5).copied().unwrap_or(0),
            kind: u16::from_le_bytes([b.get(6).copied().unwrap_or(0), b.get(7).copied().unwrap_or(0)]),
            write_seq: le_u64(b, 8),
            offset: le_u64(b, 16),
            stored_len: le_u32(b, 24),
            checksum: le_u64(b, 32),
        }
    }
}

/// The summary fingerprint of a block in a given state: 0 for free, else its checksum
/// (a checksum of 0 is recorded as 1 so that it cannot read as free).
pub fn fingerprint(entry: &BlockEntry) -> u64 {
    if entry.is_data() {
        entry.checksum.max(1)
    } else {
        0
    }
}

/// The digest of the device content an image represents: the device identity and
/// geometry, the reserved region's checksum and every block's fingerprint. Equal content
/// gives an equal digest whatever chain of images produced it (so a merged image can stand
/// in for its chain).
pub fn content_digest(header: &ImageHeader, reserved_checksum: u64, summary: &[u64]) -> [u8; 16] {
    let mut bytes = Vec::with_capacity(48 + summary.len() * 8);
    bytes.extend_from_slice(&header.device_uuid);
    bytes.extend_from_slice(&header.write_block_size.to_le_bytes());
    bytes.extend_from_slice(&header.first_wblock_offset.to_le_bytes());
    bytes.extend_from_slice(&header.wblock_count.to_le_bytes());
    bytes.extend_from_slice(&reserved_checksum.to_le_bytes());
    for fp in summary {
        bytes.extend_from_slice(&fp.to_le_bytes());
    }
    xxh3_128(&bytes).to_le_bytes()
}

/// Where the stored reserved region (device header copies and bitmap) lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReservedRef {
    pub offset: u64,
    pub stored_len: u64,
    pub compression: u8,
    /// xxh3-64 of the uncompressed region (`first_wblock_offset` bytes).
    pub checksum: u64,
}

/// Everything an image says apart from its stored bytes, checked.
#[derive(Clone, Debug)]
pub struct ImageMeta {
    pub path: String,
    pub header: ImageHeader,
    pub reserved: ReservedRef,
    pub entries: Vec<BlockEntry>,
    /// One fingerprint per write block of the device content this image represents.
    pub summary: Vec<u64>,
    pub max_data_seq: u64,
    pub max_snapshot_seq: u64,
    pub content_digest: [u8; 16],
    pub file_len: u64,
}

impl ImageMeta {
    pub fn stored_blocks(&self) -> usize {
        self.entries.iter().filter(|e| e.is_data()).count()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.stored_len as u64).sum::<u64>() + self.reserved.stored_len
    }

    pub fn compressed_blocks(&self) -> usize {
        self.entries.iter().filter(|e| e.compression == COMPRESSION_ZSTD).count()
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> ImageError {
        ImageError::Corrupt { path: self.path.clone(), offset, reason: reason.into() }
    }
}

fn read_at(src: &(impl ReadAt + ?Sized), path: &str, buf: &mut [u8], offset: u64) -> ImageResult<()> {
    src.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ImageError::Truncated { path: path.to_string(), reason: format!("read past the end at {offset}") }
        } else {
            ImageError::Io { path: path.to_string(), offset, source: e }
        }
    })
}

/// Reads and checks an image's header, trailer, block list and summary (not the stored
/// bytes: [`read_block`] checks those one by one).
pub fn read_meta(src: &(impl ReadAt + ?Sized), path: &str) -> ImageResult<ImageMeta> {
    let len = src.len_bytes();
    let truncated = |reason: String| ImageError::Truncated { path: path.to_string(), reason };
    let corrupt =
        |offset: u64, reason: String| ImageError::Corrupt { path: path.to_string(), offset, reason };
    if len < 8 {
        return Err(ImageError::NotAnImage { path: path.to_string() });
    }
    let mut head = vec![0u8; IMAGE_HEADER_SIZE.min(len as usize)];
    read_at(src, path, &mut head, 0)?;
    if head[0..8] != IMAGE_MAGIC {
        return Err(ImageError::NotAnImage { path: path.to_string() });
    }
    if len < (IMAGE_HEADER_SIZE + TRAILER_SIZE) as u64 {
        return Err(truncated(format!("{len} bytes, shorter than header and trailer")));
    }
    let header = ImageHeader::decode(&head, path)?;
    let mut trailer = [0u8; TRAILER_SIZE];
    let trailer_at = len - TRAILER_SIZE as u64;
    read_at(src, path, &mut trailer, trailer_at)?;
    if trailer[0..8] != TRAILER_MAGIC {
        return Err(truncated("no trailer at the end (an interrupted write, or a cut copy)".into()));
    }
    let file_len = le_u64(&trailer, T_FILE_LEN);
    if file_len != len {
        return Err(truncated(format!("the trailer says {file_len} bytes, the file has {len}")));
    }
    let count = header.wblock_count;
    let entry_count = le_u64(&trailer, T_ENTRY_COUNT);
    let list_at = le_u64(&trailer, T_LIST_OFFSET);
    let summary_at = le_u64(&trailer, T_SUMMARY_OFFSET);
    // Bounds before any allocation: both tables lie between the data area and the trailer.
    let list_len = entry_count.checked_mul(ENTRY_SIZE as u64).filter(|_| entry_count <= count);
    let summary_len = count * SUMMARY_ENTRY_SIZE as u64;
    let Some(list_len) = list_len.filter(|&n| {
        list_at >= IMAGE_HEADER_SIZE as u64
            && list_at.checked_add(n) == Some(summary_at)
            && summary_at.checked_add(summary_len) == Some(trailer_at)
    }) else {
        return Err(corrupt(trailer_at, "block list and summary do not fit between data and trailer".into()));
    };
    let mut tables = vec![0u8; (list_len + summary_len) as usize];
    read_at(src, path, &mut tables, list_at)?;
    let mut hasher = Xxh3Default::new();
    hasher.update(&head);
    hasher.update(&tables);
    hasher.update(&trailer[..T_CHECKSUM]);
    if hasher.digest() != le_u64(&trailer, T_CHECKSUM) {
        return Err(corrupt(trailer_at + T_CHECKSUM as u64, "metadata checksum mismatch".into()));
    }
    let (list, summary_bytes) = tables.split_at(list_len as usize);
    let entries: Vec<BlockEntry> = list.chunks_exact(ENTRY_SIZE).map(BlockEntry::decode).collect();
    let summary: Vec<u64> = summary_bytes.chunks_exact(SUMMARY_ENTRY_SIZE).map(|c| le_u64(c, 0)).collect();
    let meta = ImageMeta {
        path: path.to_string(),
        reserved: ReservedRef {
            offset: le_u64(&trailer, T_RESERVED_OFFSET),
            stored_len: le_u64(&trailer, T_RESERVED_STORED),
            compression: trailer[T_RESERVED_COMPRESSION],
            checksum: le_u64(&trailer, T_RESERVED_CHECKSUM),
        },
        entries,
        summary,
        max_data_seq: le_u64(&trailer, T_MAX_DATA_SEQ),
        max_snapshot_seq: le_u64(&trailer, T_MAX_SNAPSHOT_SEQ),
        content_digest: uuid_at(&trailer, T_CONTENT_DIGEST),
        file_len: len,
        header,
    };
    check_tables(&meta, list_at, le_u64(&trailer, T_STORED_BLOCKS))?;
    Ok(meta)
}

/// The structural rules of the reserved region, the block list and the summary.
fn check_tables(meta: &ImageMeta, list_at: u64, stored_blocks: u64) -> ImageResult<()> {
    let h = &meta.header;
    let wbs = h.write_block_size as u64;
    let data_start = IMAGE_HEADER_SIZE as u64;
    let in_data_area = |offset: u64, stored: u64| {
        offset >= data_start && offset.checked_add(stored).is_some_and(|end| end <= list_at)
    };
    let r = &meta.reserved;
    let reserved_ok = match r.compression {
        COMPRESSION_NONE => r.stored_len == h.first_wblock_offset,
        COMPRESSION_ZSTD => r.stored_len > 0 && r.stored_len < h.first_wblock_offset,
        _ => false,
    };
    if !reserved_ok || !in_data_area(r.offset, r.stored_len) {
        return Err(meta.corrupt(r.offset, "reserved region out of place or of the wrong length"));
    }
    let mut previous: Option<u32> = None;
    for (i, e) in meta.entries.iter().enumerate() {
        let at = list_at + (i * ENTRY_SIZE) as u64;
        if previous.is_some_and(|p| e.wblock <= p) || e.wblock as u64 >= h.wblock_count {
            return Err(
                meta.corrupt(at, format!("block entry {i} (block {}) out of order or range", e.wblock))
            );
        }
        previous = Some(e.wblock);
        let valid = match (e.state, e.compression) {
            (STATE_FREE, _) => *e == BlockEntry::free(e.wblock),
            (STATE_DATA, COMPRESSION_NONE) => e.stored_len as u64 == wbs && in_data_area(e.offset, wbs),
            (STATE_DATA, COMPRESSION_ZSTD) => {
                e.stored_len > 0 && (e.stored_len as u64) < wbs && in_data_area(e.offset, e.stored_len as u64)
            }
            _ => false,
        };
        if !valid {
            return Err(meta.corrupt(at, format!("block entry {i} (block {}) is malformed", e.wblock)));
        }
        if meta.summary[e.wblock as usize] != fingerprint(e) {
            return Err(meta.corrupt(at, format!("summary disagrees with the entry of block {}", e.wblock)));
        }
    }
    if !h.is_incremental() && meta.entries.len() as u64 != h.wblock_count {
        return Err(meta.corrupt(list_at, "a full image must list every write block"));
    }
    if meta.stored_blocks() as u64 != stored_blocks {
        return Err(meta.corrupt(list_at, "stored block count disagrees with the block list"));
    }
    if content_digest(h, r.checksum, &meta.summary) != meta.content_digest {
        return Err(meta.corrupt(meta.file_len - TRAILER_SIZE as u64, "content digest mismatch"));
    }
    Ok(())
}

/// Reads stored bytes and turns them into `out.len()` uncompressed bytes whose xxh3 must be
/// `checksum`. `scratch` holds compressed bytes between calls (no allocation once warm).
#[allow(clippy::too_many_arguments)]
fn read_stored(
    src: &(impl ReadAt + ?Sized),
    meta: &ImageMeta,
    what: &str,
    offset: u64,
    stored_len: u64,
    compression: u8,
    checksum: u64,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> ImageResult<()> {
    if compression == COMPRESSION_NONE {
        read_at(src, &meta.path, out, offset)?;
    } else {
        scratch.resize(stored_len as usize, 0);
        read_at(src, &meta.path, scratch, offset)?;
        let n = zstd::bulk::decompress_to_buffer(scratch, out)
            .map_err(|e| meta.corrupt(offset, format!("{what} does not decompress: {e}")))?;
        if n != out.len() {
            return Err(meta.corrupt(offset, format!("{what} decompresses to {n} bytes, not {}", out.len())));
        }
    }
    if xxh3_64(out) != checksum {
        return Err(meta.corrupt(offset, format!("{what} fails its checksum")));
    }
    Ok(())
}

/// The uncompressed, checksum-verified bytes of a stored block (`out` is one write block).
pub fn read_block(
    src: &(impl ReadAt + ?Sized),
    meta: &ImageMeta,
    entry: &BlockEntry,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> ImageResult<()> {
    debug_assert!(entry.is_data() && out.len() == meta.header.write_block_size as usize);
    let what = format!("block {}", entry.wblock);
    let stored = entry.stored_len as u64;
    read_stored(src, meta, &what, entry.offset, stored, entry.compression, entry.checksum, out, scratch)
}

/// The raw stored bytes of a block, after checking that they decode to its checksum (for
/// `merge`, which copies blocks without recompressing them).
pub fn read_block_stored(
    src: &(impl ReadAt + ?Sized),
    meta: &ImageMeta,
    entry: &BlockEntry,
    plain: &mut [u8],
) -> ImageResult<Vec<u8>> {
    let mut stored = Vec::new();
    read_block(src, meta, entry, plain, &mut stored)?;
    if entry.compression == COMPRESSION_NONE {
        stored.clear();
        stored.extend_from_slice(plain);
    }
    Ok(stored)
}

/// The uncompressed, verified reserved region (`first_wblock_offset` bytes).
pub fn read_reserved(src: &(impl ReadAt + ?Sized), meta: &ImageMeta) -> ImageResult<Vec<u8>> {
    let mut out = vec![0u8; meta.header.first_wblock_offset as usize];
    let r = meta.reserved;
    let mut scratch = Vec::new();
    read_stored(
        src,
        meta,
        "reserved region",
        r.offset,
        r.stored_len,
        r.compression,
        r.checksum,
        &mut out,
        &mut scratch,
    )?;
    Ok(out)
}

/// Checks everything in an in-memory image, stored bytes included. The fuzz target's entry
/// point: any input gives `Ok` or an error, never a panic.
pub fn check_image_bytes(bytes: &[u8]) -> ImageResult<ImageMeta> {
    let meta = read_meta(bytes, "<memory>")?;
    read_reserved(bytes, &meta)?;
    let mut out = vec![0u8; meta.header.write_block_size as usize];
    let mut scratch = Vec::new();
    for entry in meta.entries.iter().filter(|e| e.is_data()) {
        read_block(bytes, &meta, entry, &mut out, &mut scratch)?;
    }
    Ok(meta)
}

/// What an image's tables say once every block is in.
pub struct ImageTail {
    pub summary: Vec<u64>,
    pub max_data_seq: u64,
    pub max_snapshot_seq: u64,
}

/// The block list, summary and trailer of an image whose data area ends at `list_at`,
/// sealed with the metadata checksum; and the content digest they record.
pub(crate) fn encode_tables(
    header: &ImageHeader,
    header_bytes: &[u8],
    reserved: &ReservedRef,
    entries: &[BlockEntry],
    tail: &ImageTail,
    list_at: u64,
) -> (Vec<u8>, [u8; TRAILER_SIZE], [u8; 16]) {
    let mut tables = vec![0u8; entries.len() * ENTRY_SIZE];
    for (entry, chunk) in entries.iter().zip(tables.chunks_exact_mut(ENTRY_SIZE)) {
        entry.encode_into(chunk);
    }
    for fp in &tail.summary {
        tables.extend_from_slice(&fp.to_le_bytes());
    }
    let digest = content_digest(header, reserved.checksum, &tail.summary);
    let mut t = [0u8; TRAILER_SIZE];
    t[0..8].copy_from_slice(&TRAILER_MAGIC);
    put_u64(&mut t, T_RESERVED_OFFSET, reserved.offset);
    put_u64(&mut t, T_RESERVED_STORED, reserved.stored_len);
    t[T_RESERVED_COMPRESSION] = reserved.compression;
    put_u64(&mut t, T_RESERVED_CHECKSUM, reserved.checksum);
    put_u64(&mut t, T_LIST_OFFSET, list_at);
    put_u64(&mut t, T_ENTRY_COUNT, entries.len() as u64);
    put_u64(&mut t, T_SUMMARY_OFFSET, list_at + (entries.len() * ENTRY_SIZE) as u64);
    put_u64(&mut t, T_MAX_DATA_SEQ, tail.max_data_seq);
    put_u64(&mut t, T_MAX_SNAPSHOT_SEQ, tail.max_snapshot_seq);
    t[T_CONTENT_DIGEST..T_CONTENT_DIGEST + 16].copy_from_slice(&digest);
    put_u64(&mut t, T_FILE_LEN, list_at + tables.len() as u64 + TRAILER_SIZE as u64);
    put_u64(&mut t, T_STORED_BLOCKS, entries.iter().filter(|e| e.is_data()).count() as u64);
    let mut hasher = Xxh3Default::new();
    hasher.update(header_bytes);
    hasher.update(&tables);
    hasher.update(&t[..T_CHECKSUM]);
    put_u64(&mut t, T_CHECKSUM, hasher.digest());
    (tables, t, digest)
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
