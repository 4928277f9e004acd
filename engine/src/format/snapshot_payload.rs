//! The fast-restart snapshot's bytes (the I/O is `snapshot`). Payload layout
//! (little-endian): magic `SPSNAP03`, slot count u64, next write sequence u64, block
//! count u64, the write sequence of every block (u64 each), 4096 generation floors (u32
//! each), then the slots, 32 bytes each: partition u16, slot kind u8, zero u8, and then
//! by kind: 0, an entry named by its tag: the 28-byte index entry (opaque here;
//! `index::IndexEntry` owns its bits); 1, an entry named by its full digest (its tag is
//! shared, `index::shared`), likewise, always followed by a slot of kind 2, that digest:
//! 20 bytes, then 8 zero bytes. The payload is split over
//! chained write blocks, each holding after its 64-byte block header a 16-byte chain
//! header (next block u32 or `SNAPSHOT_CHAIN_END`, payload bytes in this block u32, 8
//! zero bytes) and then its share of the payload.
//!
//! Version 2: the location packs no device (it is derived from the tag), and the tag is
//! digest bytes 2..14. Version 3 added slot kinds 1 and 2 (a version-2 snapshot, whose
//! kind bytes are all zero, still loads). A version-1 snapshot is refused, so that open
//! falls back to a cold start.

use super::*;
use crate::limits::{INDEX_ENTRY_BYTES, PARTITION_COUNT};

const SNAPSHOT_MAGIC: [u8; 8] = *b"SPSNAP03";
/// The previous version's magic, still read (its slots are all of kind 0).
const SNAPSHOT_MAGIC_V2: [u8; 8] = *b"SPSNAP02";
const SLOT_ENTRY: u8 = 0;
const SLOT_NAMED_ENTRY: u8 = 1;
const SLOT_DIGEST: u8 = 2;
const CHAIN_HEADER_SIZE: usize = 16;
/// Where a snapshot block's share of the payload starts.
pub const SNAPSHOT_CHUNK_START: usize = WBLOCK_HEADER_SIZE + CHAIN_HEADER_SIZE;
/// Bytes of one entry in the payload.
pub const SNAPSHOT_ENTRY_SIZE: usize = 4 + INDEX_ENTRY_BYTES;
/// The `next` of a chain's last block.
pub const SNAPSHOT_CHAIN_END: u32 = u32::MAX;
const HEAD_SIZE: usize = 32;

/// Appends one entry of `partition` to the entries of a payload being built: one slot, or
/// two for an entry named by its digest (`named_by`).
pub fn encode_snapshot_entry(
    partition: usize,
    entry: &[u8; INDEX_ENTRY_BYTES],
    named_by: Option<&Digest>,
    entries: &mut Vec<u8>,
) {
    match named_by {
        None => encode_snapshot_slot(&SnapshotSlot::Entry(partition, entry), entries),
        Some(digest) => {
            encode_snapshot_slot(&SnapshotSlot::NamedEntry(partition, entry), entries);
            encode_snapshot_slot(&SnapshotSlot::Digest(partition, *digest), entries);
        }
    }
}

/// Appends one slot (`SNAPSHOT_ENTRY_SIZE` bytes).
pub fn encode_snapshot_slot(slot: &SnapshotSlot<'_>, out: &mut Vec<u8>) {
    let (partition, kind) = match slot {
        SnapshotSlot::Entry(p, _) => (*p, SLOT_ENTRY),
        SnapshotSlot::NamedEntry(p, _) => (*p, SLOT_NAMED_ENTRY),
        SnapshotSlot::Digest(p, _) => (*p, SLOT_DIGEST),
    };
    assert!(partition < PARTITION_COUNT, "partition {partition} out of range");
    out.extend_from_slice(&(partition as u16).to_le_bytes());
    out.extend_from_slice(&[kind, 0]);
    match slot {
        SnapshotSlot::Entry(_, entry) | SnapshotSlot::NamedEntry(_, entry) => out.extend_from_slice(*entry),
        SnapshotSlot::Digest(_, digest) => {
            out.extend_from_slice(digest);
            out.extend_from_slice(&[0; SNAPSHOT_ENTRY_SIZE - 4 - DIGEST_SIZE]);
        }
    }
}

