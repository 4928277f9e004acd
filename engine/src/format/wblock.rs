//! The 64-byte header at the start of every write block, and the one rule that says what
//! a block holds from its header (`classify_block`), which cold start, `spike-inspect`
//! and `spike-backup` all apply.

use super::*;
use xxhash_rust::xxh3::xxh3_64;

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

/// What a write block holds, judged from its header alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockClass {
    /// A data block of this device at its own index: its records whose sequence tag
    /// matches `write_seq` count.
    Data { write_seq: u64 },
    /// Part of an index snapshot, written by the run of this `open_count`.
    Snapshot { open_count: u64 },
    /// Free-marked by the engine.
    Free,
    /// A valid header of this device at its own index, of a kind this build does not know.
    OtherKind(u16),
    /// No Spike block header: never written, or left from before a forced format.
    NoHeader,
    /// Spike's block magic, but the header does not verify (checksum or version).
    DamagedHeader,
    /// A valid header of another device (left from before a forced format).
    Foreign,
    /// A valid header of this device naming another block index.
    Misplaced { header_index: u32 },
}

/// The one block classifier: what block `wblock` of the device `device_uuid` holds,
/// from the first `WBLOCK_HEADER_SIZE` bytes of `bytes`.
pub fn classify_block(bytes: &[u8], device_uuid: &[u8; 16], wblock: u32) -> BlockClass {
    let Some(header) = WblockHeader::decode(bytes) else {
        let has_magic = bytes.len() >= 4 && le_u32(bytes, 0) == WBLOCK_MAGIC;
        return if has_magic { BlockClass::DamagedHeader } else { BlockClass::NoHeader };
    };
    if header.device_uuid != *device_uuid {
        return BlockClass::Foreign;
    }
    if header.wblock_index != wblock {
        return BlockClass::Misplaced { header_index: header.wblock_index };
    }
    match header.kind {
        WBLOCK_KIND_DATA => BlockClass::Data { write_seq: header.write_seq },
        WBLOCK_KIND_SNAPSHOT => BlockClass::Snapshot { open_count: header.write_seq },
        WBLOCK_KIND_FREE => BlockClass::Free,
        other => BlockClass::OtherKind(other),
    }
}

/// The one free-page builder: the page written over a block the engine frees (or a
/// restore leaves free), so that none of its stale records can come back. `page` is
/// zeroed and then given a free header for block `wblock` of `device_uuid`.
pub fn encode_free_page(device_uuid: [u8; 16], wblock: u32, page: &mut [u8]) {
    page.fill(0);
    WblockHeader { kind: WBLOCK_KIND_FREE, write_seq: 0, device_uuid, wblock_index: wblock }
        .encode_into(&mut page[..WBLOCK_HEADER_SIZE]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classifier_names_every_kind_of_block_header() {
        let uuid = [5; 16];
        let mut block = vec![0u8; 4096];
        assert_eq!(classify_block(&block, &uuid, 3), BlockClass::NoHeader);
        let header = |kind, write_seq, device_uuid, wblock_index| WblockHeader {
            kind,
            write_seq,
            device_uuid,
            wblock_index,
        };
        let cases = [
            (header(WBLOCK_KIND_DATA, 9, uuid, 3), BlockClass::Data { write_seq: 9 }),
            (header(WBLOCK_KIND_SNAPSHOT, 4, uuid, 3), BlockClass::Snapshot { open_count: 4 }),
            (header(WBLOCK_KIND_FREE, 0, uuid, 3), BlockClass::Free),
            (header(77, 0, uuid, 3), BlockClass::OtherKind(77)),
            (header(WBLOCK_KIND_DATA, 9, [6; 16], 3), BlockClass::Foreign),
            (header(WBLOCK_KIND_DATA, 9, uuid, 8), BlockClass::Misplaced { header_index: 8 }),
        ];
        for (header, class) in cases {
            header.encode_into(&mut block);
            assert_eq!(classify_block(&block, &uuid, 3), class, "{header:?}");
        }
        block[20] ^= 1;
        assert_eq!(classify_block(&block, &uuid, 3), BlockClass::DamagedHeader);
        assert_eq!(classify_block(&block[..3], &uuid, 3), BlockClass::NoHeader);
        encode_free_page(uuid, 3, &mut block);
        assert_eq!(classify_block(&block, &uuid, 3), BlockClass::Free);
        assert!(block[WBLOCK_HEADER_SIZE..].iter().all(|&b| b == 0));
    }
}
