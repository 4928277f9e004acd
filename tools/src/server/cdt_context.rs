//! Nested contexts of list and map operations: an op sent as `[0xff, [ctx type, ctx
//! value, …], [op code, args…]]` runs on the list or map that the context pairs dig out of
//! the bin (list by index, rank or value; map by index, rank, key or value), and a
//! modifying op's result is written back into the bin.
//!
//! A pair's type is the kind (0x10 list, 0x20 map) plus the selector (0 index, 1 rank, 2
//! key, 3 value), plus, on a modifying op, create flags (0x40, 0x80, 0xc0) that make a
//! missing map key or list index (0x80 on a list index: padded with nils up to it)
//! instead of failing. What is created there is of the kind of what comes next, the next
//! pair's or the op's (a map takes its order from the flags: 0x40 none, 0x80 key-ordered,
//! 0xc0 key-value-ordered; a list is ordered under 0xc0). A missing
//! element without them, or a pair of the wrong kind, is OP_NOT_APPLICABLE, as the real
//! server answers. Expression contexts answer 16. Pure; cost: the
//! nested value is encoded for the op and decoded back.

use super::cdt::{Applied, CdtError};
use super::msgpack::{canonical_cmp, decode, encode, Value};

type Result<T> = std::result::Result<T, CdtError>;

const KIND_LIST: u64 = 0x10;
const KIND_MAP: u64 = 0x20;
const CREATE_MASK: u64 = 0xc0;

/// Runs `op` (`[code, args…]`) on the element `ctx` names inside the bin, through
/// `cdt::apply` as if that element were a bin of its own.
pub fn apply_in_context(
    bin: Option<(u8, &[u8])>,
    ctx: &[Value],
    op: &Value,
    modify: bool,
) -> Result<Applied> {
    if ctx.is_empty() || ctx.len() % 2 != 0 {
        return Err(CdtError::Parameter);
    }
    let pairs: Vec<(u64, &Value)> = ctx
        .chunks_exact(2)
        .map(|pair| match &pair[0] {
            Value::Int(t) if *t >= 0 => Ok((*t as u64, &pair[1])),
            _ => Err(CdtError::Parameter),
        })
        .collect::<Result<_>>()?;
    let mut root = match bin {
        Some((particle, bytes)) if particle == 19 || particle == 20 => {
            decode(bytes).map_err(|_| CdtError::Parameter)?
        }
        Some(_) => return Err(CdtError::IncompatibleType),
        None if !modify => return Ok(Applied { result: Value::Nil, new_bin: None }),
        None if pairs[0].0 & CREATE_MASK == 0 => return Err(CdtError::NotApplicable),
        None => new_container(pairs[0].0 & 0x30, pairs[0].0)?,
    };
    let op_kind = match op {
        Value::List(items) if matches!(items.first(), Some(Value::Int(code)) if (64..128).contains(code)) => {
            KIND_MAP
        }
        _ => KIND_LIST,
    };
    let target = dig(&mut root, &pairs, op_kind, modify)?;
    let (particle, bytes) = match target {
        Value::List(_) => (20, encode(target)),
        Value::Map { .. } => (19, encode(target)),
        _ => return Err(CdtError::NotApplicable),
    };
    let applied = super::cdt::apply(Some((particle, &bytes)), &encode(op), modify)?;
    let Some((_, new_bytes)) = applied.new_bin else {
        return Ok(Applied { result: applied.result, new_bin: None });
    };
    *target = decode(&new_bytes).map_err(|_| CdtError::Parameter)?;
    let particle = if matches!(root, Value::Map { .. }) { 19 } else { 20 };
    Ok(Applied { result: applied.result, new_bin: Some((particle, encode(&root))) })
}

/// The element `ctx` (flat `[type, value, …]` pairs) names inside `root`, for reading (an
/// index's context); None where it names nothing or is malformed.
pub fn select<'v>(root: &'v mut Value, ctx: &[Value]) -> Option<&'v mut Value> {
    if ctx.is_empty() || ctx.len() % 2 != 0 {
        return None;
    }
    let pairs: Vec<(u64, &Value)> = ctx
        .chunks_exact(2)
        .map(|pair| match &pair[0] {
            Value::Int(t) if *t >= 0 => Some((*t as u64, &pair[1])),
            _ => None,
        })
        .collect::<Option<_>>()?;
    dig(root, &pairs, KIND_LIST, false).ok()
}

