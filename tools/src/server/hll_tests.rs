//! Tests of `hll`: reference vectors, register packing, estimates and refusal codes.

use super::*;

fn op(code: i64, args: Vec<Value>) -> Vec<u8> {
    let mut items = vec![Value::Int(code)];
    items.extend(args);
    encode(&Value::List(items))
}

fn ints(range: std::ops::Range<i64>) -> Value {
    Value::List(range.map(Value::Int).collect())
}

fn hll_arg(bytes: &[u8]) -> Value {
    let mut payload = vec![PARTICLE_HLL];
    payload.extend_from_slice(bytes);
    Value::Bytes { payload, bin: false }
}

/// A bin of `index_bits`, `minhash_bits` holding the integers of `range`.
fn sketch_of(index_bits: i64, minhash_bits: i64, range: std::ops::Range<i64>) -> Vec<u8> {
    let add = op(1, vec![ints(range), Value::Int(index_bits), Value::Int(minhash_bits), Value::Int(0)]);
    apply(None, &add, true).unwrap().new_bin.unwrap()
}

fn read(bin: &[u8], code: i64, args: Vec<Value>) -> Value {
    apply(Some((PARTICLE_HLL, bin)), &op(code, args), false).unwrap().result.unwrap()
}

fn int_of(v: Value) -> i64 {
    match v {
        Value::Int(i) => i,
        other => panic!("{other:?}"),
    }
}

#[test]
fn murmur3_matches_the_reference_vectors() {
    // From the reference implementation (Python's mmh3.hash128, x64, seed 0).
    assert_eq!(murmur3_x64_128(b""), (0, 0));
    assert_eq!(murmur3_x64_128(b"hello"), (0xcbd8a7b341bd9b02, 0x5b1e906a48ae1d19));
    assert_eq!(murmur3_x64_128(b"0123456789abcdef"), (0x4be06d94cf4ad1a7, 0x87c35b5c63a708da));
    assert_eq!(murmur3_x64_128(b"0123456789abcdefXYZ"), (0x99d375026c4a901d, 0x4e69e256eaf89cf3));
    assert_eq!(murmur3_x64_128(b"\xa6\x03hello"), (0x06016832fb5cbd9a, 0x2e411edf4433b156));
}

#[test]
fn registers_pack_most_significant_bit_first_at_every_width() {
    let mut rng = spike::device::sim::SimRng::new(5);
    for (index_bits, minhash_bits) in [(4u8, 0u8), (5, 4), (10, 7), (12, 51), (16, 0), (13, 51)] {
        let mut sketch = Sketch::new(index_bits, minhash_bits);
        let mask = (1u64 << sketch.register_bits()) - 1;
        let mut model = vec![0u64; sketch.register_count() as usize];
        for _ in 0..4 * model.len() {
            let r = rng.below(model.len() as u64) as u32;
            let v = rng.next_u64() & mask;
            sketch.set(r, v);
            model[r as usize] = v;
        }
        for (r, v) in model.iter().enumerate() {
            assert_eq!(sketch.get(r as u32), *v, "({index_bits}, {minhash_bits}) register {r}");
        }
    }
    // Register 0 of a 6-bit sketch is the top 6 bits of the first byte.
    let mut sketch = Sketch::new(4, 0);
    sketch.set(0, 0b10_0001);
    assert_eq!(sketch.registers[0], 0b1000_0100);
}

#[test]
fn counts_unions_and_intersections_are_within_the_sketch_error() {
    let near = |got: i64, want: f64, tolerance: f64| {
        assert!((got as f64 - want).abs() <= want * tolerance, "{got} not within {tolerance} of {want}");
    };
    let a = sketch_of(12, 0, 0..20_000);
    near(int_of(read(&a, 50, vec![])), 20_000.0, 0.05);
    let b = sketch_of(12, 0, 10_000..30_000);
    near(int_of(read(&a, 52, vec![Value::List(vec![hll_arg(&b)])])), 30_000.0, 0.05);
    near(int_of(read(&a, 53, vec![Value::List(vec![hll_arg(&b)])])), 10_000.0, 0.25);
    let (c, d) = (sketch_of(12, 16, 0..20_000), sketch_of(12, 16, 10_000..30_000));
    near(int_of(read(&c, 53, vec![hll_arg(&d)])), 10_000.0, 0.1);
    match read(&c, 54, vec![hll_arg(&d)]) {
        Value::F64(j) => assert!((j - 1.0 / 3.0).abs() < 0.05, "similarity {j}"),
        other => panic!("{other:?}"),
    }
    let small = sketch_of(4, 0, 0..3);
    near(int_of(read(&small, 50, vec![])), 3.0, 0.34);
    assert_eq!(read(&small, 55, vec![]), Value::List(vec![Value::Int(4), Value::Int(0)]));
    assert_eq!(read(&a, 56, vec![ints(0..100)]), Value::Int(1), "every element added may be contained");
}

