//! One data block's records and damaged regions: the layout rule `check` judges blocks by.
//!
//! Within a data block, the block's own records (valid checksum, its sequence tag) must
//! follow each other without gaps from the end of the block header; after the last one,
//! the rest of its 4 KiB page must be zero (the engine pads every write to 4 KiB). What
//! lies beyond that page may be left from an earlier use of the block (a block written
//! by partial flushes is only overwritten as far as it was filled) and is not judged,
//! except that a damaged record carrying this block's sequence tag there is damage.
//! A break in that pattern is a damaged region: a hole (damaged bytes followed by more
//! of the block's records) or a torn tail (no record of the block follows).
//!
//! The records themselves come from the engine's walker (`format::block_records`, the one
//! recovery uses), so the tool and a restart see the same records. Cost: one pass over
//! the block (the engine's walker hashes each record once to verify it).

use spike::device::IO_ALIGN;
use spike::offline::format::{
    block_records, BlockItem, RecordView, RECORD_ALIGN, RECORD_MAGIC, RECORD_SEQ_LO_OFFSET, RECORD_VERSION,
    WBLOCK_HEADER_SIZE,
};

/// A damaged region of a data block, in bytes from the block's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DamageSpan {
    pub(super) start: u32,
    pub(super) end: u32,
    /// A torn tail (no record of the block follows) rather than a hole.
    pub(super) tail: bool,
    pub(super) reason: String,
}

/// One walk over a data block's records.
#[derive(Default)]
pub(super) struct BlockWalk<'a> {
    /// The block's own records (its sequence tag), with their offsets in the block.
    pub(super) records: Vec<(u32, RecordView<'a>)>,
    /// Valid records left from an earlier use of the block.
    pub(super) stale: u64,
    /// Regions of bytes that are neither a record nor zero, counted as a cold start
    /// counts its corrupt records (one per region the walker resyncs over).
    pub(super) corrupt: u64,
    pub(super) damage: Vec<DamageSpan>,
}

/// Whether the bytes at a record position claim to be a record of the block with this
/// sequence tag (magic, version and tag in place), whatever their checksum says.
fn claims_block(bytes: &[u8], seq_lo: u32) -> bool {
    bytes.len() >= RECORD_SEQ_LO_OFFSET + 4
        && u16::from_le_bytes([bytes[0], bytes[1]]) == RECORD_MAGIC
        && bytes[2] == RECORD_VERSION
        && bytes.get(RECORD_SEQ_LO_OFFSET..RECORD_SEQ_LO_OFFSET + 4) == Some(&seq_lo.to_le_bytes()[..])
}

/// Walks a data block with the engine's own walker and finds where the block breaks the
/// pattern described in the module comment.
pub(super) fn walk_block(buf: &[u8], seq: u64) -> BlockWalk<'_> {
    let seq_lo = seq as u32;
    let mut walk = BlockWalk::default();
    // Where the next record of this block must start: the end of the previous one.
    let mut expected = WBLOCK_HEADER_SIZE;
    // The first thing at or after `expected` that is neither zero nor a record of the block.
    let mut first_oddity: Option<(usize, String)> = None;
    let mut claimed_bad: Option<usize> = None;
    for item in block_records(buf, seq) {
        match item {
            BlockItem::Record { offset, view } => {
                if offset != expected {
                    let reason = first_oddity.take().map_or_else(
                        || "zeroes where the block's records should continue".to_string(),
                        |(_, reason)| reason,
                    );
                    walk.damage.push(DamageSpan {
                        start: expected as u32,
                        end: offset as u32,
                        tail: false,
                        reason,
                    });
                }
                expected = offset + view.size_bytes;
                walk.records.push((offset as u32, view));
                first_oddity = None;
                claimed_bad = None;
            }
            BlockItem::Stale { offset } => {
                walk.stale += 1;
                first_oddity.get_or_insert((offset, "a record left from an earlier use of the block".into()));
            }
            BlockItem::Corrupt { offset, problem } => {
                walk.corrupt += 1;
                first_oddity.get_or_insert((offset, problem.to_string()));
                if claims_block(&buf[offset..], seq_lo) {
                    claimed_bad.get_or_insert(offset);
                }
            }
        }
    }
    let expected = expected.min(buf.len());
    let pad_end = (expected.div_ceil(IO_ALIGN) * IO_ALIGN).min(buf.len());
    let reason_at_end = |default: String| match &first_oddity {
        Some((pos, reason)) if *pos == expected => reason.clone(),
        _ => default,
    };
    if let Some(nonzero) = buf[expected..pad_end].iter().position(|&b| b != 0) {
        let reason = reason_at_end(format!(
            "non-zero bytes at block offset {} in the padding after the block's last record",
            expected + nonzero
        ));
        walk.damage.push(DamageSpan { start: expected as u32, end: pad_end as u32, tail: true, reason });
    } else if let Some(pos) = claimed_bad {
        let reason = format!("a damaged record carrying this block's sequence at block offset {pos}");
        walk.damage.push(DamageSpan {
            start: expected as u32,
            end: (pos + RECORD_ALIGN) as u32,
            tail: true,
            reason,
        });
    }
    walk
}

