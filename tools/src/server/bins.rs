//! The server's record: set name, user key and bins, encoded into the engine's value.
//!
//! Encoding, version 1 (ARCHITECTURE.md has the same table), all integers big-endian:
//! `u8 version (1)`, `u8 set length`, set bytes, `u8 key particle type (0 = no key)`,
//! `u16 key length`, key bytes, `u16 bin count`, then per bin `u8 name length`, name,
//! `u8 particle type`, `u32 value length`, value bytes as the client sent them (so that
//! lists, maps, GeoJSON and HLL come back byte for byte). The decoder never panics (the
//! `server_request` fuzz target feeds it).

use super::wire::{ByteReader, WireError};

pub const BINS_VERSION: u8 = 1;
pub const SET_NAME_MAX: usize = 63;

pub const PARTICLE_NULL: u8 = 0;
pub const PARTICLE_INTEGER: u8 = 1;
pub const PARTICLE_FLOAT: u8 = 2;
pub const PARTICLE_STRING: u8 = 3;
pub const PARTICLE_BLOB: u8 = 4;
pub const PARTICLE_GEOJSON: u8 = 23;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    pub name: Vec<u8>,
    pub particle: u8,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRecord {
    pub set: Vec<u8>,
    /// The user key as the client sent it: particle type and bytes.
    pub key: Option<(u8, Vec<u8>)>,
    pub bins: Vec<Bin>,
}

impl StoredRecord {
    pub fn bin(&self, name: &[u8]) -> Option<&Bin> {
        self.bins.iter().find(|b| b.name == name)
    }

    /// Sets a bin in place, keeping the bins' order (a NULL particle removes it).
    pub fn set_bin(&mut self, name: &[u8], particle: u8, value: &[u8]) {
        let at = self.bins.iter().position(|b| b.name == name);
        match (at, particle) {
            (Some(at), PARTICLE_NULL) => {
                self.bins.remove(at);
            }
            (Some(at), _) => self.bins[at] = Bin { name: name.to_vec(), particle, value: value.to_vec() },
            (None, PARTICLE_NULL) => {}
            (None, _) => self.bins.push(Bin { name: name.to_vec(), particle, value: value.to_vec() }),
        }
    }

    /// Encodes the record. The caller keeps to the encoding's bounds (a set of at most
    /// `SET_NAME_MAX` bytes, a key under 64 KiB, fewer than 65536 bins, names of at most
    /// 255 bytes), which `record::execute` checks before any write.
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(self.set.len() <= SET_NAME_MAX && self.bins.len() <= u16::MAX as usize);
        let size: usize = self.bins.iter().map(|b| 6 + b.name.len() + b.value.len()).sum();
        let mut out = Vec::with_capacity(8 + self.set.len() + size);
        out.push(BINS_VERSION);
        out.push(self.set.len() as u8);
        out.extend_from_slice(&self.set);
        let (particle, key) = self.key.as_ref().map_or((0, &[][..]), |(p, k)| (*p, &k[..]));
        out.push(particle);
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(self.bins.len() as u16).to_be_bytes());
        for bin in &self.bins {
            out.push(bin.name.len() as u8);
            out.extend_from_slice(&bin.name);
            out.push(bin.particle);
            out.extend_from_slice(&(bin.value.len() as u32).to_be_bytes());
            out.extend_from_slice(&bin.value);
        }
        out
    }

    /// The set name of an encoded record, read without decoding the rest (None: the bytes
    /// are not a record of this encoding).
    pub fn peek_set(b: &[u8]) -> Option<&[u8]> {
        if b.first() != Some(&BINS_VERSION) {
            return None;
        }
        let len = *b.get(1)? as usize;
        b.get(2..2 + len)
    }

    pub fn decode(b: &[u8]) -> Result<StoredRecord, String> {
        Self::decode_fields(&mut ByteReader::new(b)).map_err(|e| format!("bin encoding: {e}"))
    }

    fn decode_fields(r: &mut ByteReader<'_>) -> Result<StoredRecord, WireError> {
        let b = r.b;
        let version = r.u8()?;
        if version != BINS_VERSION {
            return Err(WireError(format!("version {version}, expected {BINS_VERSION}")));
        }
        let set_len = r.u8()? as usize;
        let set = r.take(set_len)?.to_vec();
        let key_particle = r.u8()?;
        let key_len = r.u16()? as usize;
        let key_bytes = r.take(key_len)?.to_vec();
        let key = (key_particle != 0).then_some((key_particle, key_bytes));
        let count = r.u16()?;
        let mut bins = Vec::with_capacity(count.min(256) as usize);
        for _ in 0..count {
            let name_len = r.u8()? as usize;
            let name = r.take(name_len)?.to_vec();
            let particle = r.u8()?;
            let value_len = r.u32()? as usize;
            let value = r.take(value_len)?.to_vec();
            bins.push(Bin { name, particle, value });
        }
        if !r.is_done() {
            return Err(WireError(format!("{} bytes after the last bin", b.len() - r.at)));
        }
        Ok(StoredRecord { set, key, bins })
    }
}

/// Why a bin operation cannot apply to the bin it names (Aerospike's result 12, or 4).
#[derive(Debug, PartialEq, Eq)]
pub enum BinOpError {
    IncompatibleType,
    Parameter,
}

