//! Operations addressed by a caller's digest: what a server speaking Aerospike's protocol
//! needs, as it receives the client's 20-byte RIPEMD-160 digest and never the key. The
//! digest's first 12 bits (little-endian) are the partition, as in Aerospike, so that a
//! partition scan returns exactly the records a client expects in that partition.
//!
//! Identity: the index keeps only part of a digest, so a caller could craft two digests
//! that share an entry's tag. A digest-addressed write that finds an entry with its tag
//! first reads that entry's record and compares the whole digest (`Shared::write_pending`);
//! for a different digest the tag becomes shared and both records are kept, each named by
//! its full digest (`index::shared`), and a read or scan never returns a record for a
//! digest other than its own. Cost: an overwrite reads the old copy once (from RAM while
//! its block is recent); a create reads nothing.
//!
//! Read-modify-write (`update_by_digest`) serialises updaters of one record on a striped
//! lock (`UPDATE_STRIPES`), taken before the partition lock and held across the read and
//! the append, never across the durability wait. Writers that do not take it (plain puts)
//! are caught by the generation check and the update retries.

use super::Engine;
use crate::config::{WriteOptions, WritePolicy};
use crate::error::{Error, Result};
use crate::format::Digest;
use crate::index::{partition_of, DigestTag, EntryInfo, EntryName};
use crate::read::{Record, Verify};
use crate::record_core::{is_live, now_s};
use crate::record_core::{WriteRequest, Written};
use crate::stats::Op;

use crate::limits::BATCH_KEYS_MAX;
/// A live record and the entry it was read through, or none.
type Found = Option<(EntryInfo, Record)>;

/// Attempts of an update whose record a plain put keeps changing.
const UPDATE_ATTEMPTS_MAX: usize = 64;

/// What an update does to the record it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Leave the record as it is.
    Keep,
    /// Write this value; `ttl_s` as in `WriteOptions` (None or 0 = never expires).
    Put { value: Vec<u8>, ttl_s: Option<u32> },
    /// Delete the record (a tombstone).
    Delete,
}

impl Engine {
    /// Writes `value` under a caller's digest; returns the new generation and void time.
    pub fn put_by_digest(&self, digest: &Digest, value: &[u8], options: &WriteOptions) -> Result<Written> {
        let start = std::time::Instant::now();
        let result = self.write_by_digest(digest, value, options, false, None);
        self.count_op(Op::Put, start, &result);
        result
    }

    fn write_by_digest(
        &self,
        digest: &Digest,
        value: &[u8],
        options: &WriteOptions,
        tombstone: bool,
        verified: Option<EntryInfo>,
    ) -> Result<Written> {
        let request = WriteRequest {
            digest,
            stored_key: &[],
            value,
            options,
            tombstone,
            caller_digest: true,
            verified,
        };
        let (written, pending) = self.shared.write_pending(&request)?;
        self.shared.wait_pending(pending)?;
        Ok(written)
    }

    /// Reads the live record with this digest.
    pub fn get_by_digest(&self, digest: &Digest) -> Result<Record> {
        let start = std::time::Instant::now();
        let result = self.fetch_by_digest(digest).and_then(|r| r.map(|(_, r)| r).ok_or(Error::NotFound));
        self.count_op(Op::Get, start, &result);
        result
    }

    /// The live record with this digest and the entry it was read through, if any. An
    /// entry holding another digest (a crafted collision) is not this digest's record.
    fn fetch_by_digest(&self, digest: &Digest) -> Result<Option<(EntryInfo, Record)>> {
        let found = self.shared.fetch_with_entry(partition_of(digest), EntryName::Digest(*digest))?;
        Ok(found.filter(|(_, record)| record.digest == *digest))
    }

    /// Whether a live record has this digest. Reads the record when the index has an entry
    /// for its tag, to tell it from a crafted digest that shares the entry.
    pub fn exists_by_digest(&self, digest: &Digest) -> Result<bool> {
        let entry = self.shared.index.partition(partition_of(digest)).get(digest);
        if !entry.is_some_and(|e| is_live(&e, now_s())) {
            return Ok(false);
        }
        Ok(self.fetch_by_digest(digest)?.is_some())
    }

