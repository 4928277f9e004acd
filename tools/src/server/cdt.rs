//! List and map operations (Aerospike's CDT ops) on a bin's MessagePack value: the op is a
//! MessagePack array `[op code, args…]`; the result is a value returned as the op's reply
//! bin, and a modifying op gives the bin's new value.
//!
//! Served: list append, append-items, insert, insert-items, pop, pop-range, remove,
//! remove-range, set, trim, clear, increment, sort, size, get, get-range, join (8.2); map set-order,
//! put, put-items, increment, decrement, clear, size; for both, get and remove by index,
//! index range, rank, rank range, value, value list, value interval and value-relative
//! rank range, and for maps by key, key list, key interval and key-relative index range,
//! with the inverted flag (`cdt_select`); any of them inside nested lists and maps
//! (`cdt_context`); ordered lists (a leading ext header with bit 0 set: appends land in
//! value order, insert and set by index are OP_NOT_APPLICABLE). Maps are kept with their keys
//! in the canonical order (as the real server returns them), so a map's index order is
//! its key order. Pure; cost: a decode and an encode of the whole bin per op.

use super::cdt_select::{self, span};
use super::msgpack::{canonical_cmp, encode, Value};

/// Why an op was refused, as result codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CdtError {
    /// 4: the op does not decode or its arguments are wrong.
    Parameter,
    /// 12: the bin holds another type.
    IncompatibleType,
    /// 16: a form of the op this server does not serve.
    Unsupported,
    /// 23: a map key the op needs is not there (update-only put).
    ElementNotFound,
    /// 24: the element exists (create-only put, add-unique append).
    ElementExists,
    /// 26: an index outside the list.
    NotApplicable,
    /// 1: an expression a path op applies could not be evaluated on a leaf.
    Unknown,
}

impl CdtError {
    pub fn code(self) -> u8 {
        match self {
            CdtError::Parameter => 4,
            CdtError::IncompatibleType => 12,
            CdtError::Unsupported => 16,
            CdtError::ElementNotFound => 23,
            CdtError::ElementExists => 24,
            CdtError::NotApplicable => 26,
            CdtError::Unknown => 1,
        }
    }
}

type Result<T> = std::result::Result<T, CdtError>;

pub const PARTICLE_MAP: u8 = 19;
pub const PARTICLE_LIST: u8 = 20;
const CONTEXT_MARKER: i64 = 0xff;

/// What an op did: its result, and the bin's new (particle, bytes) if it changed it.
#[derive(Debug, PartialEq)]
pub struct Applied {
    pub result: Value,
    pub new_bin: Option<(u8, Vec<u8>)>,
}

/// Runs the op encoded in `op` on the bin (`None`: the record has no such bin). A read
/// (`modify` false) may not change the bin.
pub fn apply(bin: Option<(u8, &[u8])>, op: &[u8], modify: bool) -> Result<Applied> {
    let Ok(Value::List(mut items)) = super::msgpack::decode(op) else { return Err(CdtError::Parameter) };
    if items.is_empty() {
        return Err(CdtError::Parameter);
    }
    let code = int(&items.remove(0))?;
    if code == CONTEXT_MARKER {
        return match &items[..] {
            [Value::List(ctx), inner @ Value::List(_)] => {
                super::cdt_context::apply_in_context(bin, ctx, inner, modify)
            }
            _ => Err(CdtError::Parameter),
        };
    }
    let args = Args(items);
    let applied =
        if (64..128).contains(&code) { map_op(bin, code, &args)? } else { list_op(bin, code, &args)? };
    if applied.new_bin.is_some() && !modify {
        return Err(CdtError::Parameter);
    }
    Ok(applied)
}

fn int(value: &Value) -> Result<i64> {
    match value {
        Value::Int(i) => Ok(*i),
        _ => Err(CdtError::Parameter),
    }
}

struct Args(Vec<Value>);

