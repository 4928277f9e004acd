//! The engine's hot paths with 1 KiB values:
//! - `put_buffered`: a put acknowledged once in the write buffer (buffered durability), on
//!   a simulated device so that the device's speed is not what is measured;
//! - `get_cached`: a get served from the open block or the post-write cache;
//! - `get_device`: a get that does one aligned `O_DIRECT` read of a real file under /tmp
//!   (io_uring where the kernel allows it), with the post-write cache off.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spike::device::sim::SimDevice;
use spike::device::{create_file, Device, IoBackend};
use spike::{Config, Durability, Engine, WriteOptions};
use std::hint::black_box;
use std::sync::Arc;

const VALUE_LEN: usize = 1024;
const WBLOCK: u32 = 1024 * 1024;
/// Keys the put bench cycles through: 50 MiB live on a 256 MiB device, so that
/// overwritten blocks are freed (or defragmented) and the device never fills up.
const PUT_KEYS: u64 = 50_000;
const PUT_DEVICE_BYTES: u64 = 256 << 20;
/// Records read back: 8 MiB, within the post-write cache of `get_cached`.
const GET_KEYS: u64 = 8_000;
const FILE_BYTES: u64 = 256 << 20;

fn key(i: u64) -> Vec<u8> {
    format!("user:{i:012}").into_bytes()
}

/// Keys in a scattered order, so that consecutive reads do not hit neighbouring records.
fn scattered(i: u64, count: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % count
}

fn config() -> Config {
    Config {
        namespace: "bench".into(),
        write_block_size: WBLOCK,
        durability: Durability::Buffered,
        io_backend: IoBackend::Auto,
        ..Config::default()
    }
}

fn sim_engine(config: Config, size_bytes: u64) -> Engine {
    let devices: Vec<Arc<dyn Device>> = vec![Arc::new(SimDevice::new("sim0", size_bytes, 1))];
    Engine::format_devices(&config, &devices, false).expect("format simulated device");
    Engine::open_devices(config, devices).expect("open simulated device")
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    let value = vec![0xA5u8; VALUE_LEN];
    let options = WriteOptions::default();

    let engine = sim_engine(config(), PUT_DEVICE_BYTES);
    let keys: Vec<Vec<u8>> = (0..PUT_KEYS).map(key).collect();
    let mut i = 0usize;
    group.bench_function("put_buffered_1KiB", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            engine.put(&keys[i], &value, &options).expect("put")
        })
    });
    drop(engine);

    let cached = Config { post_write_cache_blocks: 16, ..config() };
    let engine = sim_engine(cached, 64 << 20);
    let keys: Vec<Vec<u8>> = (0..GET_KEYS).map(key).collect();
    for k in &keys {
        engine.put(k, &value, &options).expect("put");
    }
    let mut n = 0u64;
    let before = engine.stats().reads_from_device;
    group.bench_function("get_cached_1KiB", |b| {
        b.iter(|| {
            n += 1;
            black_box(engine.get(&keys[scattered(n, GET_KEYS) as usize]).expect("get"))
        })
    });
    assert_eq!(engine.stats().reads_from_device, before, "get_cached went to the device");
    drop(engine);

    // A real file on a disk file system (tmpfs has no O_DIRECT): /tmp here.
    let dir = tempfile::Builder::new().prefix("spike-bench-").tempdir_in("/tmp").expect("temp dir");
    let path = create_file(&dir.path().join("device"), FILE_BYTES).expect("create device file");
    // The last, partly filled block would be defragmented into RAM at the lowest mark.
    let on_file = Config { devices: vec![path], post_write_cache_blocks: 0, defrag_lwm_pct: 1, ..config() };
    Engine::format(&on_file, false).expect("format file");
    let engine = Engine::open(on_file.clone()).expect("open file");
    for k in &keys {
        engine.put(k, &value, &options).expect("put");
    }
    engine.close().expect("close");
    // Reopened: nothing of the records is in RAM any more.
    let engine = Engine::open(on_file).expect("reopen file");
    let stats = engine.stats();
    let before = (stats.reads_from_memory, stats.reads_from_device);
    let backend = engine.stats().devices[0].backend;
    group.bench_function(format!("get_device_1KiB_{backend}"), |b| {
        b.iter(|| {
            n += 1;
            black_box(engine.get(&keys[scattered(n, GET_KEYS) as usize]).expect("get"))
        })
    });
    let stats = engine.stats();
    let (memory, device) = (stats.reads_from_memory - before.0, stats.reads_from_device - before.1);
    assert!(memory * 100 <= device, "get_device: {memory} reads served from RAM, {device} from the device");
    engine.close().expect("close");
    group.finish();
}

criterion_group! { name = benches; config = common::criterion_config(); targets = engine }
criterion_main!(benches);
