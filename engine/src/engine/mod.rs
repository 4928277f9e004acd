//! The engine a server embeds: opening a namespace and the record operations.
//!
//! A put takes the record's partition lock, checks the write policy against the index,
//! appends the record to its device's write buffer, points the index at the new copy and
//! moves the live bytes from the old copy's block to the new one's, all under that one
//! lock, so that concurrent writers of one key are serialised and the index only ever
//! names placed copies. Commit-to-device writers then wait for durability outside the
//! lock. Reads copy the entry under the lock and do their I/O outside it; a read that
//! finds another record at the location (the entry moved meanwhile) looks up again.
//!
//! The facade is this module and its two children, `by_digest` (operations addressed by
//! a caller's digest) and `replica` (`apply` and `truncate`); nothing else in the crate
//! imports it.

mod by_digest;
mod replica;

pub use by_digest::Change;
pub use replica::{Applied, ReplicaCopy};

use crate::config::{Config, WriteOptions, WritePolicy};
use crate::device::{self, Device};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::format::{self, Digest, KEY_SIZE_MAX};
use crate::index::{partition_of, EntryInfo, EntryName, Index, PARTITION_COUNT};
use crate::janitor::{self, BackgroundControl};
use crate::namespace;
use crate::read::{Record, Verify};
use crate::record_core::{is_live, now_s, Shared, WriteRequest, READ_RETRIES_MAX};
use crate::recovery;
use crate::stats::{Counters, DeviceStats, Op, RecoveryStats, Stats};
use crate::{expiry, snapshot, tombstone};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::limits::BATCH_KEYS_MAX;
/// Records read per batch in a scan.
const SCAN_BATCH: usize = 64;

/// An open namespace. Dropping it shuts down as `close` does, ignoring errors.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    flushers: Vec<JoinHandle<()>>,
    /// The janitor and the reclaimer (`janitor`).
    background: Vec<JoinHandle<()>>,
    background_control: Arc<BackgroundControl>,
}

/// Starts a background thread. If its body panics, every disk is latched failed, so that
/// writers and commit-to-device waiters get an error at once instead of waiting forever
/// for a flusher or janitor that is gone.
fn spawn(
    shared: &Arc<Shared>,
    name: &str,
    body: impl FnOnce(&Shared) + Send + 'static,
) -> Result<JoinHandle<()>> {
    let shared = shared.clone();
    let thread_name = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&shared)));
            if outcome.is_err() {
                let reason = format!("background thread {thread_name} panicked");
                for disk in &shared.disks {
                    let mut state = disk.lock();
                    disk.latch_failure(&mut state, &Error::EngineFailed { reason: reason.clone() });
                }
            }
        })
        .map_err(|e| Error::Config(format!("cannot start thread {name}: {e}")))
}

/// Builds the disks and index: nothing to read on the first start since a format, from
/// the snapshots of a clean shutdown when every device has a valid one, else by a cold
/// start (on fresh disks, whatever a failed load left).
fn restore(
    config: &Config,
    build_disks: impl Fn() -> Result<Vec<Disk>>,
) -> Result<(Vec<Disk>, Index, RecoveryStats)> {
    let start = Instant::now();
    let disks = build_disks()?;
    if disks.iter().all(|d| d.header().open_count == 0) {
        return Ok(fresh_start(disks, start));
    }
    let absent = disks.iter().find_map(|d| snapshot::absent_reason(&d.header()));
    let disks = match (config.fast_restart, absent) {
        (false, _) => disks,
        (true, Some(reason)) => {
            // The expected state after a crash: no load to attempt, no alarm.
            log::info!("cold start: {reason}");
            disks
        }
        (true, None) => match fast_start(disks, start) {
            Ok(restored) => return Ok(restored),
            Err(err) => {
                log::warn!("fast restart not possible ({err}); cold start");
                build_disks()?
            }
        },
    };
    let index = Index::for_restart(disks.len() as u8);
    let stats = recovery::cold_start(&disks, &index, now_s())?;
    Ok((disks, index, stats))
}