impl Args {
    fn value(&self, at: usize) -> Result<&Value> {
        self.0.get(at).ok_or(CdtError::Parameter)
    }
    fn int(&self, at: usize) -> Result<i64> {
        int(self.value(at)?)
    }
    fn int_or(&self, at: usize, default: i64) -> Result<i64> {
        self.0.get(at).map_or(Ok(default), int)
    }
    fn list(&self, at: usize) -> Result<&[Value]> {
        match self.value(at)? {
            Value::List(items) => Ok(items),
            _ => Err(CdtError::Parameter),
        }
    }
}

fn held(bin: Option<(u8, &[u8])>, particle: u8) -> Result<Option<Value>> {
    match bin {
        None => Ok(None),
        Some((p, bytes)) if p == particle => {
            super::msgpack::decode(bytes).map(Some).map_err(|_| CdtError::Parameter)
        }
        Some(_) => Err(CdtError::IncompatibleType),
    }
}

// ---- lists ----

const LIST_WRITE_ADD_UNIQUE: i64 = 1;
const LIST_WRITE_INSERT_BOUNDED: i64 = 2;
const LIST_WRITE_NO_FAIL: i64 = 4;
const LIST_SORT_DESCENDING: i64 = 1;
const LIST_SORT_DROP_DUPLICATES: i64 = 2;

/// A list bin's elements and whether it is ordered (its leading ext header's bit 0; the
/// persist-index bit 0x10 is an index hint this server has no use for).
fn held_list(bin: Option<(u8, &[u8])>) -> Result<(Vec<Value>, bool)> {
    match held(bin, PARTICLE_LIST)? {
        None => Ok((Vec::new(), false)),
        Some(Value::List(mut items)) => match items.first() {
            Some(Value::Ext { kind, data }) if data.is_empty() => {
                let ordered = kind & 1 != 0;
                items.remove(0);
                Ok((items, ordered))
            }
            Some(Value::Ext { .. }) => Err(CdtError::Unsupported),
            _ => Ok((items, false)),
        },
        Some(_) => Err(CdtError::Parameter),
    }
}

/// An ordered list keeps its elements in the canonical value order, behind its header.
const LIST_ORDERED_HEADER: u8 = 1;

fn list_op(bin: Option<(u8, &[u8])>, code: i64, args: &Args) -> Result<Applied> {
    let existed = bin.is_some();
    let (mut list, mut ordered) = held_list(bin)?;
    if ordered && matches!(code, 3 | 4 | 9) {
        // Insert and set name a position, which an ordered list's values decide.
        return Err(CdtError::NotApplicable);
    }
    let result = match code {
        0 => {
            // Set the order: the attributes are the last argument (a create sends the
            // context flags first).
            let attributes = args.0.last().map(int).transpose()?.unwrap_or(0);
            ordered = attributes & 1 != 0;
            Value::Nil
        }
        16 => return read_only(Value::Int(list.len() as i64), existed),
        17 => return read_only(list[exact_index(args.int(0)?, list.len())?].clone(), existed),
        18 => {
            let range = range_of(&list, args.int(0)?, args.0.get(1).map(int).transpose()?);
            return read_only(Value::List(range.to_vec()), existed);
        }
        28 => return read_only(joined(&list, args.0.first())?, existed),
        1..=13 => list_change(&mut list, code, args)?,
        _ => {
            let (by, remove) = cdt_select::list_selection(code).ok_or(CdtError::Unsupported)?;
            let (result, picked) = selected(list.iter().collect(), None, by, args)?;
            if !remove {
                return read_only(result, existed);
            }
            drop_positions(&mut list, &picked);
            result
        }
    };
    if ordered {
        // Appends land at the end and increments change values: one stable sort puts
        // them in place (equal values keep their order).
        list.sort_by(canonical_cmp);
        list.insert(0, Value::Ext { kind: LIST_ORDERED_HEADER, data: Vec::new() });
    }
    Ok(Applied { result, new_bin: Some((PARTICLE_LIST, encode(&Value::List(list)))) })
}

