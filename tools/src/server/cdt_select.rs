//! The get-by and remove-by selections of list and map operations: by index, index range,
//! rank, rank range, value, value list, value interval and value-relative rank range, and
//! for maps also by key, key list, key interval and key-relative index range; each result
//! in the form its return type asks for, the inverted flag included.
//!
//! Positions are indexes in list order or, for a map, in key order. Rank order is the
//! server's canonical value order, ties in index order. Results list the picked items in
//! index order, as the real server does, except those of a rank range (or a
//! value-relative rank range), which it takes from a heap: a map's come in rank order
//! (unless an ordered map is asked for); a list's values come in rank order when the
//! range is nearer the top than the bottom, else in descending rank order (the heap then
//! pops the lowest first: ranks 2 and 3 of seven values give the rank-3 value first),
//! and its indexes in index order. An inverted selection is every other item, in index
//! order. Pure; cost: a sort of the positions for ranks.

use super::cdt::CdtError;
use super::msgpack::{canonical_cmp, Value};
use std::cmp::Ordering;

type Result<T> = std::result::Result<T, CdtError>;

pub const RETURN_INVERTED: i64 = 0x10000;

/// The items an op selects among: list elements (`keys` None) or map entries.
pub struct Items<'a> {
    pub values: Vec<&'a Value>,
    pub keys: Option<Vec<&'a Value>>,
}

/// What a selection picked: positions in result order, and whether the op names one item
/// (its result is that item, or nil, rather than a list).
#[derive(Debug, PartialEq)]
pub struct Picked {
    pub positions: Vec<usize>,
    pub single: bool,
    /// `positions` are in the order of a rank range's heap (see the module comment), which
    /// some results keep; else results list them in index order.
    pub heap_order: bool,
}

/// How an op selects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum By {
    Index,
    Key,
    Rank,
    RankRange,
    Value,
    ValueList,
    ValueInterval,
    ValueRelRankRange,
    IndexRange,
    KeyList,
    KeyInterval,
    KeyRelIndexRange,
}

/// The selection of list op `code` (None: not a selection op this module serves), and
/// whether it removes what it picks.
pub fn list_selection(code: i64) -> Option<(By, bool)> {
    let by = match code {
        19 | 32 => By::Index,
        24 | 37 => By::IndexRange,
        21 | 34 => By::Rank,
        22 | 35 => By::Value,
        23 | 36 => By::ValueList,
        25 | 38 => By::ValueInterval,
        26 | 39 => By::RankRange,
        27 | 40 => By::ValueRelRankRange,
        _ => return None,
    };
    Some((by, code >= 32))
}

/// The selection of map op `code`, and whether it removes what it picks.
pub fn map_selection(code: i64) -> Option<(By, bool)> {
    let (by, remove) = match code {
        76 => (By::Key, true),
        97 => (By::Key, false),
        77 => (By::Index, true),
        98 => (By::Index, false),
        79 => (By::Rank, true),
        100 => (By::Rank, false),
        81 => (By::KeyList, true),
        107 => (By::KeyList, false),
        82 => (By::Value, true),
        102 => (By::Value, false),
        83 => (By::ValueList, true),
        108 => (By::ValueList, false),
        84 => (By::KeyInterval, true),
        103 => (By::KeyInterval, false),
        85 => (By::IndexRange, true),
        104 => (By::IndexRange, false),
        86 => (By::ValueInterval, true),
        105 => (By::ValueInterval, false),
        87 => (By::RankRange, true),
        106 => (By::RankRange, false),
        88 => (By::KeyRelIndexRange, true),
        109 => (By::KeyRelIndexRange, false),
        89 => (By::ValueRelRankRange, true),
        110 => (By::ValueRelRankRange, false),
        _ => return None,
    };
    Some((by, remove))
}

fn int(value: Option<&Value>) -> Result<i64> {
    match value {
        Some(Value::Int(i)) => Ok(*i),
        _ => Err(CdtError::Parameter),
    }
}

fn opt_int(value: Option<&Value>) -> Result<Option<i64>> {
    value.map(|v| int(Some(v))).transpose()
}

fn list(value: Option<&Value>) -> Result<&[Value]> {
    match value {
        Some(Value::List(items)) => Ok(items),
        _ => Err(CdtError::Parameter),
    }
}

