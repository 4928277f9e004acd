//! Whole-record operations a cluster and a server's admin commands need: applying a copy
//! received from another node, and a durable truncate.
//!
//! `apply` decides with recovery's newest-copy order (higher generation, then later
//! last-update time; recovery's last tie-break, the local block sequence, has no meaning
//! across nodes, so an exact tie is "already have it"), which makes it idempotent and
//! commutative: any two nodes that applied the same copies in any order hold the same
//! newest one. It takes the record's update lock, so it is atomic with
//! `update_by_digest`.
//!
//! `truncate` deletes with tombstones (so a cold start cannot bring a record back) and then
//! waits for a flush barrier. Cost: one read per live record of the partitions named and
//! one tombstone per record deleted.

use super::Engine;
use crate::error::{Error, Result};
use crate::format::{CopyOrder, Digest, RecordMeta};
use crate::index::{partition_of, EntryInfo, PARTITION_COUNT};
use crate::read::Record;
use crate::record_core::now_ms;
use crate::record_core::{Pending, Pressure};
use crate::stats::{Counters, Op};
use crate::write::WriteKind;
use crate::WriteOptions;
use std::ops::Range;

/// A copy of a record as another node holds it.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaCopy<'a> {
    pub digest: &'a Digest,
    pub generation: u32,
    pub last_update_ms: u64,
    /// Unix seconds after which the record expires; 0 = never.
    pub void_time: u32,
    pub tombstone: bool,
    pub value: &'a [u8],
}

/// What `apply` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The copy was newer and is now the record.
    Written,
    /// The copy was not newer than the one held (or the same): nothing was written.
    Stale,
}

/// How one attempt of `apply` ended.
enum ApplyAttempt {
    /// The entry changed since the held copy was read: look again.
    Moved,
    /// The copy is not newer than the one held.
    Stale,
    /// Placed; durable once this position is.
    Placed(Pending),
}

/// What `apply` compares: the held copy's order key and the entry it was read through.
type Held = Option<(EntryInfo, CopyOrder)>;

impl Engine {
    /// Writes `copy` if it is newer than the copy held, by recovery's order; durable on
    /// return in commit-to-device mode.
    pub fn apply(&self, copy: &ReplicaCopy<'_>) -> Result<Applied> {
        let start = std::time::Instant::now();
        let result = self.apply_inner(copy);
        self.count_op(Op::Apply, start, &result);
        if result.as_ref().is_ok_and(|a| *a == Applied::Stale) {
            Counters::add(&self.shared.counters.applies_stale, 1);
        }
        result
    }

    fn apply_inner(&self, copy: &ReplicaCopy<'_>) -> Result<Applied> {
        if copy.generation == 0 || copy.generation > crate::index::GENERATION_MAX {
            return Err(Error::InvalidArgument(format!(
                "a copy's generation must be 1 to {}, got {}",
                crate::index::GENERATION_MAX,
                copy.generation
            )));
        }
        let update = self.update_lock(copy.digest);
        let disk = self.shared.disk_of(copy.digest);
        let kind = if copy.tombstone { WriteKind::Delete } else { WriteKind::Client };
        let mut pressure = Pressure::new(disk, kind);
        for _ in 0..crate::record_core::READ_RETRIES_MAX * 4 {
            let held = self.held_copy(copy.digest)?;
            match self.try_apply(copy, held) {
                Ok(ApplyAttempt::Stale) => return Ok(Applied::Stale),
                Ok(ApplyAttempt::Placed(pending)) => {
                    // The update lock is never held across the durability wait.
                    drop(update);
                    self.shared.wait_pending(pending)?;
                    return Ok(Applied::Written);
                }
                Ok(ApplyAttempt::Moved) => continue,
                Err(err) => pressure.wait_or_fail(err)?,
            }
        }
        Err(Error::EngineFailed { reason: "record kept moving while a copy was applied".into() })
    }