/// Slots an entry takes in a payload.
pub fn snapshot_slots_of(named_by_digest: bool) -> u64 {
    1 + named_by_digest as u64
}

/// One decoded slot of a payload.
#[derive(Debug, PartialEq, Eq)]
pub enum SnapshotSlot<'a> {
    /// (partition, raw index entry) of an entry named by its tag.
    Entry(usize, &'a [u8; INDEX_ENTRY_BYTES]),
    /// An entry named by its full digest: the next slot is its `Digest`.
    NamedEntry(usize, &'a [u8; INDEX_ENTRY_BYTES]),
    /// (partition, digest) naming the entry of the slot before.
    Digest(usize, Digest),
}

/// The payload's head, everything before its `entry_count` entries: magic, counts, every
/// block's write sequence and the generation floors.
pub fn encode_snapshot_head(entry_count: u64, next_seq: u64, block_seqs: &[u64], floors: &[u32]) -> Vec<u8> {
    assert_eq!(floors.len(), PARTITION_COUNT, "one generation floor per partition");
    let mut head = Vec::with_capacity(HEAD_SIZE + block_seqs.len() * 8 + floors.len() * 4);
    head.extend_from_slice(&SNAPSHOT_MAGIC);
    head.extend_from_slice(&entry_count.to_le_bytes());
    head.extend_from_slice(&next_seq.to_le_bytes());
    head.extend_from_slice(&(block_seqs.len() as u64).to_le_bytes());
    for seq in block_seqs {
        head.extend_from_slice(&seq.to_le_bytes());
    }
    for floor in floors {
        head.extend_from_slice(&floor.to_le_bytes());
    }
    head
}

/// The whole payload: `entries` as built by `encode_snapshot_entry`. (The engine streams
/// the head and then the entries instead of building this.)
#[cfg_attr(not(feature = "offline"), allow(dead_code))] // the tests and the fuzz target build payloads whole
pub fn encode_snapshot_payload(next_seq: u64, block_seqs: &[u64], floors: &[u32], entries: &[u8]) -> Vec<u8> {
    assert_eq!(entries.len() % SNAPSHOT_ENTRY_SIZE, 0, "entries are whole");
    let entry_count = (entries.len() / SNAPSHOT_ENTRY_SIZE) as u64;
    let mut payload = encode_snapshot_head(entry_count, next_seq, block_seqs, floors);
    payload.extend_from_slice(entries);
    payload
}

/// A snapshot payload, checked for layout. (The engine streams the payload; the inspector,
/// the tests and the fuzz target read it whole.)
#[derive(Debug)]
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub struct SnapshotContents<'a> {
    pub next_seq: u64,
    pub block_seq: Vec<u64>,
    pub generation_floors: Vec<u32>,
    /// (partition, entry) pairs.
    entries: &'a [u8],
}

#[cfg_attr(not(feature = "offline"), allow(dead_code))]
impl SnapshotContents<'_> {
    pub fn entry_count(&self) -> usize {
        self.entries.len() / SNAPSHOT_ENTRY_SIZE
    }

    /// Every slot; `None` for one that is not a valid slot.
    pub fn entries(&self) -> impl Iterator<Item = Option<SnapshotSlot<'_>>> + '_ {
        self.entries.chunks_exact(SNAPSHOT_ENTRY_SIZE).map(decode_snapshot_entry)
    }
}