/// Join (op 28, Aerospike 8.2): the list's strings concatenated, with the separator
/// string between them if one is given; an item that is not a string is PARAMETER.
fn joined(list: &[Value], separator: Option<&Value>) -> Result<Value> {
    let text = |value: &Value| match value {
        Value::Bytes { payload, .. } if payload.first() == Some(&3) => Ok(payload[1..].to_vec()),
        _ => Err(CdtError::Parameter),
    };
    let separator = separator.map(text).transpose()?.unwrap_or_default();
    let parts: Vec<Vec<u8>> = list.iter().map(text).collect::<Result<_>>()?;
    Ok(Value::string(&parts.join(&separator[..])))
}

/// The list ops 1..=13 that change the list (append through sort); returns the result.
fn list_change(list: &mut Vec<Value>, code: i64, args: &Args) -> Result<Value> {
    let count = || args.0.get(1).map(int).transpose();
    Ok(match code {
        1 => add_items(list, None, std::slice::from_ref(args.value(0)?), args.int_or(2, 0)?)?,
        2 => add_items(list, None, args.list(0)?, args.int_or(2, 0)?)?,
        3 => add_items(list, Some(args.int(0)?), std::slice::from_ref(args.value(1)?), args.int_or(2, 0)?)?,
        4 => add_items(list, Some(args.int(0)?), args.list(1)?, args.int_or(2, 0)?)?,
        5 => list.remove(exact_index(args.int(0)?, list.len())?),
        6 => Value::List(take_range(list, args.int(0)?, count()?)),
        7 => {
            list.remove(exact_index(args.int(0)?, list.len())?);
            Value::Int(1)
        }
        8 => Value::Int(take_range(list, args.int(0)?, count()?).len() as i64),
        9 => {
            // A negative index counts from the end; a positive one may name the slot past it.
            let index = args.int(0)?;
            let at = exact_index(index, if index < 0 { list.len() } else { list.len() + 1 })?;
            if at == list.len() {
                list.push(args.value(1)?.clone());
            } else {
                list[at] = args.value(1)?.clone();
            }
            Value::Nil
        }
        10 => {
            let kept = take_range(list, args.int(0)?, Some(args.int(1)?));
            Value::Int(std::mem::replace(list, kept).len() as i64)
        }
        11 => {
            list.clear();
            Value::Nil
        }
        12 => increment(list, args)?,
        13 => {
            sort_list(list, args.int_or(0, 0)?);
            Value::Nil
        }
        _ => return Err(CdtError::Unsupported),
    })
}

/// A get-by or remove-by selection (`cdt_select`) of list elements (`keys` None) or map
/// entries: the op's result and the positions it picked, in index order.
fn selected(
    values: Vec<&Value>,
    keys: Option<Vec<&Value>>,
    by: cdt_select::By,
    args: &Args,
) -> Result<(Value, Vec<usize>)> {
    let return_type = args.int(0)?;
    let items = cdt_select::Items { values, keys };
    let picked = cdt_select::pick(&items, by, &args.0[1..])?;
    cdt_select::result(&items, picked, return_type)
}

/// Removes the items at `positions` (ascending).
fn drop_positions<T>(items: &mut Vec<T>, positions: &[usize]) {
    let mut next = positions.iter().peekable();
    let mut at = 0;
    items.retain(|_| {
        let dropped = next.peek() == Some(&&at);
        if dropped {
            next.next();
        }
        at += 1;
        !dropped
    });
}

/// A read op's result; on a missing bin, nothing.
fn read_only(result: Value, existed: bool) -> Result<Applied> {
    Ok(Applied { result: if existed { result } else { Value::Nil }, new_bin: None })
}

/// Most nils an insert past a list's end pads it with: a client's index is not trusted
/// to size an allocation (the fuzzer's first finding was an insert at index 2^30).
pub const LIST_PAD_MAX: usize = 1 << 16;