/// The first start since the devices were formatted: no run has written a block under
/// their new device UUIDs (a run rewrites the header before its first write), so every
/// block is free without reading one. A scan would read the whole device: hours at tens
/// of TiB. The run's first sequence is the format's (`write_seq_reserved`, set by the open).
fn fresh_start(disks: Vec<Disk>, start: Instant) -> (Vec<Disk>, Index, RecoveryStats) {
    for disk in &disks {
        disk.lock().blocks.restore_all_free();
    }
    log::info!("fresh start: the first since the devices were formatted, nothing to read");
    let index = Index::for_restart(disks.len() as u8);
    let stats = RecoveryStats {
        kind: "fresh",
        duration_ms: start.elapsed().as_millis() as u64,
        ..Default::default()
    };
    (disks, index, stats)
}

/// Loads every device's snapshot into a new index; an error leaves `disks` unusable.
fn fast_start(disks: Vec<Disk>, start: Instant) -> Result<(Vec<Disk>, Index, RecoveryStats)> {
    let index = Index::for_restart(disks.len() as u8);
    for disk in &disks {
        snapshot::load_snapshot(disk, &index)?;
    }
    let mut stats = RecoveryStats { kind: "fast", ..Default::default() };
    for p in 0..PARTITION_COUNT {
        for entry in index.partition(p).entries() {
            if entry.tombstone {
                stats.tombstones_kept += 1;
            } else {
                stats.records_kept += 1;
            }
        }
    }
    stats.blocks_in_use = disks.iter().map(|d| d.blocks_in_use()).sum();
    stats.duration_ms = start.elapsed().as_millis() as u64;
    Ok((disks, index, stats))
}

impl Engine {
    /// Formats the configured device paths. Without `force` only blank devices are taken.
    pub fn format(config: &Config, force: bool) -> Result<()> {
        let devices = open_paths(config)?;
        namespace::format(config, &devices, force)
    }

    /// Formats already opened devices (simulated ones in tests).
    pub fn format_devices(config: &Config, devices: &[Arc<dyn Device>], force: bool) -> Result<()> {
        namespace::format(config, devices, force)
    }

    /// Opens the configured device paths; never formats.
    pub fn open(config: Config) -> Result<Engine> {
        let devices = open_paths(&config)?;
        Self::open_devices(config, devices)
    }

    /// Opens a namespace on already opened devices.
    pub fn open_devices(config: Config, mut devices: Vec<Arc<dyn Device>>) -> Result<Engine> {
        let headers = namespace::open_headers(&config, &mut devices)?;
        let secret = headers[0].digest_secret;
        let build_disks = || -> Result<Vec<Disk>> {
            let disks: Vec<Disk> = devices
                .iter()
                .zip(&headers)
                .enumerate()
                .map(|(i, (device, header))| Disk::new(i as u8, device.clone(), header.clone(), &config))
                .collect();
            for disk in &disks {
                disk.load_change_bitmap()?;
            }
            Ok(disks)
        };
        let (disks, index, recovery) = restore(&config, build_disks)?;
        // A cold start grew every partition insert by insert, leaving sparse chunks in the
        // sprigs' arena, and either way the buffers of the scan or the snapshot are gone:
        // give their pages back.
        index.compact_arena();
        index.use_huge_pages();
        crate::index::trim_heap();
        log::info!(
            "namespace {:?}: {} start kept {} records and {} tombstones in {} ms ({} corrupt, {} stale skipped)",
            config.namespace,
            recovery.kind,
            recovery.records_kept,
            recovery.tombstones_kept,
            recovery.duration_ms,
            recovery.corrupt_records,
            recovery.stale_records
        );
        for disk in &disks {
            // The clean flag is cleared (and the snapshot made stale) before any write
            // lands, and the run's first write sequences are reserved.
            let mut state = disk.lock();
            let mut header = disk.header();
            state.next_seq = state.next_seq.max(header.write_seq_reserved);
            header.flags &= !format::HEADER_FLAG_CLEAN;
            header.open_count += 1;
            header.write_seq_reserved = state.next_seq + crate::limits::WRITE_SEQS_RESERVED_AT_ONCE;
            namespace::write_header(disk.device.as_ref(), &mut header)?;
            state.write_seq_reserved = header.write_seq_reserved;
        }
        let update_locks = (0..by_digest::UPDATE_STRIPES).map(|_| Default::default()).collect();
        let counters = Counters::default();
        let shared = Arc::new(Shared { config, disks, index, secret, counters, recovery, update_locks });
        for disk in &shared.disks {
            disk.track_blocks_in_use();
        }
        let mut flushers = Vec::new();
        for i in 0..shared.disks.len() {
            flushers.push(spawn(&shared, &format!("spike-flush-{i}"), move |shared| {
                crate::write::run_flusher(&shared.disks[i], &shared.counters)
            })?);
        }
        let background_control = Arc::new(BackgroundControl::default());
        let (janitor_control, reclaimer_control) = (background_control.clone(), background_control.clone());
        let background = if shared.config.background_threads {
            vec![
                spawn(&shared, "spike-janitor", move |shared| janitor::run(shared, &janitor_control))?,
                spawn(&shared, "spike-reclaim", move |shared| {
                    janitor::run_reclaimer(shared, &reclaimer_control)
                })?,
            ]
        } else {
            Vec::new()
        };
        Ok(Engine { shared, flushers, background, background_control })
    }

