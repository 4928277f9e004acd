//! The primary index: one partition's upsert and lookup at the size a partition has at
//! 10 million records (about 2500 entries) and at 300 million (73 000), and the whole index
//! at 1 million entries.
//!
//! The headline figure is `index/lookup_1m`: lookups per second on one core, partition lock
//! included, which bounds the read path's CPU budget (DESIGN.md: about 15 us per read).

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use spike::offline::format::Digest;
use spike::offline::index::{partition_of, DigestTag, EntryInfo, Index, Location, Partition};
use std::hint::black_box;

/// Entries in one partition at 10 M records over 4096 partitions.
const PARTITION_ENTRIES: u64 = 2500;
/// Entries in one partition at 300 M records.
const PARTITION_ENTRIES_300M: u64 = 73_000;
const INDEX_ENTRIES: u64 = 1_000_000;
/// Operations per timed iteration, so that the loop overhead is amortised.
const BATCH: u64 = 1024;

/// Digests as the engine makes them: uniformly random bits (SplitMix64 of `i`).
fn digest(i: u64) -> Digest {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let a = mix(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let b = mix(a ^ 0x5EED);
    let mut d = [0u8; 20];
    d[..8].copy_from_slice(&a.to_le_bytes());
    d[8..16].copy_from_slice(&b.to_le_bytes());
    d
}

fn entry(i: u64) -> EntryInfo {
    EntryInfo {
        tag: DigestTag::of(&digest(i)),
        generation: 1,
        tombstone: false,
        location: Location { device: 0, offset_bytes: (i % (1 << 30)) * 16, size_bytes: 1088 },
        void_time: 0,
    }
}

fn filled_partition(entries: u64) -> Partition {
    let mut partition = Partition::default();
    for i in 0..entries {
        partition.upsert(&digest(i), entry(i));
    }
    partition
}

fn partition(c: &mut Criterion) {
    let mut group = c.benchmark_group("partition");
    group.throughput(Throughput::Elements(BATCH));
    // A partition's size at 10 M records and at 300 M: the sprigs make the two cost the same.
    for (label, entries) in [("2500", PARTITION_ENTRIES), ("73k", PARTITION_ENTRIES_300M)] {
        partition_at(&mut group, label, entries);
    }
    group.finish();
}

fn partition_at(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    label: &str,
    entries: u64,
) {
    let mut next = entries;
    group.bench_function(format!("insert_into_{label}"), |b| {
        b.iter_batched(
            || filled_partition(entries),
            |mut partition| {
                for _ in 0..BATCH {
                    next += 1;
                    partition.upsert(&digest(next), entry(next));
                }
                partition
            },
            BatchSize::LargeInput,
        )
    });

    let mut partition = filled_partition(entries);
    let present: Vec<(Digest, EntryInfo)> =
        (0..BATCH).map(|i| i * 7919 % entries).map(|i| (digest(i), entry(i))).collect();
    group.bench_function(format!("update_in_{label}"), |b| {
        b.iter(|| {
            for (d, e) in &present {
                black_box(partition.upsert(d, *e));
            }
        })
    });
    group.bench_function(format!("get_in_{label}"), |b| {
        b.iter(|| {
            for (d, _) in &present {
                black_box(partition.get(d));
            }
        })
    });
    let missing: Vec<Digest> = (0..BATCH).map(|i| digest(entries + 1_000_000 + i)).collect();
    group.bench_function(format!("get_missing_in_{label}"), |b| {
        b.iter(|| {
            for d in &missing {
                black_box(partition.get(d));
            }
        })
    });
}

fn index(c: &mut Criterion) {
    let mut group = c.benchmark_group("index");
    group.sample_size(10);
    group.throughput(Throughput::Elements(INDEX_ENTRIES));
    group.bench_function("insert_1m", |b| {
        b.iter_batched(
            Index::default,
            |index| {
                for i in 0..INDEX_ENTRIES {
                    let d = digest(i);
                    index.partition(partition_of(&d)).upsert(&d, entry(i));
                }
                index
            },
            BatchSize::LargeInput,
        )
    });

    let index = Index::default();
    for i in 0..INDEX_ENTRIES {
        index.partition(partition_of(&digest(i))).upsert(&digest(i), entry(i));
    }
    // Every key of the index once, in a scattered order, and each iteration takes the next
    // batch: lookups land in cold partitions and cache lines as a server's would (a fixed
    // small set of keys would stay in the CPU caches). The digests are computed beforehand:
    // the engine hashes the key anyway, and that cost is in `record`'s and `engine`'s figures.
    let digests: Vec<Digest> = (0..INDEX_ENTRIES).map(|i| digest(i * 999_983 % INDEX_ENTRIES)).collect();
    let mut cursor = 0usize;
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("lookup_1m", |b| {
        b.iter(|| {
            let batch = &digests[cursor..cursor + BATCH as usize];
            cursor = (cursor + BATCH as usize) % (digests.len() - BATCH as usize);
            for d in batch {
                black_box(index.partition(partition_of(d)).get(d));
            }
        })
    });
    group.finish();
}

criterion_group! { name = benches; config = common::criterion_config(); targets = partition, index }
criterion_main!(benches);
