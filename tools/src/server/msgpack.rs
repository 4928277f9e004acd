//! MessagePack as Aerospike's clients use it inside LIST and MAP bins: strings, blobs and
//! GeoJSON are str (or bin) payloads whose first byte is the particle type; a map may start
//! with an ext pair giving its order flags. `decode` keeps everything `encode` needs to
//! give the same bytes back (the str or bin family, f32 or f64), and `canonical_cmp` is the
//! server's order of values (the clients' tests compare their own sort against it).
//!
//! Pure; decoding never panics (depth and lengths are checked against the input) and is
//! fuzzed with the request decoder. Cost: one allocation per list, map and string.

use std::cmp::Ordering;

/// Deepest nesting decoded; deeper input is refused rather than risking the stack.
const DEPTH_MAX: usize = 64;

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    /// An unsigned integer above `i64::MAX` (MessagePack uint64).
    UInt(u64),
    F32(f32),
    F64(f64),
    /// A str or bin payload: its first byte is the particle type (3 string, 4 blob, 23
    /// GeoJSON), the rest the bytes. `bin` records the family it came in.
    Bytes {
        payload: Vec<u8>,
        bin: bool,
    },
    List(Vec<Value>),
    /// `order`: the flags of the map's leading ext pair (1 key-ordered, 3 key-value
    /// ordered), if it has one.
    Map {
        order: Option<u8>,
        entries: Vec<(Value, Value)>,
    },
    /// Any other ext (infinity, wildcard): type and data.
    Ext {
        kind: u8,
        data: Vec<u8>,
    },
}

/// Why bytes are not a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad MessagePack: {}", self.0)
    }
}

impl Value {
    /// A string value, in the form the Rust client sends.
    pub fn string(text: &[u8]) -> Value {
        let mut payload = vec![3];
        payload.extend_from_slice(text);
        Value::Bytes { payload, bin: false }
    }

    /// The value as a bin of its own: (particle type, bytes), as a CDT result is returned.
    pub fn to_particle(&self) -> (u8, Vec<u8>) {
        match self {
            Value::Nil => (0, Vec::new()),
            Value::Bool(b) => (17, vec![*b as u8]),
            Value::Int(i) => (1, i.to_be_bytes().to_vec()),
            Value::UInt(u) => (1, u.to_be_bytes().to_vec()),
            Value::F32(x) => (2, (*x as f64).to_be_bytes().to_vec()),
            Value::F64(x) => (2, x.to_be_bytes().to_vec()),
            Value::Bytes { payload, .. } if !payload.is_empty() => (payload[0], payload[1..].to_vec()),
            Value::Bytes { .. } => (3, Vec::new()),
            Value::List(_) | Value::Ext { .. } => (20, encode(self)),
            Value::Map { .. } => (19, encode(self)),
        }
    }

    /// A bin's value (particle type and bytes) as an element of a list or map.
    pub fn from_particle(particle: u8, bytes: &[u8]) -> Result<Value, DecodeError> {
        let eight = || -> Result<[u8; 8], DecodeError> {
            bytes.try_into().map_err(|_| DecodeError("an integer or float of other than 8 bytes"))
        };
        Ok(match particle {
            0 => Value::Nil,
            1 => Value::Int(i64::from_be_bytes(eight()?)),
            2 => Value::F64(f64::from_be_bytes(eight()?)),
            17 => Value::Bool(bytes.first().is_some_and(|b| *b != 0)),
            19 | 20 => decode(bytes)?,
            _ => {
                let mut payload = vec![particle];
                payload.extend_from_slice(bytes);
                Value::Bytes { payload, bin: false }
            }
        })
    }

    /// The server's type rank: nil, bool, integer, string, list, map, blob, HLL, float,
    /// GeoJSON, then the ext markers.
    fn rank(&self) -> u8 {
        match self {
            Value::Nil => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::UInt(_) => 2,
            Value::Bytes { payload, .. } => match payload.first() {
                Some(3) | None => 3,
                Some(4) => 6,
                Some(18) => 7,
                Some(23) => 9,
                Some(_) => 6,
            },
            Value::List(_) => 4,
            Value::Map { .. } => 5,
            Value::F32(_) | Value::F64(_) => 8,
            Value::Ext { .. } => 10,
        }
    }

    fn as_f64(&self) -> f64 {
        match self {
            Value::F32(x) => *x as f64,
            Value::F64(x) => *x,
            _ => 0.0,
        }
    }
}

