//! One index entry and the values packed into it: the digest tag, the record's location
//! and its generation and void time.
//!
//! Budget (asserted below): 28 bytes an entry. The tag keeps digest bytes 2..14, 96 bits;
//! with the 12 partition bits implied, 108 bits tell two digests of one namespace apart.
//! The device is not stored: a record lives on the device its digest names (bytes 2..4
//! modulo the device count, checked by recovery), so it is derived from the tag. That leaves
//! the location's 64 bits to the offset (43 bits of 16-byte units: 128 TiB a device) and
//! the size (19 bits: 8 MiB).

use crate::format::Digest;

/// The part of a digest an entry stores: bytes 2..10 (`hi`, big-endian, so that tags sort
/// and interpolate by their leading bytes) and 10..14 (`lo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DigestTag {
    pub hi: u64,
    pub lo: u32,
}

impl DigestTag {
    pub const MIN: DigestTag = DigestTag { hi: 0, lo: 0 };

    pub fn of(digest: &Digest) -> Self {
        DigestTag {
            hi: u64::from_be_bytes(digest[2..10].try_into().unwrap_or_default()),
            lo: u32::from_be_bytes(digest[10..14].try_into().unwrap_or_default()),
        }
    }

    /// The device a digest with this tag lives on: digest bytes 2..4 as a little-endian
    /// u16, modulo the device count (the same rule as `format::device_of`).
    pub fn device(&self, device_count: u8) -> u8 {
        let le = ((self.hi >> 48) as u16).swap_bytes();
        (le % device_count.max(1) as u16) as u8
    }
}

/// A record's place on a device. `device` is carried for the caller's convenience but never
/// stored: it is derived from the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub device: u8,
    pub offset_bytes: u64,
    pub size_bytes: u32,
}

use crate::limits::LOCATION_SIZE_BITS as SIZE_BITS;
pub use crate::limits::{DEVICES_MAX, DEVICE_BYTES_MAX, GENERATION_MAX};
// The bit budget of a location is asserted in `limits`.
const UNIT: u64 = crate::format::RECORD_ALIGN as u64;

impl Location {
    /// Packs offset and size. A location that does not fit is a bug upstream (sizes and
    /// offsets are bounded where the device is formatted and records are built), so it is
    /// checked in release builds too rather than silently truncated.
    fn pack(self) -> u64 {
        assert!(
            self.offset_bytes % UNIT == 0 && self.size_bytes as u64 % UNIT == 0,
            "location {self:?} is not aligned to {UNIT} bytes"
        );
        assert!(self.offset_bytes < DEVICE_BYTES_MAX, "offset of {self:?} is beyond DEVICE_BYTES_MAX");
        assert!((self.size_bytes as u64 / UNIT) < (1 << SIZE_BITS), "size of {self:?} does not fit");
        (self.offset_bytes / UNIT) << SIZE_BITS | (self.size_bytes as u64 / UNIT)
    }

    fn unpack(packed: u64, device: u8) -> Self {
        Location {
            device,
            offset_bytes: (packed >> SIZE_BITS) * UNIT,
            size_bytes: ((packed & ((1 << SIZE_BITS) - 1)) * UNIT) as u32,
        }
    }
}

const TOMBSTONE_BIT: u32 = 1 << 31;
const _: () = assert!(GENERATION_MAX == TOMBSTONE_BIT - 1, "the generation shares 32 bits with the flag");

/// One index entry: 28 bytes, 4-byte aligned.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
pub struct IndexEntry {
    tag_hi: u64,
    tag_lo: u32,
    /// Generation in the low 31 bits; the top bit marks a tombstone (or an expired record
    /// kept so that an older copy on the device cannot come back).
    generation: u32,
    location: u64,
    void_time: u32,
}
pub const ENTRY_BYTES: usize = crate::limits::INDEX_ENTRY_BYTES;
const _: () = assert!(std::mem::size_of::<IndexEntry>() == ENTRY_BYTES);

