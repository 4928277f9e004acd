//! Counters and gauges a server exports. Counters are relaxed atomics bumped on the hot
//! path (one `fetch_add` each); every operation's latency goes into power-of-two
//! microsecond buckets.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

const LATENCY_BUCKETS: usize = 32;

/// The operations whose errors are counted by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Delete,
    Touch,
    Update,
    Apply,
    Batch,
    Scan,
}

pub const OP_NAMES: [&str; 8] = ["get", "put", "delete", "touch", "update", "apply", "batch", "scan"];
pub const ERROR_KIND_NAMES: [&str; 14] = [
    "not_found",
    "already_exists",
    "generation_mismatch",
    "generation_exhausted",
    "record_too_big",
    "invalid_argument",
    "out_of_space",
    "device_overloaded",
    "io",
    "device_failed",
    "in_doubt",
    "engine_failed",
    "corrupt",
    "other",
];

/// The index of an error's kind in `ERROR_KIND_NAMES`.
pub fn error_kind(err: &crate::Error) -> usize {
    use crate::Error as E;
    match err {
        E::NotFound => 0,
        E::AlreadyExists => 1,
        E::GenerationMismatch { .. } => 2,
        E::GenerationExhausted => 3,
        E::RecordTooBig { .. } => 4,
        E::InvalidKey(_) | E::InvalidArgument(_) | E::InvalidPartition { .. } => 5,
        E::OutOfSpace { .. } => 6,
        E::DeviceOverloaded { .. } => 7,
        E::Io { .. } => 8,
        E::DeviceFailed { .. } => 9,
        E::InDoubt { .. } => 10,
        E::EngineFailed { .. } | E::ShutDown => 11,
        E::Corrupt { .. } => 12,
        _ => 13,
    }
}

/// Errors of one kind from one operation (only non-zero counts are reported).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpErrors {
    pub op: &'static str,
    pub kind: &'static str,
    pub count: u64,
}

/// One operation's latency histogram, as `Stats` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpLatency {
    pub op: &'static str,
    /// Operations that took [2^i, 2^(i+1)) microseconds, for each i.
    pub us_log2: Vec<u64>,
}

/// Latency histogram with bucket i holding operations that took [2^i, 2^(i+1)) µs.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    pub fn record_since(&self, start: Instant) {
        let us = start.elapsed().as_micros().max(1) as u64;
        let bucket = (63 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
    }

    /// Counts per bucket; bucket i covers [2^i, 2^(i+1)) microseconds.
    pub fn snapshot(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }
}

#[derive(Default)]
pub struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub deletes: AtomicU64,
    pub touches: AtomicU64,
    pub updates: AtomicU64,
    /// Update attempts started over because a plain put changed the record under them.
    pub update_retries: AtomicU64,
    pub applies: AtomicU64,
    pub applies_stale: AtomicU64,
    pub batch_reads: AtomicU64,
    pub records_scanned: AtomicU64,
    pub not_found: AtomicU64,
    pub errors: AtomicU64,
    pub reads_from_memory: AtomicU64,
    pub reads_from_device: AtomicU64,
    pub client_bytes_written: AtomicU64,
    pub device_bytes_written: AtomicU64,
    pub blocks_freed: AtomicU64,
    pub defrag_blocks_read: AtomicU64,
    pub defrag_bytes_written: AtomicU64,
    pub blocks_defragged: AtomicU64,
    pub blocks_quarantined: AtomicU64,
    pub tombstones_reclaimed: AtomicU64,
    /// Index tags found to be shared by two digests (crafted: `index::shared`).
    pub tags_shared: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
    /// Latency of every operation (`Op`): a batch or a scan call counts once.
    pub latency_by_op: [LatencyHistogram; OP_NAMES.len()],
    /// Errors per operation (`Op`) and kind (`error_kind`).
    pub errors_by_op: [[AtomicU64; ERROR_KIND_NAMES.len()]; OP_NAMES.len()],
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn add_batch(&self, reads: u64) {
        Self::add(&self.batch_reads, reads);
    }

    pub fn add_scanned(&self, records: u64) {
        Self::add(&self.records_scanned, records);
    }

    /// Records how long one operation took, from `start`.
    pub fn record_latency(&self, op: Op, start: Instant) {
        self.latency_by_op[op as usize].record_since(start);
    }

    /// Latency histograms of every operation, in `OP_NAMES` order.
    pub fn latencies(&self) -> Vec<OpLatency> {
        self.latency_by_op
            .iter()
            .zip(OP_NAMES)
            .map(|(histogram, op)| OpLatency { op, us_log2: histogram.snapshot() })
            .collect()
    }

    /// Counts an error of operation `op` by its kind.
    pub fn count_error(&self, op: Op, err: &crate::Error) {
        Self::add(&self.errors_by_op[op as usize][error_kind(err)], 1);
    }

    /// The non-zero error counts.
    pub fn errors_by_op(&self) -> Vec<OpErrors> {
        let mut out = Vec::new();
        for (op, kinds) in self.errors_by_op.iter().enumerate() {
            for (kind, count) in kinds.iter().enumerate() {
                let count = count.load(Relaxed);
                if count > 0 {
                    out.push(OpErrors { op: OP_NAMES[op], kind: ERROR_KIND_NAMES[kind], count });
                }
            }
        }
        out
    }
}