    /// The copy this node holds for `digest` (live or a tombstone), read to learn its
    /// last-update time and to prove the entry is this digest's.
    fn held_copy(&self, digest: &Digest) -> Result<Held> {
        let Some(entry) = self.shared.index.partition(partition_of(digest)).get(digest) else {
            return Ok(None);
        };
        Ok(Some(match self.shared.read_own_copy(digest, entry)? {
            Some(record) => (entry, copy_order(record.generation, record.last_update_ms)),
            // Moved meanwhile: try_apply sees the entry changed and the caller looks again;
            // the order key is the highest, so that nothing is written on its strength.
            None => {
                (entry, CopyOrder { generation: u32::MAX, last_update_ms: u64::MAX, block_seq: u64::MAX })
            }
        }))
    }

    /// One attempt, under the record's partition lock.
    fn try_apply(&self, copy: &ReplicaCopy<'_>, held: Held) -> Result<ApplyAttempt> {
        let _poison_on_panic = self.shared.index.poison_on_panic();
        let mut partition = self.shared.index.partition(partition_of(copy.digest));
        let existing = partition.get(copy.digest);
        if existing != held.map(|(entry, _)| entry) {
            return Ok(ApplyAttempt::Moved);
        }
        let newer = match held {
            Some((_, held)) => copy_order(copy.generation, copy.last_update_ms) > held,
            // Older than a tombstone reclaimed from this partition.
            None => copy.generation > partition.generation_floor(),
        };
        if !newer {
            return Ok(ApplyAttempt::Stale);
        }
        let meta = RecordMeta {
            digest: *copy.digest,
            generation: copy.generation,
            void_time: if copy.tombstone { 0 } else { copy.void_time },
            last_update_ms: copy.last_update_ms,
            tombstone: copy.tombstone,
            wblock_seq_lo: 0,
            shared_tag: false, // decided by `place_on`, under the partition lock
        };
        let value = if copy.tombstone { &[][..] } else { copy.value };
        Ok(ApplyAttempt::Placed(self.shared.place(&mut partition, existing, &meta, &[], value)?))
    }

    /// Deletes, durably, every live record of `partitions` last updated before
    /// `updated_before_ms` (Unix ms) for which `matches` says yes; returns how many. A
    /// record written meanwhile (a newer generation) is left alone. Deleted records stay
    /// deleted after any restart: each gets a tombstone, and the call returns after a
    /// flush barrier.
    pub fn truncate(
        &self,
        partitions: Range<usize>,
        updated_before_ms: u64,
        matches: &mut dyn FnMut(&Record) -> bool,
    ) -> Result<u64> {
        if partitions.end > PARTITION_COUNT || partitions.start > partitions.end {
            let partition = partitions.end.max(partitions.start);
            return Err(Error::InvalidPartition { partition, count: PARTITION_COUNT });
        }
        let updated_before_ms = updated_before_ms.min(now_ms() + 1);
        let mut deleted = 0;
        for partition in partitions {
            let mut doomed = Vec::new();
            let mut first_error = None;
            self.read_partition(partition, &mut |record| {
                match record {
                    Ok(record) if record.last_update_ms < updated_before_ms && matches(&record) => {
                        doomed.push((record.digest, record.generation))
                    }
                    Ok(_) => {}
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
                true
            })?;
            if let Some(err) = first_error {
                return Err(err);
            }
            for (digest, generation) in doomed {
                let options = WriteOptions { expected_generation: Some(generation), ..Default::default() };
                match self.delete_by_digest(&digest, &options) {
                    Ok(()) => deleted += 1,
                    Err(Error::GenerationMismatch { .. } | Error::NotFound) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        self.flush()?;
        Ok(deleted)
    }
}

/// Recovery's order (`CopyOrder`) for a copy compared across nodes: no block sequence
/// (the held copy's block means nothing to the sender), so an exact tie is not newer.
fn copy_order(generation: u32, last_update_ms: u64) -> CopyOrder {
    CopyOrder { generation, last_update_ms, block_seq: 0 }
}