/// An empty list or map of `kind`, in the order a create pair's flags name.
fn new_container(kind: u64, ctx_type: u64) -> Result<Value> {
    match (kind, ctx_type & CREATE_MASK) {
        // 0xc0 on a list: an ordered list (its header; `cdt::held_list`).
        (KIND_LIST, 0xc0) => Ok(Value::List(vec![Value::Ext { kind: 1, data: Vec::new() }])),
        (KIND_LIST, _) => Ok(Value::List(Vec::new())),
        (KIND_MAP, flags) => {
            let order = match flags {
                0x80 => Some(1),
                0xc0 => Some(3),
                _ => None,
            };
            Ok(Value::Map { order, entries: Vec::new() })
        }
        _ => Err(CdtError::Unsupported),
    }
}

/// The element the pairs name, level by level, creating missing ones where a pair says so
/// (of the next pair's kind, or `op_kind` at the last level).
fn dig<'v>(
    mut at: &'v mut Value,
    pairs: &[(u64, &Value)],
    op_kind: u64,
    modify: bool,
) -> Result<&'v mut Value> {
    for (level, &(ctx_type, selector)) in pairs.iter().enumerate() {
        let create = (modify && ctx_type & CREATE_MASK != 0).then(|| {
            let next_kind = pairs.get(level + 1).map_or(op_kind, |(next, _)| next & 0x30);
            new_container(next_kind, ctx_type)
        });
        let create = create.transpose()?;
        at = match (at, ctx_type & 0x30) {
            (Value::List(items), KIND_LIST) => list_child(items, ctx_type, selector, create)?,
            (Value::Map { entries, .. }, KIND_MAP) => map_child(entries, ctx_type, selector, create)?,
            _ => return Err(CdtError::NotApplicable),
        };
    }
    Ok(at)
}

fn index_arg(selector: &Value) -> Result<i64> {
    match selector {
        Value::Int(i) => Ok(*i),
        _ => Err(CdtError::Parameter),
    }
}

/// An index or rank naming one of `len` items (negative counts from the end).
fn exact(index: i64, len: usize) -> Option<usize> {
    let at = if index < 0 { len as i64 + index } else { index };
    (0..len as i64).contains(&at).then_some(at as usize)
}

fn rank_position(values: &[&Value], rank: i64) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| canonical_cmp(values[a], values[b]).then(a.cmp(&b)));
    exact(rank, values.len()).map(|r| order[r])
}

/// The element of a list a pair names; `create`: what to put at a missing index.
fn list_child<'v>(
    items: &'v mut Vec<Value>,
    ctx_type: u64,
    selector: &Value,
    create: Option<Value>,
) -> Result<&'v mut Value> {
    let found = match ctx_type & 0x0f {
        0 => {
            let index = index_arg(selector)?;
            match exact(index, items.len()) {
                Some(at) => Some(at),
                None if create.is_some() && index >= 0 => {
                    let index = index as usize;
                    let padded = ctx_type & CREATE_MASK == 0x80;
                    if index > items.len() && !padded {
                        return Err(CdtError::NotApplicable);
                    }
                    if index - items.len() > super::cdt::LIST_PAD_MAX {
                        return Err(CdtError::Parameter);
                    }
                    items.resize(index, Value::Nil);
                    items.extend(create);
                    Some(index)
                }
                None => None,
            }
        }
        1 => rank_position(&items.iter().collect::<Vec<_>>(), index_arg(selector)?),
        3 => items.iter().position(|v| canonical_cmp(v, selector).is_eq()),
        _ => return Err(CdtError::NotApplicable),
    };
    let at = found.ok_or(CdtError::NotApplicable)?;
    Ok(&mut items[at])
}

