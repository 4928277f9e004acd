//! A simulated device in RAM that injects the faults real media have, all driven by one
//! seed so that any failing run replays from the seed it prints.
//!
//! It keeps two images, as redb's crash test does: `live` (what reads see) and `durable`
//! (what survives a crash). Writes land in `live` and in a list of unsynced writes; `sync`
//! moves them to `durable`. [`SimDevice::crash`] builds the device a restart would find:
//! the durable image plus, for each unsynced write, nothing, all of it, or a random subset
//! of its 512-byte sectors (a torn write).
//!
//! Faults: read errors and bit flips at a rate per read, and a crash point: after a given
//! number of writes every write and sync fails, as a machine that lost power would never
//! complete them; the write that crosses the point lands torn.

use super::{assert_aligned, Device, SECTOR_SIZE};
use crate::error::{Error, Result};
use std::io;
use std::sync::{Condvar, Mutex};

/// Small, fast, seedable generator (SplitMix64): enough for fault choices.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `per_million / 1e6`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.below(1_000_000) < per_million as u64
    }
}

/// Fault rates and crash point of a simulated device.
#[derive(Clone, Debug, Default)]
pub struct SimFaults {
    pub read_error_per_million: u32,
    /// Byte ranges every read touching them fails on (bad sectors).
    pub unreadable: Vec<std::ops::Range<u64>>,
    pub bit_flip_per_million: u32,
    /// Writes allowed before the simulated power loss.
    pub crash_after_writes: Option<u64>,
}

struct SimState {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
    rng: SimRng,
    faults: SimFaults,
    writes: u64,
    reads: u64,
    syncs: u64,
    crashed: bool,
}

pub struct SimDevice {
    name: String,
    size_bytes: u64,
    state: Mutex<SimState>,
    /// While true, writes wait (outside the state lock): a stalled device, for tests of
    /// what the engine does while its write queue is full.
    writes_held: Mutex<bool>,
    writes_released: Condvar,
}

/// Counters of what the device saw, for tests that count I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimCounts {
    pub reads: u64,
    pub writes: u64,
    pub syncs: u64,
}

impl SimDevice {
    pub fn new(name: &str, size_bytes: u64, seed: u64) -> Self {
        Self::from_image(name, vec![0; size_bytes as usize], seed)
    }

    pub fn from_image(name: &str, image: Vec<u8>, seed: u64) -> Self {
        assert_eq!(image.len() % super::IO_ALIGN, 0, "simulated device size must be aligned");
        SimDevice {
            name: name.to_string(),
            size_bytes: image.len() as u64,
            state: Mutex::new(SimState {
                live: image.clone(),
                durable: image,
                unsynced: Vec::new(),
                rng: SimRng::new(seed),
                faults: SimFaults::default(),
                writes: 0,
                reads: 0,
                syncs: 0,
                crashed: false,
            }),
            writes_held: Mutex::new(false),
            writes_released: Condvar::new(),
        }
    }

    /// Makes every write wait until `hold_writes(false)`: a device that stopped completing.
    pub fn hold_writes(&self, hold: bool) {
        *self.writes_held.lock().unwrap_or_else(|e| e.into_inner()) = hold;
        self.writes_released.notify_all();
    }

    fn wait_while_writes_held(&self) {
        let mut held = self.writes_held.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = self.writes_released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, faults: SimFaults) {
        self.state().faults = faults;
    }

    pub fn counts(&self) -> SimCounts {
        let s = self.state();
        SimCounts { reads: s.reads, writes: s.writes, syncs: s.syncs }
    }

    /// Whether the crash point has been reached.
    pub fn has_crashed(&self) -> bool {
        self.state().crashed
    }

    /// The device a restart after power loss would find (see the module comment).
    /// `seed` picks which unsynced writes survive and how they tear.
    pub fn crash(&self, seed: u64) -> SimDevice {
        let state = self.state();
        let mut rng = SimRng::new(seed);
        let mut image = state.durable.clone();
        for (offset, data) in &state.unsynced {
            apply_torn(&mut image, *offset, data, &mut rng);
        }
        SimDevice::from_image(&self.name, image, seed ^ 0x5EED)
    }

    /// What reads see now (including unsynced writes).
    pub fn live_image(&self) -> Vec<u8> {
        self.state().live.clone()
    }

    /// Flips one bit of the live and durable images: corruption at rest.
    pub fn corrupt_bit(&self, offset: u64, bit: u8) {
        let mut state = self.state();
        state.live[offset as usize] ^= 1 << (bit % 8);
        state.durable[offset as usize] ^= 1 << (bit % 8);
    }

    fn io_error(&self, offset: u64, what: &str) -> Error {
        Error::io(&self.name, offset, io::Error::other(what.to_string()))
    }

    fn check_range(&self, len: usize, offset: u64) -> Result<()> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.size_bytes) {
            return Err(self.io_error(offset, "access beyond the end of the simulated device"));
        }
        Ok(())
    }
}