    /// The keyed digest of `key` in this namespace.
    pub fn digest(&self, key: &[u8]) -> Digest {
        format::digest(&self.shared.secret, key)
    }

    fn check_key(key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidKey("empty key"));
        }
        if key.len() > KEY_SIZE_MAX {
            return Err(Error::InvalidKey("key longer than 1024 bytes"));
        }
        Ok(())
    }

    /// Writes `value` under `key`; returns the record's new generation.
    pub fn put(&self, key: &[u8], value: &[u8], options: &WriteOptions) -> Result<u32> {
        let start = Instant::now();
        let result = self.put_inner(key, value, options, false);
        self.count_op(Op::Put, start, &result);
        result
    }

    fn put_inner(&self, key: &[u8], value: &[u8], options: &WriteOptions, tombstone: bool) -> Result<u32> {
        Self::check_key(key)?;
        let digest = self.digest(key);
        let stored_key = if self.shared.config.store_keys && !tombstone { key } else { &[] };
        let request = WriteRequest {
            digest: &digest,
            stored_key,
            value,
            options,
            tombstone,
            caller_digest: false,
            verified: None,
        };
        self.shared.write(&request)
    }

    /// Deletes `key` by writing a tombstone, so that it stays deleted after any restart.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let start = Instant::now();
        let result = self.put_inner(key, &[], &WriteOptions::default(), true).map(|_| ());
        self.count_op(Op::Delete, start, &result);
        result
    }

    /// Deletes `key` only if it is at `expected_generation`.
    pub fn delete_if_generation(&self, key: &[u8], expected_generation: u32) -> Result<()> {
        let start = Instant::now();
        let options = WriteOptions { expected_generation: Some(expected_generation), ..Default::default() };
        let result = self.put_inner(key, &[], &options, true).map(|_| ());
        self.count_op(Op::Delete, start, &result);
        result
    }

    /// Gives `key` a new time to live (0 = never expires); returns the new generation.
    pub fn touch(&self, key: &[u8], ttl_s: u32) -> Result<u32> {
        let start = Instant::now();
        let mut result = Err(Error::NotFound);
        for _ in 0..READ_RETRIES_MAX {
            let record = match self.get_inner(key) {
                Ok(record) => record,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            };
            let options = WriteOptions {
                policy: WritePolicy::UpdateOnly,
                expected_generation: Some(record.generation),
                ttl_s: Some(ttl_s),
            };
            let stored_key = record.key.as_deref().unwrap_or(key);
            result = self.put_inner(stored_key, &record.value, &options, false);
            if !matches!(result, Err(Error::GenerationMismatch { .. })) {
                break;
            }
        }
        self.count_op(Op::Touch, start, &result);
        result
    }

    pub fn get(&self, key: &[u8]) -> Result<Record> {
        let start = Instant::now();
        let result = self.get_inner(key);
        self.count_op(Op::Get, start, &result);
        result
    }

    fn get_inner(&self, key: &[u8]) -> Result<Record> {
        Self::check_key(key)?;
        let digest = self.digest(key);
        let record =
            self.shared.fetch(partition_of(&digest), EntryName::Digest(digest))?.ok_or(Error::NotFound)?;
        if record.digest != digest {
            let disk = self.shared.disk_of(&digest);
            return Err(Error::corrupt(
                disk.name(),
                0,
                "record digest differs from the key's beyond the index tag",
            ));
        }
        Ok(record)
    }

    /// Whether `key` has a live record (an index lookup, no I/O).
    pub fn exists(&self, key: &[u8]) -> Result<bool> {
        Self::check_key(key)?;
        let digest = self.digest(key);
        let entry = self.shared.index.partition(partition_of(&digest)).get(&digest);
        Ok(entry.is_some_and(|e| is_live(&e, now_s())))
    }

    /// Reads many keys, keeping their device reads in flight together, at most
    /// `BATCH_KEYS_MAX` at a time (a larger batch is read in chunks of that size, so
    /// the read buffers in flight stay bounded). Results are in the order of `keys`.
    pub fn get_many(&self, keys: &[&[u8]]) -> Vec<Result<Record>> {
        let start = Instant::now();
        let mut results = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_KEYS_MAX) {
            results.extend(self.get_many_chunk(chunk));
        }
        self.shared.counters.add_batch(keys.len() as u64);
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            self.count_error(Op::Batch, err);
        }
        self.shared.counters.record_latency(Op::Batch, start);
        results
    }

    fn get_many_chunk(&self, keys: &[&[u8]]) -> Vec<Result<Record>> {
        debug_assert!(keys.len() <= BATCH_KEYS_MAX);
        let digests: Vec<Result<Digest>> =
            keys.iter().map(|k| Self::check_key(k).map(|_| self.digest(k))).collect();
        let valid: Vec<Digest> = digests.iter().filter_map(|d| d.as_ref().ok().copied()).collect();
        let mut read = self.read_many(&valid).into_iter();
        Counters::add(&self.shared.counters.gets, keys.len() as u64);
        digests.into_iter().map(|d| d.and_then(|_| read.next().unwrap_or(Err(Error::NotFound)))).collect()
    }

    /// Calls `visit` with every live record of one partition (0..4096) until it returns
    /// false. Records written during the scan may or may not be seen; the first record that
    /// cannot be read ends the scan with its error.
    pub fn scan_partition(&self, partition: usize, visit: &mut dyn FnMut(Record) -> bool) -> Result<bool> {
        let start = Instant::now();
        let mut failure = None;
        let finished = self.read_partition(partition, &mut |record| match record {
            Ok(record) => visit(record),
            Err(err) => {
                failure = Some(err);
                false
            }
        })?;
        self.shared.counters.record_latency(Op::Scan, start);
        failure.map_or(Ok(finished), Err)
    }

    /// Reads every live record of one partition in device order, `SCAN_BATCH` reads in
    /// flight, and passes each (or the error reading it) to `visit` until it returns false.
    /// A record that moved meanwhile is looked up again; one deleted meanwhile is skipped.
    pub(crate) fn read_partition(
        &self,
        partition: usize,
        visit: &mut dyn FnMut(Result<Record>) -> bool,
    ) -> Result<bool> {
        check_partition(partition)?;
        let now_s = now_s();
        let mut named: Vec<(EntryName, EntryInfo)> = self
            .shared
            .index
            .partition(partition)
            .named_entries()
            .filter(|(_, e)| is_live(e, now_s))
            .collect();
        named.sort_by_key(|(_, e)| (e.location.device, e.location.offset_bytes));
        let (names, entries): (Vec<EntryName>, Vec<EntryInfo>) = named.into_iter().unzip();
        let mut names = names.into_iter();
        for chunk in entries.chunk_by(|a, b| a.location.device == b.location.device) {
            let disk = &self.shared.disks[chunk[0].location.device as usize];
            for batch in chunk.chunks(SCAN_BATCH) {
                for verified in self.shared.read_entries(disk, batch) {
                    let name = names.next().ok_or(Error::ShutDown)?;
                    let record = match verified {
                        Ok(Verify::Ok(record)) => Ok(Some(record)),
                        Ok(_) => self.shared.fetch(partition, name),
                        Err(err) => Err(err),
                    };
                    let go_on = match record {
                        Ok(None) => true,
                        Ok(Some(record)) => visit(Ok(record)),
                        Err(err) => visit(Err(err)),
                    };
                    if !go_on {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Calls `visit` with every live record, partition by partition, until it returns false.
    pub fn scan_all(&self, visit: &mut dyn FnMut(Record) -> bool) -> Result<()> {
        for partition in 0..PARTITION_COUNT {
            if !self.scan_partition(partition, visit)? {
                break;
            }
        }
        Ok(())
    }

    /// Live records (not tombstones, not expired) of one partition (0..4096): no I/O.
    pub fn partition_record_count(&self, partition: usize) -> Result<usize> {
        check_partition(partition)?;
        let now_s = now_s();
        Ok(self.shared.index.partition(partition).entries().filter(|e| is_live(e, now_s)).count())
    }

    /// Counts one operation begun at `start`, its latency and, if it failed, its error by
    /// kind.
    pub(crate) fn count_op<T>(&self, op: Op, start: Instant, result: &Result<T>) {
        let c = &self.shared.counters;
        let counter = match op {
            Op::Get => &c.gets,
            Op::Put => &c.puts,
            Op::Delete => &c.deletes,
            Op::Touch => &c.touches,
            Op::Update => &c.updates,
            Op::Apply => &c.applies,
            Op::Batch => &c.batch_reads,
            Op::Scan => &c.records_scanned,
        };
        counter.fetch_add(1, Relaxed);
        c.record_latency(op, start);
        if let Err(err) = result {
            self.count_error(op, err);
        }
    }

    /// Counts a failed operation (or batch row, or scanned record) by kind.
    pub(crate) fn count_error(&self, op: Op, err: &Error) {
        let c = &self.shared.counters;
        match err {
            Error::NotFound => Counters::add(&c.not_found, 1),
            _ => Counters::add(&c.errors, 1),
        }
        c.count_error(op, err);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let (index_entries, index_bytes) = self.shared.index.usage();
        let devices = self
            .shared
            .disks
            .iter()
            .map(|disk| {
                let usage = disk.usage();
                DeviceStats {
                    name: disk.name().to_string(),
                    backend: disk.device.backend(),
                    wblocks_total: disk.geometry.wblock_count as u64,
                    wblocks_free: usage.free_blocks,
                    wblocks_pending_free: usage.pending_free_blocks,
                    wblocks_defrag_queued: crate::defrag::victim_count(disk) as u64,
                    wblocks_reserved: disk.defrag_reserve_blocks as u64,
                    live_bytes: usage.live_bytes,
                    write_queue_blocks: usage.queued_blocks,
                    wblocks_quarantined: usage.quarantined_blocks,
                    short_of_space: usage.short_of_space,
                }
            })
            .collect();
        Stats {
            puts: c.puts.load(Relaxed),
            gets: c.gets.load(Relaxed),
            deletes: c.deletes.load(Relaxed),
            touches: c.touches.load(Relaxed),
            updates: c.updates.load(Relaxed),
            update_retries: c.update_retries.load(Relaxed),
            applies: c.applies.load(Relaxed),
            applies_stale: c.applies_stale.load(Relaxed),
            batch_reads: c.batch_reads.load(Relaxed),
            records_scanned: c.records_scanned.load(Relaxed),
            not_found: c.not_found.load(Relaxed),
            errors: c.errors.load(Relaxed),
            reads_from_memory: c.reads_from_memory.load(Relaxed),
            reads_from_device: c.reads_from_device.load(Relaxed),
            client_bytes_written: c.client_bytes_written.load(Relaxed),
            device_bytes_written: c.device_bytes_written.load(Relaxed),
            blocks_freed: c.blocks_freed.load(Relaxed),
            defrag_blocks_read: c.defrag_blocks_read.load(Relaxed),
            defrag_bytes_written: c.defrag_bytes_written.load(Relaxed),
            blocks_defragged: c.blocks_defragged.load(Relaxed),
            blocks_quarantined: c.blocks_quarantined.load(Relaxed),
            tombstones: self.shared.index.tombstone_count(),
            tombstones_reclaimed: c.tombstones_reclaimed.load(Relaxed),
            tags_shared: c.tags_shared.load(Relaxed),
            expired: c.expired.load(Relaxed),
            evicted: c.evicted.load(Relaxed),
            index_entries,
            index_bytes,
            index_mapped_bytes: self.shared.index.arena_mapped_bytes() as u64,
            devices,
            recovery: self.shared.recovery.clone(),
            latencies: c.latencies(),
            errors_by_op: c.errors_by_op(),
        }
    }

    /// Writes everything buffered, syncs, and marks every device cleanly shut down.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.background_control.request_stop();
        for thread in self.background.drain(..) {
            let _ = thread.join();
        }
        for disk in &self.shared.disks {
            disk.request_shutdown();
        }
        for flusher in self.flushers.drain(..) {
            let _ = flusher.join();
        }
        let mut first_error = None;
        for disk in &self.shared.disks {
            if disk.failed.load(Relaxed) {
                first_error.get_or_insert(Error::DeviceFailed { device: disk.name().to_string() });
                continue;
            }
            let open_count = disk.header().open_count;
            let snapshot = if self.shared.config.fast_restart {
                snapshot::write_snapshot(disk, &self.shared.index, open_count).unwrap_or_else(|err| {
                    log::warn!(
                        "{}: index snapshot not written ({err}); next open will cold-start",
                        disk.name()
                    );
                    None
                })
            } else {
                None
            };
            if let Err(err) = crate::failpoint::hit("engine::close::before_header_flip") {
                first_error.get_or_insert(err);
                continue;
            }
            let mut header = disk.header();
            header.flags |= format::HEADER_FLAG_CLEAN;
            header.snapshot = snapshot.unwrap_or_default();
            if let Err(err) = namespace::write_header(disk.device.as_ref(), &mut header) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Every index entry with its partition, sorted: for tests and tools comparing states
    /// (behind the `offline` feature: the entry is the index's internal form).
    #[cfg(feature = "offline")]
    pub fn index_entries(&self) -> Vec<(usize, EntryInfo)> {
        let mut all = Vec::new();
        for partition in 0..PARTITION_COUNT {
            all.extend(self.shared.index.partition(partition).entries().map(|e| (partition, e)));
        }
        all.sort_by_key(|(p, e)| (*p, e.tag));
        all
    }

    /// Runs a tombstone-reclaim scan now, on the calling thread (the reclaimer thread also
    /// runs them on its schedule).
    pub fn reclaim_tombstones(&self) -> Result<u64> {
        tombstone::reclaim_tombstones(&self.shared, &|| false)
    }

    /// Runs one round of the background threads' work now, on the calling thread: the
    /// expiry and eviction passes, one defrag round (up to 16 victims a device) and, if
    /// tombstones are worth it, a reclaim scan. With `Config::background_threads` off this
    /// is the only way that work runs, at points the caller chooses.
    pub fn run_background_once(&self) -> Result<BackgroundRound> {
        let (expired, evicted) = self.expire_now();
        let defragged_before = self.shared.counters.blocks_defragged.load(Relaxed);
        crate::defrag::defrag_round(&self.shared, &mut crate::defrag::Scratch::default(), &|| false);
        let blocks_defragged = self.shared.counters.blocks_defragged.load(Relaxed) - defragged_before;
        let tombstones_reclaimed = if janitor::tombstones_worth_reclaiming(&self.shared) {
            tombstone::reclaim_tombstones(&self.shared, &|| false)?
        } else {
            0
        };
        Ok(BackgroundRound { expired, evicted, blocks_defragged, tombstones_reclaimed })
    }

    /// Runs the expiry and eviction passes now; returns (expired, evicted).
    pub fn expire_now(&self) -> (u64, u64) {
        let now = now_s();
        (expiry::expire_pass(&self.shared, now), expiry::evict_pass(&self.shared, now))
    }
}

/// What one `Engine::run_background_once` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackgroundRound {
    pub expired: u64,
    pub evicted: u64,
    pub blocks_defragged: u64,
    pub tombstones_reclaimed: u64,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.flushers.is_empty() || !self.background.is_empty() {
            let _ = self.shutdown();
        }
    }
}

fn check_partition(partition: usize) -> Result<()> {
    if partition >= PARTITION_COUNT {
        return Err(Error::InvalidPartition { partition, count: PARTITION_COUNT });
    }
    Ok(())
}

fn open_paths(config: &Config) -> Result<Vec<Arc<dyn Device>>> {
    if config.devices.is_empty() {
        return Err(Error::Config("no devices configured".into()));
    }
    config.devices.iter().map(|path| device::open(path, config.io_backend)).collect()
}
