//! Path ops run through `filter::apply_cdt`, so that their expressions are evaluated as
//! on a request. Expected answers follow the real server's walk (`as/src/base/cdt.c`,
//! `cdt_select_*`), including its error codes.

use super::*;
use crate::server::bins::StoredRecord;
use crate::server::filter::{apply_cdt, Subject};
use crate::server::msgpack::{decode, encode};

fn s(text: &str) -> Value {
    Value::string(text.as_bytes())
}

fn map(entries: Vec<(Value, Value)>) -> Value {
    let mut entries = entries;
    entries.sort_by(|a, b| canonical_cmp(&a.0, &b.0));
    Value::Map { order: None, entries }
}

fn ints(of: &[i64]) -> Value {
    Value::List(of.iter().map(|i| Value::Int(*i)).collect())
}

fn exp(code: i64, args: Vec<Value>) -> Value {
    let mut items = vec![Value::Int(code)];
    items.extend(args);
    Value::List(items)
}

/// `[122, type, part]`: part 0 map key, 1 value, 2 index; types 2 int, 3 string, 5 map.
fn var(wanted: i64, part: i64) -> Value {
    exp(122, vec![Value::Int(wanted), Value::Int(part)])
}

fn all() -> (i64, Value) {
    (4, Value::Bool(true))
}

fn filter(expression: Value) -> (i64, Value) {
    (4, expression)
}

fn key(k: &str) -> (i64, Value) {
    (0x22, s(k))
}

fn path_op(contexts: &[(i64, Value)], flags: i64, modify: Option<Value>) -> Vec<u8> {
    let pairs = contexts.iter().flat_map(|(t, v)| [Value::Int(*t), v.clone()]).collect();
    let mut items = vec![Value::Int(PATH_MARKER), Value::List(pairs), Value::Int(flags)];
    items.extend(modify);
    encode(&Value::List(items))
}

/// `apply_cdt` with a record of no other bins as the expressions' subject.
fn apply_on_empty_record(
    bin: Option<(u8, &[u8])>,
    op: &[u8],
    modify: bool,
) -> std::result::Result<crate::server::cdt::Applied, CdtError> {
    let record = StoredRecord::default();
    let subject = Subject {
        record: &record,
        generation: 1,
        void_time: 0,
        last_update_ms: 0,
        digest: &[0; 20],
        size_bytes: 0,
    };
    apply_cdt(bin, op, modify, &subject)
}

/// Runs the op on `bin` (a map or list value); the result and the bin's new value.
fn run(bin: &Value, op: &[u8], modify: bool) -> std::result::Result<(Value, Option<Value>), CdtError> {
    let (particle, bytes) = bin.to_particle();
    let applied = apply_on_empty_record(Some((particle, &bytes)), op, modify)?;
    Ok((applied.result, applied.new_bin.map(|(_, b)| decode(&b).unwrap())))
}

fn books() -> Value {
    let book = |title: &str, price: f64| map(vec![(s("title"), s(title)), (s("price"), Value::F64(price))]);
    map(vec![(
        s("book"),
        Value::List(vec![book("Sayings", 8.95), book("Sword", 12.99), book("Moby Dick", 8.99)]),
    )])
}

/// `price` of the map a loop variable holds, as a float.
fn price_of_child() -> Value {
    // [127, float, 0 (read, CDT), [map get_by_key (97), return VALUE (7), "price"], child]
    exp(127, vec![Value::Int(7), Value::Int(0), exp(97, vec![Value::Int(7), s("price")]), var(5, 1)])
}