/// The real server makes any modify op on a missing bin a create: the bin takes the op's
/// value, whatever its type (an increment by a string creates a string bin). A number is
/// 8 bytes; a NULL value creates nothing.
fn create(record: &mut StoredRecord, name: &[u8], particle: u8, value: &[u8]) -> Result<(), BinOpError> {
    let number = particle == PARTICLE_INTEGER || particle == PARTICLE_FLOAT;
    if particle == PARTICLE_NULL || (number && value.len() != 8) {
        return Err(BinOpError::Parameter);
    }
    record.set_bin(name, particle, value);
    Ok(())
}

/// `INCR`: adds an integer or float to the bin (a missing bin is created, see `create`).
pub fn add(record: &mut StoredRecord, name: &[u8], particle: u8, value: &[u8]) -> Result<(), BinOpError> {
    let Some(current) = record.bin(name).map(|b| (b.particle, b.value.clone())) else {
        return create(record, name, particle, value);
    };
    // Only numbers add (anything else is a type error, as in Aerospike); a number is 8 bytes.
    if particle != PARTICLE_INTEGER && particle != PARTICLE_FLOAT {
        return Err(BinOpError::IncompatibleType);
    }
    let operand: [u8; 8] = value.try_into().map_err(|_| BinOpError::Parameter)?;
    let sum = match (particle, Some(current)) {
        (PARTICLE_INTEGER, Some((PARTICLE_INTEGER, v))) => {
            let held = i64::from_be_bytes(v.try_into().map_err(|_| BinOpError::IncompatibleType)?);
            held.wrapping_add(i64::from_be_bytes(operand)).to_be_bytes()
        }
        (PARTICLE_FLOAT, Some((PARTICLE_FLOAT, v))) => {
            let held = f64::from_be_bytes(v.try_into().map_err(|_| BinOpError::IncompatibleType)?);
            (held + f64::from_be_bytes(operand)).to_be_bytes()
        }
        (PARTICLE_INTEGER | PARTICLE_FLOAT, Some(_)) => return Err(BinOpError::IncompatibleType),
        _ => return Err(BinOpError::IncompatibleType),
    };
    record.set_bin(name, particle, &sum);
    Ok(())
}

/// `APPEND` / `PREPEND`: strings and blobs, each only to its own kind (a missing bin is
/// created, see `create`).
pub fn concat(
    record: &mut StoredRecord,
    name: &[u8],
    particle: u8,
    value: &[u8],
    prepend: bool,
) -> Result<(), BinOpError> {
    if record.bin(name).is_none() {
        return create(record, name, particle, value);
    }
    if particle != PARTICLE_STRING && particle != PARTICLE_BLOB {
        return Err(BinOpError::IncompatibleType);
    }
    let joined = match record.bin(name) {
        None => value.to_vec(),
        Some(bin) if bin.particle == particle && prepend => [value, &bin.value].concat(),
        Some(bin) if bin.particle == particle => [&bin.value, value].concat(),
        Some(_) => return Err(BinOpError::IncompatibleType),
    };
    record.set_bin(name, particle, &joined);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_truncations_are_errors() {
        let mut record = StoredRecord { set: b"demo".to_vec(), key: Some((3, b"k1".to_vec())), bins: vec![] };
        record.set_bin(b"a", PARTICLE_INTEGER, &7i64.to_be_bytes());
        record.set_bin(b"list", 20, &[0x92, 1, 2]);
        let bytes = record.encode();
        assert_eq!(StoredRecord::decode(&bytes).unwrap(), record);
        for len in 0..bytes.len() {
            assert!(StoredRecord::decode(&bytes[..len]).is_err(), "truncated at {len}");
        }
        assert_eq!(StoredRecord::peek_set(&bytes), Some(&b"demo"[..]));
        assert_eq!(StoredRecord::peek_set(&bytes[..5]), None, "cut inside the set name");
        assert_eq!(StoredRecord::peek_set(&[9, 0]), None, "another version");
    }

    #[test]
    fn add_and_concat_keep_to_their_types() {
        let mut record = StoredRecord::default();
        add(&mut record, b"n", PARTICLE_INTEGER, &5i64.to_be_bytes()).unwrap();
        add(&mut record, b"n", PARTICLE_INTEGER, &(-2i64).to_be_bytes()).unwrap();
        assert_eq!(record.bin(b"n").unwrap().value, 3i64.to_be_bytes());
        assert_eq!(
            add(&mut record, b"n", PARTICLE_FLOAT, &1f64.to_be_bytes()),
            Err(BinOpError::IncompatibleType)
        );
        concat(&mut record, b"s", PARTICLE_STRING, b"b", false).unwrap();
        concat(&mut record, b"s", PARTICLE_STRING, b"a", true).unwrap();
        concat(&mut record, b"s", PARTICLE_STRING, b"c", false).unwrap();
        assert_eq!(record.bin(b"s").unwrap().value, b"abc");
        assert_eq!(
            concat(&mut record, b"n", PARTICLE_STRING, b"x", false),
            Err(BinOpError::IncompatibleType)
        );
        // A missing bin is created whatever the op's type, as by the real server.
        add(&mut record, b"fresh", PARTICLE_STRING, b"text").unwrap();
        assert_eq!(record.bin(b"fresh").unwrap().particle, PARTICLE_STRING);
        concat(&mut record, b"number", PARTICLE_INTEGER, &9i64.to_be_bytes(), false).unwrap();
        assert_eq!(add(&mut record, b"other", PARTICLE_INTEGER, &[1, 2]), Err(BinOpError::Parameter));
        record.set_bin(b"s", PARTICLE_NULL, &[]);
        assert!(record.bin(b"s").is_none());
    }
}