#[test]
fn adds_count_changed_registers_and_a_refresh_caches_the_count() {
    let bin = sketch_of(8, 0, 0..10);
    let again = apply(Some((PARTICLE_HLL, &bin)), &op(1, vec![ints(0..10)]), true).unwrap();
    assert_eq!(again.result, Some(Value::Int(0)), "the same elements change nothing");
    let refreshed = apply(Some((PARTICLE_HLL, &bin)), &op(3, vec![]), true).unwrap();
    let count = refreshed.result.clone().unwrap();
    let cached = refreshed.new_bin.unwrap();
    assert_eq!(u64::from_le_bytes(cached[3..11].try_into().unwrap()) as i64, int_of(count));
    let folded = apply(Some((PARTICLE_HLL, &bin)), &op(4, vec![Value::Int(4)]), true).unwrap();
    assert_eq!(folded.new_bin.unwrap().len(), HEADER_LEN + registers_len(4, 0));
    let union = read(&bin, 51, vec![Value::List(vec![hll_arg(&sketch_of(6, 0, 5..50))])]);
    let Value::Bytes { payload, .. } = union else { panic!() };
    assert_eq!((payload[0], payload[2]), (PARTICLE_HLL, 6), "the union takes the fewest index bits");
}

#[test]
fn refusals_carry_the_real_servers_result_codes() {
    let bin = sketch_of(8, 0, 0..10);
    let hll = Some((PARTICLE_HLL, &bin[..]));
    let code = |bin: Option<(u8, &[u8])>, op: Vec<u8>, modify| apply(bin, &op, modify).unwrap_err().code();
    assert_eq!(code(hll, op(0, vec![Value::Int(8), Value::Int(0), Value::Int(1)]), true), 6);
    assert_eq!(code(None, op(2, vec![hll_arg(&bin), Value::Int(2)]), true), 17);
    assert_eq!(code(None, op(3, vec![]), true), 17, "refresh of a missing bin");
    assert_eq!(code(None, op(4, vec![Value::Int(4)]), true), 17, "fold of a missing bin");
    assert_eq!(code(None, op(0, vec![]), true), 26, "init without index bits");
    assert_eq!(code(None, op(0, vec![Value::Int(3)]), true), 4, "3 index bits");
    assert_eq!(code(None, op(0, vec![Value::Int(16), Value::Int(51)]), true), 4, "67 bits");
    assert_eq!(code(None, op(0, vec![Value::Int(8), Value::Int(0), Value::Int(3)]), true), 4, "both flags");
    assert_eq!(code(None, op(1, vec![Value::List(vec![])]), true), 4, "no elements");
    assert_eq!(code(None, op(1, vec![Value::List(vec![Value::List(vec![])])]), true), 4, "a list element");
    assert_eq!(code(Some((3, b"str")), op(50, vec![]), false), 12);
    assert_eq!(code(Some((PARTICLE_HLL, b"\0\x08")), op(50, vec![]), false), 1, "a truncated sketch");
    assert_eq!(code(hll, op(50, vec![]), true), 4, "a read code as a modify op");
    let minhash = sketch_of(8, 8, 0..10);
    assert_eq!(code(Some((PARTICLE_HLL, &minhash)), op(4, vec![Value::Int(4)]), true), 26);
    let wide = sketch_of(10, 0, 0..10);
    assert_eq!(code(hll, op(2, vec![hll_arg(&sketch_of(6, 0, 0..3))]), true), 26, "a narrowing union");
    assert!(apply(Some((PARTICLE_HLL, &wide)), &op(2, vec![hll_arg(&bin), Value::Int(8)]), true).is_ok());
    let no_fail = op(0, vec![Value::Int(8), Value::Int(0), Value::Int(1 | 4)]);
    assert_eq!(apply(hll, &no_fail, true).unwrap(), Applied { result: None, new_bin: None });
    assert_eq!(apply(None, &op(50, vec![]), false).unwrap(), Applied { result: None, new_bin: None });
}
