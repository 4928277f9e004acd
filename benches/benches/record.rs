//! Encoding a record into a write buffer and decoding (verifying) it on read, for small,
//! typical and large values: both are one pass over the bytes plus one xxh3, so they
//! should run near memory bandwidth for large values.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spike::offline::format::{decode_record, encode_record, record_size, RecordMeta};
use std::hint::black_box;

const VALUE_SIZES: [(&str, usize); 3] = [("100B", 100), ("1KiB", 1024), ("16KiB", 16 * 1024)];
const KEY: &[u8] = b"user:0000000042";

fn meta() -> RecordMeta {
    RecordMeta {
        digest: [0x5A; 20],
        generation: 7,
        void_time: 0,
        last_update_ms: 1_700_000_000_000,
        tombstone: false,
        wblock_seq_lo: 3,
        shared_tag: false,
    }
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (name, len) in VALUE_SIZES {
        let value: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let mut encoded = vec![0u8; record_size(KEY.len(), len)];
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| encode_record(&meta(), black_box(KEY), black_box(&value), &mut encoded))
        });
        encode_record(&meta(), KEY, &value, &mut encoded);
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let view = decode_record(black_box(&encoded)).expect("valid record");
                black_box(view.value.len())
            })
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = common::criterion_config(); targets = record }
criterion_main!(benches);
