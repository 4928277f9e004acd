//! Namespace configuration and per-write options, with their bounds.

use crate::device::IoBackend;
use crate::error::{Error, Result};
use crate::limits::{
    NAMESPACE_NAME_MAX, POST_WRITE_CACHE_BYTES_MAX, WBLOCK_SIZE_DEFAULT, WBLOCK_SIZE_MAX, WBLOCK_SIZE_MIN,
};
use std::path::PathBuf;

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once in the device's write buffer; it reaches the device within `flush_max_ms`.
    #[default]
    Buffered,
    /// Once durable on the device; concurrent writers share one device write and sync.
    CommitToDevice,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace name, at most 31 bytes; every device records it.
    pub namespace: String,
    /// Device paths (block devices or regular files), in device-index order.
    pub devices: Vec<PathBuf>,
    /// Write-block size: a power of two from 128 KiB to 8 MiB.
    pub write_block_size: u32,
    pub durability: Durability,
    /// Bound on how long a buffered write waits in RAM before it is written.
    pub flush_max_ms: u64,
    /// Recently written blocks kept in RAM per device to serve reads (`post_write_cache`);
    /// at most `POST_WRITE_CACHE_BYTES_MAX` of them. 0 keeps none.
    pub post_write_cache_blocks: usize,
    /// Full write blocks waiting for the device, per device; past it writers wait.
    pub write_queue_blocks_max: usize,
    /// How long a writer waits for room in the write queue before `DeviceOverloaded`.
    pub overload_wait_ms: u64,
    /// Store each record's key on the device (scans then return keys).
    pub store_keys: bool,
    pub io_backend: IoBackend,
    /// Run the defragmenter. Off only to hold every record where it is (comparing two opens
    /// of one device, a forensic open): no space is reclaimed meanwhile.
    pub defrag_enabled: bool,
    /// A block whose live bytes fall under this percentage of its capacity is defragmented.
    pub defrag_lwm_pct: u32,
    /// Free blocks per device that only the defragmenter may take, so it can always progress.
    pub defrag_reserve_blocks: u32,
    /// Pause between two defragmented blocks while free space is plentiful; none when low.
    pub defrag_sleep_us: u64,
    /// Client writes (not deletes) fail with `OutOfSpace` when a device's free blocks fall
    /// under this percentage.
    pub stop_writes_free_pct: u32,
    /// How often the background pass looks for expired records.
    pub expiry_interval_ms: u64,
    /// Above this percentage of a device's blocks in use, evict the soonest-expiring
    /// records; 0 disables eviction.
    pub evict_used_pct: u32,
    /// Share of records with a TTL evicted per pass, in tenths of a percent.
    pub evict_per_pass_permille: u32,
    /// Minimum time between two tombstone-reclaim scans of the devices.
    pub tombstone_scan_interval_ms: u64,
    /// Most a tombstone-reclaim scan reads per second from one device, in MiB (0: no
    /// limit). A scan is background work: unthrottled it takes the device's whole read
    /// bandwidth and the writers' latency with it (measured: p99 from tens of µs to
    /// 10–77 ms for the scan's 2 s on a 1 GiB file).
    pub tombstone_scan_mib_s: u32,
    /// Write an index snapshot at clean shutdown and restore from it at open.
    pub fast_restart: bool,
    /// Run the janitor and reclaimer threads (defrag, expiry, eviction, tombstone reclaim).
    /// Off, none of that runs unless the caller asks with `Engine::run_background_once`,
    /// so that a test replaying a seed defragments at the same points of its history every
    /// run. The flushers still run on their own (their timer is `flush_max_ms`).
    pub background_threads: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: "spike".into(),
            devices: Vec::new(),
            write_block_size: WBLOCK_SIZE_DEFAULT,
            durability: Durability::Buffered,
            flush_max_ms: 1000,
            post_write_cache_blocks: 8,
            write_queue_blocks_max: 8,
            overload_wait_ms: 2000,
            store_keys: false,
            io_backend: IoBackend::Auto,
            defrag_enabled: true,
            defrag_lwm_pct: 50,
            defrag_reserve_blocks: 4,
            defrag_sleep_us: 1000,
            stop_writes_free_pct: 5,
            expiry_interval_ms: 1000,
            evict_used_pct: 0,
            evict_per_pass_permille: 10,
            tombstone_scan_interval_ms: 60_000,
            tombstone_scan_mib_s: 128,
            fast_restart: true,
            background_threads: true,
        }
    }
}

