//! The record core: `Shared`, what the engine's threads share (config, disks, index,
//! counters), its read path (`fetch`: look up, read, verify, retry when the entry moved)
//! and its write path: one attempt under the record's partition lock (policy checks,
//! generation, append, index update, the old copy's accounting), the bounded waits
//! between attempts with no lock held, and the identity check of caller-supplied digests.
//! The facade (`engine.rs`, `by_digest`, `replica`) and every background task (`defrag`,
//! `expiry`, `tombstone`, `janitor`) use it; it imports neither.

use crate::config::{Config, Durability, WriteOptions, WritePolicy};
use crate::disk::{Disk, Position};
use crate::error::{Error, Result};
use crate::format::device_of;
use crate::format::{self, Digest, RecordMeta, DIGEST_SECRET_SIZE};
use crate::index::{
    partition_of, DigestTag, EntryInfo, EntryName, Index, Location, Partition, GENERATION_MAX,
};
use crate::read::{Record, Verify};
use crate::stats::{Counters, RecoveryStats};
use crate::write::WriteKind;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Lookups retried when a record moves between lookup and read.
pub(crate) const READ_RETRIES_MAX: usize = 4;

/// What the engine's threads share: the record core (fetch here, the write path below)
/// that the facade (`Engine`) and every background task use.
pub(crate) struct Shared {
    pub config: Config,
    pub disks: Vec<Disk>,
    pub index: Index,
    pub secret: [u8; DIGEST_SECRET_SIZE],
    pub counters: Counters,
    pub recovery: RecoveryStats,
    /// Striped locks serialising read-modify-writes of one record (`by_digest`).
    pub update_locks: Vec<std::sync::Mutex<()>>,
}

impl Shared {
    /// Looks up and reads the live record with this tag, retrying when it moves under us.
    pub fn fetch(&self, partition: usize, name: EntryName) -> Result<Option<Record>> {
        Ok(self.fetch_with_entry(partition, name)?.map(|(_, record)| record))
    }

    /// `fetch`, with the index entry the record was read through.
    pub fn fetch_with_entry(&self, partition: usize, name: EntryName) -> Result<Option<(EntryInfo, Record)>> {
        let mut last_problem = None;
        for _ in 0..READ_RETRIES_MAX {
            let entry = self.index.partition(partition).get_named(name);
            let Some(entry) = entry.filter(|e| is_live(e, now_s())) else { return Ok(None) };
            let disk = &self.disks[entry.location.device as usize];
            let (verified, from_memory) = disk.read_entry(&entry)?;
            let counter =
                if from_memory { &self.counters.reads_from_memory } else { &self.counters.reads_from_device };
            Counters::add(counter, 1);
            match verified {
                Verify::Ok(record) => return Ok(Some((entry, record))),
                Verify::Moved | Verify::Corrupt(_)
                    if self.index.partition(partition).get_named(name) != Some(entry) =>
                {
                    continue
                }
                Verify::Moved => {
                    last_problem = Some(Error::corrupt(
                        disk.name(),
                        entry.location.offset_bytes,
                        "the record at this offset is not the one the index names",
                    ))
                }
                Verify::Corrupt(err) => last_problem = Some(err),
            }
            break;
        }
        Err(last_problem.unwrap_or(Error::NotFound))
    }

    /// `Disk::read_entries`, counted in `reads_from_memory` and `reads_from_device`.
    pub fn read_entries(&self, disk: &Disk, items: &[EntryInfo]) -> Vec<Result<Verify>> {
        let (results, sources) = disk.read_entries(items);
        Counters::add(&self.counters.reads_from_memory, sources.from_memory);
        Counters::add(&self.counters.reads_from_device, sources.from_device);
        results
    }