#[test]
fn a_filter_on_each_child_selects_the_leaves_it_reaches() {
    let cheap = filter(exp(6, vec![price_of_child(), Value::F64(10.0)]));
    let title = filter(exp(1, vec![var(3, 0), s("title")]));
    let op = path_op(&[key("book"), cheap.clone(), title.clone()], 1, None);
    assert_eq!(run(&books(), &op, false).unwrap().0, Value::List(vec![s("Sayings"), s("Moby Dick")]));
    // Keys, and keys with values, of the same leaves.
    let op = path_op(&[key("book"), cheap.clone(), title.clone()], 2, None);
    assert_eq!(run(&books(), &op, false).unwrap().0, Value::List(vec![s("title"), s("title")]));
    let op = path_op(&[key("book"), cheap.clone(), title], 3, None);
    let pairs = vec![s("title"), s("Sayings"), s("title"), s("Moby Dick")];
    assert_eq!(run(&books(), &op, false).unwrap().0, Value::List(pairs));
    // The pruned tree keeps the shape: the map, its list, the two cheap books whole.
    let op = path_op(&[key("book"), cheap], 0, None);
    let Value::Map { entries, .. } = run(&books(), &op, false).unwrap().0 else { panic!("a map") };
    let Value::List(kept) = &entries[0].1 else { panic!("a list") };
    assert_eq!(kept.len(), 2);
}

#[test]
fn index_rank_value_and_key_list_contexts_pick_as_nested_contexts_do() {
    let bin = map(vec![
        (s("n"), ints(&[30, 10, 20])),
        (s("m"), map(vec![(s("a"), Value::Int(5)), (s("b"), Value::Int(1))])),
    ]);
    let values = |contexts: &[(i64, Value)]| run(&bin, &path_op(contexts, 1, None), false).map(|r| r.0);
    assert_eq!(values(&[key("n"), (0x10, Value::Int(-1))]), Ok(ints(&[20])));
    assert_eq!(values(&[key("n"), (0x11, Value::Int(0))]), Ok(ints(&[10])));
    assert_eq!(values(&[key("n"), (0x13, Value::Int(30))]), Ok(ints(&[30])));
    assert_eq!(values(&[key("n"), (0x10, Value::Int(9))]), Ok(ints(&[])));
    assert_eq!(values(&[key("m"), (0x21, Value::Int(0))]), Ok(ints(&[1])));
    assert_eq!(values(&[key("m"), (0x2a, Value::List(vec![s("b"), s("z")]))]), Ok(ints(&[1])));
    // An AND filter refines the context before it: keys a and b, value above 2.
    let above_two = (0x204, exp(3, vec![var(2, 1), Value::Int(2)]));
    assert_eq!(
        values(&[key("m"), (0x2a, Value::List(vec![s("a"), s("b")])), above_two.clone()]),
        Ok(ints(&[5]))
    );
    // Index loop variable: the first two elements.
    assert_eq!(values(&[key("n"), filter(exp(5, vec![var(2, 2), Value::Int(2)]))]), Ok(ints(&[30, 10])));
    // A map context on a list, an AND on a filter, an AND first: PARAMETER.
    assert_eq!(values(&[key("n"), key("x")]), Err(CdtError::Parameter));
    assert_eq!(values(&[key("n"), all(), above_two.clone()]), Err(CdtError::Parameter));
    assert_eq!(values(&[above_two]), Err(CdtError::Parameter));
    // Keys of a list's elements: INCOMPATIBLE_TYPE, or nothing under NO_FAIL.
    let op = path_op(&[key("n"), all()], 2, None);
    assert_eq!(run(&bin, &op, false).map(|r| r.0), Err(CdtError::IncompatibleType));
    let op = path_op(&[key("n"), all()], 2 | 0x10, None);
    assert_eq!(run(&bin, &op, false).map(|r| r.0), Ok(ints(&[])));
}

#[test]
fn an_unknown_filter_fails_unless_no_fail_makes_it_false() {
    let bin = map(vec![(s("v"), Value::List(vec![Value::Int(1), s("x"), Value::Int(3)]))]);
    let above_one = filter(exp(3, vec![var(2, 1), Value::Int(1)]));
    let op = path_op(&[key("v"), above_one.clone()], 1, None);
    assert_eq!(run(&bin, &op, false).map(|r| r.0), Err(CdtError::Parameter));
    let op = path_op(&[key("v"), above_one], 1 | 0x10, None);
    assert_eq!(run(&bin, &op, false).map(|r| r.0), Ok(ints(&[3])));
}

