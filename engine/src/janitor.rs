//! The namespace's background threads and their schedules.
//!
//! - The janitor: defrag rounds, the expiry and eviction passes and giving freed heap
//!   pages back. It sleeps on a condition variable when there is nothing to do, so an idle
//!   engine uses no CPU.
//! - The reclaimer: tombstone-reclaim scans (`tombstone`), once per
//!   `tombstone_scan_interval_ms` when tombstones are worth reclaiming. A scan reads every
//!   used block and can take minutes on a large device; on a thread of its own it never
//!   holds up defrag, which is most needed exactly when a device is short of space, one of
//!   the scan's own triggers.
//!
//! Both share one `BackgroundControl`: `request_stop` wakes them, and a scan in progress
//! stops between two blocks.

use crate::record_core::{now_s, Shared};
use crate::sync::{Condvar, Mutex};
use crate::{defrag, expiry, index, tombstone};
use std::time::{Duration, Instant};

/// How long the janitor sleeps when a round found nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct BackgroundControl {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl BackgroundControl {
    pub fn request_stop(&self) {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    pub fn stopped(&self) -> bool {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `wait` or until a stop is requested.
    fn idle(&self, wait: Duration) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if !*stop {
            let _ = self.wake.wait_timeout(stop, wait);
        }
    }
}

/// Index chunks moved onto huge pages per janitor round (`Index::collapse_some`).
const COLLAPSE_PER_ROUND: usize = 4;

/// The janitor thread's body.
pub fn run(shared: &Shared, control: &BackgroundControl) {
    let expiry_every = Duration::from_millis(shared.config.expiry_interval_ms.max(1));
    let mut last_expiry = Instant::now();
    let mut last_heap_trim = Instant::now();
    let mut scratch = defrag::Scratch::default();
    while !control.stopped() {
        if last_heap_trim.elapsed() >= index::HEAP_TRIM_INTERVAL {
            shared.index.compact_arena();
            index::trim_heap();
            last_heap_trim = Instant::now();
        }
        // What a restart filled on small pages moves onto huge pages, a little each round
        // (a collapse copies 2 MiB, a few milliseconds).
        shared.index.collapse_some(COLLAPSE_PER_ROUND);
        if last_expiry.elapsed() >= expiry_every {
            let now = now_s();
            expiry::expire_pass(shared, now);
            expiry::evict_pass(shared, now);
            last_expiry = Instant::now();
        }
        if !defrag::defrag_round(shared, &mut scratch, &|| control.stopped()) {
            control.idle(IDLE_WAIT);
        }
    }
}

/// The reclaimer thread's body: decides once per interval, scan or not.
pub fn run_reclaimer(shared: &Shared, control: &BackgroundControl) {
    lower_this_threads_priority();
    let every = Duration::from_millis(shared.config.tombstone_scan_interval_ms.max(1));
    let mut last_decision = Instant::now();
    while !control.stopped() {
        let since = last_decision.elapsed();
        if since < every {
            control.idle(every - since);
            continue;
        }
        if tombstones_worth_reclaiming(shared) {
            match tombstone::reclaim_tombstones(shared, &|| control.stopped()) {
                Ok(_) | Err(crate::error::Error::ShutDown) => {}
                Err(err) => log::warn!("tombstone reclaim scan failed: {err}"),
            }
        }
        last_decision = Instant::now();
    }
}

/// Tombstones are reclaimed when they are at least 1% of the index (and at least 64), or
/// when a device is short of free blocks.
pub fn tombstones_worth_reclaiming(shared: &Shared) -> bool {
    let (entries, _) = shared.index.usage();
    let tombstones = shared.index.tombstone_count();
    (tombstones >= 64 && tombstones * 100 >= entries)
        || (tombstones > 0 && shared.disks.iter().any(defrag::is_urgent))
}

/// Scans parse and checksum every record of every used block, a core's worth of work for
/// seconds on a large device; at nice 10 the scan yields the CPU to writers and defrag
/// whenever they want it. (The writers' slowdown measured during scans was the device's
/// bandwidth, not CPU: `tombstone_scan_mib_s` is what bounds that.) Linux applies
/// `setpriority` to one thread when given its id; elsewhere (or if refused) it is a no-op.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority only changes this thread's nice value.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, RECLAIMER_NICE) != 0 {
            log::debug!("reclaimer thread keeps its priority: {}", std::io::Error::last_os_error());
        }
    }
}

/// The reclaimer thread's nice value (the other threads keep the process's, normally 0).
const RECLAIMER_NICE: libc::c_int = 10;