    pub fn disk_of(&self, digest: &Digest) -> &Disk {
        &self.disks[device_of(digest, self.disks.len())]
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn now_s() -> u32 {
    (now_ms() / 1000) as u32
}

pub(crate) fn is_live(entry: &EntryInfo, now_s: u32) -> bool {
    !entry.tombstone && (entry.void_time == 0 || entry.void_time > now_s)
}

impl Shared {
    /// Places a record (or tombstone) for `digest` and points the index at it; in
    /// commit-to-device mode returns once it is durable. See `write_pending`.
    pub fn write(&self, request: &WriteRequest<'_>) -> Result<u32> {
        let (written, pending) = self.write_pending(request)?;
        self.wait_pending(pending)?;
        Ok(written.generation)
    }

    /// Waits until a placed record is durable (commit-to-device mode; else returns at once).
    pub fn wait_pending(&self, pending: Pending) -> Result<()> {
        if self.config.durability == Durability::CommitToDevice {
            self.disks[pending.device].wait_durable(pending.position)?;
        }
        Ok(())
    }

    /// Places a record and returns its generation and the position that must be durable
    /// before it may be acknowledged. Short of space or queue room it waits (bounded by
    /// `overload_wait_ms`, with no lock held) and retries from the policy checks. A
    /// caller-supplied digest whose tag an entry already holds is first proven to be that
    /// entry's own digest by reading the record: two digests that agree in every bit the
    /// index keeps must never share an entry, so the tag becomes shared and each is named
    /// by its full digest (`index::shared`).
    pub fn write_pending(&self, request: &WriteRequest<'_>) -> Result<(Written, Pending)> {
        let kind = if request.tombstone { WriteKind::Delete } else { WriteKind::Client };
        let mut pressure = Pressure::new(self.disk_of(request.digest), kind);
        let mut verified = request.verified;
        let mut verifications = 0;
        loop {
            // Every wait happens here, with no partition lock held, and the attempt is
            // retried from the policy checks: the record may have changed meanwhile.
            match self.try_write(request, verified) {
                Ok(Attempt::Placed(written, pending)) => return Ok((written, pending)),
                Ok(Attempt::Unverified(entry)) if verifications < READ_RETRIES_MAX => {
                    verifications += 1;
                    verified = self.verify_identity(request.digest, entry)?;
                }
                Ok(Attempt::Unverified(_)) => {
                    return Err(Error::EngineFailed {
                        reason: "record kept moving while being verified".into(),
                    })
                }
                Err(err) => pressure.wait_or_fail(err)?,
            }
        }
    }

    /// Reads the record `entry` names (live or not) and says whether it is `digest`'s:
    /// `Some(entry)` if so, `None` if the entry moved or belongs to another digest (look
    /// again: the tag is shared from then on, see `read_own_copy`).
    pub fn verify_identity(&self, digest: &Digest, entry: EntryInfo) -> Result<Option<EntryInfo>> {
        Ok(self.read_own_copy(digest, entry)?.map(|_| entry))
    }

    /// The record `entry` names (live or a tombstone) if it is `digest`'s own; `None` if
    /// the entry moved since it was looked up, or if another digest holds it: then the
    /// tag becomes shared, so that a second look finds `digest`'s own entry (or none). A
    /// corrupt or misplaced record the index still names is an error.
    pub fn read_own_copy(&self, digest: &Digest, entry: EntryInfo) -> Result<Option<Record>> {
        let disk = &self.disks[entry.location.device as usize];
        match disk.read_entry(&entry)?.0 {
            Verify::Ok(record) if record.digest == *digest => Ok(Some(record)),
            Verify::Ok(other) => {
                if partition_of(&other.digest) != partition_of(digest) {
                    let problem = "the record the index names belongs to another partition";
                    return Err(Error::corrupt(disk.name(), entry.location.offset_bytes, problem));
                }
                let _poison_on_panic = self.index.poison_on_panic();
                let mut partition = self.index.partition(partition_of(digest));
                if partition.get_by_tag(entry.tag) == Some(entry) {
                    partition.share_tag(&other.digest);
                    Counters::add(&self.counters.tags_shared, 1);
                }
                Ok(None)
            }
            Verify::Moved | Verify::Corrupt(_)
                if self.index.partition(partition_of(digest)).get(digest) != Some(entry) =>
            {
                Ok(None)
            }
            Verify::Moved => Err(Error::corrupt(
                disk.name(),
                entry.location.offset_bytes,
                "the record at this offset is not the one the index names",
            )),
            Verify::Corrupt(err) => Err(err),
        }
    }

    /// One attempt of `write`; see the module comment for the order of the steps and why.
    fn try_write(&self, request: &WriteRequest<'_>, verified: Option<EntryInfo>) -> Result<Attempt> {
        let WriteRequest { digest, stored_key, value, options, tombstone, .. } = *request;
        let digest = *digest;
        let disk = self.disk_of(&digest);
        let size = format::record_size(stored_key.len(), value.len());
        if size > disk.record_size_max() {
            return Err(Error::RecordTooBig { size_bytes: size, max_bytes: disk.record_size_max() });
        }
        let tag = DigestTag::of(&digest);
        let now_ms = now_ms();
        let now_s = (now_ms / 1000) as u32;
        let _poison_on_panic = self.index.poison_on_panic();
        let mut partition = self.index.partition(partition_of(&digest));
        if self.index.is_poisoned() {
            return Err(Error::EngineFailed { reason: "a thread panicked while updating the index".into() });
        }
        let existing = partition.get(&digest);
        let exact = partition.is_shared(tag); // found by full digest: no need to prove it
        if let Some(entry) = existing.filter(|e| request.caller_digest && !exact && Some(*e) != verified) {
            return Ok(Attempt::Unverified(entry));
        }
        let live = existing.filter(|e| is_live(e, now_s));
        match (options.policy, live) {
            (WritePolicy::CreateOnly, Some(_)) => return Err(Error::AlreadyExists),
            (WritePolicy::UpdateOnly, None) => return Err(Error::NotFound),
            _ => {}
        }
        if tombstone && live.is_none() {
            return Err(Error::NotFound);
        }
        if let Some(expected) = options.expected_generation {
            let found = live.map_or(0, |e| e.generation);
            if found != expected {
                return Err(Error::GenerationMismatch { expected, found });
            }
        }
        let generation = next_generation(&partition, existing)?;
        let void_time = match options.ttl_s {
            Some(ttl) if ttl > 0 && !tombstone => now_s.saturating_add(ttl),
            _ => 0,
        };
        let meta = RecordMeta {
            digest,
            generation,
            void_time,
            last_update_ms: now_ms,
            tombstone,
            shared_tag: false, // decided by `place_on`, under the partition lock
            wblock_seq_lo: 0,
        };
        let pending = self.place(&mut partition, existing, &meta, stored_key, value)?;
        drop(partition);
        Ok(Attempt::Placed(Written { generation, void_time }, pending))
    }

    /// Appends a copy and points the index at it, under the caller's partition lock;
    /// `existing` is the entry it replaces.
    pub fn place(
        &self,
        partition: &mut Partition,
        existing: Option<EntryInfo>,
        meta: &RecordMeta,
        stored_key: &[u8],
        value: &[u8],
    ) -> Result<Pending> {
        let device = device_of(&meta.digest, self.disks.len());
        let (location, position) =
            place_on(&self.disks[device], partition, existing, meta, stored_key, value)?;
        Counters::add(&self.counters.client_bytes_written, location.size_bytes as u64);
        Ok(Pending { device, position })
    }
}

/// The generation of the next copy of a record whose entry is `existing`. Generations
/// continue across delete and re-create (and past reclaimed tombstones, through the
/// partition's floor): the newest copy must win at recovery.
pub(crate) fn next_generation(partition: &Partition, existing: Option<EntryInfo>) -> Result<u32> {
    let generation = existing.map_or(partition.generation_floor(), |e| e.generation) + 1;
    if generation > GENERATION_MAX {
        return Err(Error::GenerationExhausted);
    }
    Ok(generation)
}

/// The steps of a write that touch shared state, in their order, under the caller's
/// partition lock: append the copy to the disk's write buffer, point the index at it,
/// drop the replaced copy's live bytes. The loom model (`loom_model`) runs exactly this.
pub(crate) fn place_on(
    disk: &Disk,
    partition: &mut Partition,
    existing: Option<EntryInfo>,
    meta: &RecordMeta,
    stored_key: &[u8],
    value: &[u8],
) -> Result<(Location, Position)> {
    let kind = if meta.tombstone { WriteKind::Delete } else { WriteKind::Client };
    // A copy written while its tag is shared says so, for the next cold start (`recovery`).
    let meta = &RecordMeta { shared_tag: partition.is_shared(DigestTag::of(&meta.digest)), ..*meta };
    let (location, position) = disk.append(meta, stored_key, value, kind)?;
    partition.upsert(
        &meta.digest,
        EntryInfo {
            tag: DigestTag::of(&meta.digest),
            generation: meta.generation,
            tombstone: meta.tombstone,
            location,
            void_time: meta.void_time,
        },
    );
    // Meant to be armed with `Action::Panic` (a panic holding the partition lock); an
    // injected error here is ignored, as returning would skip the old copy's accounting.
    let _ = crate::failpoint::hit("engine::write::after_index_update");
    if let Some(old) = existing {
        disk.remove_live(old.location);
    }
    Ok((location, position))
}

/// One client write, as `Shared::write` takes it.
#[derive(Clone, Copy)]
pub(crate) struct WriteRequest<'a> {
    pub digest: &'a Digest,
    pub stored_key: &'a [u8],
    pub value: &'a [u8],
    pub options: &'a WriteOptions,
    pub tombstone: bool,
    /// The digest came from the caller (not hashed here with the namespace secret), so it
    /// may be crafted to collide with another in every bit the index keeps.
    pub caller_digest: bool,
    /// An entry already proven to hold `digest` (its record was read), saving a re-read.
    pub verified: Option<EntryInfo>,
}

/// What a write left in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub generation: u32,
    /// Unix seconds after which the record expires; 0 = never.
    pub void_time: u32,
}

