//! Expiry and eviction, walking the index partition by partition.
//!
//! Expiry: an entry past its void time is never returned (reads check it); this pass turns
//! it into a tombstone entry in place, so the tombstone reclaim removes it once no older
//! copy remains. The record's own copy, being expired, also reads as a tombstone at a cold
//! start, so an older copy cannot return.
//!
//! Eviction (optional): when a device's used blocks exceed `evict_used_pct`, delete the
//! soonest-expiring records that have a TTL (never the others), `evict_per_pass_permille`
//! of them per pass, with real tombstones: an evicted record must not come back after a
//! restart either.

use crate::config::WriteOptions;
use crate::engine::{is_live, Shared};
use crate::index::{EntryInfo, PARTITION_COUNT};
use crate::record_core::WriteRequest;
use crate::stats::Counters;

/// Marks every expired entry as a tombstone; returns how many.
pub fn expire_pass(shared: &Shared, now_s: u32) -> u64 {
    let mut expired = 0;
    for partition in 0..PARTITION_COUNT {
        // A partition where nothing can be due is skipped unwalked, and in one where
        // something is, only the sprigs that may hold it are walked: an idle engine's pass
        // costs 4096 lock round trips, not a walk of every entry.
        expired += shared.index.partition(partition).expire_due(now_s);
    }
    Counters::add(&shared.counters.expired, expired);
    expired
}

/// Evicts on every device above the eviction mark; returns how many records were evicted.
pub fn evict_pass(shared: &Shared, now_s: u32) -> u64 {
    if shared.config.evict_used_pct == 0 {
        return 0;
    }
    let mut evicted = 0;
    for disk in &shared.disks {
        let total = disk.geometry.wblock_count as u64;
        let free = disk.lock().free.len() as u64;
        if (total - free) * 100 < total * shared.config.evict_used_pct as u64 {
            continue;
        }
        let mut void_times: Vec<u32> = Vec::new();
        for partition in 0..PARTITION_COUNT {
            let p = shared.index.partition(partition);
            void_times.extend(
                p.entries()
                    .filter(|e| e.location.device == disk.index && e.void_time != 0 && is_live(e, now_s))
                    .map(|e| e.void_time),
            );
        }
        if void_times.is_empty() {
            continue;
        }
        let quota =
            (void_times.len() as u64 * shared.config.evict_per_pass_permille as u64 / 1000).max(1) as usize;
        let threshold = *void_times.select_nth_unstable(quota - 1).1;
        let mut left = quota;
        for partition in 0..PARTITION_COUNT {
            let victims: Vec<EntryInfo> = shared
                .index
                .partition(partition)
                .entries()
                .filter(|e| e.location.device == disk.index && e.void_time != 0 && e.void_time <= threshold)
                .filter(|e| is_live(e, now_s))
                .take(left)
                .collect();
            for entry in victims {
                // The index keeps 96 bits of the digest; the record on the device has all of it.
                let Ok(Some(record)) = shared.fetch(partition, entry.tag) else { continue };
                let options =
                    WriteOptions { expected_generation: Some(entry.generation), ..Default::default() };
                let request = WriteRequest {
                    digest: &record.digest,
                    stored_key: &[],
                    value: &[],
                    options: &options,
                    tombstone: true,
                    caller_digest: false,
                    verified: None,
                };
                if shared.write(&request).is_ok() {
                    evicted += 1;
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
    }
    Counters::add(&shared.counters.evicted, evicted);
    evicted
}
