//! Bit operations on a blob bin (Aerospike's bitwise ops: op type 12 reads, 13 modifies),
//! with the real server's arguments, flags, limits and result codes, written after its
//! `particle_blob.c`.
//!
//! Bits are numbered from the most significant bit of the first byte. An offset may be
//! negative (from the end of the blob); a modify op works on the window [offset, offset +
//! size) and never grows the blob, except resize and insert, the only ops that may create
//! it. Flags: CREATE_ONLY, UPDATE_ONLY, NO_FAIL (a refused op is a silent no-op) and
//! PARTIAL (a window past the end is cut at the end). Integer ops take at most 64 bits,
//! unsigned or signed, and fail on overflow unless told to saturate or wrap.
//!
//! Pure; cost: one copy of the blob per modify, and one pass over the window's bits.

use super::msgpack::{decode, Value};

pub const PARTICLE_BLOB: u8 = 4;
/// The real server's largest message; offsets and sizes beyond it are refused.
const PROTO_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// A blob larger than the largest write block could never be stored.
const BLOB_BYTES_MAX: usize = spike::limits::WBLOCK_SIZE_MAX as usize;

const FLAG_CREATE_ONLY: u64 = 1;
const FLAG_UPDATE_ONLY: u64 = 2;
const FLAG_NO_FAIL: u64 = 4;
const FLAG_PARTIAL: u64 = 8;
const RESIZE_FROM_FRONT: u64 = 1;
const RESIZE_GROW_ONLY: u64 = 2;
const RESIZE_SHRINK_ONLY: u64 = 4;
const INT_SIGNED: u64 = 1;
const INT_SATURATE: u64 = 2;
const INT_WRAP: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitsError {
    /// 4: the op does not decode, or an argument or flag is out of range.
    Parameter,
    /// 12: the bin (or the op's particle type) is not a blob.
    IncompatibleType,
    /// 13: the blob would outgrow any record.
    RecordTooBig,
    /// 17: the op may not create the bin (or UPDATE_ONLY and there is none).
    BinNotFound,
    /// 26: the window lies outside the blob, or an integer op overflowed.
    NotApplicable,
    /// 6: CREATE_ONLY and the bin exists.
    BinExists,
}

impl BitsError {
    pub fn code(self) -> u8 {
        match self {
            BitsError::Parameter => 4,
            BitsError::IncompatibleType => 12,
            BitsError::RecordTooBig => 13,
            BitsError::BinNotFound => 17,
            BitsError::NotApplicable => 26,
            BitsError::BinExists => 6,
        }
    }
}

type Result<T> = std::result::Result<T, BitsError>;

/// What an op did: its result (reads), and the bin's new bytes (modifies that changed it).
#[derive(Debug)]
pub struct Applied {
    pub result: Option<Value>,
    pub new_bin: Option<Vec<u8>>,
}

impl Applied {
    const NOTHING: Applied = Applied { result: None, new_bin: None };
}

/// How an argument is read and checked, in the real server's terms.
#[derive(Clone, Copy)]
enum Arg {
    ByteOffset,
    BitOffset,
    IntBits,
    Bytes,
    BytesOrZero,
    Bits,
    Bool,
    ShiftBits,
    IntValue,
    Buf,
    Flags,
    ResizeFlags,
    ArithmeticFlags,
    GetIntFlags,
}

/// What an op does with its window.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Resize,
    Insert,
    Remove,
    Set,
    Or,
    Xor,
    And,
    Not,
    LShift,
    RShift,
    Add,
    Subtract,
    SetInt,
    Get,
    Count,
    LScan,
    RScan,
    GetInt,
}

struct Def {
    kind: Kind,
    args_min: usize,
    args: &'static [Arg],
    flags_allowed: u64,
}

const WINDOW_FLAGS: u64 = FLAG_UPDATE_ONLY | FLAG_NO_FAIL | FLAG_PARTIAL;
const CREATE_FLAGS: u64 = FLAG_CREATE_ONLY | FLAG_UPDATE_ONLY | FLAG_NO_FAIL;
const INT_FLAGS: u64 = FLAG_UPDATE_ONLY | FLAG_NO_FAIL;

