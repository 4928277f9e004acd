//! spike-server's MessagePack codec, list/map (path ops included), HLL, bit and string
//! operations and filter expressions, on bytes a client sends: a decoded value must encode to bytes that decode
//! to the same encoding, no op on any bin and no expression on a record may panic, a sketch
//! an HLL op stores can be counted, and a blob a bit op stores can be read. Input: a selector byte (bit 0: map bin, bit 1: a modifying op), a
//! 16-bit length, the bin's bytes, then the op's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spike_tools::server::bins::StoredRecord;
use spike_tools::server::{bits, cdt, exp_op, filter, hll, msgpack, string_ops};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = msgpack::decode(data) {
        let encoded = msgpack::encode(&value);
        let again = msgpack::decode(&encoded).expect("an encoded value decodes");
        assert_eq!(msgpack::encode(&again), encoded, "encoding is not stable");
    }
    let mut record = StoredRecord::default();
    record.set_bin(b"n", 1, &7i64.to_be_bytes());
    record.set_bin(b"s", 3, b"text");
    record.set_bin(b"l", cdt::PARTICLE_LIST, &[0x92, 0x01, 0x02]);
    record.set_bin(b"b", bits::PARTICLE_BLOB, &[0xf0, 0x0f, 0x55]);
    let subject = filter::Subject {
        record: &record,
        generation: 3,
        void_time: 0,
        last_update_ms: 1,
        digest: &[7; 20],
        size_bytes: 64,
    };
    let _ = filter::passes(data, &subject);
    // The same bytes as an expression op's value: read, and modify of a held and a new bin.
    let _ = exp_op::read(data, &subject);
    let _ = exp_op::modify(data, b"n", &subject);
    let _ = exp_op::modify(data, b"new", &subject);
    let Some((&selector, rest)) = data.split_first() else { return };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else { return };
    let bin_len = (u16::from_be_bytes(*len) as usize).min(rest.len());
    let (bin, op) = rest.split_at(bin_len);
    let particle = if selector & 1 != 0 { cdt::PARTICLE_MAP } else { cdt::PARTICLE_LIST };
    let modify = selector & 2 != 0;
    // Through `filter::apply_cdt`, so that path ops (whose expressions read the record)
    // are covered as well as the ops `cdt::apply` serves.
    if let Ok(applied) = filter::apply_cdt(Some((particle, bin)), op, modify, &subject) {
        if let Some((particle, bytes)) = applied.new_bin {
            // What an op stores must be a bin the next op can read.
            let _ = cdt::apply(Some((particle, &bytes)), &[0x91, 0x10], false);
            assert!(msgpack::decode(&bytes).is_ok(), "an op stored bytes that do not decode");
        }
    }
    let _ = filter::apply_cdt(None, op, modify, &subject);
    // String ops on the bin's bytes as a string (and as the list or map of a context op),
    // and on no bin: what a modify stores is a string, or a list or map that decodes.
    for held in [Some((string_ops::PARTICLE_STRING, bin)), Some((particle, bin)), None] {
        if let Ok(string_ops::Applied { new_bin: Some((stored, bytes)), .. }) = string_ops::apply(held, op, modify) {
            match stored {
                string_ops::PARTICLE_STRING => assert!(std::str::from_utf8(&bytes).is_ok(), "a string op stored bad UTF-8"),
                _ => assert!(msgpack::decode(&bytes).is_ok(), "a string op in a context stored bytes that do not decode"),
            }
        }
    }
    // HLL ops on the bin as given, on an empty 16-register sketch, and on no bin.
    let empty_sketch = [&[0u8, 4, 0][..], &[0; 8], &[0; 12]].concat();
    for bin in [Some(bin), Some(&empty_sketch[..]), None] {
        if let Ok(hll::Applied { new_bin: Some(bytes), .. }) = hll::apply(bin.map(|b| (hll::PARTICLE_HLL, b)), op, modify) {
            let count = hll::apply(Some((hll::PARTICLE_HLL, &bytes)), &[0x91, 0x32], false);
            assert!(count.is_ok(), "an HLL op stored a sketch that does not count: {count:?}");
        }
    }
    // Bit ops on the bin's bytes as a blob, and on no bin.
    for bin in [Some(bin), None] {
        if let Ok(bits::Applied { new_bin: Some(bytes), .. }) = bits::apply(bin.map(|b| (bits::PARTICLE_BLOB, b)), bits::PARTICLE_BLOB, op, modify) {
            let count = bits::apply(Some((bits::PARTICLE_BLOB, &bytes)), bits::PARTICLE_BLOB, &[0x93, 0x33, 0x00, 0x01], false);
            assert!(bytes.is_empty() || count.is_ok(), "a bit op stored a blob whose first bit does not read: {count:?}");
        }
    }
});
