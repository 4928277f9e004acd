//! The read path: from RAM when the record's block is still open, queued or in the
//! post-write cache; otherwise exactly one direct read of the 4 KiB-aligned span that
//! holds the record. Every record returned is verified: checksum, digest and generation
//! against the index entry that led to it.
//!
//! Cost per device read: one index lookup (partition lock held only to copy the entry),
//! one `pread` or io_uring read of 4-8 KiB into a per-thread buffer (no allocation once
//! warm), one xxh3 over the record, one copy of the value into the caller's `Vec`.

use crate::device::{AlignedBuf, ReadRequest, IO_ALIGN};
use crate::disk::{Disk, SealedBlock};
use crate::error::{Error, Result};
use crate::format::{decode_record, Digest};
use crate::index::DigestTag;
use crate::index::{EntryInfo, Location};
use std::cell::RefCell;
use std::sync::Arc;

/// A record as returned to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub digest: Digest,
    /// The key, when the namespace stores keys.
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub generation: u32,
    /// Unix seconds after which the record expires; 0 = never.
    pub void_time: u32,
    pub last_update_ms: u64,
}

/// Where a batch's records were read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadSources {
    pub from_memory: u64,
    pub from_device: u64,
}

/// Where the bytes of a record were found in RAM.
enum InMemory {
    /// Copied out of the open block (which writers keep changing).
    Copied(Vec<u8>),
    /// A sealed block, shared: decoded without holding the disk lock.
    Sealed(Arc<SealedBlock>, usize),
}

/// How a verified read can fail short of an I/O error.
pub enum Verify {
    Ok(Record),
    /// The bytes are a valid record (or none at all), but not the one the entry names: the entry moved
    /// (overwrite, defrag) between lookup and read. The caller looks up again.
    Moved,
    Corrupt(Error),
}

thread_local! {
    static READ_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::zeroed(2 * IO_ALIGN));
    /// Buffers of batched reads, reused: an aligned allocation and its zeroing per device
    /// read were about 2% of spike-server's CPU on reads (`perf`). Not zeroed again: a read
    /// fills the span it is verified from, and a failed read's bytes are never looked at.
    static BATCH_BUFS: RefCell<Vec<AlignedBuf>> = const { RefCell::new(Vec::new()) };
}
/// Batch buffers a thread keeps (of `2 * IO_ALIGN`, the span of most records).
const BATCH_BUFS_KEPT_MAX: usize = 64;

fn take_batch_buf(len: usize) -> AlignedBuf {
    let pooled = (len <= 2 * IO_ALIGN).then(|| BATCH_BUFS.with(|bufs| bufs.borrow_mut().pop())).flatten();
    pooled.unwrap_or_else(|| AlignedBuf::zeroed(len.max(2 * IO_ALIGN)))
}

fn give_back_batch_bufs(bufs: impl Iterator<Item = AlignedBuf>) {
    BATCH_BUFS.with(|kept| {
        let mut kept = kept.borrow_mut();
        for buf in bufs.filter(|b| b.len() == 2 * IO_ALIGN) {
            if kept.len() == BATCH_BUFS_KEPT_MAX {
                break;
            }
            kept.push(buf);
        }
    });
}

/// Aligned span holding a location: (start offset, length).
pub fn read_span(location: Location) -> (u64, usize) {
    let start = location.offset_bytes / IO_ALIGN as u64 * IO_ALIGN as u64;
    let end =
        (location.offset_bytes + location.size_bytes as u64).div_ceil(IO_ALIGN as u64) * IO_ALIGN as u64;
    (start, (end - start) as usize)
}

impl Disk {
    fn find_in_memory(&self, location: Location) -> Option<InMemory> {
        let (block, in_block) = self.geometry.locate(location.offset_bytes)?;
        if !self.in_memory[block as usize].load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let (in_block, size) = (in_block as usize, location.size_bytes as usize);
        let state = self.lock();
        if let Some(open) = state.open.as_ref().filter(|o| o.wblock == block) {
            return open.buf.get(in_block..in_block + size).map(|b| InMemory::Copied(b.to_vec()));
        }
        // Queued blocks first: they are newer than anything cached (and few).
        let queued = state.to_write.iter().rev().find(|b| b.wblock == block);
        let sealed = queued.or_else(|| state.cache.get(block))?;
        Some(InMemory::Sealed(sealed.clone(), in_block))
    }

    /// Verifies the record at `at` in `bytes`; a location that runs past the bytes (a
    /// corrupt index entry) is reported as corrupt, never a slice panic.
    fn verify_at(&self, bytes: &[u8], at: usize, entry: &EntryInfo) -> Verify {
        match bytes.get(at..at + entry.location.size_bytes as usize) {
            Some(record) => self.verify(record, entry),
            None => Verify::Corrupt(Error::corrupt(
                self.name(),
                entry.location.offset_bytes,
                format!("index location of {} bytes runs past its block", entry.location.size_bytes),
            )),
        }
    }

    /// The pair of the check made when a location is packed: a location followed must lie
    /// in one block's record area of this disk, or the entry is corrupt (never a read of
    /// another block's bytes, a block header or past the device).
    fn check_followed(&self, entry: &EntryInfo) -> Option<Verify> {
        (!self.location_is_valid(entry.location)).then(|| {
            Verify::Corrupt(Error::corrupt(
                self.name(),
                entry.location.offset_bytes,
                format!("index location {:?} is not inside a record area of this device", entry.location),
            ))
        })
    }