fn def_of(code: i64, modify: bool) -> Option<Def> {
    use Arg::*;
    const WINDOW_BUF: &[Arg] = &[BitOffset, Bits, Buf, Flags];
    const SHIFT: &[Arg] = &[BitOffset, Bits, ShiftBits, Flags];
    const ARITHMETIC: &[Arg] = &[BitOffset, IntBits, IntValue, Flags, ArithmeticFlags];
    let def = |kind, args_min, args, flags_allowed| Some(Def { kind, args_min, args, flags_allowed });
    match (modify, code) {
        (true, 0) => def(Kind::Resize, 1, &[BytesOrZero, Flags, ResizeFlags], CREATE_FLAGS),
        (true, 1) => def(Kind::Insert, 2, &[ByteOffset, Buf, Flags], CREATE_FLAGS),
        (true, 2) => def(Kind::Remove, 2, &[ByteOffset, Bytes, Flags], WINDOW_FLAGS),
        (true, 3) => def(Kind::Set, 3, WINDOW_BUF, WINDOW_FLAGS),
        (true, 4) => def(Kind::Or, 3, WINDOW_BUF, WINDOW_FLAGS),
        (true, 5) => def(Kind::Xor, 3, WINDOW_BUF, WINDOW_FLAGS),
        (true, 6) => def(Kind::And, 3, WINDOW_BUF, WINDOW_FLAGS),
        (true, 7) => def(Kind::Not, 2, &[BitOffset, Bits, Flags], WINDOW_FLAGS),
        (true, 8) => def(Kind::LShift, 3, SHIFT, WINDOW_FLAGS),
        (true, 9) => def(Kind::RShift, 3, SHIFT, WINDOW_FLAGS),
        (true, 10) => def(Kind::Add, 3, ARITHMETIC, INT_FLAGS),
        (true, 11) => def(Kind::Subtract, 3, ARITHMETIC, INT_FLAGS),
        (true, 12) => def(Kind::SetInt, 3, &[BitOffset, IntBits, IntValue, Flags], INT_FLAGS),
        (false, 50) => def(Kind::Get, 2, &[BitOffset, Bits], 0),
        (false, 51) => def(Kind::Count, 2, &[BitOffset, Bits], 0),
        (false, 52) => def(Kind::LScan, 3, &[BitOffset, Bits, Bool], 0),
        (false, 53) => def(Kind::RScan, 3, &[BitOffset, Bits, Bool], 0),
        (false, 54) => def(Kind::GetInt, 2, &[BitOffset, IntBits, GetIntFlags], 0),
        _ => None,
    }
}

/// An op's arguments, parsed: offset and size in bits.
#[derive(Default)]
struct Parsed {
    offset: i64,
    size: u64,
    value: u64,
    buf: Vec<u8>,
    flags: u64,
    subflags: u64,
}

impl Parsed {
    fn flag(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }

    /// A refused op: a no-op with NO_FAIL, else `err`.
    fn refuse(&self, err: BitsError) -> Result<Applied> {
        if self.flag(FLAG_NO_FAIL) {
            Ok(Applied::NOTHING)
        } else {
            Err(err)
        }
    }
}

fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => Ok(*u as i64),
        _ => Err(BitsError::Parameter),
    }
}

fn uint_at_most(value: &Value, max: u64) -> Result<u64> {
    match int(value)? {
        n if (0..=max as i64).contains(&n) => Ok(n as u64),
        _ => Err(BitsError::Parameter),
    }
}