#[test]
fn modify_replaces_or_removes_each_leaf_and_keeps_ordered_lists_sorted() {
    let bin = map(vec![(s("v"), ints(&[1, 5, 10, 20])), (s("w"), ints(&[7]))]);
    let double = exp(22, vec![var(2, 1), Value::Int(2)]); // mul
    let op = path_op(&[key("v"), all()], 4, Some(double.clone()));
    let (result, new) = run(&bin, &op, true).unwrap();
    assert_eq!(result, Value::Nil);
    assert_eq!(new, Some(map(vec![(s("v"), ints(&[2, 10, 20, 40])), (s("w"), ints(&[7]))])));
    // remove_result drops the leaves the filter keeps.
    let at_least_ten = filter(exp(4, vec![var(2, 1), Value::Int(10)]));
    let op = path_op(&[key("v"), at_least_ten], 4, Some(exp(100, vec![])));
    assert_eq!(
        run(&bin, &op, true).unwrap().1,
        Some(map(vec![(s("v"), ints(&[1, 5])), (s("w"), ints(&[7]))]))
    );
    // An ordered list stays in value order after its values change.
    let ordered =
        Value::List(vec![Value::Ext { kind: 1, data: vec![] }, Value::Int(1), Value::Int(2), Value::Int(3)]);
    let negate = exp(22, vec![var(2, 1), Value::Int(-1)]);
    let op = path_op(&[all()], 4, Some(negate));
    let expected = Value::List(vec![
        Value::Ext { kind: 1, data: vec![] },
        Value::Int(-3),
        Value::Int(-2),
        Value::Int(-1),
    ]);
    assert_eq!(run(&ordered, &op, true).unwrap().1, Some(expected));
    // A leaf the expression cannot take: UNKNOWN, or left as it is under NO_FAIL.
    let mixed = map(vec![(s("v"), Value::List(vec![Value::Int(1), s("x")]))]);
    let op = path_op(&[key("v"), all()], 4, Some(double.clone()));
    assert_eq!(run(&mixed, &op, true).map(|r| r.1), Err(CdtError::Unknown));
    let op = path_op(&[key("v"), all()], 4 | 0x10, Some(double));
    let kept = map(vec![(s("v"), Value::List(vec![Value::Int(2), s("x")]))]);
    assert_eq!(run(&mixed, &op, true).unwrap().1, Some(kept));
    // Modify on a read op, or without its expression: PARAMETER.
    let op = path_op(&[all()], 4, Some(exp(100, vec![])));
    assert_eq!(run(&ordered, &op, false).map(|r| r.1), Err(CdtError::Parameter));
    assert_eq!(run(&ordered, &path_op(&[all()], 4, None), true).map(|r| r.1), Err(CdtError::Parameter));
}

#[test]
fn malformed_paths_and_bins_of_other_types_are_refused() {
    let list = ints(&[1]);
    let refused = |op: Vec<u8>| run(&list, &op, false).map(|r| r.0);
    assert_eq!(refused(path_op(&[], 1, None)), Err(CdtError::Parameter));
    assert_eq!(refused(path_op(&[all()], 9, None)), Err(CdtError::Parameter));
    assert_eq!(refused(path_op(&[(4, Value::Int(3))], 1, None)), Err(CdtError::Parameter));
    assert_eq!(refused(path_op(&[(0x15, Value::Nil)], 1, None)), Err(CdtError::Parameter));
    let deep: Vec<(i64, Value)> = (0..65).map(|_| all()).collect();
    assert_eq!(refused(path_op(&deep, 1, None)), Err(CdtError::Parameter));
    let op = path_op(&[all()], 1, None);
    assert_eq!(
        apply_on_empty_record(Some((1, &[0; 8])), &op, false).map(|a| a.result),
        Err(CdtError::IncompatibleType)
    );
    assert_eq!(apply_on_empty_record(None, &op, false).map(|a| a.result), Ok(Value::Nil));
}
