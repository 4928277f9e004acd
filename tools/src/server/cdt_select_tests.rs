//! Tests of `cdt_select`: each selection against the client's documented examples.

use super::*;

fn items(values: &[Value]) -> Items<'_> {
    Items { values: values.iter().collect(), keys: None }
}

fn ints(of: &[i64]) -> Vec<Value> {
    of.iter().map(|&i| Value::Int(i)).collect()
}

/// The values `by` picks with `args`, as VALUE results.
fn values_of(list: &[Value], by: By, args: &[Value], return_type: i64) -> Value {
    let items = items(list);
    let picked = pick(&items, by, args).unwrap();
    result(&items, picked, return_type).unwrap().0
}

#[test]
fn value_relative_rank_ranges_match_the_clients_examples() {
    // The client's documented selections for the list [0, 4, 5, 9, 11, 15], in the order
    // the real server's heap gives them: descending where the range is no nearer the top
    // (all six from rank 0; two from rank 1), else ascending.
    let list = ints(&[0, 4, 5, 9, 11, 15]);
    for (value, rank, want) in [
        (5, 0, &[5, 9, 11, 15][..]),
        (5, 1, &[9, 11, 15]),
        (5, -1, &[4, 5, 9, 11, 15]),
        (3, 0, &[4, 5, 9, 11, 15]),
        (3, 3, &[11, 15]),
        (3, -3, &[15, 11, 9, 5, 4, 0]),
    ] {
        let got = values_of(&list, By::ValueRelRankRange, &[Value::Int(value), Value::Int(rank)], 7);
        assert_eq!(got, Value::List(ints(want)), "({value}, {rank})");
    }
    let counted = values_of(&list, By::ValueRelRankRange, &ints(&[5, -1, 2]), 7);
    assert_eq!(counted, Value::List(ints(&[5, 4])));
    // The client suite's own case (`cdt_list`): ranks 2 and 3 of seven values, highest
    // first; ranks 4 to the end, lowest first.
    let seven = [
        Value::string(b"0"),
        Value::Int(9),
        Value::Int(8),
        Value::Int(7),
        Value::Int(1),
        Value::F64(2.1),
        Value::Int(-1),
    ];
    assert_eq!(values_of(&seven, By::RankRange, &ints(&[2, 2]), 7), Value::List(ints(&[8, 7])));
    let top = values_of(&seven, By::RankRange, &ints(&[4]), 7);
    assert_eq!(top, Value::List(vec![Value::Int(9), Value::string(b"0"), Value::F64(2.1)]));
    // Their indexes come in index order; as a map's entries they come in rank order.
    assert_eq!(values_of(&seven, By::RankRange, &ints(&[2, 2]), 1), Value::List(ints(&[2, 3])));
}

#[test]
fn ranks_values_and_intervals_pick_and_invert() {
    let list = ints(&[7, 3, 9, 3, 1]);
    assert_eq!(values_of(&list, By::Rank, &ints(&[0]), 7), Value::Int(1));
    assert_eq!(values_of(&list, By::Rank, &ints(&[-1]), 1), Value::Int(2), "the index of the largest");
    assert_eq!(values_of(&list, By::Rank, &ints(&[9]), 7), Value::Nil, "no such rank");
    assert_eq!(values_of(&list, By::RankRange, &ints(&[1, 2]), 7), Value::List(ints(&[3, 3])));
    assert_eq!(values_of(&list, By::Value, &ints(&[3]), 1), Value::List(ints(&[1, 3])));
    assert_eq!(values_of(&list, By::Value, &ints(&[3]), 3), Value::List(ints(&[1, 2])), "ranks of the 3s");
    assert_eq!(values_of(&list, By::ValueList, &[Value::List(ints(&[9, 1]))], 5), Value::Int(2));
    assert_eq!(values_of(&list, By::ValueInterval, &ints(&[3, 8]), 7), Value::List(ints(&[7, 3, 3])));
    assert_eq!(values_of(&list, By::ValueInterval, &ints(&[4]), 7), Value::List(ints(&[7, 9])), "no end");
    let inverted = values_of(&list, By::Value, &ints(&[3]), 7 | RETURN_INVERTED);
    assert_eq!(inverted, Value::List(ints(&[7, 9, 1])), "every other item, in index order");
    assert_eq!(values_of(&list, By::Value, &ints(&[4]), 13), Value::Bool(false));
    assert_eq!(values_of(&list, By::Rank, &ints(&[0]), 4), Value::Int(4), "reverse rank of the smallest");
}

#[test]
fn map_selections_by_key_and_value_return_keys_values_and_entries() {
    let keys = [Value::Int(1), Value::Int(2), Value::Int(3), Value::Int(4)];
    let values = ints(&[40, 10, 30, 10]);
    let items = Items { values: values.iter().collect(), keys: Some(keys.iter().collect()) };
    let run = |by, args: &[Value], return_type| {
        let picked = pick(&items, by, args).unwrap();
        result(&items, picked, return_type).unwrap()
    };
    assert_eq!(run(By::KeyInterval, &ints(&[2, 4]), 6).0, Value::List(ints(&[2, 3])));
    assert_eq!(run(By::KeyList, &[Value::List(ints(&[4, 9]))], 7).0, Value::List(ints(&[10])));
    assert_eq!(run(By::KeyRelIndexRange, &ints(&[2, 1]), 6).0, Value::List(ints(&[3, 4])));
    assert_eq!(run(By::IndexRange, &ints(&[-2]), 6).0, Value::List(ints(&[3, 4])));
    let (top, positions) = run(By::RankRange, &ints(&[-1, 1]), 8);
    assert_eq!(top, Value::Map { order: Some(8), entries: vec![(Value::Int(1), Value::Int(40))] });
    assert_eq!(positions, vec![0]);
    let (_, positions) = run(By::Value, &ints(&[10]), 0);
    assert_eq!(positions, vec![1, 3], "what a remove takes, in index order");
    // A rank range of a map answers in rank order (keys 2, 4, 3 for ranks 0..3), except
    // as an ordered map, which is in key order; what it removes is in index order.
    let (keys_by_rank, positions) = run(By::RankRange, &ints(&[0, 3]), 6);
    assert_eq!((keys_by_rank, positions), (Value::List(ints(&[2, 4, 3])), vec![1, 2, 3]));
    let (ordered, _) = run(By::RankRange, &ints(&[0, 3]), 17);
    let Value::Map { entries, .. } = ordered else { panic!("a map") };
    assert_eq!(entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), ints(&[2, 3, 4]));
    assert!(pick(&items, By::KeyList, &[Value::Int(1)]).is_err(), "a key list that is not a list");
    assert!(pick(&Items { values: vec![], keys: None }, By::KeyInterval, &ints(&[1])).is_err());
}
