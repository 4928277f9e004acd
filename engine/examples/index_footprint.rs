//! Measures the RAM index at N records on one core: bytes allocated per record (the index's
//! own accounting of capacity), process RSS per record after a heap trim, and inserts,
//! lookups, updates and removes per second. Prints one row of the table in issue 12.
//!
//! `cargo run --release -p spike --features offline --example index_footprint -- 10000000`

use spike::device::sim::SimRng;
use spike::offline::index::{partition_of, DigestTag, EntryInfo, EntryName, Index, Location};
use std::time::Instant;

/// Operations timed for lookups, updates and removes: enough to leave the caches cold.
const SAMPLE_MAX: u64 = 10_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn digest(rng: &mut SimRng) -> [u8; 20] {
    let mut d = [0u8; 20];
    d[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    d[8..16].copy_from_slice(&rng.next_u64().to_le_bytes());
    d
}

fn entry(d: &[u8; 20], i: u64, generation: u32) -> EntryInfo {
    let location = Location { device: 0, offset_bytes: i * 1088 % (1 << 40), size_bytes: 1088 };
    EntryInfo { tag: DigestTag::of(d), generation, tombstone: false, location, void_time: 0 }
}

/// Runs `op` over `keys` and returns operations per second.
fn timed(keys: &[[u8; 20]], mut op: impl FnMut(usize, &[u8; 20])) -> f64 {
    let start = Instant::now();
    for (i, d) in keys.iter().enumerate() {
        op(i, d);
    }
    keys.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let records: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let rss_before = rss_bytes();
    let index = Index::default();
    let start = Instant::now();
    let mut rng = SimRng::new(1);
    for i in 0..records {
        let d = digest(&mut rng);
        index.partition(partition_of(&d)).upsert(&d, entry(&d, i, 1));
    }
    let inserts_s = records as f64 / start.elapsed().as_secs_f64();
    let (entries, allocated) = index.usage();
    let rss_grown = rss_bytes() - rss_before;
    let arena_grown = index.arena_mapped_bytes() as u64;
    if std::env::var_os("SPIKE_ARENA_CLASSES").is_some() {
        for (class, (chunks, used, per)) in index.arena_class_usage().into_iter().enumerate() {
            eprintln!(
                "class {class}: chunks {chunks} slots {used} fill {:.2}",
                used as f64 / (chunks * per).max(1) as f64
            );
        }
    }
    // What the janitor does every minute (and an open after recovery): timed once when
    // it has sprigs to move and once when it has none (the cost of each later minute).
    let compact_start = Instant::now();
    index.compact_arena();
    let compact_ms = compact_start.elapsed().as_secs_f64() * 1e3;
    let compact_start = Instant::now();
    index.compact_arena();
    let compact_again_ms = compact_start.elapsed().as_secs_f64() * 1e3;
    spike::offline::index::trim_heap();
    let arena_compacted = index.arena_mapped_bytes() as u64;
    let rss_trimmed = rss_bytes() - rss_before;

    // A sample of the keys in random order (regenerated: the same seed gives the same keys).
    let sample = records.min(SAMPLE_MAX);
    let mut rng = SimRng::new(1);
    let mut keys: Vec<[u8; 20]> = (0..sample).map(|_| digest(&mut rng)).collect();
    let mut shuffle = SimRng::new(2);
    for i in (1..keys.len()).rev() {
        keys.swap(i, shuffle.below(i as u64 + 1) as usize);
    }
    let mut found = 0u64;
    let lookups_s = timed(&keys, |_, d| {
        found += index.partition(partition_of(d)).get(d).is_some() as u64;
    });
    assert_eq!(found, sample, "every inserted key is found");
    let updates_s = timed(&keys, |i, d| {
        index.partition(partition_of(d)).upsert(d, entry(d, i as u64, 2));
    });
    let mut removed = 0u64;
    let removes_s = timed(&keys, |_, d| {
        removed += index.partition(partition_of(d)).remove_named(EntryName::Digest(*d)).is_some() as u64;
    });
    assert_eq!(removed, sample, "every inserted key is removed once");

    let per = |bytes: u64| bytes as f64 / entries as f64;
    println!("records:                 {entries}");
    println!("index allocated bytes:   {allocated} ({:.2} bytes/record)", per(allocated));
    println!("sprig arena mapped:      {arena_grown} ({:.2} bytes/record)", per(arena_grown));
    println!(
        "  after compaction:      {arena_compacted} ({:.2} bytes/record; {compact_ms:.0} ms, again {compact_again_ms:.0} ms)",
        per(arena_compacted)
    );
    println!("process RSS growth:      {rss_grown} ({:.2} bytes/record)", per(rss_grown));
    println!("  after trim_heap:       {rss_trimmed} ({:.2} bytes/record)", per(rss_trimmed));
    println!("inserts:                 {inserts_s:.0}/s on one core");
    println!("lookups (random order):  {lookups_s:.0}/s ({:.0} ns each, lock included)", 1e9 / lookups_s);
    println!("updates (random order):  {updates_s:.0}/s ({:.0} ns each)", 1e9 / updates_s);
    println!("removes (random order):  {removes_s:.0}/s ({:.0} ns each)", 1e9 / removes_s);
    println!(
        "| {} M | {:.1} | {:.1} | {:.0} k | {:.0} k | {:.0} k | {:.0} k |",
        entries / 1_000_000,
        per(allocated),
        per(rss_trimmed),
        inserts_s / 1e3,
        lookups_s / 1e3,
        updates_s / 1e3,
        removes_s / 1e3
    );
}
