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
//! restart either. The soonest-expiring are found with a histogram of void times (one walk,
//! no list of every TTL record), so a pass evicts at least its quota and at most what the
//! histogram bucket holding the quota's boundary adds (buckets are 1/16 of their magnitude).

use crate::config::WriteOptions;
use crate::disk::Disk;
use crate::index::{EntryInfo, EntryName, PARTITION_COUNT};
use crate::record_core::WriteRequest;
use crate::record_core::{is_live, Shared};
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
        let free = disk.lock().blocks.free_count() as u64;
        if (total - free) * 100 < total * shared.config.evict_used_pct as u64 {
            continue;
        }
        let mut histogram = VoidTimeHistogram::default();
        for partition in 0..PARTITION_COUNT {
            let p = shared.index.partition(partition);
            for e in p.entries().filter(|e| e.location.device == disk.index && e.void_time != 0) {
                if is_live(&e, now_s) {
                    histogram.add(e.void_time - now_s);
                }
            }
        }
        if histogram.total == 0 {
            continue;
        }
        let quota = (histogram.total * shared.config.evict_per_pass_permille as u64 / 1000).max(1) as usize;
        // Soonest first: every record of the buckets wholly under the quota, then the rest
        // of the quota from the bucket it ends in (in index order: 1/16 of precision).
        let (sure_s, bound_s) = histogram.bounds_covering(quota as u64);
        let mut left = quota;
        if let Some(sure_s) = sure_s {
            evicted += evict_until(shared, disk, now_s, (0, now_s.saturating_add(sure_s)), &mut left);
        }
        let from = sure_s.map_or(0, |s| now_s.saturating_add(s).saturating_add(1));
        evicted += evict_until(shared, disk, now_s, (from, now_s.saturating_add(bound_s)), &mut left);
    }
    Counters::add(&shared.counters.evicted, evicted);
    evicted
}

/// Evicts live records of `disk` whose void time lies in `void_range` (inclusive), in
/// index order, until `left` reaches 0; returns how many.
fn evict_until(shared: &Shared, disk: &Disk, now_s: u32, void_range: (u32, u32), left: &mut usize) -> u64 {
    let mut evicted = 0;
    for partition in 0..PARTITION_COUNT {
        if *left == 0 {
            break;
        }
        let victims: Vec<(EntryName, EntryInfo)> = shared
            .index
            .partition(partition)
            .named_entries()
            .filter(|(_, e)| e.location.device == disk.index && e.void_time != 0)
            .filter(|(_, e)| (void_range.0..=void_range.1).contains(&e.void_time) && is_live(e, now_s))
            .take(*left)
            .collect();
        for (name, entry) in victims {
            // The index keeps 96 bits of the digest; the record on the device has all of it.
            let Ok(Some(record)) = shared.fetch(partition, name) else { continue };
            let options = WriteOptions { expected_generation: Some(entry.generation), ..Default::default() };
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
                *left -= 1;
            }
        }
    }
    evicted
}

/// Counts of remaining lifetimes in buckets of 1/16 of their magnitude (like HdrHistogram's
/// log-linear buckets): 16 for each power of two of seconds.
struct VoidTimeHistogram {
    counts: [u64; 33 * SUB_BUCKETS],
    total: u64,
}

const SUB_BUCKETS: usize = 16;

impl Default for VoidTimeHistogram {
    fn default() -> Self {
        VoidTimeHistogram { counts: [0; 33 * SUB_BUCKETS], total: 0 }
    }
}

impl VoidTimeHistogram {
    fn bucket_of(left_s: u32) -> usize {
        if (left_s as usize) < SUB_BUCKETS {
            return left_s as usize;
        }
        let magnitude = 31 - left_s.leading_zeros() as usize; // ≥ 4
        let sub = (left_s >> (magnitude - 4)) as usize & (SUB_BUCKETS - 1);
        (magnitude - 3) * SUB_BUCKETS + sub
    }

    /// The largest lifetime a bucket holds.
    fn upper_bound(bucket: usize) -> u32 {
        if bucket < SUB_BUCKETS {
            return bucket as u32;
        }
        let magnitude = bucket / SUB_BUCKETS + 3;
        let sub = (bucket % SUB_BUCKETS) as u64;
        (((SUB_BUCKETS as u64 + sub + 1) << (magnitude - 4)) - 1).min(u32::MAX as u64) as u32
    }

    fn add(&mut self, left_s: u32) {
        self.counts[Self::bucket_of(left_s)] += 1;
        self.total += 1;
    }

    /// The smallest bucket bound at or below which at least `quota` lifetimes lie, and the
    /// bound of the bucket before it (fewer than `quota` lifetimes lie at or below that;
    /// `None` when the quota is reached in the first bucket).
    fn bounds_covering(&self, quota: u64) -> (Option<u32>, u32) {
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= quota {
                let below = bucket.checked_sub(1).map(Self::upper_bound);
                return (below, Self::upper_bound(bucket));
            }
        }
        (Some(u32::MAX), u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::VoidTimeHistogram;

    #[test]
    fn each_lifetime_lands_in_a_bucket_whose_bound_covers_it_within_a_sixteenth() {
        for left in (0..100_000u32).chain([u32::MAX / 3, u32::MAX - 1, u32::MAX]) {
            let bucket = VoidTimeHistogram::bucket_of(left);
            let bound = VoidTimeHistogram::upper_bound(bucket);
            assert!(bound >= left, "{left} in bucket {bucket} bounded by {bound}");
            assert!(bound as u64 <= left as u64 + left as u64 / 16 + 1, "{left}: bound {bound} too loose");
            if bucket > 0 {
                assert!(VoidTimeHistogram::upper_bound(bucket - 1) < left);
            }
        }
    }

    #[test]
    fn the_bound_covers_the_quota_of_soonest_lifetimes() {
        let mut histogram = VoidTimeHistogram::default();
        for left in 1000..2000 {
            histogram.add(left);
        }
        let (below, bound) = histogram.bounds_covering(250);
        assert!((1249..1249 + 1249 / 16 + 1).contains(&bound), "{bound}");
        let below = below.unwrap();
        assert!((1249 - 1249 / 16 - 1..1249).contains(&below), "{below}");
        assert_eq!(
            histogram.bounds_covering(1).0,
            Some(VoidTimeHistogram::upper_bound(VoidTimeHistogram::bucket_of(1000) - 1))
        );
    }
}