fn parse_arg(arg: Arg, value: &Value, def: &Def, op: &mut Parsed) -> Result<()> {
    let bits_max = PROTO_BYTES_MAX * 8;
    let nonzero = |n: u64| if n == 0 { Err(BitsError::Parameter) } else { Ok(n) };
    match arg {
        Arg::ByteOffset => match int(value)? {
            n if n.unsigned_abs() <= PROTO_BYTES_MAX => op.offset = n * 8,
            _ => return Err(BitsError::Parameter),
        },
        Arg::BitOffset => match int(value)? {
            n if n.unsigned_abs() <= bits_max => op.offset = n,
            _ => return Err(BitsError::Parameter),
        },
        Arg::IntBits => op.size = nonzero(uint_at_most(value, 64)?)?,
        Arg::Bytes => op.size = nonzero(uint_at_most(value, PROTO_BYTES_MAX)?)? * 8,
        Arg::BytesOrZero => op.size = uint_at_most(value, PROTO_BYTES_MAX)? * 8,
        Arg::Bits => op.size = nonzero(uint_at_most(value, bits_max)?)?,
        Arg::Bool => match value {
            Value::Bool(b) => op.value = *b as u64,
            _ => return Err(BitsError::Parameter),
        },
        Arg::ShiftBits => op.value = uint_at_most(value, bits_max)?,
        Arg::IntValue => op.value = int(value)? as u64,
        Arg::Buf => {
            // A blob as the clients pack it: its particle type, then the bytes.
            let Value::Bytes { payload, .. } = value else { return Err(BitsError::Parameter) };
            if payload.len() < 2 {
                return Err(BitsError::Parameter);
            }
            let buf_bits = (payload.len() as u64 - 1) * 8;
            match op.size {
                0 => op.size = buf_bits,
                size if size > buf_bits => return Err(BitsError::Parameter),
                _ => {}
            }
            op.buf = payload[1..].to_vec();
        }
        Arg::Flags => {
            op.flags = int(value)? as u64;
            let both = FLAG_CREATE_ONLY | FLAG_UPDATE_ONLY;
            if op.flags & !def.flags_allowed != 0 || op.flags & both == both {
                return Err(BitsError::Parameter);
            }
        }
        Arg::ResizeFlags => {
            op.subflags = int(value)? as u64;
            let both = RESIZE_GROW_ONLY | RESIZE_SHRINK_ONLY;
            if op.subflags & !(RESIZE_FROM_FRONT | both) != 0 || op.subflags & both == both {
                return Err(BitsError::Parameter);
            }
        }
        Arg::ArithmeticFlags => {
            op.subflags = int(value)? as u64;
            let both = INT_SATURATE | INT_WRAP;
            if op.subflags & !(INT_SIGNED | both) != 0 || op.subflags & both == both {
                return Err(BitsError::Parameter);
            }
        }
        Arg::GetIntFlags => {
            op.subflags = int(value)? as u64;
            if op.subflags & !INT_SIGNED != 0 {
                return Err(BitsError::Parameter);
            }
        }
    }
    Ok(())
}

/// Runs the op encoded in `op` (with the op's particle type) on the bin (`None`: the
/// record has no such bin). A read (`modify` false) never changes the bin; a read of a
/// missing bin has no result.
pub fn apply(bin: Option<(u8, &[u8])>, op_particle: u8, op: &[u8], modify: bool) -> Result<Applied> {
    if op_particle != PARTICLE_BLOB {
        return Err(BitsError::IncompatibleType);
    }
    let Ok(Value::List(items)) = decode(op) else { return Err(BitsError::Parameter) };
    let (code, args) = items.split_first().ok_or(BitsError::Parameter)?;
    let def = def_of(int(code)?, modify).ok_or(BitsError::Parameter)?;
    if args.len() < def.args_min || args.len() > def.args.len() {
        return Err(BitsError::Parameter);
    }
    let mut parsed = Parsed::default();
    for (arg, value) in def.args.iter().zip(args) {
        parse_arg(*arg, value, &def, &mut parsed)?;
    }
    if modify {
        modify_bin(bin, &def, parsed)
    } else {
        match bin {
            None => Ok(Applied::NOTHING),
            Some((PARTICLE_BLOB, bytes)) => read_bin(bytes, &def, parsed),
            Some(_) => Err(BitsError::IncompatibleType),
        }
    }
}