/// The server's canonical order of values: by type rank, then integers and floats by
/// number, strings and blobs bytewise, lists element by element (a prefix first), maps by
/// length and then entry by entry in key order.
pub fn canonical_cmp(a: &Value, b: &Value) -> Ordering {
    match a.rank().cmp(&b.rank()) {
        Ordering::Equal => {}
        unequal => return unequal,
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
        (Value::Int(_), Value::UInt(_)) => Ordering::Less,
        (Value::UInt(_), Value::Int(_)) => Ordering::Greater,
        (Value::Bytes { payload: x, .. }, Value::Bytes { payload: y, .. }) => x.cmp(y),
        (Value::List(x), Value::List(y)) => {
            let first_difference = x.iter().zip(y).map(|(p, q)| canonical_cmp(p, q)).find(|o| o.is_ne());
            first_difference.unwrap_or_else(|| x.len().cmp(&y.len()))
        }
        (Value::Map { entries: x, .. }, Value::Map { entries: y, .. }) => {
            let (x, y) = (sorted_entries(x), sorted_entries(y));
            let entry_cmp = |(p, q): (&(&Value, &Value), &(&Value, &Value))| {
                canonical_cmp(p.0, q.0).then_with(|| canonical_cmp(p.1, q.1))
            };
            x.len()
                .cmp(&y.len())
                .then_with(|| x.iter().zip(&y).map(entry_cmp).find(|o| o.is_ne()).unwrap_or(Ordering::Equal))
        }
        (Value::Ext { kind: x, data: p }, Value::Ext { kind: y, data: q }) => x.cmp(y).then_with(|| p.cmp(q)),
        _ if a.rank() == 8 => a.as_f64().total_cmp(&b.as_f64()),
        _ => Ordering::Equal,
    }
}

fn sorted_entries(entries: &[(Value, Value)]) -> Vec<(&Value, &Value)> {
    let mut sorted: Vec<(&Value, &Value)> = entries.iter().map(|(k, v)| (k, v)).collect();
    sorted.sort_by(|p, q| canonical_cmp(p.0, q.0));
    sorted
}

