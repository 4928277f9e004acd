//! Measures the RAM index: bytes per record at N records (from the index's own accounting
//! of allocated capacity and from process RSS) and lookups per second on one core.
//!
//! `cargo run --release -p spike --example index_footprint -- 10000000`

use spike::device::sim::SimRng;
use spike::index::{partition_of, DigestTag, EntryInfo, Index, Location};
use std::time::Instant;

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

fn main() {
    let records: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    // `presized`: as a fast restart does, size the partitions first (no regrowth holes).
    let presized = std::env::args().nth(2).as_deref() == Some("presized");
    let rss_before = rss_bytes();
    let index = Index::default();
    if presized {
        index.reserve_total(records);
    }
    let start = Instant::now();
    let mut rng = SimRng::new(1);
    for i in 0..records {
        let d = digest(&mut rng);
        let location = Location { device: 0, offset_bytes: i * 1088 % (1 << 40), size_bytes: 1088 };
        let entry =
            EntryInfo { tag: DigestTag::of(&d), generation: 1, tombstone: false, location, void_time: 0 };
        index.partition(partition_of(&d)).upsert(entry);
    }
    let insert_s = start.elapsed().as_secs_f64();
    let (entries, allocated) = index.usage();
    let rss = rss_bytes() - rss_before;
    println!("records:                 {entries}");
    println!("index allocated bytes:   {allocated} ({:.2} bytes/record)", allocated as f64 / entries as f64);
    println!("process RSS growth:      {rss} ({:.2} bytes/record)", rss as f64 / entries as f64);
    spike::index::trim_heap();
    let rss = rss_bytes() - rss_before;
    println!("  after trim_heap:       {rss} ({:.2} bytes/record)", rss as f64 / entries as f64);
    println!("inserts:                 {:.0}/s on one core", records as f64 / insert_s);

    let lookups = records.min(10_000_000);
    let mut rng = SimRng::new(1);
    let mut keys = Vec::with_capacity(lookups as usize);
    for _ in 0..lookups {
        keys.push(digest(&mut rng));
    }
    let mut shuffle = SimRng::new(2);
    for i in (1..keys.len()).rev() {
        keys.swap(i, shuffle.below(i as u64 + 1) as usize);
    }
    let start = Instant::now();
    let mut found = 0u64;
    for d in &keys {
        found += index.partition(partition_of(d)).get(DigestTag::of(d)).is_some() as u64;
    }
    let lookup_s = start.elapsed().as_secs_f64();
    assert_eq!(found, lookups);
    println!(
        "lookups (random order):  {:.0}/s on one core ({:.0} ns each, lock included)",
        lookups as f64 / lookup_s,
        lookup_s * 1e9 / lookups as f64
    );
}
