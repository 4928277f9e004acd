//! The change bitmap never misses a change: after power cuts at many points of the write
//! path (including defrag, block frees and the shutdown snapshot), every write block whose
//! bytes differ from the device at the start of the bitmap generation has its bit set.

mod common;

use common::*;
use spike::device::sim::{SimDevice, SimFaults, SimRng};
use spike::device::Device;
use spike::offline::change_bitmap::ChangeBitmap;
use spike::offline::namespace::start_generation;
use spike::offline::namespace::{probe, DeviceContent};
use spike::{Config, Durability, WriteOptions};
use std::sync::Arc;

fn header_of(device: &dyn Device) -> spike::offline::format::DeviceHeader {
    match probe(device).unwrap() {
        DeviceContent::Spike(header) => *header,
        other => panic!("not a Spike device: {other:?}"),
    }
}

/// Blocks whose bytes differ between two images of one device.
fn differing_blocks(header: &spike::offline::format::DeviceHeader, a: &[u8], b: &[u8]) -> Vec<u32> {
    let wbs = header.write_block_size as usize;
    (0..header.wblock_count as u32)
        .filter(|&block| {
            let start = header.wblock_offset(block) as usize;
            a[start..start + wbs] != b[start..start + wbs]
        })
        .collect()
}

#[test]
fn every_block_written_since_the_generation_started_is_marked_even_across_power_cuts() {
    for crash_after in [1u64, 2, 3, 5, 8, 13, 21, 34, 55, 89, 1000] {
        let (config, sims) = sim_namespace(1, 4 << 20, Durability::CommitToDevice, 500 + crash_after);
        let config = Config { defrag_sleep_us: 0, ..config };
        // Some history, then a clean shutdown and a new generation, as a full backup leaves it.
        let engine = open(&config, &sims);
        for k in 0..400u64 {
            engine.put(&key(k), &value(k, 0, 1500), &WriteOptions::default()).unwrap();
        }
        engine.close().unwrap();
        let mut header = header_of(sims[0].as_ref());
        start_generation(sims[0].as_ref(), &mut header, 42, [9; 16]).unwrap();
        let baseline = sims[0].live_image();

        let engine = open(&config, &sims);
        let writes = sims[0].counts().writes;
        sims[0]
            .set_faults(SimFaults { crash_after_writes: Some(writes + crash_after), ..Default::default() });
        let mut rng = SimRng::new(crash_after);
        for op in 0..3000u64 {
            let k = rng.below(400);
            let result = if rng.below(4) == 0 {
                engine.delete(&key(k))
            } else {
                engine.put(&key(k), &value(k, op, 1500), &WriteOptions::default()).map(|_| ())
            };
            if result.is_err() && sims[0].has_crashed() {
                break;
            }
        }
        let crashed: Arc<SimDevice> = Arc::new(sims[0].crash(crash_after));
        drop(engine);
        let header = header_of(crashed.as_ref());
        assert_eq!(header.bitmap_generation, 42);
        let bitmap = ChangeBitmap::read(crashed.as_ref(), &header).unwrap().expect("bitmap trusted");
        let changed = differing_blocks(&header, &baseline, &crashed.live_image());
        assert!(!changed.is_empty() || crash_after < 3, "nothing changed after {crash_after} writes");
        for block in &changed {
            assert!(
                bitmap.is_set(*block),
                "crash after {crash_after}: block {block} changed but is not marked"
            );
        }
    }
}

#[test]
fn a_damaged_bitmap_is_not_trusted_and_asks_for_a_full_backup() {
    let (config, sims) = sim_namespace(1, 4 << 20, Durability::Buffered, 600);
    let mut header = header_of(sims[0].as_ref());
    start_generation(sims[0].as_ref(), &mut header, 7, [1; 16]).unwrap();
    sims[0].corrupt_bit(spike::offline::format::BITMAP_OFFSET + 100, 0);
    let engine = open(&config, &sims);
    engine.put(b"k", b"v", &WriteOptions::default()).unwrap();
    engine.close().unwrap();
    let header = header_of(sims[0].as_ref());
    assert_eq!(header.bitmap_generation, 0, "a damaged bitmap must force the next backup to be full");
}
