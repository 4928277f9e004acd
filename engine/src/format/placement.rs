//! Where a digest lives: its partition (the first 12 bits, little-endian, which is
//! Aerospike's partition id for a client's digest) and its device in a namespace of
//! several (the next 16 bits, modulo the device count), so that neither needs storing.

use super::Digest;
use crate::limits::PARTITION_COUNT;

/// Partition of a digest: its first 12 bits.
pub fn partition_of(digest: &Digest) -> usize {
    (u16::from_le_bytes([digest[0], digest[1]]) as usize) & (PARTITION_COUNT - 1)
}

/// Device of a digest in a namespace of `device_count` devices.
pub fn device_of(digest: &Digest, device_count: usize) -> usize {
    u16::from_le_bytes([digest[2], digest[3]]) as usize % device_count
}