/// Picks the items `by` selects; `args` are the op's arguments after its return type.
pub fn pick(items: &Items<'_>, by: By, args: &[Value]) -> Result<Picked> {
    let values = &items.values;
    let keys = || items.keys.as_ref().ok_or(CdtError::Parameter);
    let len = values.len();
    let many = |positions| Ok(Picked { positions, single: false, heap_order: false });
    let matching = |of: &[&Value], hit: &dyn Fn(&Value) -> bool| -> Vec<usize> {
        (0..of.len()).filter(|&i| hit(of[i])).collect()
    };
    let one = |position: Option<usize>| {
        Ok(Picked { positions: position.into_iter().collect(), single: true, heap_order: false })
    };
    match by {
        By::Index => one(exact(int(args.first())?, len)),
        By::Key => {
            let wanted = args.first().ok_or(CdtError::Parameter)?;
            one(keys()?.iter().position(|k| canonical_cmp(k, wanted).is_eq()))
        }
        By::Rank => {
            let order = rank_order(values);
            let positions = exact(int(args.first())?, len).map(|r| vec![order[r]]).unwrap_or_default();
            Ok(Picked { positions, single: true, heap_order: false })
        }
        By::RankRange => {
            let range = span(int(args.first())?, opt_int(args.get(1))?, len);
            Ok(heap_ordered(rank_order(values), range, items.keys.is_some()))
        }
        By::Value => {
            let wanted = args.first().ok_or(CdtError::Parameter)?;
            many(matching(values, &|v| matches(v, wanted)))
        }
        By::ValueList => {
            let wanted = list(args.first())?;
            many(matching(values, &|v| wanted.iter().any(|w| matches(v, w))))
        }
        By::ValueInterval => {
            let (begin, end) = interval(args)?;
            many(matching(values, &|v| inside(v, begin, end)))
        }
        By::ValueRelRankRange => {
            let anchor = args.first().ok_or(CdtError::Parameter)?;
            let order = rank_order(values);
            let below = order.iter().filter(|&&i| canonical_cmp(values[i], anchor) == Ordering::Less).count();
            let range = relative(below, int(args.get(1))?, opt_int(args.get(2))?, len);
            Ok(heap_ordered(order, range, items.keys.is_some()))
        }
        By::IndexRange => many(span(int(args.first())?, opt_int(args.get(1))?, len).collect()),
        By::KeyList => {
            let wanted = list(args.first())?;
            let keys = keys()?;
            many(matching(keys, &|k| wanted.iter().any(|w| canonical_cmp(k, w).is_eq())))
        }
        By::KeyInterval => {
            let (begin, end) = interval(args)?;
            many(matching(keys()?, &|k| inside(k, begin, end)))
        }
        By::KeyRelIndexRange => {
            let anchor = args.first().ok_or(CdtError::Parameter)?;
            let below = keys()?.iter().filter(|k| canonical_cmp(k, anchor) == Ordering::Less).count();
            many(relative(below, int(args.get(1))?, opt_int(args.get(2))?, len).collect())
        }
    }
}

fn is_wildcard(value: &Value) -> bool {
    matches!(value, Value::Ext { kind: 0xff, data } if data[..] == [0])
}

/// Whether `v` equals `pattern`, where a wildcard in the pattern matches any value, and
/// in a list the rest of the list (`["Jim", *]` matches every list starting with "Jim").
fn matches(v: &Value, pattern: &Value) -> bool {
    match (v, pattern) {
        (_, p) if is_wildcard(p) => true,
        (Value::List(values), Value::List(patterns)) => {
            for (i, p) in patterns.iter().enumerate() {
                if is_wildcard(p) {
                    return true;
                }
                if !values.get(i).is_some_and(|v| matches(v, p)) {
                    return false;
                }
            }
            values.len() == patterns.len()
        }
        _ => canonical_cmp(v, pattern).is_eq(),
    }
}

/// `[begin, end?)`: no end is no upper bound (a nil begin is the lowest value anyway).
fn interval(args: &[Value]) -> Result<(&Value, Option<&Value>)> {
    Ok((args.first().ok_or(CdtError::Parameter)?, args.get(1)))
}

fn inside(v: &Value, begin: &Value, end: Option<&Value>) -> bool {
    canonical_cmp(v, begin) != Ordering::Less && end.is_none_or(|end| canonical_cmp(v, end) == Ordering::Less)
}

/// The order flag a map result carries, which tells the client how to decode it: KEY_VALUE
/// (8) pairs in the order given (flag 8), UNORDERED_MAP (16) none, ORDERED_MAP (17)
/// key-ordered (flag 1).
pub fn map_result_order(return_type: i64) -> Option<u8> {
    match return_type {
        8 => Some(8),
        17 => Some(1),
        _ => None,
    }
}

/// The items of ranks `range` in the order the real server's heap yields them: for a
/// list whose range is no farther from the bottom than from the top, a min-heap pops them
/// into place highest first; otherwise (and for maps, whose results it turns back) in
/// rank order.
fn heap_ordered(rank_order: Vec<usize>, range: std::ops::Range<usize>, is_map: bool) -> Picked {
    let below_tail = range.start <= rank_order.len() - range.end;
    let mut positions = rank_order[range].to_vec();
    if below_tail && !is_map {
        positions.reverse();
    }
    Picked { positions, single: false, heap_order: true }
}

