//! The namespace's background thread: defrag rounds, the expiry and eviction passes,
//! tombstone-reclaim scans and giving freed heap pages back, each on its own schedule. It sleeps on a condition variable
//! when there is nothing to do, so an idle engine uses no CPU.

use crate::engine::{now_s, Shared};
use crate::sync::{Condvar, Mutex};
use crate::{defrag, expiry, index, tombstone};
use std::time::{Duration, Instant};

/// How long the janitor sleeps when a round found nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct JanitorControl {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl JanitorControl {
    pub fn request_stop(&self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    fn stopped(&self) -> bool {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(&self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if !*stop {
            let _ = self.wake.wait_timeout(stop, IDLE_WAIT);
        }
    }
}

pub fn run(shared: &Shared, control: &JanitorControl) {
    let expiry_every = Duration::from_millis(shared.config.expiry_interval_ms.max(1));
    let tombstone_every = Duration::from_millis(shared.config.tombstone_scan_interval_ms.max(1));
    let mut last_expiry = Instant::now();
    let mut last_tombstone_scan = Instant::now();
    let mut last_heap_trim = Instant::now();
    while !control.stopped() {
        if last_heap_trim.elapsed() >= index::HEAP_TRIM_INTERVAL {
            index::trim_heap();
            last_heap_trim = Instant::now();
        }
        if last_expiry.elapsed() >= expiry_every {
            let now = now_s();
            expiry::expire_pass(shared, now);
            expiry::evict_pass(shared, now);
            last_expiry = Instant::now();
        }
        // Decided once per interval, scan or not.
        if last_tombstone_scan.elapsed() >= tombstone_every {
            if tombstones_worth_reclaiming(shared) {
                if let Err(err) = tombstone::reclaim_tombstones(shared) {
                    log::warn!("tombstone reclaim scan failed: {err}");
                }
            }
            last_tombstone_scan = Instant::now();
        }
        if !defrag::defrag_round(shared, &|| control.stopped()) {
            control.idle();
        }
    }
}

/// Tombstones are reclaimed when they are at least 1% of the index (and at least 64), or
/// when a device is short of free blocks.
fn tombstones_worth_reclaiming(shared: &Shared) -> bool {
    let (entries, _) = shared.index.usage();
    let tombstones = shared.index.tombstone_count();
    (tombstones >= 64 && tombstones * 100 >= entries)
        || (tombstones > 0 && shared.disks.iter().any(defrag::is_urgent))
}