/// Decodes exactly one value filling `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader { b: bytes, at: 0 };
    let value = reader.value(0)?;
    if reader.at != bytes.len() {
        return Err(DecodeError("bytes after the value"));
    }
    Ok(value)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or(DecodeError("truncated"))?;
        let out = &self.b[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn uint(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| acc << 8 | *b as u64))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > DEPTH_MAX {
            return Err(DecodeError("nested too deeply"));
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Value::Int(marker as i64),
            0x80..=0x8f => self.map((marker & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.list((marker & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.bytes((marker & 0x1f) as usize, false)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.uint(1 << (marker - 0xc4))? as usize;
                self.bytes(n, true)?
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (marker - 0xc7))? as usize;
                self.ext(n)?
            }
            0xca => Value::F32(f32::from_bits(self.uint(4)? as u32)),
            0xcb => Value::F64(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => match self.uint(1 << (marker - 0xcc))? {
                big if big > i64::MAX as u64 => Value::UInt(big),
                small => Value::Int(small as i64),
            },
            0xd0 => Value::Int(self.uint(1)? as u8 as i8 as i64),
            0xd1 => Value::Int(self.uint(2)? as u16 as i16 as i64),
            0xd2 => Value::Int(self.uint(4)? as u32 as i32 as i64),
            0xd3 => Value::Int(self.uint(8)? as i64),
            0xd4..=0xd8 => self.ext(1 << (marker - 0xd4))?,
            0xd9..=0xdb => {
                let n = self.uint(1 << (marker - 0xd9))? as usize;
                self.bytes(n, false)?
            }
            0xdc | 0xdd => {
                let n = self.uint(if marker == 0xdc { 2 } else { 4 })? as usize;
                self.list(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.uint(if marker == 0xde { 2 } else { 4 })? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(marker as i8 as i64),
            0xc1 => return Err(DecodeError("reserved marker 0xc1")),
        })
    }

    fn bytes(&mut self, n: usize, bin: bool) -> Result<Value, DecodeError> {
        Ok(Value::Bytes { payload: self.take(n)?.to_vec(), bin })
    }

    fn ext(&mut self, n: usize) -> Result<Value, DecodeError> {
        let kind = self.take(1)?[0];
        Ok(Value::Ext { kind, data: self.take(n)?.to_vec() })
    }

    /// Counts come from the input, so capacity is bounded by the bytes left (every element
    /// takes at least one byte) rather than trusted.
    fn list(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut items = Vec::with_capacity(n.min(self.b.len() - self.at));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::List(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut entries = Vec::with_capacity(n.min((self.b.len() - self.at) / 2));
        let mut order = None;
        for i in 0..n {
            let key = self.value(depth + 1)?;
            let value = self.value(depth + 1)?;
            match key {
                Value::Ext { kind, ref data } if i == 0 && data.is_empty() && value == Value::Nil => {
                    order = Some(kind)
                }
                key => entries.push((key, value)),
            }
        }
        Ok(Value::Map { order, entries })
    }
}

/// Encodes a value; `decode(&encode(v)) == v` for every decoded `v`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, value);
    out
}

fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
        Value::F32(x) => {
            out.push(0xca);
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        Value::F64(x) => {
            out.push(0xcb);
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        Value::Bytes { payload, bin } => {
            // The bin family has no inline length.
            let (markers, inline_max) =
                if *bin { ([0xc4, 0xc4, 0xc5, 0xc6], 0) } else { ([0xa0, 0xd9, 0xda, 0xdb], 32) };
            write_len(out, payload.len(), markers, inline_max);
            out.extend_from_slice(payload);
        }
        Value::List(items) => {
            write_len(out, items.len(), [0x90, 0xdc, 0xdc, 0xdd], 16);
            items.iter().for_each(|item| write(out, item));
        }
        Value::Map { order, entries } => {
            write_len(out, entries.len() + order.is_some() as usize, [0x80, 0xde, 0xde, 0xdf], 16);
            if let Some(flags) = order {
                out.extend_from_slice(&[0xc7, 0x00, *flags, 0xc0]);
            }
            for (key, value) in entries {
                write(out, key);
                write(out, value);
            }
        }
        Value::Ext { kind, data } => {
            match data.len() {
                n @ (1 | 2 | 4 | 8 | 16) => out.push(0xd4 + n.trailing_zeros() as u8),
                n => write_len(out, n, [0xc7, 0xc7, 0xc8, 0xc9], 0),
            }
            out.push(*kind);
            out.extend_from_slice(data);
        }
    }
}

/// A length in the smallest form: inline under `inline_max` (when the family has one,
/// `markers[0]` | n), else 8-, 16- or 32-bit with `markers[1..]` (a family without an
/// 8-bit form repeats its 16-bit marker there).
fn write_len(out: &mut Vec<u8>, n: usize, markers: [u8; 4], inline_max: usize) {
    if n < inline_max {
        out.push(markers[0] | n as u8);
    } else if n < 256 && markers[1] != markers[2] {
        out.extend_from_slice(&[markers[1], n as u8]);
    } else if n < 1 << 16 {
        out.push(markers[2]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(markers[3]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    match i {
        0..=0x7f => out.push(i as u8),
        -32..=-1 => out.push(i as i8 as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, i as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(i as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(i as u32).to_be_bytes());
        }
        _ if i > 0 => {
            out.push(0xcf);
            out.extend_from_slice(&(i as u64).to_be_bytes());
        }
        -128..=-33 => out.extend_from_slice(&[0xd0, i as i8 as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(i as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend_from_slice(&(i as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&i.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_decodes_and_encodes_back_to_the_same_bytes() {
        let cases: &[&[u8]] = &[
            &[0x93, 0x01, 0xd0, 0x80, 0xcd, 0x12, 0x34],
            &[0x92, 0xa4, 0x03, b'a', b'b', b'c', 0xc4, 0x02, 0x04, 0x09],
            &[0x82, 0xc7, 0x00, 0x01, 0xc0, 0xa2, 0x03, b'k', 0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0],
            &[0x93, 0xc0, 0xc3, 0xd4, 0xff, 0x01],
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0xca, 0x3f, 0x80, 0, 0],
        ];
        for bytes in cases {
            let value = decode(bytes).unwrap();
            assert_eq!(&encode(&value), bytes, "{value:?}");
        }
        for i in [
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(decode(&encode(&Value::Int(i))).unwrap(), Value::Int(i));
        }
        let long = Value::List((0..70_000).map(Value::Int).collect());
        assert_eq!(decode(&encode(&long)).unwrap(), long);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in
            [&[0xc1][..], &[0x92, 0x01], &[0xdd, 0xff, 0xff, 0xff, 0xff], &[0xa5, 0x03], &[0x01, 0x02], &[]]
        {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100).chain([0xc0]).collect();
        assert_eq!(decode(&deep), Err(DecodeError("nested too deeply")));
    }

    #[test]
    fn the_canonical_order_ranks_types_then_values() {
        let s = |t: &str| Value::string(t.as_bytes());
        let blob = Value::Bytes { payload: vec![4, 1], bin: false };
        let map = |n: usize| Value::Map {
            order: None,
            entries: (0..n as i64).map(|i| (Value::Int(i), Value::Nil)).collect(),
        };
        let sorted = [
            Value::Nil,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-7),
            Value::Int(3),
            s("a"),
            s("zz"),
            Value::List(vec![]),
            Value::List(vec![Value::Int(0), Value::Int(9)]),
            Value::List(vec![Value::Int(1)]),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            map(0),
            map(1),
            blob,
            Value::F64(-0.5),
            Value::F64(2.0),
        ];
        for (i, a) in sorted.iter().enumerate() {
            for (j, b) in sorted.iter().enumerate() {
                assert_eq!(canonical_cmp(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }
}
