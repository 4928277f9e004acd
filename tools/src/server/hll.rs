//! HyperLogLog operations (Aerospike's HLL ops: op type 15 reads, 16 modifies) on a bin
//! holding a sketch, in the real server's layout and arithmetic, so that a sketch made
//! here and one made by Aerospike agree byte for byte and count alike.
//!
//! A sketch is HyperMinHash (Yu and Weber, arXiv 1710.08436): 2^index_bits registers of
//! 6 + minhash_bits bits each, packed most significant bit first. An element (its
//! MessagePack bytes, compacted) is hashed with MurmurHash3 x64-128: the low index_bits
//! of the first half pick the register, the next minhash_bits are the minhash, and the
//! trailing zeros of the second half plus one are the HyperLogLog value; a register keeps
//! the largest (value, minhash). Counts use Ertl's estimator (arXiv 1702.01284, algorithm
//! 6); intersections and similarity use the minhash bits when every sketch has the same
//! number, else inclusion-exclusion over at most three sketches.
//!
//! Bin bytes: flags (u8, 0), index_bits (u8, 4..=16), minhash_bits (u8, 0 or 4..=51,
//! index_bits + minhash_bits <= 64), cached count (u64 LE, 0: not cached), registers.
//! Pure; cost: a decode and an encode of the sketch per op (at most 455 KiB).

use super::msgpack::{decode, encode, Value};

pub const PARTICLE_HLL: u8 = 18;
const HEADER_LEN: usize = 11;
const HLL_BITS: u32 = 6;
/// The largest HyperLogLog value a register can hold.
const HLL_VALUE_MAX: u32 = (1 << HLL_BITS) - 1;
const INDEX_BITS: std::ops::RangeInclusive<i64> = 4..=16;
const MINHASH_BITS: std::ops::RangeInclusive<i64> = 4..=(64 - HLL_BITS as i64 - 7);
const COMBINED_BITS_MAX: i64 = 64;

const FLAG_CREATE_ONLY: u64 = 1;
const FLAG_UPDATE_ONLY: u64 = 2;
const FLAG_NO_FAIL: u64 = 4;
const FLAG_ALLOW_FOLD: u64 = 8;

/// Why an op was refused, as result codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HllError {
    /// 1: the bin holds bytes that are not a sketch.
    Corrupt,
    /// 4: the op does not decode or its arguments are wrong.
    Parameter,
    /// 6: create-only, and the bin exists.
    BinExists,
    /// 12: the bin holds another type.
    IncompatibleType,
    /// 17: update-only (or refresh, fold), and the bin does not exist.
    BinNotFound,
    /// 26: the sketches' shapes do not allow the op.
    NotApplicable,
}

impl HllError {
    pub fn code(self) -> u8 {
        match self {
            HllError::Corrupt => 1,
            HllError::Parameter => 4,
            HllError::BinExists => 6,
            HllError::IncompatibleType => 12,
            HllError::BinNotFound => 17,
            HllError::NotApplicable => 26,
        }
    }
}

type Result<T> = std::result::Result<T, HllError>;

/// What an op did: its reply value (`None`: the op has none), and the bin's new sketch
/// bytes if it changed the bin.
#[derive(Debug, PartialEq)]
pub struct Applied {
    pub result: Option<Value>,
    pub new_bin: Option<Vec<u8>>,
}

/// Runs the op encoded in `op` on the bin (`None`: the record has no such bin); `modify`
/// says which op type the client sent (a read op code under a modify type, or the
/// reverse, is a parameter error).
pub fn apply(bin: Option<(u8, &[u8])>, op: &[u8], modify: bool) -> Result<Applied> {
    let sketch = match bin {
        Some((PARTICLE_HLL, bytes)) => Some(Sketch::decode(bytes).ok_or(HllError::Corrupt)?),
        Some(_) => return Err(HllError::IncompatibleType),
        None => None,
    };
    let Ok(Value::List(mut items)) = decode(op) else { return Err(HllError::Parameter) };
    if items.is_empty() {
        return Err(HllError::Parameter);
    }
    let code = int(&items.remove(0))?;
    if modify {
        modify_op(sketch, code, &items)
    } else {
        let Some(sketch) = sketch else { return Ok(Applied { result: None, new_bin: None }) };
        Ok(Applied { result: Some(read_op(&sketch, code, &items)?), new_bin: None })
    }
}

fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => i64::try_from(*u).map_err(|_| HllError::Parameter),
        _ => Err(HllError::Parameter),
    }
}

/// An op's arguments as parsed: `None` for index or minhash bits the client left unset
/// (-1 or absent).
#[derive(Default)]
struct Args {
    elements: Vec<Vec<u8>>,
    sketches: Vec<Sketch>,
    index_bits: Option<u8>,
    minhash_bits: Option<u8>,
    flags: u64,
}

fn index_bits_arg(value: &Value) -> Result<Option<u8>> {
    match int(value)? {
        -1 => Ok(None),
        bits if INDEX_BITS.contains(&bits) => Ok(Some(bits as u8)),
        _ => Err(HllError::Parameter),
    }
}

fn minhash_bits_arg(value: &Value, index_bits: Option<u8>) -> Result<Option<u8>> {
    match int(value)? {
        -1 => Ok(None),
        bits if valid_minhash_bits(bits)
            && index_bits.is_none_or(|i| i as i64 + bits <= COMBINED_BITS_MAX) =>
        {
            Ok(Some(bits as u8))
        }
        _ => Err(HllError::Parameter),
    }
}

fn valid_minhash_bits(bits: i64) -> bool {
    bits == 0 || MINHASH_BITS.contains(&bits)
}

fn flags_arg(value: &Value, allowed: u64) -> Result<u64> {
    let flags = u64::try_from(int(value)?).map_err(|_| HllError::Parameter)?;
    let both = FLAG_CREATE_ONLY | FLAG_UPDATE_ONLY;
    if flags & !allowed != 0 || flags & both == both {
        return Err(HllError::Parameter);
    }
    Ok(flags)
}

/// The elements to add: a non-empty list of scalars, each as its compacted MessagePack.
fn elements_arg(value: &Value) -> Result<Vec<Vec<u8>>> {
    let Value::List(items) = value else { return Err(HllError::Parameter) };
    if items.is_empty() || items.iter().any(|v| matches!(v, Value::List(_) | Value::Map { .. })) {
        return Err(HllError::Parameter);
    }
    Ok(items.iter().map(encode).collect())
}

/// One sketch or a non-empty list of them, each as bytes behind a one-byte type.
fn sketches_arg(value: &Value) -> Result<Vec<Sketch>> {
    let one = |v: &Value| match v {
        Value::Bytes { payload, .. } if !payload.is_empty() => {
            Sketch::decode(&payload[1..]).ok_or(HllError::Parameter)
        }
        _ => Err(HllError::Parameter),
    };
    match value {
        Value::List(items) if !items.is_empty() => items.iter().map(one).collect(),
        Value::List(_) => Err(HllError::Parameter),
        single => Ok(vec![one(single)?]),
    }
}

fn modify_op(existing: Option<Sketch>, code: i64, items: &[Value]) -> Result<Applied> {
    let mut args = Args::default();
    let arity = |min: usize, max: usize| {
        if (min..=max).contains(&items.len()) {
            Ok(())
        } else {
            Err(HllError::Parameter)
        }
    };
    match code {
        0 => {
            arity(0, 3)?;
            parse_bits_and_flags(&mut args, items, FLAG_CREATE_ONLY | FLAG_UPDATE_ONLY | FLAG_NO_FAIL)?;
        }
        1 => {
            arity(1, 4)?;
            args.elements = elements_arg(&items[0])?;
            parse_bits_and_flags(&mut args, &items[1..], FLAG_CREATE_ONLY | FLAG_NO_FAIL)?;
        }
        2 => {
            arity(1, 2)?;
            args.sketches = sketches_arg(&items[0])?;
            let allowed = FLAG_CREATE_ONLY | FLAG_UPDATE_ONLY | FLAG_ALLOW_FOLD | FLAG_NO_FAIL;
            args.flags = items.get(1).map_or(Ok(0), |f| flags_arg(f, allowed))?;
        }
        3 => arity(0, 0)?,
        4 => {
            arity(1, 1)?;
            args.index_bits = index_bits_arg(&items[0])?;
        }
        _ => return Err(HllError::Parameter),
    }
    let nothing = Ok(Applied { result: None, new_bin: None });
    match &existing {
        Some(_) if args.flags & FLAG_CREATE_ONLY != 0 => {
            return if args.flags & FLAG_NO_FAIL != 0 { nothing } else { Err(HllError::BinExists) };
        }
        None if args.flags & FLAG_UPDATE_ONLY != 0 => {
            return if args.flags & FLAG_NO_FAIL != 0 { nothing } else { Err(HllError::BinNotFound) };
        }
        _ => {}
    }
    let (sketch, result) = match code {
        0 => (init(existing.as_ref(), &args)?, None),
        1 => add(existing, &args)?,
        2 => (set_union(existing, &args)?, None),
        3 => {
            let mut sketch = existing.ok_or(HllError::BinNotFound)?;
            sketch.cache = 0;
            sketch.cache = sketch.estimate();
            let count = sketch.cache;
            (sketch, Some(Value::Int(count as i64)))
        }
        _ => (fold(existing, &args)?, None),
    };
    Ok(Applied { result, new_bin: Some(sketch.encode()) })
}