/// Appends (`at` None) or inserts `items`, under the write flags; returns the new size.
fn add_items(list: &mut Vec<Value>, at: Option<i64>, items: &[Value], flags: i64) -> Result<Value> {
    let mut position = match at {
        None => list.len(),
        Some(index) if index < 0 => exact_index(index, list.len())?,
        Some(index) if index as usize > list.len() && flags & LIST_WRITE_INSERT_BOUNDED != 0 => {
            return Err(CdtError::NotApplicable)
        }
        Some(index) if index as usize - list.len().min(index as usize) > LIST_PAD_MAX => {
            return Err(CdtError::Parameter)
        }
        Some(index) => index as usize,
    };
    if position > list.len() {
        list.resize(position, Value::Nil);
    }
    for item in items {
        if flags & LIST_WRITE_ADD_UNIQUE != 0 && list.iter().any(|held| canonical_cmp(held, item).is_eq()) {
            if flags & LIST_WRITE_NO_FAIL != 0 {
                continue;
            }
            return Err(CdtError::ElementExists);
        }
        list.insert(position, item.clone());
        position += 1;
    }
    Ok(Value::Int(list.len() as i64))
}

/// An index naming an element of a list of `len` (negative counts from the end).
fn exact_index(index: i64, len: usize) -> Result<usize> {
    let at = if index < 0 { len as i64 + index } else { index };
    if (0..len as i64).contains(&at) {
        Ok(at as usize)
    } else {
        Err(CdtError::NotApplicable)
    }
}

fn range_of(list: &[Value], index: i64, count: Option<i64>) -> &[Value] {
    &list[span(index, count, list.len())]
}

/// Removes the span and returns its elements.
fn take_range(list: &mut Vec<Value>, index: i64, count: Option<i64>) -> Vec<Value> {
    let range = span(index, count, list.len());
    list.drain(range).collect()
}

fn increment(list: &mut [Value], args: &Args) -> Result<Value> {
    let at = exact_index(args.int(0)?, list.len())?;
    let delta = args.0.get(1).cloned().unwrap_or(Value::Int(1));
    let sum = match (&list[at], &delta) {
        (Value::Int(a), Value::Int(b)) => Value::Int(a.checked_add(*b).ok_or(CdtError::Parameter)?),
        (Value::F64(a), Value::F64(b)) => Value::F64(a + b),
        (Value::F64(a), Value::Int(b)) => Value::F64(a + *b as f64),
        (Value::Int(a), Value::F64(b)) => Value::Int(a.wrapping_add(*b as i64)),
        _ => return Err(CdtError::IncompatibleType),
    };
    list[at] = sum.clone();
    Ok(sum)
}

fn sort_list(list: &mut Vec<Value>, flags: i64) {
    list.sort_by(canonical_cmp);
    if flags & LIST_SORT_DROP_DUPLICATES != 0 {
        list.dedup_by(|a, b| canonical_cmp(a, b).is_eq());
    }
    if flags & LIST_SORT_DESCENDING != 0 {
        list.reverse();
    }
}

// ---- maps ----

const MAP_WRITE_CREATE_ONLY: i64 = 1;
const MAP_WRITE_UPDATE_ONLY: i64 = 2;
const MAP_WRITE_NO_FAIL: i64 = 4;

/// A map bin's value: its order flags and entries in canonical key order.
pub struct Map {
    order: Option<u8>,
    entries: Vec<(Value, Value)>,
}

impl Map {
    /// A map value put whole (a bin write), with its entries in key order.
    pub fn normalized(value: Value) -> Option<Value> {
        match value {
            Value::Map { order, mut entries } => {
                entries.sort_by(|a, b| canonical_cmp(&a.0, &b.0));
                Some(Value::Map { order, entries })
            }
            _ => None,
        }
    }

    fn find(&self, key: &Value) -> std::result::Result<usize, usize> {
        self.entries.binary_search_by(|(held, _)| canonical_cmp(held, key))
    }

    fn value(self) -> Value {
        Value::Map { order: self.order, entries: self.entries }
    }
}