/// The window's first bit, with a negative offset counted from the end.
fn absolute_offset(offset: i64, blob_len: usize) -> Result<u64> {
    let bits = blob_len as u64 * 8;
    match offset {
        n if n >= 0 => Ok(n as u64),
        n if n.unsigned_abs() <= bits => Ok(bits - n.unsigned_abs()),
        _ => Err(BitsError::Parameter),
    }
}

fn modify_bin(bin: Option<(u8, &[u8])>, def: &Def, mut op: Parsed) -> Result<Applied> {
    let old: &[u8] = match bin {
        Some(_) if op.flag(FLAG_CREATE_ONLY) => return op.refuse(BitsError::BinExists),
        Some((PARTICLE_BLOB, bytes)) => bytes,
        Some(_) => return Err(BitsError::IncompatibleType),
        None if !matches!(def.kind, Kind::Insert | Kind::Resize) || op.flag(FLAG_UPDATE_ONLY) => {
            return op.refuse(BitsError::BinNotFound)
        }
        None if op.offset < 0 => return Err(BitsError::Parameter),
        None => &[],
    };
    let offset = absolute_offset(op.offset, old.len())?;
    let new = match def.kind {
        Kind::Resize => match resized(old, &op)? {
            Some(new) => new,
            None => return Ok(Applied::NOTHING),
        },
        Kind::Insert => {
            let at = (offset / 8) as usize;
            if old.len().max(at) + op.buf.len() > BLOB_BYTES_MAX {
                return Err(BitsError::RecordTooBig);
            }
            let mut new = old.to_vec();
            new.resize(new.len().max(at), 0);
            new.splice(at..at, op.buf.iter().copied());
            new
        }
        Kind::Remove => {
            let (at, len) = ((offset / 8) as usize, (op.size / 8) as usize);
            if at >= old.len() {
                return op.refuse(BitsError::Parameter);
            }
            if at + len > old.len() && !op.flag(FLAG_PARTIAL) {
                return op.refuse(BitsError::Parameter);
            }
            let mut new = old.to_vec();
            new.drain(at..(at + len).min(old.len()));
            new
        }
        _ => {
            let Some(size) = window(old.len(), offset, op.size, op.flags, def.kind)? else {
                return op.refuse(BitsError::NotApplicable);
            };
            op.size = size;
            let mut new = old.to_vec();
            if !change_window(&mut new, offset, &op, def.kind) {
                return op.refuse(BitsError::NotApplicable);
            }
            new
        }
    };
    if new.len() > BLOB_BYTES_MAX {
        return Err(BitsError::RecordTooBig);
    }
    Ok(Applied { result: None, new_bin: Some(new) })
}

/// A resize's new bytes, or None when the blob keeps its size (or a grow-only or
/// shrink-only resize refused under NO_FAIL).
fn resized(old: &[u8], op: &Parsed) -> Result<Option<Vec<u8>>> {
    let target = (op.size / 8) as usize;
    let from_front = op.subflags & RESIZE_FROM_FRONT != 0;
    let refused = if target < old.len() {
        op.subflags & RESIZE_GROW_ONLY != 0
    } else {
        op.subflags & RESIZE_SHRINK_ONLY != 0
    };
    if target == old.len() || (refused && op.flag(FLAG_NO_FAIL)) {
        return Ok(None);
    }
    if refused {
        return Err(BitsError::Parameter);
    }
    if target > BLOB_BYTES_MAX {
        return Err(BitsError::RecordTooBig);
    }
    let new = match (target < old.len(), from_front) {
        (true, false) => old[..target].to_vec(),
        (true, true) => old[old.len() - target..].to_vec(),
        (false, false) => [old, &vec![0; target - old.len()]].concat(),
        (false, true) => [&vec![0; target - old.len()], old].concat(),
    };
    Ok(Some(new))
}