/// Index bits, minhash bits and flags, each optional, in that order.
fn parse_bits_and_flags(args: &mut Args, items: &[Value], allowed_flags: u64) -> Result<()> {
    if let Some(v) = items.first() {
        args.index_bits = index_bits_arg(v)?;
    }
    if let Some(v) = items.get(1) {
        args.minhash_bits = minhash_bits_arg(v, args.index_bits)?;
    }
    if let Some(v) = items.get(2) {
        args.flags = flags_arg(v, allowed_flags)?;
    }
    Ok(())
}

/// A fresh sketch of the asked shape, or of the existing bin's where the op leaves it
/// unset.
fn init(existing: Option<&Sketch>, args: &Args) -> Result<Sketch> {
    let (index_bits, minhash_bits) = match existing {
        None => (args.index_bits.ok_or(HllError::NotApplicable)?, args.minhash_bits.unwrap_or(0)),
        Some(old) => {
            (args.index_bits.unwrap_or(old.index_bits), args.minhash_bits.unwrap_or(old.minhash_bits))
        }
    };
    if index_bits as i64 + minhash_bits as i64 > COMBINED_BITS_MAX {
        return Err(HllError::NotApplicable);
    }
    Ok(Sketch::new(index_bits, minhash_bits))
}

fn add(existing: Option<Sketch>, args: &Args) -> Result<(Sketch, Option<Value>)> {
    let mut sketch = match existing {
        Some(old) => old,
        None => Sketch::new(args.index_bits.ok_or(HllError::NotApplicable)?, args.minhash_bits.unwrap_or(0)),
    };
    let added = args.elements.iter().filter(|e| sketch.add(e)).count();
    Ok((sketch, Some(Value::Int(added as i64))))
}

fn set_union(existing: Option<Sketch>, args: &Args) -> Result<Sketch> {
    if let Some(old) = &existing {
        let all: Vec<&Sketch> = args.sketches.iter().collect();
        let (min_index, minhash) = shape_of(&all);
        if args.flags & FLAG_ALLOW_FOLD == 0 {
            if old.index_bits > min_index {
                return Err(HllError::NotApplicable);
            }
            if old.minhash_bits != 0 && old.minhash_bits != minhash {
                return Err(HllError::NotApplicable);
            }
        }
    }
    let mut all: Vec<&Sketch> = args.sketches.iter().collect();
    all.extend(existing.as_ref());
    Ok(union_of(&all))
}

fn fold(existing: Option<Sketch>, args: &Args) -> Result<Sketch> {
    let old = existing.ok_or(HllError::BinNotFound)?;
    let index_bits = args.index_bits.ok_or(HllError::Parameter)?;
    if old.minhash_bits > 0 || old.index_bits < index_bits {
        return Err(HllError::NotApplicable);
    }
    if old.index_bits == index_bits {
        return Ok(old);
    }
    let mut folded = Sketch::new(index_bits, 0);
    folded.union_in(&old);
    Ok(folded)
}