#[cfg(test)]
mod tests {
    use super::*;
    use spike::offline::format::{encode_record, record_size, RecordMeta};

    const WBS: usize = 128 * 1024;

    /// A block with `records` of the given value lengths, tagged `seq`; returns the block
    /// and each record's offset.
    fn block_with(seq: u64, value_lens: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; WBS];
        let mut at = WBLOCK_HEADER_SIZE;
        let mut offsets = Vec::new();
        for (i, &len) in value_lens.iter().enumerate() {
            let meta = RecordMeta {
                digest: [i as u8 + 1; 20],
                generation: 1,
                void_time: 0,
                last_update_ms: 5,
                tombstone: false,
                wblock_seq_lo: seq as u32,
                shared_tag: false,
            };
            let size = record_size(3, len);
            encode_record(&meta, b"key", &vec![7u8; len], &mut buf[at..at + size]);
            offsets.push(at);
            at += size;
        }
        (buf, offsets)
    }

    #[test]
    fn a_cleanly_written_block_has_no_damage() {
        let (buf, offsets) = block_with(9, &[100, 2000, 5000, 30]);
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.records.len(), offsets.len());
        assert!(walk.damage.is_empty());
    }

    #[test]
    fn leftovers_past_the_last_page_are_not_damage() {
        // A partial flush of a reused block: its records, zero padding to 4 KiB, then what
        // an earlier use of the block left there.
        let (old, _) = block_with(3, &[700; 40]);
        let (mut buf, _) = block_with(9, &[100, 200]);
        buf[IO_ALIGN..].copy_from_slice(&old[IO_ALIGN..]);
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.records.len(), 2);
        assert!(walk.stale > 0);
        assert!(walk.damage.is_empty(), "{:?}", walk.damage);
    }

    #[test]
    fn a_flipped_bit_mid_block_is_a_hole_naming_the_record() {
        let (mut buf, offsets) = block_with(9, &[100, 2000, 5000, 30]);
        buf[offsets[1] + 100] ^= 4;
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.records.len(), 3);
        assert_eq!(walk.damage.len(), 1);
        let span = &walk.damage[0];
        assert_eq!((span.start as usize, span.end as usize, span.tail), (offsets[1], offsets[2], false));
        assert_eq!(span.reason, "record checksum mismatch");
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
        let (mut buf, offsets) = block_with(9, &[100, 2000, 5000, 30]);
        buf[offsets[3] + 60] ^= 1;
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.damage.len(), 1);
        assert!(walk.damage[0].tail);
        assert_eq!(walk.damage[0].start as usize, offsets[3]);
    }

    #[test]
    fn a_damaged_last_record_on_a_page_boundary_is_still_damage() {
        // The last record starts exactly at 4 KiB, so the padding rule alone would miss it:
        // its header still carries the block's sequence.
        let first = IO_ALIGN - WBLOCK_HEADER_SIZE - spike::offline::format::RECORD_HEADER_SIZE - 3;
        let (mut buf, offsets) = block_with(9, &[first, 300]);
        assert_eq!(offsets[1], IO_ALIGN);
        buf[offsets[1] + 100] ^= 1;
        let walk = walk_block(&buf, 9);
        assert_eq!(walk.damage.len(), 1, "{:?}", walk.damage);
        assert!(walk.damage[0].tail);
    }
}