/// The size in bits of a window op's window: `size`, or cut at the end of the blob with
/// PARTIAL (window ops only). None: the window starts or ends past the blob.
fn window(blob_len: usize, offset: u64, size: u64, flags: u64, kind: Kind) -> Result<Option<u64>> {
    let bits = blob_len as u64 * 8;
    let first_byte_past = offset / 8 >= blob_len as u64;
    // The real server checks whole bytes: a window ending inside the last byte fits.
    let end_bytes = (offset + size).div_ceil(8);
    let partial_allowed = flags & FLAG_PARTIAL != 0
        && matches!(
            kind,
            Kind::Set | Kind::Or | Kind::Xor | Kind::And | Kind::Not | Kind::LShift | Kind::RShift
        );
    Ok(match (first_byte_past, end_bytes > blob_len as u64) {
        (true, _) => None,
        (false, false) => Some(size),
        (false, true) if partial_allowed => Some(bits - offset),
        (false, true) => None,
    })
}

fn bit(bytes: &[u8], at: u64) -> bool {
    bytes[(at / 8) as usize] & (0x80 >> (at % 8)) != 0
}

fn set_bit(bytes: &mut [u8], at: u64, on: bool) {
    let mask = 0x80 >> (at % 8);
    let byte = &mut bytes[(at / 8) as usize];
    *byte = if on { *byte | mask } else { *byte & !mask };
}

/// `size` bits from `offset` as an unsigned integer (at most 64 bits, most significant first).
fn load(bytes: &[u8], offset: u64, size: u64) -> u64 {
    (0..size).fold(0u64, |acc, i| acc << 1 | bit(bytes, offset + i) as u64)
}

fn store(bytes: &mut [u8], offset: u64, size: u64, value: u64) {
    for i in 0..size {
        set_bit(bytes, offset + i, value >> (size - 1 - i) & 1 != 0);
    }
}

/// Applies a window op to `bytes` in place; false if an integer op overflowed.
fn change_window(bytes: &mut [u8], offset: u64, op: &Parsed, kind: Kind) -> bool {
    let size = op.size;
    match kind {
        Kind::Set | Kind::Or | Kind::Xor | Kind::And => {
            for i in 0..size {
                let (old, arg) = (bit(bytes, offset + i), bit(&op.buf, i));
                let new = match kind {
                    Kind::Set => arg,
                    Kind::Or => old | arg,
                    Kind::Xor => old ^ arg,
                    _ => old & arg,
                };
                set_bit(bytes, offset + i, new);
            }
        }
        Kind::Not => (0..size).for_each(|i| set_bit(bytes, offset + i, !bit(bytes, offset + i))),
        Kind::LShift | Kind::RShift => {
            let window: Vec<bool> = (0..size).map(|i| bit(bytes, offset + i)).collect();
            let shift = op.value;
            for i in 0..size {
                let from = if kind == Kind::LShift { i.checked_add(shift) } else { i.checked_sub(shift) };
                set_bit(bytes, offset + i, from.is_some_and(|f| f < size && window[f as usize]));
            }
        }
        Kind::Add | Kind::Subtract | Kind::SetInt => {
            match integer_result(load(bytes, offset, size), op, kind) {
                Some(value) => store(bytes, offset, size, value),
                None => return false,
            }
        }
        // Read ops never reach here (`def_of` gives them only to reads).
        _ => return false,
    }
    true
}

fn sign_extend(value: u64, bits: u64) -> i64 {
    let leading = 64 - bits;
    ((value << leading) as i64) >> leading
}

/// The value an integer op stores in its `op.size` bits, or None on an overflow the op
/// may not absorb (neither saturate nor wrap).
fn integer_result(loaded: u64, op: &Parsed, kind: Kind) -> Option<u64> {
    let bits = op.size;
    let mask = u64::MAX >> (64 - bits);
    let value = op.value & mask;
    let (signed, saturate, wrap) =
        (op.subflags & INT_SIGNED != 0, op.subflags & INT_SATURATE != 0, op.subflags & INT_WRAP != 0);
    let result = match kind {
        Kind::SetInt => return Some(value),
        Kind::Add => loaded.wrapping_add(value) & mask,
        _ => loaded.wrapping_sub(value) & mask,
    };
    if wrap {
        return Some(result);
    }
    if signed {
        // The real server's test: two operands of one sign and a result of the other.
        let operand = if kind == Kind::Add { value } else { value.wrapping_neg() };
        let (a, b, r) = (sign_extend(loaded, bits), sign_extend(operand, bits), sign_extend(result, bits));
        if a < 0 && b < 0 && r > 0 {
            return saturate.then_some(1 << (bits - 1));
        }
        if a > 0 && b > 0 && r < 0 {
            return saturate.then_some(mask >> 1);
        }
        return Some(result);
    }
    let overflowed = if kind == Kind::Add { result < loaded } else { result > loaded };
    match (overflowed, saturate) {
        (false, _) => Some(result),
        (true, true) => Some(if kind == Kind::Add { mask } else { 0 }),
        (true, false) => None,
    }
}

