//! Loom model of the concurrent core of a put: the partition lock, the write-buffer
//! reservation under the disk lock, the index update and the live-byte accounting.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p spike --lib loom_model --release`.
//!
//! Invariants checked after every interleaving: the index holds the newest generation of
//! each key; each entry's location decodes to exactly that record; the live bytes of the
//! blocks equal the sizes of the entries pointing into them.

use crate::config::Config;
use crate::device::sim::SimDevice;
use crate::device::Device;
use crate::disk::Disk;
use crate::format::{decode_record, DeviceHeader, RecordMeta};
use crate::index::{DigestTag, EntryInfo, Partition};
use crate::record_core::{next_generation, place_on};
use crate::sync::Mutex;
use loom::sync::Arc;
use std::sync::atomic::Ordering;

const WBS: u32 = 128 * 1024;

fn test_disk() -> Disk {
    let header = DeviceHeader {
        namespace_name: "loom".into(),
        write_block_size: WBS,
        first_wblock_offset: WBS as u64,
        ..crate::format::test_header()
    };
    let device: std::sync::Arc<dyn Device> = std::sync::Arc::new(SimDevice::new("loom", WBS as u64 * 5, 1));
    let disk = Disk::new(0, device, header, &Config::default());
    disk.lock().blocks.restore_all_free();
    disk
}

fn digest_of(key: u8) -> [u8; 20] {
    [key; 20]
}

/// A put as the record core does it, through its own steps: the entry under the partition
/// lock, the next generation, then `place_on` (append, index update, the old copy's
/// accounting).
fn put(disk: &Disk, partition: &Mutex<Partition>, key: u8, value_len: usize) {
    let digest = digest_of(key);
    let mut partition = partition.lock().unwrap();
    let existing = partition.get(&digest);
    let generation = next_generation(&partition, existing).unwrap();
    let meta = RecordMeta {
        digest,
        generation,
        void_time: 0,
        last_update_ms: 1,
        tombstone: false,
        wblock_seq_lo: 0,
        shared_tag: false,
    };
    let value = vec![key; value_len];
    place_on(disk, &mut partition, existing, &meta, &[], &value).unwrap();
}

#[test]
fn concurrent_puts_keep_index_buffer_and_live_bytes_consistent() {
    loom::model(|| {
        let disk = Arc::new(test_disk());
        // One partition lock per key, as keys of different partitions have in the engine.
        let partitions = Arc::new([Mutex::new(Partition::default()), Mutex::new(Partition::default())]);
        // Sizes such that the third record seals the first block: sealing races with the
        // other writer's index update and live-byte count.
        let writers: Vec<_> = [(1u8, 60_000usize), (1, 60_000)]
            .into_iter()
            .map(|(key, len)| {
                let (disk, partitions) = (disk.clone(), partitions.clone());
                loom::thread::spawn(move || put(&disk, &partitions[key as usize % 2], key, len))
            })
            .collect();
        put(&disk, &partitions[0], 2, 30_000);
        for writer in writers {
            writer.join().unwrap();
        }
        let entry = partitions[1].lock().unwrap().get(&digest_of(1)).unwrap();
        assert_eq!(entry.generation, 2);
        let entries: Vec<EntryInfo> =
            partitions.iter().flat_map(|p| p.lock().unwrap().entries().collect::<Vec<_>>()).collect();
        let state = disk.lock();
        let mut indexed = 0u64;
        for entry in entries {
            let (block, at) = disk.geometry.locate(entry.location.offset_bytes).unwrap();
            assert!(
                !state.pending_free.iter().any(|&(b, _)| b == block),
                "block {block} freed under a live record"
            );
            let bytes = match state.open.as_ref().filter(|o| o.wblock == block) {
                Some(open) => &open.buf[..],
                None => &state.to_write.iter().find(|s| s.wblock == block).unwrap().buf[..],
            };
            let at = at as usize;
            let view = decode_record(&bytes[at..at + entry.location.size_bytes as usize]).unwrap();
            assert_eq!(
                (DigestTag::of(&view.meta.digest), view.meta.generation),
                (entry.tag, entry.generation)
            );
            indexed += entry.location.size_bytes as u64;
        }
        let live: u64 = disk.live_bytes.iter().map(|b| b.load(Ordering::Relaxed) as u64).sum();
        assert_eq!(live, indexed);
    });
}
