//! Records: the codec (a 64-byte checksummed header, the key, the value, padding to 16
//! bytes), the walk over a block's records, and the one order of two copies of a record.

use super::*;

/// The metadata of one record, as encoded in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub digest: Digest,
    pub generation: u32,
    /// Unix seconds after which the record is gone; 0 = never.
    pub void_time: u32,
    pub last_update_ms: u64,
    pub tombstone: bool,
    /// Written while another digest shared this one's index tag (`FLAG_SHARED_TAG`).
    pub shared_tag: bool,
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
    out[3] =
        if meta.tombstone { FLAG_TOMBSTONE } else { 0 } | if meta.shared_tag { FLAG_SHARED_TAG } else { 0 };
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
    if !reserved_zero
        || bytes[3] & !(FLAG_TOMBSTONE | FLAG_SHARED_TAG) != 0
        || padding.iter().any(|&b| b != 0)
    {
        return Err(RecordProblem::BadChecksum);
    }
    Ok(RecordView {
        meta: RecordMeta {
            digest: bytes[16..36].try_into().map_err(|_| RecordProblem::BadLength)?,
            generation: le_u32(bytes, 12),
            void_time: le_u32(bytes, 36),
            last_update_ms: le_u64(bytes, 48),
            tombstone: bytes[3] & FLAG_TOMBSTONE != 0,
            shared_tag: bytes[3] & FLAG_SHARED_TAG != 0,
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