    /// Whether a live record may have this digest, from the index alone (no device read):
    /// false means surely none; true may also be a crafted digest sharing the entry's tag.
    /// For callers that drop only what is surely gone (a server's secondary-index sweep).
    pub fn may_exist_by_digest(&self, digest: &Digest) -> bool {
        let entry = self.shared.index.partition(partition_of(digest)).get(digest);
        entry.is_some_and(|e| is_live(&e, now_s()))
    }

    /// Deletes the record with this digest by writing a tombstone (durable across any
    /// restart). `NotFound` if there is no live record.
    pub fn delete_by_digest(&self, digest: &Digest, options: &WriteOptions) -> Result<()> {
        let start = std::time::Instant::now();
        let result = self.write_by_digest(digest, &[], options, true, None).map(|_| ());
        self.count_op(Op::Delete, start, &result);
        result
    }

    /// Gives the record a new time to live (None or 0 = never expires).
    pub fn touch_by_digest(&self, digest: &Digest, ttl_s: Option<u32>) -> Result<Written> {
        let start = std::time::Instant::now();
        let result = self
            .update_uncounted(digest, |record| match record {
                Some(record) => Ok((Change::Put { value: record.value.clone(), ttl_s }, ())),
                None => Err(Error::NotFound),
            })
            .map(|(_, written)| written);
        self.count_op(Op::Touch, start, &result);
        result
    }

    /// An atomic read-modify-write of one record: `change` sees the live record (or
    /// `None`) and says what to do; no other update of this record runs in between, and a
    /// plain put that slips in makes the update start over with the new record. Returns
    /// what `change` returned and the record's generation and void time after it
    /// (generation 0 when there is none). `change` may run more than once.
    pub fn update_by_digest<T>(
        &self,
        digest: &Digest,
        change: impl FnMut(Option<&Record>) -> Result<(Change, T)>,
    ) -> Result<(T, Written)> {
        let start = std::time::Instant::now();
        let result = self.update_uncounted(digest, change);
        self.count_op(Op::Update, start, &result);
        result
    }

    fn update_uncounted<T>(
        &self,
        digest: &Digest,
        change: impl FnMut(Option<&Record>) -> Result<(Change, T)>,
    ) -> Result<(T, Written)> {
        let (out, written, pending) = self.update_placed(digest, None, change)?;
        if let Some(pending) = pending {
            self.shared.wait_pending(pending)?;
        }
        Ok((out, written))
    }

    /// Atomic read-modify-writes of many records, each as `update_by_digest` does it, but
    /// with the device reads of their current copies in flight together and one wait for
    /// durability after all the writes: for a server that gathers the writes its clients
    /// sent at the same time. `change(i, record)` decides for `digests[i]`; the updates
    /// run in order, so a digest named twice sees its earlier change. Each counts as an
    /// update. Results are in the order of `digests`.
    pub fn update_each_by_digest<T>(
        &self,
        digests: &[Digest],
        mut change: impl FnMut(usize, Option<&Record>) -> Result<(Change, T)>,
    ) -> Vec<Result<(T, Written)>> {
        let start = std::time::Instant::now();
        let mut prefetched = Vec::with_capacity(digests.len());
        for chunk in digests.chunks(BATCH_KEYS_MAX) {
            prefetched.extend(self.read_many_with_entries(chunk));
        }
        let mut results = Vec::with_capacity(digests.len());
        let mut pendings = Vec::new();
        for (i, (digest, first)) in digests.iter().zip(prefetched).enumerate() {
            results.push(match self.update_placed(digest, Some(first), |record| change(i, record)) {
                Ok((out, written, pending)) => {
                    pendings.extend(pending.map(|p| (i, p)));
                    Ok((out, written))
                }
                Err(err) => Err(err),
            });
        }
        for (i, pending) in pendings {
            if let Err(err) = self.shared.wait_pending(pending) {
                results[i] = Err(err);
            }
        }
        for result in &results {
            self.count_op(Op::Update, start, result);
        }
        results
    }