impl Config {
    /// The post-write cache of `bytes` of RAM a device, in whole write blocks of this
    /// config's size (rounded up; `validate` bounds it).
    pub fn post_write_cache_blocks_for(&self, bytes: u64) -> usize {
        usize::try_from(bytes.div_ceil(self.write_block_size as u64)).unwrap_or(usize::MAX)
    }

    pub fn validate(&self) -> Result<()> {
        let wbs = self.write_block_size;
        if !wbs.is_power_of_two() || !(WBLOCK_SIZE_MIN..=WBLOCK_SIZE_MAX).contains(&wbs) {
            return Err(Error::Config(format!(
                "write_block_size {wbs} must be a power of two from {WBLOCK_SIZE_MIN} to {WBLOCK_SIZE_MAX}"
            )));
        }
        if self.namespace.is_empty()
            || self.namespace.len() > NAMESPACE_NAME_MAX
            || self.namespace.contains('\0')
        {
            return Err(Error::Config(format!(
                "namespace name must be 1 to {NAMESPACE_NAME_MAX} bytes without NUL, got {:?}",
                self.namespace
            )));
        }
        if self.flush_max_ms == 0 || self.write_queue_blocks_max == 0 {
            return Err(Error::Config("flush_max_ms and write_queue_blocks_max must be positive".into()));
        }
        let cache_bytes = (self.post_write_cache_blocks as u64).saturating_mul(wbs as u64);
        if cache_bytes > POST_WRITE_CACHE_BYTES_MAX {
            return Err(Error::Config(format!(
                "post_write_cache_blocks {} of {wbs} bytes is {} MiB, above the {} MiB a device may cache",
                self.post_write_cache_blocks,
                cache_bytes >> 20,
                POST_WRITE_CACHE_BYTES_MAX >> 20
            )));
        }
        if self.defrag_lwm_pct == 0 || self.defrag_lwm_pct >= 100 {
            return Err(Error::Config(format!("defrag_lwm_pct {} must be 1 to 99", self.defrag_lwm_pct)));
        }
        if self.stop_writes_free_pct >= 100 || self.evict_used_pct >= 100 {
            return Err(Error::Config("stop_writes_free_pct and evict_used_pct must be under 100".into()));
        }
        Ok(())
    }
}

/// What a put may do to an existing record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WritePolicy {
    /// Create the record or replace it whole.
    #[default]
    Upsert,
    /// Fail with `AlreadyExists` if the record exists.
    CreateOnly,
    /// Fail with `NotFound` unless the record exists.
    UpdateOnly,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    pub policy: WritePolicy,
    /// Compare-and-set: fail with `GenerationMismatch` unless the record is at this generation.
    pub expected_generation: Option<u32>,
    /// Seconds to live; `None` or 0 = never expires.
    pub ttl_s: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_write_cache_above_the_limit_is_refused_by_name() {
        let blocks_max = (POST_WRITE_CACHE_BYTES_MAX / WBLOCK_SIZE_DEFAULT as u64) as usize;
        let at_limit = Config { post_write_cache_blocks: blocks_max, ..Config::default() };
        assert!(at_limit.validate().is_ok());
        for blocks in [blocks_max + 1, usize::MAX] {
            let err = Config { post_write_cache_blocks: blocks, ..Config::default() }.validate().unwrap_err();
            assert!(err.to_string().contains("post_write_cache_blocks"), "{err}");
        }
    }
}
