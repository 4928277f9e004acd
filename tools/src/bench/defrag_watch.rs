//! Watches defrag while a phase runs: the longest time without a block defragmented while
//! a device was short of free blocks and had victims waiting (the moments a stalled
//! defragmenter stops writers; with no victim at all the device is simply full), sampled
//! from the engine's stats every `SAMPLE_EVERY`.
//!
//! "Short of space" is the engine's own flag (`DeviceStats::short_of_space`).

use spike::Stats;
use std::time::{Duration, Instant};

/// How often the watch samples: `Engine::stats` takes every partition lock once, so not
/// at every 20 ms poll of the coordinator.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What a phase saw of defrag while space was short.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefragStalls {
    /// The longest stretch without a block defragmented while some device was short and
    /// had defrag victims.
    pub longest_stall: Duration,
    /// How long some device was short of free blocks in all.
    pub short_for: Duration,
}

#[derive(Default)]
pub struct DefragWatch {
    last_sample: Option<Instant>,
    /// Since when no block was defragmented while space was short, and the count then.
    stalled_since: Option<(Instant, u64)>,
    seen: DefragStalls,
}

impl DefragWatch {
    /// Whether a sample is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last_sample.is_none_or(|t| now.duration_since(t) >= SAMPLE_EVERY)
    }

    pub fn sample(&mut self, stats: &Stats, now: Instant) {
        let since_last = self.last_sample.map_or(Duration::ZERO, |t| now.duration_since(t));
        self.last_sample = Some(now);
        if !stats.devices.iter().any(|d| d.short_of_space) {
            self.stalled_since = None;
            return;
        }
        self.seen.short_for += since_last;
        if stats.devices.iter().all(|d| d.wblocks_defrag_queued == 0) {
            self.stalled_since = None;
            return;
        }
        match self.stalled_since {
            Some((since, defragged)) => {
                // A stall lasts until the sample that sees progress (or is still going).
                self.seen.longest_stall = self.seen.longest_stall.max(now.duration_since(since));
                if defragged != stats.blocks_defragged {
                    self.stalled_since = Some((now, stats.blocks_defragged));
                }
            }
            None => self.stalled_since = Some((now, stats.blocks_defragged)),
        }
    }

    pub fn seen(&self) -> DefragStalls {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spike::DeviceStats;

    fn stats(free: u64, defragged: u64) -> Stats {
        let device =
            DeviceStats { short_of_space: free <= 105, wblocks_defrag_queued: 1, ..Default::default() };
        Stats { blocks_defragged: defragged, devices: vec![device], ..Default::default() }
    }

    #[test]
    fn counts_only_stalls_while_space_is_short() {
        let mut watch = DefragWatch::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        watch.sample(&stats(500, 0), at(0));
        watch.sample(&stats(500, 0), at(1000)); // plenty of space: no stall however long
        watch.sample(&stats(100, 0), at(1100));
        watch.sample(&stats(100, 0), at(1400));
        watch.sample(&stats(100, 3), at(1500)); // progress ends a 400 ms stall
        watch.sample(&stats(100, 3), at(1600));
        watch.sample(&stats(300, 3), at(3000)); // space back: the stall is over
        watch.sample(&stats(100, 3), at(3100));
        // Short, but nothing to defragment: full, not stalled.
        let mut full = stats(100, 3);
        full.devices[0].wblocks_defrag_queued = 0;
        watch.sample(&full, at(3200));
        watch.sample(&full, at(3900));
        let seen = watch.seen();
        assert_eq!(seen.longest_stall, Duration::from_millis(400));
        assert_eq!(seen.short_for, Duration::from_millis(1500));
    }
}