fn read_bin(bytes: &[u8], def: &Def, op: Parsed) -> Result<Applied> {
    let offset = absolute_offset(op.offset, bytes.len())?;
    let Some(size) = window(bytes.len(), offset, op.size, 0, def.kind)? else {
        return Err(BitsError::NotApplicable);
    };
    let bits = || (0..size).map(|i| bit(bytes, offset + i));
    let result = match def.kind {
        Kind::Get => {
            let mut out = vec![0u8; size.div_ceil(8) as usize];
            bits().enumerate().filter(|(_, on)| *on).for_each(|(i, _)| set_bit(&mut out, i as u64, true));
            Value::Bytes { payload: [&[PARTICLE_BLOB][..], &out].concat(), bin: true }
        }
        Kind::Count => Value::Int(bits().filter(|on| *on).count() as i64),
        Kind::LScan => Value::Int(bits().position(|on| on == (op.value == 1)).map_or(-1, |i| i as i64)),
        Kind::RScan => {
            let found = (0..size).rev().find(|&i| bit(bytes, offset + i) == (op.value == 1));
            Value::Int(found.map_or(-1, |i| i as i64))
        }
        Kind::GetInt => {
            let loaded = load(bytes, offset, size);
            Value::Int(if op.subflags & INT_SIGNED != 0 { sign_extend(loaded, size) } else { loaded as i64 })
        }
        // Modify ops never reach here (`def_of` gives them only to modifies).
        _ => return Err(BitsError::Parameter),
    };
    Ok(Applied { result: Some(result), new_bin: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::msgpack::encode;

    const BIN: [u8; 5] = [0b0000_0001, 0b0100_0010, 0b0000_0011, 0b0000_0100, 0b0000_0101];

    fn blob(bytes: &[u8]) -> Value {
        Value::Bytes { payload: [&[PARTICLE_BLOB][..], bytes].concat(), bin: true }
    }

    fn op(code: i64, args: Vec<Value>) -> Vec<u8> {
        encode(&Value::List([vec![Value::Int(code)], args].concat()))
    }

    fn ints(values: &[i64]) -> Vec<Value> {
        values.iter().map(|v| Value::Int(*v)).collect()
    }

    /// The blob after a modify op on `BIN` (or on no bin).
    fn modified(bin: Option<&[u8]>, code: i64, args: Vec<Value>) -> Result<Option<Vec<u8>>> {
        apply(bin.map(|b| (PARTICLE_BLOB, b)), PARTICLE_BLOB, &op(code, args), true).map(|a| a.new_bin)
    }

    fn read(code: i64, args: Vec<Value>) -> Result<Option<Value>> {
        apply(Some((PARTICLE_BLOB, &BIN[..])), PARTICLE_BLOB, &op(code, args), false).map(|a| a.result)
    }

    #[test]
    fn each_modify_op_gives_the_clients_documented_example() {
        let with = |mut args: Vec<Value>, extra: Vec<Value>| {
            args.extend(extra);
            args
        };
        let at = |code, args| modified(Some(&BIN), code, args).unwrap().unwrap();
        assert_eq!(modified(Some(&BIN[..2]), 0, ints(&[4, 0, 0])).unwrap().unwrap(), [1, 0x42, 0, 0]);
        assert_eq!(at(1, vec![Value::Int(1), blob(&[0xff, 0xc7])]), [1, 0xff, 0xc7, 0x42, 3, 4, 5]);
        assert_eq!(at(2, ints(&[2, 3, 0])), [1, 0x42]);
        assert_eq!(at(3, with(ints(&[13, 3]), vec![blob(&[0b1110_0000])])), [1, 0b0100_0111, 3, 4, 5]);
        assert_eq!(at(4, with(ints(&[17, 6]), vec![blob(&[0b1010_1000])])), [1, 0x42, 0b0101_0111, 4, 5]);
        assert_eq!(at(5, with(ints(&[17, 6]), vec![blob(&[0b1010_1100])])), [1, 0x42, 0b0101_0101, 4, 5]);
        assert_eq!(at(6, with(ints(&[23, 9]), vec![blob(&[0b0011_1100, 0b1000_0000])])), [1, 0x42, 2, 0, 5]);
        assert_eq!(at(7, ints(&[25, 6, 0])), [1, 0x42, 3, 0b0111_1010, 5]);
        assert_eq!(at(8, ints(&[32, 8, 3, 0])), [1, 0x42, 3, 4, 0b0010_1000]);
        assert_eq!(at(9, ints(&[0, 9, 1, 0])), [0, 0b1100_0010, 3, 4, 5]);
        assert_eq!(at(10, ints(&[24, 16, 128, 0, 0])), [1, 0x42, 3, 4, 0b1000_0101]);
        assert_eq!(at(11, ints(&[24, 16, 128, 0, 0])), [1, 0x42, 3, 3, 0b1000_0101]);
        assert_eq!(at(12, ints(&[1, 8, 127, 0])), [0b0011_1111, 0b1100_0010, 3, 4, 5]);
    }

    #[test]
    fn each_read_op_gives_the_clients_documented_example() {
        assert_eq!(read(50, ints(&[9, 5])).unwrap(), Some(blob(&[0b1000_0000])));
        assert_eq!(read(51, ints(&[20, 4])).unwrap(), Some(Value::Int(2)));
        assert_eq!(
            read(52, vec![Value::Int(24), Value::Int(8), Value::Bool(true)]).unwrap(),
            Some(Value::Int(5))
        );
        assert_eq!(
            read(53, vec![Value::Int(32), Value::Int(8), Value::Bool(true)]).unwrap(),
            Some(Value::Int(7))
        );
        assert_eq!(
            read(52, vec![Value::Int(0), Value::Int(7), Value::Bool(true)]).unwrap(),
            Some(Value::Int(-1))
        );
        assert_eq!(read(54, ints(&[8, 16])).unwrap(), Some(Value::Int(16899)));
        assert_eq!(read(54, ints(&[16, 8, 1])).unwrap(), Some(Value::Int(3)));
        assert_eq!(read(54, ints(&[-8, 8, 1])).unwrap(), Some(Value::Int(5)));
        assert_eq!(read(54, ints(&[8, 1, 1])).unwrap(), Some(Value::Int(0)));
        assert_eq!(read(54, ints(&[9, 2, 1])).unwrap(), Some(Value::Int(-2)));
    }

    #[test]
    fn windows_past_the_end_flags_and_bad_arguments_answer_as_the_real_server() {
        let window_past = modified(Some(&BIN), 7, ints(&[36, 8, 0]));
        assert_eq!(window_past, Err(BitsError::NotApplicable));
        // PARTIAL cuts the window at the end; NO_FAIL makes a refusal a no-op.
        assert_eq!(modified(Some(&BIN), 7, ints(&[36, 8, 8])).unwrap().unwrap()[4], 0b0000_1010);
        assert_eq!(modified(Some(&BIN), 7, ints(&[40, 8, 4])), Ok(None));
        assert_eq!(modified(Some(&BIN), 2, ints(&[4, 3, 0])), Err(BitsError::Parameter));
        assert_eq!(modified(Some(&BIN), 2, ints(&[4, 3, 8])).unwrap().unwrap(), BIN[..4]);
        // Only resize and insert create the bin; UPDATE_ONLY and CREATE_ONLY as named.
        assert_eq!(modified(None, 7, ints(&[0, 8, 0])), Err(BitsError::BinNotFound));
        assert_eq!(modified(None, 0, ints(&[2, 2, 0])), Err(BitsError::BinNotFound));
        assert_eq!(modified(None, 0, ints(&[2])).unwrap().unwrap(), [0, 0]);
        assert_eq!(modified(None, 0, ints(&[0])), Ok(None));
        assert_eq!(modified(Some(&BIN), 0, ints(&[2, 1, 0])), Err(BitsError::BinExists));
        assert_eq!(modified(Some(&BIN), 0, ints(&[2, 1 | 2, 0])), Err(BitsError::Parameter));
        assert_eq!(modified(Some(&BIN), 0, ints(&[8, 0, 4])), Err(BitsError::Parameter));
        assert_eq!(modified(Some(&BIN), 0, ints(&[2, 0, 1])).unwrap().unwrap(), [4, 5]);
        assert_eq!(modified(Some(&BIN), 0, ints(&[7, 0, 1])).unwrap().unwrap(), [0, 0, 1, 0x42, 3, 4, 5]);
        // Sizes of 0, integers over 64 bits, negative offsets beyond the start.
        assert_eq!(read(50, ints(&[0, 0])), Err(BitsError::Parameter));
        assert_eq!(read(54, ints(&[0, 65])), Err(BitsError::Parameter));
        assert_eq!(read(50, ints(&[-41, 1])), Err(BitsError::Parameter));
        assert_eq!(read(50, ints(&[0, 41])), Err(BitsError::NotApplicable));
        assert_eq!(read(10, ints(&[0, 8])), Err(BitsError::Parameter), "a modify code in a read");
        let not_a_blob = apply(Some((1, &[0u8; 8][..])), PARTICLE_BLOB, &op(50, ints(&[0, 8])), false);
        assert_eq!(not_a_blob.err(), Some(BitsError::IncompatibleType));
        let too_big = modified(Some(&BIN), 0, ints(&[BLOB_BYTES_MAX as i64 + 1]));
        assert_eq!(too_big, Err(BitsError::RecordTooBig));
        let codes =
            [BitsError::BinExists, BitsError::BinNotFound, BitsError::NotApplicable].map(|e| e.code());
        assert_eq!(codes, [6, 17, 26], "AS_ERR_BIN_EXISTS, AS_ERR_BIN_NOT_FOUND, AS_ERR_OP_NOT_APPLICABLE");
    }

    #[test]
    fn integer_overflow_fails_saturates_or_wraps_as_asked() {
        let byte = [0b0111_1111u8];
        let add = |value: i64, subflags: i64| modified(Some(&byte), 10, ints(&[0, 8, value, 0, subflags]));
        let sub = |value: i64, subflags: i64| modified(Some(&byte), 11, ints(&[0, 8, value, 0, subflags]));
        assert_eq!(add(1, 0).unwrap().unwrap(), [0x80], "unsigned: 127 + 1 fits");
        assert_eq!(add(1, 1), Err(BitsError::NotApplicable), "signed: 127 + 1 overflows");
        assert_eq!(add(1, 1 | 2).unwrap().unwrap(), [0x7f], "signed saturation stays at the maximum");
        assert_eq!(add(1, 1 | 4).unwrap().unwrap(), [0x80], "signed wrap gives the minimum");
        assert_eq!(add(200, 0), Err(BitsError::NotApplicable));
        assert_eq!(add(200, 2).unwrap().unwrap(), [0xff]);
        assert_eq!(sub(128, 0), Err(BitsError::NotApplicable));
        assert_eq!(sub(128, 2).unwrap().unwrap(), [0]);
        assert_eq!(add(200, 4 | 2), Err(BitsError::Parameter), "saturate and wrap together");
        assert_eq!(modified(Some(&byte), 10, ints(&[0, 8, 200, 4, 0])), Ok(None), "NO_FAIL overflow");
    }
}