    /// An update up to its durability wait: the write is placed (or `Keep` returned) and
    /// the position to wait for, if any, handed back. `first` is the record read for
    /// `digest` before the update lock was taken; it is used only if the index still
    /// names the same copy under the lock.
    fn update_placed<T>(
        &self,
        digest: &Digest,
        mut first: Option<Result<Found>>,
        mut change: impl FnMut(Option<&Record>) -> Result<(Change, T)>,
    ) -> Result<(T, Written, Option<crate::record_core::Pending>)> {
        let guard = self.update_lock(digest);
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let current = match first.take() {
                Some(Ok(found)) if self.still_current(digest, &found) => found,
                _ => self.fetch_by_digest(digest)?,
            };
            let (entry, record) = current.map_or((None, None), |(e, r)| (Some(e), Some(r)));
            let (what, out) = change(record.as_ref())?;
            let generation = record.as_ref().map_or(0, |r| r.generation);
            let (value, ttl_s, tombstone) = match &what {
                Change::Keep => {
                    let void_time = record.as_ref().map_or(0, |r| r.void_time);
                    return Ok((out, Written { generation, void_time }, None));
                }
                Change::Delete if record.is_none() => return Err(Error::NotFound),
                Change::Delete => (&[][..], None, true),
                Change::Put { value, ttl_s } => (&value[..], *ttl_s, false),
            };
            // Written only if no plain put changed the record since it was read.
            let options =
                WriteOptions { policy: WritePolicy::Upsert, expected_generation: Some(generation), ttl_s };
            let request = WriteRequest {
                digest,
                stored_key: &[],
                value,
                options: &options,
                tombstone,
                caller_digest: true,
                verified: entry,
            };
            match self.shared.write_pending(&request) {
                Ok((written, pending)) => {
                    drop(guard);
                    return Ok((out, written, Some(pending)));
                }
                Err(Error::GenerationMismatch { .. }) => {
                    crate::stats::Counters::add(&self.shared.counters.update_retries, 1)
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::EngineFailed {
            reason: format!("update gave up after {UPDATE_ATTEMPTS_MAX} attempts: the record kept changing"),
        })
    }

    /// Whether a record read earlier for `digest` (`None`: there was none) is still the
    /// live copy the index names.
    fn still_current(&self, digest: &Digest, found: &Found) -> bool {
        let entry = self.shared.index.partition(partition_of(digest)).get(digest);
        let live = entry.filter(|e| is_live(e, now_s()));
        match found {
            None => live.is_none(),
            Some((read_through, _)) => live == Some(*read_through),
        }
    }

    pub(crate) fn update_lock(&self, digest: &Digest) -> std::sync::MutexGuard<'_, ()> {
        let stripe = &self.shared.update_locks[update_stripe(digest)];
        stripe.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads many digests, keeping their device reads in flight together,
    /// `BATCH_KEYS_MAX` at a time. Results are in the order of `digests`.
    pub fn get_many_by_digest(&self, digests: &[Digest]) -> Vec<Result<Record>> {
        let start = std::time::Instant::now();
        let mut results = Vec::with_capacity(digests.len());
        for chunk in digests.chunks(BATCH_KEYS_MAX) {
            results.extend(self.read_many(chunk));
        }
        self.shared.counters.add_batch(digests.len() as u64);
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            self.count_error(Op::Batch, err);
        }
        self.shared.counters.record_latency(Op::Batch, start);
        results
    }

    /// Reads many digests as that many single reads, their device reads in flight
    /// together: for a server that gathers the reads its clients sent at the same time.
    /// Each counts as a get (with the whole call's latency), not as a batch. Results are in
    /// the order of `digests`.
    pub fn get_each_by_digest(&self, digests: &[Digest]) -> Vec<Result<Record>> {
        let start = std::time::Instant::now();
        let mut results = Vec::with_capacity(digests.len());
        for chunk in digests.chunks(BATCH_KEYS_MAX) {
            results.extend(self.read_many(chunk));
        }
        for result in &results {
            self.count_op(Op::Get, start, result);
        }
        results
    }