/// Positions in rank order: by canonical value, ties by position.
fn rank_order(values: &[&Value]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| canonical_cmp(values[a], values[b]).then(a.cmp(&b)));
    order
}

/// An index or rank naming one of `len` items (negative counts from the end).
fn exact(index: i64, len: usize) -> Option<usize> {
    let at = if index < 0 { len as i64 + index } else { index };
    (0..len as i64).contains(&at).then_some(at as usize)
}

/// `count` items (all to the end when None) from `index` (negative from the end),
/// clamped to the `len` items, as the real server reads them: the count is unsigned (a
/// negative one is "to the end"), and a start before the first item drops the items it
/// would have taken there.
pub fn span(index: i64, count: Option<i64>, len: usize) -> std::ops::Range<usize> {
    let count = count.map_or(u64::MAX, |n| n as u64);
    let len64 = len as i64;
    if index >= len64 {
        return len..len;
    }
    let at = if index < 0 { len64.saturating_add(index) } else { index };
    if at < 0 {
        let kept = count.saturating_sub(at.unsigned_abs()).min(len as u64);
        return 0..kept as usize;
    }
    let at = at as usize;
    at..at + count.min((len - at) as u64) as usize
}

/// `count` items (all to the end when None) from `offset` past the `anchor`-th: a start
/// before the first item drops the items it would have taken there.
fn relative(anchor: usize, offset: i64, count: Option<i64>, len: usize) -> std::ops::Range<usize> {
    let start = anchor as i64 + offset;
    let end = match count {
        None => len as i64,
        Some(n) => start.saturating_add(n.max(0)),
    };
    (start.clamp(0, len as i64) as usize)..(end.clamp(0, len as i64) as usize)
}

/// The result `return_type` asks for of what was picked among `items`; with the inverted
/// flag, of every other item. Returns it and the positions it covers, in index order for
/// removal.
pub fn result(items: &Items<'_>, picked: Picked, return_type: i64) -> Result<(Value, Vec<usize>)> {
    let len = items.values.len();
    let Picked { mut positions, mut single, heap_order } = picked;
    let base_type = return_type & !RETURN_INVERTED;
    // A list keeps the heap's order for its values only; a map for all but an ordered map.
    let keeps_heap_order = match items.keys {
        None => base_type == 7,
        Some(_) => base_type != 17,
    };
    if !(heap_order && keeps_heap_order && return_type & RETURN_INVERTED == 0) {
        positions.sort_unstable();
    }
    if return_type & RETURN_INVERTED != 0 {
        let mut taken = vec![false; len];
        for &p in &positions {
            taken[p] = true;
        }
        positions = (0..len).filter(|&p| !taken[p]).collect();
        single = false;
    }
    let ints = |of: Vec<usize>| -> Vec<Value> { of.into_iter().map(|i| Value::Int(i as i64)).collect() };
    let one_or_list = |mut values: Vec<Value>| match (single, values.len()) {
        (true, 1) => values.remove(0),
        (true, _) => Value::Nil,
        (false, _) => Value::List(values),
    };
    let value = match return_type & !RETURN_INVERTED {
        0 => Value::Nil,
        1 => one_or_list(ints(positions.clone())),
        2 => one_or_list(ints(positions.iter().map(|&p| len - 1 - p).collect())),
        3 | 4 => {
            let mut rank_of = vec![0; len];
            for (rank, &p) in rank_order(&items.values).iter().enumerate() {
                rank_of[p] = rank;
            }
            let reverse = return_type & !RETURN_INVERTED == 4;
            let mut ranks: Vec<usize> =
                positions.iter().map(|&p| if reverse { len - 1 - rank_of[p] } else { rank_of[p] }).collect();
            if heap_order {
                ranks.sort_unstable(); // a rank range answers its ranks as a range
            }
            one_or_list(ints(ranks))
        }
        5 => Value::Int(positions.len() as i64),
        6 => {
            let keys = items.keys.as_ref().ok_or(CdtError::Parameter)?;
            one_or_list(positions.iter().map(|&p| keys[p].clone()).collect())
        }
        7 => one_or_list(positions.iter().map(|&p| items.values[p].clone()).collect()),
        8 | 16 | 17 => {
            let keys = items.keys.as_ref().ok_or(CdtError::Parameter)?;
            let entries = positions.iter().map(|&p| (keys[p].clone(), items.values[p].clone())).collect();
            Value::Map { order: map_result_order(return_type & !RETURN_INVERTED), entries }
        }
        13 => Value::Bool(!positions.is_empty()),
        _ => return Err(CdtError::Unsupported),
    };
    positions.sort_unstable();
    Ok((value, positions))
}

#[cfg(test)]
#[path = "cdt_select_tests.rs"]
mod tests;