/// Applies none, all, or a random subset of the sectors of one write.
fn apply_torn(image: &mut [u8], offset: u64, data: &[u8], rng: &mut SimRng) {
    let sectors = data.len() / SECTOR_SIZE;
    let mode = rng.below(4);
    for sector in 0..sectors {
        let keep = match mode {
            0 => false,
            1 => true,
            _ => rng.below(2) == 0,
        };
        if keep {
            let start = offset as usize + sector * SECTOR_SIZE;
            image[start..start + SECTOR_SIZE]
                .copy_from_slice(&data[sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE]);
        }
    }
}

impl Device for SimDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.check_range(buf.len(), offset)?;
        let mut state = self.state();
        state.reads += 1;
        let error_rate = state.faults.read_error_per_million;
        if state.rng.chance(error_rate) {
            return Err(self.io_error(offset, "injected read error"));
        }
        let end = offset + buf.len() as u64;
        if state.faults.unreadable.iter().any(|bad| bad.start < end && offset < bad.end) {
            return Err(self.io_error(offset, "injected bad sector"));
        }
        buf.copy_from_slice(&state.live[offset as usize..offset as usize + buf.len()]);
        let flip_rate = state.faults.bit_flip_per_million;
        if state.rng.chance(flip_rate) {
            let bit = state.rng.below(buf.len() as u64 * 8);
            buf[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        assert_aligned(buf.as_ptr() as usize, buf.len(), offset);
        self.check_range(buf.len(), offset)?;
        self.wait_while_writes_held();
        let mut state = self.state();
        if state.crashed {
            return Err(self.io_error(offset, "simulated power loss"));
        }
        state.writes += 1;
        if state.faults.crash_after_writes.is_some_and(|limit| state.writes > limit) {
            // The write in flight at the power cut: whatever of it landed stays unsynced.
            state.crashed = true;
            let mut torn = state.live[offset as usize..offset as usize + buf.len()].to_vec();
            let mut rng = state.rng.clone();
            apply_torn(&mut torn, 0, buf, &mut rng);
            state.rng = rng;
            state.unsynced.push((offset, torn));
            return Err(self.io_error(offset, "simulated power loss"));
        }
        state.live[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        state.unsynced.push((offset, buf.to_vec()));
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.state();
        if state.crashed {
            return Err(self.io_error(0, "simulated power loss"));
        }
        state.syncs += 1;
        let unsynced = std::mem::take(&mut state.unsynced);
        for (offset, data) in unsynced {
            state.durable[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::AlignedBuf;

    fn block(fill: u8) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(4096);
        buf.fill(fill);
        buf
    }

    #[test]
    fn synced_writes_survive_a_crash_and_unsynced_may_not() {
        let dev = SimDevice::new("sim", 64 * 1024, 1);
        dev.write_at(&block(1), 0).unwrap();
        dev.sync().unwrap();
        dev.write_at(&block(2), 4096).unwrap();
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let crashed = dev.crash(seed);
            let mut buf = AlignedBuf::zeroed(8192);
            crashed.read_at(&mut buf, 0).unwrap();
            assert!(buf[..4096].iter().all(|&b| b == 1), "synced data lost");
            let sectors_kept = buf[4096..].chunks(SECTOR_SIZE).filter(|s| s[0] == 2).count();
            outcomes.insert(sectors_kept);
        }
        assert!(outcomes.contains(&0) && outcomes.contains(&8), "{outcomes:?}");
        assert!(outcomes.len() > 2, "no torn write in 64 crashes: {outcomes:?}");
    }

    #[test]
    fn crash_point_fails_every_later_write_and_sync() {
        let dev = SimDevice::new("sim", 64 * 1024, 7);
        dev.set_faults(SimFaults { crash_after_writes: Some(1), ..Default::default() });
        dev.write_at(&block(1), 0).unwrap();
        assert!(dev.write_at(&block(2), 4096).is_err());
        assert!(dev.sync().is_err());
        assert!(dev.write_at(&block(3), 8192).is_err());
        assert!(dev.has_crashed());
    }

    #[test]
    fn injected_read_errors_and_bit_flips_happen_at_their_rate() {
        let dev = SimDevice::new("sim", 64 * 1024, 3);
        dev.set_faults(SimFaults {
            read_error_per_million: 500_000,
            bit_flip_per_million: 1_000_000,
            ..Default::default()
        });
        let mut errors = 0;
        let mut flips = 0;
        for _ in 0..200 {
            let mut buf = AlignedBuf::zeroed(4096);
            match dev.read_at(&mut buf, 0) {
                Err(_) => errors += 1,
                Ok(()) => flips += buf.iter().filter(|&&b| b != 0).count(),
            }
        }
        assert!((60..140).contains(&errors), "{errors}");
        assert_eq!(flips, 200 - errors);
    }
}