fn read_op(sketch: &Sketch, code: i64, items: &[Value]) -> Result<Value> {
    let arity = |n: usize| if items.len() == n { Ok(()) } else { Err(HllError::Parameter) };
    let with = |others: Vec<Sketch>| {
        let mut all = others;
        all.push(sketch.clone());
        all
    };
    Ok(match code {
        50 => {
            arity(0)?;
            Value::Int(sketch.estimate() as i64)
        }
        51 => {
            arity(1)?;
            let all = with(sketches_arg(&items[0])?);
            let mut payload = vec![PARTICLE_HLL];
            payload.extend(union_of(&all.iter().collect::<Vec<_>>()).encode());
            Value::Bytes { payload, bin: true }
        }
        52 => {
            arity(1)?;
            let all = with(sketches_arg(&items[0])?);
            Value::Int(union_of(&all.iter().collect::<Vec<_>>()).estimate() as i64)
        }
        53 | 54 => {
            arity(1)?;
            let others = sketches_arg(&items[0])?;
            check_intersectable(sketch, &others)?;
            let all = with(others);
            let all: Vec<&Sketch> = all.iter().collect();
            if code == 53 {
                Value::Int(intersect_count(&all) as i64)
            } else {
                Value::F64(similarity(&all))
            }
        }
        55 => {
            arity(0)?;
            Value::List(vec![Value::Int(sketch.index_bits as i64), Value::Int(sketch.minhash_bits as i64)])
        }
        56 => {
            arity(1)?;
            let elements = elements_arg(&items[0])?;
            Value::Int(elements.iter().all(|e| sketch.may_contain(e)) as i64)
        }
        _ => return Err(HllError::Parameter),
    })
}

/// More than three sketches intersect only through equal, non-zero minhash bits.
fn check_intersectable(bin: &Sketch, others: &[Sketch]) -> Result<()> {
    if others.len() <= 2 {
        return Ok(());
    }
    let minhash = others[0].minhash_bits;
    if minhash == 0 || others.iter().any(|s| s.minhash_bits != minhash) {
        return Err(HllError::Parameter);
    }
    if bin.minhash_bits != minhash {
        return Err(HllError::NotApplicable);
    }
    Ok(())
}

/// The shape sketches combine into: the fewest index bits, and their minhash bits if all
/// agree (else none).
fn shape_of(sketches: &[&Sketch]) -> (u8, u8) {
    let index_bits = sketches.iter().map(|s| s.index_bits).min().unwrap_or(*INDEX_BITS.start() as u8);
    let first = sketches.first().map_or(0, |s| s.minhash_bits);
    let minhash_bits = if sketches.iter().all(|s| s.minhash_bits == first) { first } else { 0 };
    (index_bits, minhash_bits)
}

fn union_of(sketches: &[&Sketch]) -> Sketch {
    let (index_bits, minhash_bits) = shape_of(sketches);
    let mut union = Sketch::new(index_bits, minhash_bits);
    for s in sketches {
        union.union_in(s);
    }
    union
}

fn intersect_count(sketches: &[&Sketch]) -> u64 {
    if shape_of(sketches).1 == 0 {
        return inclusion_exclusion_intersect(sketches);
    }
    let j = similarity(sketches);
    if j.is_nan() {
        return 0;
    }
    (union_of(sketches).estimate() as f64 * j).round() as u64
}

/// |A ∩ B| = |A| + |B| - |A ∪ B|, and its three-set form; for sketches without minhash.
fn inclusion_exclusion_intersect(sketches: &[&Sketch]) -> u64 {
    let union = union_of(sketches).estimate();
    let sum = sketches.iter().fold(0u64, |sum, s| sum.saturating_add(s.estimate()));
    if sketches.len() <= 2 {
        return sum.saturating_sub(union);
    }
    let pair = |a: usize, b: usize| intersect_count(&[sketches[a], sketches[b]]);
    let pairs = pair(0, 1) as i64 + pair(1, 2) as i64 + pair(0, 2) as i64;
    (union as i64 - (sum as i64 - pairs)).max(0) as u64
}