/// The entry's fields, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub tag: DigestTag,
    pub generation: u32,
    pub tombstone: bool,
    pub location: Location,
    pub void_time: u32,
}

impl IndexEntry {
    pub fn new(info: EntryInfo) -> Self {
        assert!(info.generation <= GENERATION_MAX, "generation {} above the maximum", info.generation);
        IndexEntry {
            tag_hi: info.tag.hi,
            tag_lo: info.tag.lo,
            generation: info.generation | if info.tombstone { TOMBSTONE_BIT } else { 0 },
            location: info.location.pack(),
            void_time: info.void_time,
        }
    }

    /// The fields, with the device derived for a namespace of `device_count` devices.
    pub fn info(&self, device_count: u8) -> EntryInfo {
        let generation = self.generation;
        let tag = self.tag();
        EntryInfo {
            tag,
            generation: generation & GENERATION_MAX,
            tombstone: generation & TOMBSTONE_BIT != 0,
            location: Location::unpack(self.location, tag.device(device_count)),
            void_time: self.void_time,
        }
    }

    /// The bytes a snapshot stores, little-endian.
    pub fn to_bytes(self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        let (tag_hi, tag_lo, generation, location, void_time) =
            (self.tag_hi, self.tag_lo, self.generation, self.location, self.void_time);
        out[0..8].copy_from_slice(&tag_hi.to_le_bytes());
        out[8..12].copy_from_slice(&tag_lo.to_le_bytes());
        out[12..16].copy_from_slice(&generation.to_le_bytes());
        out[16..24].copy_from_slice(&location.to_le_bytes());
        out[24..28].copy_from_slice(&void_time.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8; ENTRY_BYTES]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        IndexEntry {
            tag_hi: u64_at(0),
            tag_lo: u32_at(8),
            generation: u32_at(12),
            location: u64_at(16),
            void_time: u32_at(24),
        }
    }

    pub fn tag(&self) -> DigestTag {
        DigestTag { hi: self.tag_hi, lo: self.tag_lo }
    }

    pub fn is_tombstone(&self) -> bool {
        self.generation & TOMBSTONE_BIT != 0
    }

    pub fn void_time(&self) -> u32 {
        self.void_time
    }

    /// Turns a live entry into a tombstone in place (its record expired).
    pub fn mark_tombstone(&mut self) {
        self.generation |= TOMBSTONE_BIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_packs_its_extremes() {
        let max = Location {
            device: 0,
            offset_bytes: DEVICE_BYTES_MAX - 16,
            size_bytes: crate::format::WBLOCK_SIZE_MAX - 16,
        };
        assert_eq!(Location::unpack(max.pack(), 0), max);
        let zero = Location { device: 0, offset_bytes: 0, size_bytes: 0 };
        assert_eq!(Location::unpack(zero.pack(), 0), zero);
        let at_64_tib = Location { device: 0, offset_bytes: (64 << 40) - 4096, size_bytes: 1088 };
        assert_eq!(Location::unpack(at_64_tib.pack(), 0), at_64_tib);
    }

    #[test]
    #[should_panic(expected = "beyond DEVICE_BYTES_MAX")]
    fn a_location_past_the_addressable_range_is_refused_not_truncated() {
        Location { device: 0, offset_bytes: DEVICE_BYTES_MAX, size_bytes: 16 }.pack();
    }

    #[test]
    fn the_device_derived_from_a_tag_is_recoverys_device_of() {
        let mut rng = crate::device::sim::SimRng::new(7);
        for _ in 0..10_000 {
            let mut digest = [0u8; 20];
            for chunk in digest.chunks_mut(8) {
                let bytes = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            for count in [1u8, 2, 3, 7, 100, 128] {
                let derived = DigestTag::of(&digest).device(count) as usize;
                assert_eq!(derived, crate::format::device_of(&digest, count as usize));
            }
        }
    }
}
