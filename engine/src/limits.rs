//! Every size and bound of the engine in one place, with the relations between them
//! asserted at compile time: a change that breaks one (a bigger header, a wider location,
//! a smaller write block) fails the build instead of a test or a device.
//!
//! The modules that use a bound re-export it under its old path (`format::KEY_SIZE_MAX`,
//! `index::PARTITION_COUNT`, …); this module depends on nothing.

use std::time::Duration;

// --- I/O ----------------------------------------------------------------------------------

/// Alignment and granularity of every device I/O (direct I/O).
pub const IO_ALIGN: usize = 4096;

// --- Device layout ------------------------------------------------------------------------

/// One copy of the device header (two copies alternate at the start of the device).
pub const DEVICE_HEADER_SIZE: usize = 4096;
/// The header of every write block.
pub const WBLOCK_HEADER_SIZE: usize = 64;
pub const WBLOCK_SIZE_MIN: u32 = 128 * 1024;
pub const WBLOCK_SIZE_MAX: u32 = 8 * 1024 * 1024;
pub const WBLOCK_SIZE_DEFAULT: u32 = 1024 * 1024;
/// Write blocks a device must hold at least.
pub const WBLOCKS_MIN: u64 = 4;
/// The header of every record.
pub const RECORD_HEADER_SIZE: usize = 64;
/// Records start and end on this boundary (the unit of an index location).
pub const RECORD_ALIGN: usize = 16;
/// A change-bitmap page (one 4 KiB I/O unit, its header included).
pub const BITMAP_PAGE_SIZE: usize = IO_ALIGN;

// --- Names, keys and digests --------------------------------------------------------------

pub const NAMESPACE_NAME_MAX: usize = 31;
/// Bytes of a stored key.
pub const KEY_SIZE_MAX: usize = 1024;
/// A record's identity (Aerospike's RIPEMD-160 size).
pub const DIGEST_SIZE: usize = 20;
/// The namespace's secret for keyed digests (xxh3-128 needs at least 136 bytes).
pub const DIGEST_SECRET_SIZE: usize = 192;

// --- The index ----------------------------------------------------------------------------

/// Partitions of a namespace: a digest's first 12 bits, as in Aerospike.
pub const PARTITION_COUNT: usize = 4096;
/// Devices a namespace may have.
pub const DEVICES_MAX: usize = 128;
/// Bits of an index location: the offset in `RECORD_ALIGN` units, and the size in the same
/// units. The device is not stored (it is derived from the digest).
pub const LOCATION_OFFSET_BITS: u32 = 43;
pub const LOCATION_SIZE_BITS: u32 = 19;
/// Bytes of a device the index can address (a larger device is formatted to this size).
pub const DEVICE_BYTES_MAX: u64 = (1 << LOCATION_OFFSET_BITS) * RECORD_ALIGN as u64;
/// Bytes of one index entry, in memory and in a snapshot.
pub const INDEX_ENTRY_BYTES: usize = 28;
/// The highest generation (31 bits; the entry's top bit marks a tombstone).
pub const GENERATION_MAX: u32 = (1 << 31) - 1;

/// Write sequences a run reserves in the device header at a time (`write_seq_reserved`):
/// a header write and sync under the disk lock every this many blocks opened (64 GiB of
/// 1 MiB blocks), and at most this many sequences skipped at each start.
pub const WRITE_SEQS_RESERVED_AT_ONCE: u64 = 1 << 16;
/// The most RAM one device's post-write cache may hold: past it a namespace would be an
/// in-memory store with a device behind it, which this cache is not sized for.
pub const POST_WRITE_CACHE_BYTES_MAX: u64 = 16 << 30;

// --- Batches and retries ------------------------------------------------------------------

/// Keys (or digests) whose reads one batch call keeps in flight together; a larger batch
/// is read in chunks of this size.
pub const BATCH_KEYS_MAX: usize = 1024;
/// Attempts of one transfer in a row that move it by no whole I/O unit (`EINTR`, `EAGAIN`,
/// a short transfer) before it fails.
pub const STALLED_ATTEMPTS_MAX: u32 = 64;

// --- Waits --------------------------------------------------------------------------------

/// Longest a commit-to-device writer waits for durability before `InDoubt`.
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest an open waits for a device lock that no live process holds (after `kill -9`
/// the kernel drops a dead ring's file references asynchronously).
pub const DEVICE_LOCK_WAIT_MS_MAX: u64 = 3000;

// --- Relations ----------------------------------------------------------------------------

const _: () = assert!(IO_ALIGN.is_power_of_two() && RECORD_ALIGN.is_power_of_two());
const _: () = assert!(WBLOCK_SIZE_MIN.is_power_of_two() && WBLOCK_SIZE_MAX.is_power_of_two());
const _: () = assert!(WBLOCK_SIZE_MIN <= WBLOCK_SIZE_DEFAULT && WBLOCK_SIZE_DEFAULT <= WBLOCK_SIZE_MAX);
const _: () = assert!(WBLOCK_SIZE_MIN as usize % IO_ALIGN == 0, "write blocks are whole I/O units");
const _: () = assert!(WBLOCK_HEADER_SIZE % RECORD_ALIGN == 0 && RECORD_HEADER_SIZE % RECORD_ALIGN == 0);
const _: () = assert!(DEVICE_HEADER_SIZE % IO_ALIGN == 0, "each header copy is written alone");
const _: () = assert!(DIGEST_SECRET_SIZE >= 136, "xxh3 needs a secret of at least 136 bytes");
// A record with the longest key fits the smallest write block.
const _: () = assert!(WBLOCK_HEADER_SIZE + RECORD_HEADER_SIZE + KEY_SIZE_MAX <= WBLOCK_SIZE_MIN as usize);
// The location: offset and size share 64 bits; the largest record's size fits; devices of
// 64 TiB are addressable; the smallest write blocks of the largest device count in u32.
const _: () = assert!(LOCATION_OFFSET_BITS + LOCATION_SIZE_BITS <= 64);
const _: () = assert!(
    ((WBLOCK_SIZE_MAX as u64 - WBLOCK_HEADER_SIZE as u64) / RECORD_ALIGN as u64) < (1 << LOCATION_SIZE_BITS)
);
const _: () = assert!(DEVICE_BYTES_MAX >= 64 << 40, "devices of 64 TiB must be addressable");
const _: () = assert!(DEVICE_BYTES_MAX / WBLOCK_SIZE_MIN as u64 <= u32::MAX as u64);
// A device index fits a byte, and the digest bytes that choose the device (2..4) cover it.
const _: () = assert!(DEVICES_MAX <= u8::MAX as usize + 1 && DEVICES_MAX <= 1 << 16);
const _: () = assert!(PARTITION_COUNT == 1 << 12, "Aerospike's partition count");
const _: () = assert!(BITMAP_PAGE_SIZE == IO_ALIGN);