/// One slot of a payload (`SNAPSHOT_ENTRY_SIZE` bytes); `None` if its partition is out
/// of range, its kind unknown, a byte that must be zero is not, or the bytes are not one
/// slot. (Whether a digest slot follows a named entry is the loader's to check.)
pub fn decode_snapshot_entry(raw: &[u8]) -> Option<SnapshotSlot<'_>> {
    if raw.len() != SNAPSHOT_ENTRY_SIZE || raw[3] != 0 {
        return None;
    }
    let partition = le_u16(raw, 0) as usize;
    if partition >= PARTITION_COUNT {
        return None;
    }
    let entry = || raw[4..].try_into().ok();
    match raw[2] {
        SLOT_ENTRY => Some(SnapshotSlot::Entry(partition, entry()?)),
        SLOT_NAMED_ENTRY => Some(SnapshotSlot::NamedEntry(partition, entry()?)),
        SLOT_DIGEST if raw[4 + DIGEST_SIZE..].iter().all(|&b| b == 0) => {
            Some(SnapshotSlot::Digest(partition, raw[4..4 + DIGEST_SIZE].try_into().ok()?))
        }
        _ => None,
    }
}

/// Bytes before a payload's entries on a device of `wblock_count` write blocks.
pub fn snapshot_head_len(wblock_count: u64) -> usize {
    let count = usize::try_from(wblock_count).unwrap_or(usize::MAX);
    count.saturating_mul(8).saturating_add(HEAD_SIZE + PARTITION_COUNT * 4)
}

/// What precedes a payload's entries, checked for magic and block count.
#[derive(Debug)]
pub struct SnapshotHead {
    pub entry_count: u64,
    pub next_seq: u64,
    pub block_seq: Vec<u64>,
    pub generation_floors: Vec<u32>,
}

/// Decodes a payload's head: the first `snapshot_head_len(wblock_count)` bytes of `bytes`.
pub fn parse_snapshot_head(bytes: &[u8], wblock_count: u64) -> Result<SnapshotHead, String> {
    let u64_at = |at: usize| bytes.get(at..at + 8).map(|_| le_u64(bytes, at));
    let magic = bytes.get(..8);
    let known = magic == Some(&SNAPSHOT_MAGIC[..]) || magic == Some(&SNAPSHOT_MAGIC_V2[..]);
    if !known || u64_at(24) != Some(wblock_count) {
        return Err("bad magic or block count".into());
    }
    if bytes.len() < snapshot_head_len(wblock_count) {
        return Err("shorter than its head".into());
    }
    let count = wblock_count as usize;
    let floors_at = HEAD_SIZE + count * 8;
    Ok(SnapshotHead {
        entry_count: le_u64(bytes, 8),
        next_seq: le_u64(bytes, 16),
        block_seq: (0..count).map(|b| le_u64(bytes, HEAD_SIZE + b * 8)).collect(),
        generation_floors: (0..PARTITION_COUNT).map(|p| le_u32(bytes, floors_at + p * 4)).collect(),
    })
}

/// Checks a payload's magic, sizes and counts against the device's block count.
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub fn parse_snapshot_payload(payload: &[u8], wblock_count: u64) -> Result<SnapshotContents<'_>, String> {
    let head = parse_snapshot_head(payload, wblock_count)?;
    let entries_at = snapshot_head_len(wblock_count);
    let entry_bytes =
        usize::try_from(head.entry_count).unwrap_or(usize::MAX).saturating_mul(SNAPSHOT_ENTRY_SIZE);
    if payload.len() != entries_at.saturating_add(entry_bytes) {
        return Err("size does not match its entry count".into());
    }
    Ok(SnapshotContents {
        next_seq: head.next_seq,
        block_seq: head.block_seq,
        generation_floors: head.generation_floors,
        entries: &payload[entries_at..],
    })
}

/// Writes a snapshot block's chain header (after its block header).
pub fn encode_snapshot_chain(next_block: u32, chunk_len: usize, block: &mut [u8]) {
    put_u32(block, WBLOCK_HEADER_SIZE, next_block);
    put_u32(block, WBLOCK_HEADER_SIZE + 4, chunk_len as u32);
    block[WBLOCK_HEADER_SIZE + 8..SNAPSHOT_CHUNK_START].fill(0);
}