    /// Reads up to `BATCH_KEYS_MAX` digests, their device reads in flight together; the
    /// record of another digest sharing an entry (a crafted collision) is not found.
    pub(crate) fn read_many(&self, digests: &[Digest]) -> Vec<Result<Record>> {
        let found = self.read_many_with_entries(digests);
        found
            .into_iter()
            .map(|r| r.and_then(|f| f.map(|(_, record)| record).ok_or(Error::NotFound)))
            .collect()
    }

    /// `read_many`, with the entry each record was read through (`None`: no live record).
    fn read_many_with_entries(&self, digests: &[Digest]) -> Vec<Result<Found>> {
        debug_assert!(digests.len() <= BATCH_KEYS_MAX);
        let now_s = now_s();
        let mut results: Vec<Option<Result<Found>>> = digests.iter().map(|_| None).collect();
        let mut per_disk: Vec<Vec<(usize, EntryInfo)>> = vec![Vec::new(); self.shared.disks.len()];
        for (i, digest) in digests.iter().enumerate() {
            match self.shared.index.partition(partition_of(digest)).get(digest) {
                Some(entry) if is_live(&entry, now_s) => {
                    per_disk[entry.location.device as usize].push((i, entry))
                }
                _ => results[i] = Some(Ok(None)),
            }
        }
        for (disk, items) in self.shared.disks.iter().zip(&per_disk) {
            let entries: Vec<EntryInfo> = items.iter().map(|(_, e)| *e).collect();
            for ((i, entry), verified) in items.iter().zip(self.shared.read_entries(disk, &entries)) {
                results[*i] = Some(match verified {
                    Ok(Verify::Ok(record)) if record.digest == digests[*i] => Ok(Some((*entry, record))),
                    Ok(Verify::Ok(_)) => Ok(None),
                    Ok(_) => self.fetch_by_digest(&digests[*i]),
                    Err(err) => Err(err),
                });
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// Calls `visit` with every live record of one partition in descending digest order
    /// (Aerospike's order, so that resume points are interchangeable), starting after
    /// `after` (records with a strictly smaller digest), until it returns false. A record
    /// that cannot be read or fails its checksum is passed as an `Err` and the scan goes
    /// on. Returns whether the partition was finished.
    ///
    /// Cost: the partition's records are read in device order (`read_partition`, batches
    /// of reads in flight) and held in memory together to be sorted (records ÷ 4096).
    pub fn scan_partition_by_digest(
        &self,
        partition: usize,
        after: Option<&Digest>,
        visit: &mut dyn FnMut(Result<Record>) -> bool,
    ) -> Result<bool> {
        let began = std::time::Instant::now();
        let scanned = self.scan_sorted(partition, after, visit);
        self.shared.counters.record_latency(Op::Scan, began);
        scanned
    }

    fn scan_sorted(
        &self,
        partition: usize,
        after: Option<&Digest>,
        visit: &mut dyn FnMut(Result<Record>) -> bool,
    ) -> Result<bool> {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        self.read_partition(partition, &mut |record| {
            match record {
                Ok(record) => records.push(record),
                Err(err) => problems.push(err),
            }
            true
        })?;
        records.sort_unstable_by_key(|r| std::cmp::Reverse(r.digest));
        let start = after.map_or(0, |after| records.partition_point(|r| r.digest >= *after));
        self.shared.counters.add_scanned(records.len() as u64 - start as u64);
        for problem in problems {
            self.count_error(Op::Scan, &problem);
            if !visit(Err(problem)) {
                return Ok(false);
            }
        }
        for record in records.into_iter().skip(start) {
            if !visit(Ok(record)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Returns once every write acknowledged so far is durable on its device (a flush
    /// barrier; in commit-to-device mode they already are).
    pub fn flush(&self) -> Result<()> {
        for disk in &self.shared.disks {
            disk.flush_barrier()?;
        }
        Ok(())
    }
}

/// The update lock a digest's updaters share.
fn update_stripe(digest: &Digest) -> usize {
    let tag = DigestTag::of(digest);
    (tag.hi as usize ^ partition_of(digest)) % UPDATE_STRIPES
}

/// Update locks: enough that unrelated records rarely share one at a server's concurrency.
pub(crate) const UPDATE_STRIPES: usize = 4096;