fn similarity(sketches: &[&Sketch]) -> f64 {
    let (index_bits, minhash_bits) = shape_of(sketches);
    if minhash_bits == 0 {
        return inclusion_exclusion_intersect(sketches) as f64 / union_of(sketches).estimate() as f64;
    }
    let empty = sketches.iter().filter(|s| !s.has_data()).count();
    if empty > 0 {
        return if empty < sketches.len() { 0.0 } else { f64::NAN };
    }
    let in_union = union_of(sketches).used_registers();
    let mut common = Sketch::new(index_bits, minhash_bits);
    common.union_in(sketches[0]);
    for s in &sketches[1..] {
        common.intersect_in(s);
    }
    let in_all = common.used_registers() as f64;
    let collisions = if sketches.len() == 2 {
        expected_collisions(index_bits, minhash_bits, sketches[0].estimate(), sketches[1].estimate())
    } else {
        0.0
    };
    ((in_all - collisions) / in_union as f64).max(0.0)
}

/// Registers two sets of these sizes are expected to share by chance (HyperMinHash).
fn expected_collisions(index_bits: u8, minhash_bits: u8, card0: u64, card1: u64) -> f64 {
    let registers = (1u64 << index_bits) as f64;
    let buckets = 1i32 << HLL_BITS;
    let mut cp = 0.0;
    for i in 1..=buckets {
        let b1 = if i != buckets { 2f64.powi(-i) } else { 0.0 } / registers;
        let b2 = 2f64.powi(-i + 1) / registers;
        let pr = |card: u64| (1.0 - b1).powf(card as f64) - (1.0 - b2).powf(card as f64);
        cp += pr(card0) * pr(card1);
    }
    cp * registers / 2f64.powi(minhash_bits as i32)
}

/// One HyperMinHash sketch.
#[derive(Clone, Debug, PartialEq)]
struct Sketch {
    index_bits: u8,
    minhash_bits: u8,
    /// The last count refreshed into the bin (0: none); any change clears it.
    cache: u64,
    registers: Vec<u8>,
}

impl Sketch {
    fn new(index_bits: u8, minhash_bits: u8) -> Sketch {
        Sketch {
            index_bits,
            minhash_bits,
            cache: 0,
            registers: vec![0; registers_len(index_bits, minhash_bits)],
        }
    }