/// What the last start did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// "fresh" (the first start since a format: nothing to read), "cold" (a scan of every
    /// write block) or "fast" (the snapshot of a clean shutdown).
    pub kind: &'static str,
    pub duration_ms: u64,
    pub records_found: u64,
    pub records_kept: u64,
    pub tombstones_kept: u64,
    /// Newest copies found expired: kept only as tombstones, never returned.
    pub expired_dropped: u64,
    pub corrupt_records: u64,
    pub stale_records: u64,
    pub blocks_in_use: u64,
    pub blocks_freed: u64,
    pub bytes_scanned: u64,
}

/// A point-in-time copy of every statistic.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub puts: u64,
    pub gets: u64,
    pub deletes: u64,
    pub touches: u64,
    /// Read-modify-writes (`update_by_digest`), and how many started over after a plain
    /// put changed their record.
    pub updates: u64,
    pub update_retries: u64,
    /// Copies from another node applied (`apply`), and those found older than ours.
    pub applies: u64,
    pub applies_stale: u64,
    /// Records asked for by batch reads, and records returned by digest-ordered scans.
    pub batch_reads: u64,
    pub records_scanned: u64,
    pub not_found: u64,
    pub errors: u64,
    pub reads_from_memory: u64,
    pub reads_from_device: u64,
    pub client_bytes_written: u64,
    pub device_bytes_written: u64,
    pub blocks_freed: u64,
    pub defrag_blocks_read: u64,
    /// Record bytes the defragmenter moved (a part of `device_bytes_written`).
    pub defrag_bytes_written: u64,
    pub blocks_defragged: u64,
    /// Blocks the defragmenter found with a corrupt header and set aside.
    pub blocks_quarantined: u64,
    pub tombstones: u64,
    pub tombstones_reclaimed: u64,
    /// Index tags found shared by two digests since open (each pair kept, named by digest).
    pub tags_shared: u64,
    pub expired: u64,
    pub evicted: u64,
    pub index_entries: u64,
    /// Bytes the index's entries and directory occupy.
    pub index_bytes: u64,
    /// Bytes mapped for the index's sprigs and directories, free slots included: the
    /// index's RSS (`index::arena`).
    pub index_mapped_bytes: u64,
    pub devices: Vec<DeviceStats>,
    pub recovery: RecoveryStats,
    /// Latency histograms of get, put, delete, touch, update, apply, batch (one per call)
    /// and scan (one per call), in `OP_NAMES` order.
    pub latencies: Vec<OpLatency>,
    /// Errors by operation and kind, not-found included (non-zero counts only).
    pub errors_by_op: Vec<OpErrors>,
}

impl Stats {
    /// Device bytes written per client byte written.
    pub fn write_amplification(&self) -> f64 {
        if self.client_bytes_written == 0 {
            return 0.0;
        }
        self.device_bytes_written as f64 / self.client_bytes_written as f64
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeviceStats {
    pub name: String,
    pub backend: &'static str,
    pub wblocks_total: u64,
    pub wblocks_free: u64,
    pub wblocks_pending_free: u64,
    /// Blocks under the defrag low-water mark, waiting for the defragmenter.
    pub wblocks_defrag_queued: u64,
    /// Free blocks only the defragmenter may take.
    pub wblocks_reserved: u64,
    pub live_bytes: u64,
    pub write_queue_blocks: u64,
    /// In-use blocks whose header failed to verify: left out of defrag (see `BlockState`).
    pub wblocks_quarantined: u64,
    /// Free blocks are near the stop-writes mark: defrag runs flat out, any block at most
    /// `URGENT_LWM_PCT` full is a victim, and tombstone reclaim is due.
    pub short_of_space: bool,
}