fn map_op(bin: Option<(u8, &[u8])>, code: i64, args: &Args) -> Result<Applied> {
    let existed = bin.is_some();
    let mut map = match held(bin, PARTICLE_MAP)? {
        None => Map { order: None, entries: Vec::new() },
        Some(value) => match Map::normalized(value) {
            Some(Value::Map { order, entries }) => Map { order, entries },
            _ => return Err(CdtError::IncompatibleType),
        },
    };
    let result = match code {
        64 => {
            // Set the map's order (attribute bits 0..2; the persist-index bit 0x10 is an
            // index hint this server has no use for); a missing bin becomes an empty map.
            map.order = match args.int(0)? & 3 {
                0 => None,
                order => Some(order as u8),
            };
            Value::Nil
        }
        67 => {
            let (value, attr, flags) = match args.0.len() {
                2 => (Value::Nil, args.int(1)?, 0),
                _ => (args.value(1)?.clone(), args.int_or(2, 0)?, args.int_or(3, 0)?),
            };
            create_order(&mut map, existed, attr);
            put(&mut map, args.value(0)?.clone(), value, flags)?;
            Value::Int(map.entries.len() as i64)
        }
        68 => {
            let Value::Map { entries, .. } = args.value(0)? else { return Err(CdtError::Parameter) };
            create_order(&mut map, existed, args.int_or(1, 0)?);
            let flags = args.int_or(2, 0)?;
            for (key, value) in entries {
                put(&mut map, key.clone(), value.clone(), flags)?;
            }
            Value::Int(map.entries.len() as i64)
        }
        73 | 74 => map_increment(&mut map, existed, args, code == 74)?,
        75 => {
            map.entries.clear();
            Value::Nil
        }
        96 => return read_only(Value::Int(map.entries.len() as i64), existed),
        _ => {
            let (by, remove) = cdt_select::map_selection(code).ok_or(CdtError::Unsupported)?;
            let values = map.entries.iter().map(|(_, v)| v).collect();
            let keys = map.entries.iter().map(|(k, _)| k).collect();
            let (result, picked) = selected(values, Some(keys), by, args)?;
            if !remove {
                return read_only(result, existed);
            }
            drop_positions(&mut map.entries, &picked);
            result
        }
    };
    Ok(Applied { result, new_bin: Some((PARTICLE_MAP, encode(&map.value()))) })
}

/// A map created by an op takes the order its policy names (attribute bits 0..2).
fn create_order(map: &mut Map, existed: bool, attr: i64) {
    if !existed && attr & 3 != 0 {
        map.order = Some((attr & 3) as u8);
    }
}

fn put(map: &mut Map, key: Value, value: Value, flags: i64) -> Result<()> {
    let no_fail = flags & MAP_WRITE_NO_FAIL != 0;
    match map.find(&key) {
        Ok(_) if flags & MAP_WRITE_CREATE_ONLY != 0 => fail_unless(no_fail, CdtError::ElementExists),
        Ok(at) => {
            map.entries[at].1 = value;
            Ok(())
        }
        Err(_) if flags & MAP_WRITE_UPDATE_ONLY != 0 => fail_unless(no_fail, CdtError::ElementNotFound),
        Err(at) => {
            map.entries.insert(at, (key, value));
            Ok(())
        }
    }
}

fn fail_unless(no_fail: bool, err: CdtError) -> Result<()> {
    if no_fail {
        Ok(())
    } else {
        Err(err)
    }
}