/// A snapshot block's share of the payload and the next block of the chain, or why the
/// block cannot be part of a chain (its share runs past its end).
pub fn decode_snapshot_chain(block: &[u8]) -> Result<(&[u8], u32), String> {
    if block.len() < SNAPSHOT_CHUNK_START {
        return Err("block shorter than its chain header".into());
    }
    let next = le_u32(block, WBLOCK_HEADER_SIZE);
    let len = le_u32(block, WBLOCK_HEADER_SIZE + 4) as usize;
    if len > block.len() - SNAPSHOT_CHUNK_START {
        return Err("chunk longer than its block".into());
    }
    Ok((&block[SNAPSHOT_CHUNK_START..SNAPSHOT_CHUNK_START + len], next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_and_a_wrong_size_or_block_count_is_refused() {
        let mut entries = Vec::new();
        encode_snapshot_entry(4095, &[7; INDEX_ENTRY_BYTES], None, &mut entries);
        encode_snapshot_entry(1, &[9; INDEX_ENTRY_BYTES], None, &mut entries);
        let floors: Vec<u32> = (0..PARTITION_COUNT as u32).collect();
        let payload = encode_snapshot_payload(42, &[5, 6, 7], &floors, &entries);
        let contents = parse_snapshot_payload(&payload, 3).unwrap();
        assert_eq!((contents.next_seq, contents.block_seq.clone()), (42, vec![5, 6, 7]));
        assert_eq!(contents.generation_floors, floors);
        let got: Vec<_> = contents.entries().collect();
        let want = [
            SnapshotSlot::Entry(4095, &[7; INDEX_ENTRY_BYTES]),
            SnapshotSlot::Entry(1, &[9; INDEX_ENTRY_BYTES]),
        ];
        assert_eq!(got, want.map(Some));
        assert!(parse_snapshot_payload(&payload, 4).is_err());
        assert!(parse_snapshot_payload(&payload[..payload.len() - 1], 3).is_err());
        assert!(parse_snapshot_payload(&payload, u64::MAX).is_err());
        let mut bad_partition = payload.clone();
        let first_entry = payload.len() - 2 * SNAPSHOT_ENTRY_SIZE;
        bad_partition[first_entry..first_entry + 2].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(parse_snapshot_payload(&bad_partition, 3).unwrap().entries().next(), Some(None));
    }

    #[test]
    fn an_entry_named_by_digest_takes_two_slots_and_every_slot_byte_is_checked() {
        let digest = [0xAB; DIGEST_SIZE];
        let mut slots = Vec::new();
        encode_snapshot_entry(12, &[3; INDEX_ENTRY_BYTES], Some(&digest), &mut slots);
        assert_eq!(slots.len() as u64, snapshot_slots_of(true) * SNAPSHOT_ENTRY_SIZE as u64);
        let (first, second) = slots.split_at(SNAPSHOT_ENTRY_SIZE);
        assert_eq!(decode_snapshot_entry(first), Some(SnapshotSlot::NamedEntry(12, &[3; INDEX_ENTRY_BYTES])));
        assert_eq!(decode_snapshot_entry(second), Some(SnapshotSlot::Digest(12, digest)));
        for (at, byte) in [(2, 7u8), (3, 1), (SNAPSHOT_ENTRY_SIZE - 1, 1)] {
            let mut bad = second.to_vec();
            bad[at] = byte;
            assert_eq!(decode_snapshot_entry(&bad), None, "byte {at} = {byte} accepted");
        }
        let mut v2 = encode_snapshot_payload(1, &[1], &[0; PARTITION_COUNT], &slots[..SNAPSHOT_ENTRY_SIZE]);
        v2[..8].copy_from_slice(&SNAPSHOT_MAGIC_V2);
        assert!(parse_snapshot_payload(&v2, 1).is_ok(), "a version-2 payload still loads");
    }

    #[test]
    fn a_chain_header_round_trips_and_an_overlong_chunk_is_refused() {
        let mut block = vec![0u8; 4096];
        encode_snapshot_chain(17, 100, &mut block);
        let (chunk, next) = decode_snapshot_chain(&block).unwrap();
        assert_eq!((chunk.len(), next), (100, 17));
        encode_snapshot_chain(SNAPSHOT_CHAIN_END, 4096, &mut block);
        assert!(decode_snapshot_chain(&block).is_err());
        assert!(decode_snapshot_chain(&block[..40]).is_err());
    }
}