    /// Reads and verifies the record `entry` points at.
    pub fn read_entry(&self, entry: &EntryInfo) -> Result<(Verify, bool)> {
        let location = entry.location;
        if let Some(bad) = self.check_followed(entry) {
            return Ok((bad, false));
        }
        if let Some(found) = self.find_in_memory(location) {
            let verified = match &found {
                InMemory::Copied(bytes) => self.verify(bytes, entry),
                InMemory::Sealed(block, at) => self.verify_at(&block.buf, *at, entry),
            };
            return Ok((verified, true));
        }
        let (start, len) = read_span(location);
        READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < len {
                *buf = AlignedBuf::zeroed(len);
            }
            self.device.read_at(&mut buf[..len], start)?;
            let at = (location.offset_bytes - start) as usize;
            Ok((self.verify_at(&buf[..len], at, entry), false))
        })
    }

    /// Reads a batch of entries with all their device reads in flight at once. Also says
    /// how many were served from RAM and how many read the device (for `Stats`).
    pub fn read_entries(&self, items: &[EntryInfo]) -> (Vec<Result<Verify>>, ReadSources) {
        let mut results: Vec<Option<Result<Verify>>> = Vec::with_capacity(items.len());
        let mut pending = Vec::new();
        let mut from_memory = 0u64;
        for (i, entry) in items.iter().enumerate() {
            if let Some(bad) = self.check_followed(entry) {
                results.push(Some(Ok(bad)));
                continue;
            }
            match self.find_in_memory(entry.location) {
                Some(InMemory::Copied(bytes)) => {
                    from_memory += 1;
                    results.push(Some(Ok(self.verify(&bytes, entry))));
                }
                Some(InMemory::Sealed(block, at)) => {
                    from_memory += 1;
                    results.push(Some(Ok(self.verify_at(&block.buf, at, entry))));
                }
                None => {
                    results.push(None);
                    let (start, len) = read_span(entry.location);
                    pending.push((i, start, len, take_batch_buf(len)));
                }
            }
        }
        let mut requests: Vec<ReadRequest<'_>> = pending
            .iter_mut()
            .map(|(_, start, len, buf)| ReadRequest { offset: *start, buf: &mut buf[..*len] })
            .collect();
        let batch = self.device.read_many(&mut requests);
        drop(requests);
        for (i, start, len, buf) in &pending {
            let entry = &items[*i];
            results[*i] = Some(match &batch {
                Err(err) => Err(Error::io(self.name(), *start, std::io::Error::other(err.to_string()))),
                Ok(()) => {
                    let at = (entry.location.offset_bytes - start) as usize;
                    Ok(self.verify_at(&buf[..*len], at, entry))
                }
            });
        }
        let sources = ReadSources { from_memory, from_device: pending.len() as u64 };
        give_back_batch_bufs(pending.into_iter().map(|(_, _, _, buf)| buf));
        (results.into_iter().map(|r| r.unwrap_or(Err(Error::ShutDown))).collect(), sources)
    }

    fn verify(&self, bytes: &[u8], entry: &EntryInfo) -> Verify {
        let offset = entry.location.offset_bytes;
        let view = match decode_record(bytes) {
            Ok(view) => view,
            // A valid-looking start that fails its checksum is corruption; anything else
            // may be a block freed and reused since the lookup.
            Err(problem) => return Verify::Corrupt(Error::corrupt(self.name(), offset, problem.to_string())),
        };
        if DigestTag::of(&view.meta.digest) != entry.tag
            || view.meta.generation != entry.generation
            || view.size_bytes != bytes.len()
        {
            return Verify::Moved;
        }
        Verify::Ok(Record {
            digest: view.meta.digest,
            key: (!view.key.is_empty()).then(|| view.key.to_vec()),
            value: view.value.to_vec(),
            generation: view.meta.generation,
            void_time: view.meta.void_time,
            last_update_ms: view.meta.last_update_ms,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::device::sim::SimDevice;
    use crate::format::test_header;
    use crate::index::{DigestTag, Location};
    use std::sync::Arc;

    #[test]
    fn a_location_outside_every_record_area_is_corrupt_and_never_read() {
        let header = test_header();
        let size = header.first_wblock_offset + header.wblock_count * header.write_block_size as u64;
        let sim = Arc::new(SimDevice::new("sim", size, 1));
        let disk =
            Disk::new(0, sim.clone() as Arc<dyn crate::device::Device>, header.clone(), &Config::default());
        let first = header.first_wblock_offset;
        let wbs = header.write_block_size as u64;
        let bad = [
            Location { device: 0, offset_bytes: first, size_bytes: 64 },
            Location { device: 0, offset_bytes: first + wbs - 32, size_bytes: 64 },
            Location { device: 0, offset_bytes: first + 64 + 8, size_bytes: 64 },
            Location { device: 0, offset_bytes: first + 64, size_bytes: 16 },
            Location { device: 0, offset_bytes: 0, size_bytes: 64 },
            Location { device: 0, offset_bytes: size, size_bytes: 64 },
            Location { device: 1, offset_bytes: first + 64, size_bytes: 64 },
        ];
        let reads_before = sim.counts().reads;
        for location in bad {
            let entry = EntryInfo {
                tag: DigestTag::of(&[1; 20]),
                generation: 1,
                tombstone: false,
                location,
                void_time: 0,
            };
            assert!(matches!(disk.read_entry(&entry), Ok((Verify::Corrupt(_), false))), "{location:?}");
            let (batch, _) = disk.read_entries(&[entry]);
            assert!(matches!(batch.as_slice(), [Ok(Verify::Corrupt(_))]), "{location:?}");
        }
        assert_eq!(sim.counts().reads, reads_before, "a bad location must not be read");
    }
}