/// The value of a map entry a pair names; `create`: what to put at a missing key.
fn map_child<'v>(
    entries: &'v mut Vec<(Value, Value)>,
    ctx_type: u64,
    selector: &Value,
    create: Option<Value>,
) -> Result<&'v mut Value> {
    let found = match ctx_type & 0x0f {
        0 => exact(index_arg(selector)?, entries.len()),
        1 => rank_position(&entries.iter().map(|(_, v)| v).collect::<Vec<_>>(), index_arg(selector)?),
        // Nested maps keep the key order they were written in: searched, not bisected.
        2 => match entries.iter().position(|(k, _)| canonical_cmp(k, selector).is_eq()) {
            Some(at) => Some(at),
            None => match create {
                Some(value) => {
                    let at = entries.iter().position(|(k, _)| canonical_cmp(k, selector).is_gt());
                    entries.insert(at.unwrap_or(entries.len()), (selector.clone(), value));
                    at.or(Some(entries.len() - 1))
                }
                None => None,
            },
        },
        3 => entries.iter().position(|(_, v)| canonical_cmp(v, selector).is_eq()),
        _ => return Err(CdtError::NotApplicable),
    };
    let at = found.ok_or(CdtError::NotApplicable)?;
    Ok(&mut entries[at].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_op(bin: Option<(u8, &[u8])>, op: &[u8], modify: bool) -> Result<Applied> {
        super::super::cdt::apply(bin, op, modify)
    }

    fn ctx_op(ctx: Vec<Value>, op: Vec<Value>) -> Vec<u8> {
        encode(&Value::List(vec![Value::Int(0xff), Value::List(ctx), Value::List(op)]))
    }

    fn s(text: &str) -> Value {
        let mut payload = vec![3];
        payload.extend_from_slice(text.as_bytes());
        Value::Bytes { payload, bin: false }
    }

    #[test]
    fn ops_reach_nested_lists_and_maps_and_write_back() {
        // {"a": [1, 2], "b": {"x": 7}}
        let bin = Value::Map {
            order: None,
            entries: vec![
                (s("a"), Value::List(vec![Value::Int(1), Value::Int(2)])),
                (s("b"), Value::Map { order: None, entries: vec![(s("x"), Value::Int(7))] }),
            ],
        };
        let bytes = encode(&bin);
        // Append 3 to the list at key "a": the result is the new size.
        let append = ctx_op(vec![Value::Int(0x22), s("a")], vec![Value::Int(1), Value::Int(3)]);
        let applied = list_op(Some((19, &bytes)), &append, true).unwrap();
        assert_eq!(applied.result, Value::Int(3));
        let Value::Map { entries, .. } = decode(&applied.new_bin.unwrap().1).unwrap() else { panic!() };
        assert_eq!(entries[0].1, Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)]));
        // Size of the map at key "b" (a read: nothing written).
        let size = ctx_op(vec![Value::Int(0x22), s("b")], vec![Value::Int(96)]);
        let applied = list_op(Some((19, &bytes)), &size, false).unwrap();
        assert_eq!((applied.result, applied.new_bin), (Value::Int(1), None));
        // A missing key is not applicable, unless the pair creates it.
        let put = vec![Value::Int(67), s("k"), Value::Int(5), Value::Int(0)];
        let missing = ctx_op(vec![Value::Int(0x22), s("c")], put.clone());
        assert_eq!(list_op(Some((19, &bytes)), &missing, true).unwrap_err(), CdtError::NotApplicable);
        let created = ctx_op(vec![Value::Int(0x22 | 0x80), s("c")], put);
        let applied = list_op(Some((19, &bytes)), &created, true).unwrap();
        let Value::Map { entries, .. } = decode(&applied.new_bin.unwrap().1).unwrap() else { panic!() };
        assert_eq!(entries[2].1, Value::Map { order: Some(1), entries: vec![(s("k"), Value::Int(5))] });
        // What is created is of the kind the op works on: a list for a list op.
        let list_created = ctx_op(vec![Value::Int(0x22 | 0x40), s("d")], vec![Value::Int(1), Value::Int(5)]);
        let applied = list_op(Some((19, &bytes)), &list_created, true).unwrap();
        let Value::Map { entries, .. } = decode(&applied.new_bin.unwrap().1).unwrap() else { panic!() };
        assert_eq!(entries[2], (s("d"), Value::List(vec![Value::Int(5)])));
        // A list pair on a map, or a context into a scalar, is not applicable.
        let wrong = ctx_op(vec![Value::Int(0x10), Value::Int(0)], vec![Value::Int(16)]);
        assert_eq!(list_op(Some((19, &bytes)), &wrong, false).unwrap_err(), CdtError::NotApplicable);
        let scalar = ctx_op(vec![Value::Int(0x22), s("b"), Value::Int(0x22), s("x")], vec![Value::Int(16)]);
        assert_eq!(list_op(Some((19, &bytes)), &scalar, false).unwrap_err(), CdtError::NotApplicable);
    }
}