/// args `[key, delta?, attr?]`: adds (or subtracts) the delta; returns the new value.
fn map_increment(map: &mut Map, existed: bool, args: &Args, negate: bool) -> Result<Value> {
    let key = args.value(0)?.clone();
    let delta = args.0.get(1).cloned().unwrap_or(Value::Int(1));
    create_order(map, existed, args.int_or(2, 0)?);
    let held = match map.find(&key) {
        Ok(at) => map.entries[at].1.clone(),
        Err(_) => Value::Int(0),
    };
    let sum = match (&held, &delta) {
        (Value::Int(a), Value::Int(b)) => {
            let b = if negate { b.checked_neg().ok_or(CdtError::Parameter)? } else { *b };
            Value::Int(a.checked_add(b).ok_or(CdtError::Parameter)?)
        }
        (Value::F64(a), Value::F64(b)) => Value::F64(if negate { a - b } else { a + b }),
        _ => return Err(CdtError::IncompatibleType),
    };
    put(map, key, sum.clone(), 0)?;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::msgpack::decode;

    fn op(code: i64, args: Vec<Value>) -> Vec<u8> {
        let mut items = vec![Value::Int(code)];
        items.extend(args);
        encode(&Value::List(items))
    }

    fn list(values: &[i64]) -> Vec<u8> {
        encode(&Value::List(values.iter().map(|v| Value::Int(*v)).collect()))
    }

    fn run(bin: &[u8], code: i64, args: Vec<Value>) -> Result<(Value, Option<Value>)> {
        let applied = apply(Some((PARTICLE_LIST, bin)), &op(code, args), true)?;
        Ok((applied.result, applied.new_bin.map(|(_, b)| decode(&b).unwrap())))
    }

    fn ints(values: &[i64]) -> Value {
        Value::List(values.iter().map(|v| Value::Int(*v)).collect())
    }

    #[test]
    fn negative_indexes_and_counts_read_as_the_real_server_reads_them() {
        let l = list(&[1, 2, 3, 4, 5, 6, 7]);
        // A set at -1 replaces the last element (it used to append).
        assert_eq!(
            run(&l, 9, vec![Value::Int(-1), Value::Int(0)]).unwrap().1,
            Some(ints(&[1, 2, 3, 4, 5, 6, 0]))
        );
        // A negative count is unsigned on the wire: "to the end" (it used to be empty).
        let to_end = run(&l, 18, vec![Value::Int(1), Value::Int(-1)]).unwrap().0;
        assert_eq!(to_end, ints(&[2, 3, 4, 5, 6, 7]));
        // A start before the first element shortens the count by the overshoot.
        let clipped = run(&l, 18, vec![Value::Int(-10), Value::Int(5)]).unwrap().0;
        assert_eq!(clipped, ints(&[1, 2]));
    }

    #[test]
    fn list_ops_change_the_list_and_return_what_the_clients_expect() {
        let l = list(&[1, 2]);
        assert_eq!(run(&l, 1, vec![Value::Int(3)]).unwrap(), (Value::Int(3), Some(ints(&[1, 2, 3]))));
        let padded = Value::List(vec![Value::Int(1), Value::Int(2), Value::Nil, Value::Nil, Value::Int(9)]);
        assert_eq!(run(&l, 3, vec![Value::Int(4), Value::Int(9)]).unwrap(), (Value::Int(5), Some(padded)));
        let far = (LIST_PAD_MAX + 3) as i64;
        assert_eq!(run(&l, 3, vec![Value::Int(far), Value::Int(9)]), Err(CdtError::Parameter));
        assert_eq!(run(&l, 3, vec![Value::Int(1 << 30), Value::Int(9)]), Err(CdtError::Parameter));
        assert_eq!(run(&l, 5, vec![Value::Int(-1)]).unwrap(), (Value::Int(2), Some(ints(&[1]))));
        assert_eq!(run(&l, 5, vec![Value::Int(2)]), Err(CdtError::NotApplicable));
        let l = list(&[111, 222, 333]);
        assert_eq!(run(&l, 16, vec![]).unwrap(), (Value::Int(3), None));
        assert_eq!(run(&l, 19, vec![Value::Int(7), Value::Int(-1)]).unwrap(), (Value::Int(333), None));
        assert_eq!(run(&l, 24, vec![Value::Int(1), Value::Int(1)]).unwrap(), (ints(&[1, 2]), None));
        assert_eq!(
            run(&l, 37, vec![Value::Int(5), Value::Int(0), Value::Int(2)]).unwrap(),
            (Value::Int(2), Some(ints(&[333])))
        );
        assert_eq!(
            run(&l, 10, vec![Value::Int(1), Value::Int(1)]).unwrap(),
            (Value::Int(2), Some(ints(&[222])))
        );
        assert_eq!(
            run(&l, 12, vec![Value::Int(0), Value::Int(5)]).unwrap(),
            (Value::Int(116), Some(ints(&[116, 222, 333])))
        );
        let unsorted = list(&[3, 1, 2, 1]);
        assert_eq!(
            run(&unsorted, 13, vec![Value::Int(LIST_SORT_DROP_DUPLICATES | LIST_SORT_DESCENDING)]).unwrap().1,
            Some(ints(&[3, 2, 1]))
        );
        assert_eq!(
            run(&l, 1, vec![Value::Int(222), Value::Int(0), Value::Int(LIST_WRITE_ADD_UNIQUE)]),
            Err(CdtError::ElementExists)
        );
    }

    #[test]
    fn a_read_op_may_not_modify_and_a_list_op_refuses_another_type() {
        assert_eq!(
            apply(Some((PARTICLE_LIST, &list(&[1]))), &op(1, vec![Value::Int(2)]), false),
            Err(CdtError::Parameter)
        );
        assert_eq!(apply(Some((1, &[0; 8])), &op(16, vec![]), false), Err(CdtError::IncompatibleType));
        assert_eq!(apply(None, &op(16, vec![]), false).unwrap().result, Value::Nil);
        assert_eq!(
            apply(None, &op(0xff, vec![]), true),
            Err(CdtError::Parameter),
            "a context marker without a context"
        );
        assert_eq!(apply(None, &[0xc1], true), Err(CdtError::Parameter));
    }

    #[test]
    fn an_ordered_list_keeps_its_values_sorted_behind_its_header() {
        let created = apply(None, &op(0, vec![Value::Int(1)]), true).unwrap().new_bin.unwrap();
        let mut bin = created.1;
        for v in [3, 1, 2, 1] {
            bin = apply(Some((PARTICLE_LIST, &bin)), &op(1, vec![Value::Int(v)]), true)
                .unwrap()
                .new_bin
                .unwrap()
                .1;
        }
        assert_eq!(&bin[..4], &[0x95, 0xc7, 0x00, 0x01], "five elements: the header, then the values");
        let got = apply(Some((PARTICLE_LIST, &bin)), &op(18, vec![Value::Int(0)]), false).unwrap().result;
        assert_eq!(got, Value::List([1, 1, 2, 3].map(Value::Int).to_vec()));
        let insert = op(3, vec![Value::Int(0), Value::Int(9)]);
        assert_eq!(apply(Some((PARTICLE_LIST, &bin)), &insert, true), Err(CdtError::NotApplicable));
        let unordered =
            apply(Some((PARTICLE_LIST, &bin)), &op(0, vec![Value::Int(0)]), true).unwrap().new_bin.unwrap();
        assert_eq!(unordered.1[0], 0x94, "set back to unordered: no header");
    }

    #[test]
    fn map_puts_keep_keys_in_order_and_honour_the_write_flags() {
        let s = |t: &str| Value::string(t.as_bytes());
        let mut bin: Option<Vec<u8>> = None;
        for key in ["z", "m", "a"] {
            let put = op(67, vec![s(key), Value::Int(1), Value::Int(1)]);
            let applied = apply(bin.as_deref().map(|b| (PARTICLE_MAP, b)), &put, true).unwrap();
            bin = applied.new_bin.map(|(_, b)| b);
        }
        let held = decode(bin.as_deref().unwrap()).unwrap();
        let Value::Map { order, entries } = held else { panic!() };
        assert_eq!(order, Some(1));
        assert_eq!(entries.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), vec![s("a"), s("m"), s("z")]);
        let map = bin.unwrap();
        let create_only =
            op(67, vec![s("a"), Value::Int(2), Value::Int(0), Value::Int(MAP_WRITE_CREATE_ONLY)]);
        assert_eq!(apply(Some((PARTICLE_MAP, &map)), &create_only, true), Err(CdtError::ElementExists));
        let get = op(97, vec![Value::Int(7), s("m")]);
        assert_eq!(apply(Some((PARTICLE_MAP, &map)), &get, false).unwrap().result, Value::Int(1));
        let incr = op(73, vec![s("m"), Value::Int(4)]);
        assert_eq!(apply(Some((PARTICLE_MAP, &map)), &incr, true).unwrap().result, Value::Int(5));
        let remove = op(76, vec![Value::Int(6), s("z")]);
        let applied = apply(Some((PARTICLE_MAP, &map)), &remove, true).unwrap();
        assert_eq!(applied.result, s("z"));
        let Value::Map { entries, .. } = decode(&applied.new_bin.unwrap().1).unwrap() else { panic!() };
        assert_eq!(entries.len(), 2);
    }
}