/// The waits a write under space or queue pressure may do, all with no lock held and all
/// within one deadline (`overload_wait_ms` from the first attempt).
pub(crate) struct Pressure<'a> {
    disk: &'a Disk,
    kind: WriteKind,
    start: Instant,
    deadline: Instant,
}

impl<'a> Pressure<'a> {
    pub fn new(disk: &'a Disk, kind: WriteKind) -> Self {
        Pressure { disk, kind, start: Instant::now(), deadline: disk.overload_deadline() }
    }

    /// Waits for what `err` lacks and returns `Ok` to say "retry"; any other error, or the
    /// deadline passed, is returned.
    pub fn wait_or_fail(&mut self, err: Error) -> Result<()> {
        let in_time = Instant::now() < self.deadline;
        match err {
            Error::OutOfSpace { .. } if in_time => self.disk.wait_for_space(self.kind, self.deadline),
            Error::DeviceOverloaded { .. } if in_time => self.disk.wait_for_queue_room(self.deadline),
            Error::DeviceOverloaded { device, queued, .. } => {
                let waited_ms = self.start.elapsed().as_millis() as u64;
                return Err(Error::DeviceOverloaded { device, queued, waited_ms });
            }
            err => return Err(err),
        }
        Ok(())
    }
}

/// A placed record not yet known durable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    device: usize,
    position: Position,
}

enum Attempt {
    Placed(Written, Pending),
    /// An entry holds this digest's tag; its record must be read to prove it is ours.
    Unverified(EntryInfo),
}