    fn decode(bytes: &[u8]) -> Option<Sketch> {
        let (&flags, &index_bits, &minhash_bits) = (bytes.first()?, bytes.get(1)?, bytes.get(2)?);
        let combined = index_bits as i64 + minhash_bits as i64;
        let valid = flags == 0
            && INDEX_BITS.contains(&(index_bits as i64))
            && valid_minhash_bits(minhash_bits as i64)
            && combined <= COMBINED_BITS_MAX;
        if !valid || bytes.len() != HEADER_LEN + registers_len(index_bits, minhash_bits) {
            return None;
        }
        let cache = u64::from_le_bytes(bytes[3..HEADER_LEN].try_into().ok()?);
        Some(Sketch { index_bits, minhash_bits, cache, registers: bytes[HEADER_LEN..].to_vec() })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.registers.len());
        out.extend_from_slice(&[0, self.index_bits, self.minhash_bits]);
        out.extend_from_slice(&self.cache.to_le_bytes());
        out.extend_from_slice(&self.registers);
        out
    }

    fn register_count(&self) -> u32 {
        1 << self.index_bits
    }

    fn register_bits(&self) -> u32 {
        HLL_BITS + self.minhash_bits as u32
    }

    /// The 8 bytes from `byte` as a big-endian word (zeros past the end).
    fn window(&self, byte: usize) -> u64 {
        let mut word = [0u8; 8];
        let end = (byte + 8).min(self.registers.len());
        word[..end - byte].copy_from_slice(&self.registers[byte..end]);
        u64::from_be_bytes(word)
    }

    /// Register `r`: `register_bits` bits from bit `r * register_bits`, most significant
    /// first (at most 57 bits from any bit of a byte: one 64-bit window holds them).
    fn get(&self, r: u32) -> u64 {
        let (n, at) = (self.register_bits(), (r * self.register_bits()) as usize);
        (self.window(at / 8) >> (64 - (at % 8) as u32 - n)) & ((1u64 << n) - 1)
    }

    fn set(&mut self, r: u32, value: u64) {
        let (n, at) = (self.register_bits(), (r * self.register_bits()) as usize);
        let shift = 64 - (at % 8) as u32 - n;
        let mask = ((1u64 << n) - 1) << shift;
        let word = (self.window(at / 8) & !mask) | ((value << shift) & mask);
        let end = (at / 8 + 8).min(self.registers.len());
        self.registers[at / 8..end].copy_from_slice(&word.to_be_bytes()[..end - at / 8]);
    }

    fn hll_value(&self, register: u64) -> u32 {
        (register >> self.minhash_bits) as u32
    }

    /// The register an element lands in and the value it would put there.
    fn hash(&self, element: &[u8]) -> (u32, u64) {
        let (h1, h2) = murmur3_x64_128(element);
        let index = (h1 & ((1u64 << self.index_bits) - 1)) as u32;
        let minhash = (h1 >> self.index_bits) & ((1u64 << self.minhash_bits) - 1);
        let hll_value = (h2.trailing_zeros() + 1).min(HLL_VALUE_MAX) as u64;
        (index, hll_value << self.minhash_bits | minhash)
    }

    /// Adds an element; whether a register changed.
    fn add(&mut self, element: &[u8]) -> bool {
        let (r, value) = self.hash(element);
        if self.get(r) >= value {
            return false;
        }
        self.set(r, value);
        self.cache = 0;
        true
    }

    fn may_contain(&self, element: &[u8]) -> bool {
        let (r, value) = self.hash(element);
        value <= self.get(r)
    }

    /// Ertl's improved estimator (algorithm 6), as the real server computes it.
    fn estimate(&self) -> u64 {
        if self.cache != 0 {
            return self.cache;
        }
        let m = self.register_count() as f64;
        let mut c = [0u32; HLL_VALUE_MAX as usize + 2];
        for r in 0..self.register_count() {
            c[self.hll_value(self.get(r)) as usize] += 1;
        }
        let top = c.len() - 1;
        let mut z = m * tau(c[top] as f64 / m);
        for k in (1..=top).rev() {
            z = 0.5 * (z + c[k] as f64);
        }
        z += m * sigma(c[0] as f64 / m);
        (alpha(self.index_bits) * m * m / z).round() as u64
    }

    /// Folds `other` in (register by register, the larger wins); `other` has at least as
    /// many index bits.
    fn union_in(&mut self, other: &Sketch) {
        let mask = self.register_count() - 1;
        for r in 0..other.register_count() {
            let (mine, theirs) = (self.get(r & mask), other.get(r));
            if self.minhash_bits == 0 {
                let theirs = other.hll_value(theirs) as u64;
                if mine < theirs {
                    self.set(r & mask, theirs);
                }
            } else if mine < theirs {
                self.set(r & mask, theirs);
            }
        }
        self.cache = 0;
    }

    /// Keeps only the registers equal in `other`.
    fn intersect_in(&mut self, other: &Sketch) {
        let mask = self.register_count() - 1;
        for r in 0..other.register_count() {
            let mine = self.get(r & mask);
            self.set(r & mask, if mine == other.get(r) { mine } else { 0 });
        }
        self.cache = 0;
    }

    fn used_registers(&self) -> u32 {
        (0..self.register_count()).filter(|&r| self.get(r) != 0).count() as u32
    }

    fn has_data(&self) -> bool {
        self.registers.iter().any(|&b| b != 0)
    }
}

fn registers_len(index_bits: u8, minhash_bits: u8) -> usize {
    ((HLL_BITS as usize + minhash_bits as usize) << index_bits).div_ceil(8)
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn alpha(index_bits: u8) -> f64 {
    match index_bits {
        4 => 0.673,
        5 => 0.697,
        6 => 0.709,
        _ => 0.7213 / (1.0 + 1.079 / (1u64 << index_bits) as f64),
    }
}

/// MurmurHash3 x64-128 with seed 0: the two 64-bit halves.
fn murmur3_x64_128(data: &[u8]) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mix_k1 = |k: u64| k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix_k2 = |k: u64| k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    let (mut h1, mut h2) = (0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let k1 = u64::from_le_bytes(block[..8].try_into().unwrap_or_default());
        let k2 = u64::from_le_bytes(block[8..].try_into().unwrap_or_default());
        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= (b as u64) << (8 * i);
        } else {
            k2 |= (b as u64) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        h1 ^= mix_k1(k1);
    }
    h1 ^= data.len() as u64;
    h2 ^= data.len() as u64;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    (h1, h2.wrapping_add(h1))
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
#[path = "hll_tests.rs"]
mod tests;
