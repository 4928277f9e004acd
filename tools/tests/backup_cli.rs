//! `spike-backup` as an operator runs it: round trips through full and incremental images
//! onto a second device (checked block by block, by `spike-inspect records`, and by the
//! engine itself after a fast and a cold start), power cuts on the simulated device before
//! an incremental, and every kind of bad input, each refused with a clear error and a
//! target left untouched or without a valid header. Device files live under the target
//! directory (a file system with `O_DIRECT`).

use spike::device::sim::{SimDevice, SimFaults, SimRng};
use spike::device::{self, Device};
use spike::offline::format::{DeviceHeader, WBLOCK_HEADER_SIZE, WBLOCK_KIND_FREE};
use spike::offline::namespace::{probe, DeviceContent};
use spike::{Config, Durability, Engine, WriteOptions};
use spike_tools::backup::source::{classify, BlockUse};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

const WBLOCK_SIZE: u32 = 128 * 1024;
const DEVICE_SIZE: u64 = 16 << 20;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("spike-backup-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

fn config(devices: Vec<PathBuf>) -> Config {
    Config {
        namespace: "backup".into(),
        devices,
        write_block_size: WBLOCK_SIZE,
        durability: Durability::CommitToDevice,
        flush_max_ms: 20,
        store_keys: true,
        defrag_sleep_us: 0,
        ..Config::default()
    }
}

/// Runs spike-backup. A device this test just closed can still read as locked for a moment:
/// a child process that another test thread forked while the device was open holds a copy
/// of its descriptor (and so its `flock`) until it reaches `exec`, which on this shared,
/// loaded machine can take a while. Such a refusal is retried; every test of the refusal
/// itself holds the device open in this thread, so it still fails each time.
fn backup(args: &[&str]) -> Output {
    let mut tries = 0;
    loop {
        let output =
            Command::new(env!("CARGO_BIN_EXE_spike-backup")).args(args).output().expect("run spike-backup");
        tries += 1;
        if output.status.success() || !text(&output).contains("is in use by another process") || tries == 50 {
            return output;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Opens an engine, retrying while a forked child still holds the device (see [`backup`]).
fn open_engine(config: Config) -> Engine {
    for _ in 0..50 {
        match Engine::open(config.clone()) {
            Err(spike::Error::DeviceInUse { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            other => return other.expect("open"),
        }
    }
    panic!("device still in use after 5 s");
}

/// Opens a device file, retrying while a forked child still holds it (see [`backup`]).
fn open_device(path: &Path) -> Arc<dyn Device> {
    for _ in 0..50 {
        match device::open(path, Default::default()) {
            Err(spike::Error::DeviceInUse { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(100))
            }
            other => return other.expect("open device"),
        }
    }
    panic!("device still in use after 5 s");
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[track_caller]
fn ok(output: Output) -> String {
    assert!(output.status.success(), "spike-backup failed: {}", text(&output));
    text(&output)
}

/// Runs spike-backup expecting a failure whose message contains `needle`.
#[track_caller]
fn fails(args: &[&str], needle: &str) -> String {
    let output = backup(args);
    let all = text(&output);
    assert!(!output.status.success(), "spike-backup {args:?} should fail: {all}");
    assert!(all.to_lowercase().contains(&needle.to_lowercase()), "expected {needle:?} in: {all}");
    all
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn records(path: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_spike-inspect"))
        .args(["records", "--device", s(path)])
        .output()
        .expect("run spike-inspect");
    assert!(output.status.success(), "spike-inspect: {}", text(&output));
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u64, version: u64) -> Vec<u8> {
    let len = 300 + (i * 37 + version * 11) as usize % 3000;
    (0..len).map(|n| (n as u64 * 7 + i * 13 + version) as u8).collect()
}

/// Every record the engine returns: key → (value hash, generation).
fn engine_records(engine: &Engine) -> BTreeMap<Vec<u8>, (u64, u32)> {
    let mut out = BTreeMap::new();
    engine
        .scan_all(&mut |r| {
            out.insert(r.key.clone().unwrap_or_default(), (xxh3_64(&r.value), r.generation));
            true
        })
        .expect("scan");
    out
}

/// Opens the engine on a copy of `path` and returns its records and the restart kind.
fn records_via_engine(path: &Path, fast_restart: bool) -> (BTreeMap<Vec<u8>, (u64, u32)>, &'static str) {
    let copy = path.with_extension(format!("copy-{fast_restart}"));
    std::fs::copy(path, &copy).expect("copy");
    let engine = open_engine(Config { fast_restart, ..config(vec![copy.clone()]) });
    let kind = engine.stats().recovery.kind;
    let found = engine_records(&engine);
    engine.close().expect("close");
    std::fs::remove_file(&copy).expect("remove copy");
    (found, kind)
}

fn header_of(path: &Path) -> DeviceHeader {
    let dev = open_device(path);
    match probe(dev.as_ref()).expect("probe") {
        DeviceContent::Spike(h) => *h,
        other => panic!("{}: not a Spike device: {other:?}", path.display()),
    }
}

fn has_valid_header(path: &Path) -> bool {
    let dev = open_device(path);
    matches!(probe(dev.as_ref()).expect("probe"), DeviceContent::Spike(_))
}

/// Block by block: in-use blocks of the source are byte-identical on the target, and every
/// other block of the target reads as free.
fn assert_blocks_match(source: &Path, target: &Path) {
    let header = header_of(source);
    let (a, b) = (std::fs::read(source).expect("read"), std::fs::read(target).expect("read"));
    let wbs = header.write_block_size as usize;
    for block in 0..header.wblock_count as u32 {
        let at = header.wblock_offset(block) as usize;
        let (src, dst) = (&a[at..at + wbs], &b[at..at + wbs]);
        match classify(src, &header, block) {
            BlockUse::InUse { .. } => assert!(src == dst, "block {block} in use differs"),
            BlockUse::Free => {
                assert_eq!(
                    classify(dst, &header, block),
                    BlockUse::Free,
                    "block {block} not free on the target"
                );
                let h = spike::offline::format::WblockHeader::decode(&dst[..WBLOCK_HEADER_SIZE]);
                assert!(
                    h.is_some_and(|h| h.kind == WBLOCK_KIND_FREE) || dst[..4096].iter().all(|&x| x == 0),
                    "block {block}: neither a free header nor zeroes"
                );
            }
        }
    }
}

fn fill(engine: &Engine, keys: std::ops::Range<u64>, version: u64) {
    for i in keys {
        engine.put(&key(i), &value(i, version), &WriteOptions::default()).expect("put");
    }
}

/// A formatted file device `src` of `size_bytes` in `dir` holding keys `0..records`
/// (version 0), closed cleanly; with its config.
fn filled_source(dir: &Path, size_bytes: u64, records: u64) -> (PathBuf, Config) {
    let src = device::create_file(&dir.join("src"), size_bytes).expect("create");
    let cfg = config(vec![src.clone()]);
    Engine::format(&cfg, false).expect("format");
    let engine = open_engine(cfg.clone());
    fill(&engine, 0..records, 0);
    engine.close().expect("close");
    (src, cfg)
}

#[test]
fn full_and_incremental_restore_to_exactly_the_source_records_after_fast_and_cold_starts() {
    let dir = tempdir();
    let (src, cfg) = filled_source(dir.path(), 32 << 20, 3000);
    let (full, incr, incr2) =
        (dir.path().join("full.img"), dir.path().join("incr.img"), dir.path().join("i2.img"));
    let out = ok(backup(&["full", "--device", s(&src), "--out", s(&full)]));
    assert!(out.contains("full image"), "{out}");

    // Overwrites, deletes and new records: blocks are written, emptied and freed.
    let engine = open_engine(cfg.clone());
    fill(&engine, 0..1500, 1);
    for i in (1500..3000).step_by(3) {
        engine.delete(&key(i)).expect("delete");
    }
    fill(&engine, 3000..3400, 0);
    engine.reclaim_tombstones().expect("reclaim");
    let freed = engine.stats().blocks_freed;
    engine.close().expect("close");
    assert!(freed > 0, "the changes freed no block");
    let out = ok(backup(&["incr", "--device", s(&src), "--base", s(&full), "--out", s(&incr), "--compress"]));
    assert!(out.contains("incremental image") && !out.contains("WARNING"), "{out}");
    let info = ok(backup(&["info", s(&incr)]));
    assert!(info.contains("incremental") && info.contains("zstd"), "{info}");
    ok(backup(&["verify", s(&full), s(&incr), "--device", s(&src)]));

    // A larger target that held another Spike device: needs --force.
    let dst = device::create_file(&dir.path().join("dst"), 40 << 20).expect("create");
    Engine::format(&config(vec![dst.clone()]), false).expect("format target");
    fails(&["restore", "--device", s(&dst), s(&full), s(&incr)], "--force");
    let out = ok(backup(&["restore", "--force", "--device", s(&dst), s(&full), s(&incr)]));
    assert!(out.contains("restored 2 image(s)"), "{out}");
    assert_blocks_match(&src, &dst);
    assert_eq!(records(&src), records(&dst));
    ok(backup(&["verify", s(&full), s(&incr), "--device", s(&dst)]));
    assert_eq!(header_of(&dst).bitmap_generation, 0, "a restored copy's next backup must be full");
    fails(
        &["incr", "--device", s(&dst), "--base", s(&incr), "--out", s(&dir.path().join("x.img"))],
        "full backup",
    );

    let expected = records_via_engine(&src, true).0;
    assert_eq!(expected.len(), 1500 + 1000 + 400);
    for fast in [true, false] {
        let (found, kind) = records_via_engine(&dst, fast);
        assert_eq!(kind, if fast { "fast" } else { "cold" });
        assert!(found == expected, "fast_restart={fast}: restored records differ from the source's");
    }

    // Merge stands in for the chain, and later incrementals apply on top of it.
    let merged = dir.path().join("merged.img");
    ok(backup(&["merge", "--out", s(&merged), s(&full), s(&incr)]));
    assert!(ok(backup(&["info", s(&merged)])).contains("synthetic"));
    let engine = open_engine(cfg.clone());
    fill(&engine, 100..400, 2);
    engine.close().expect("close");
    fails(&["verify", s(&merged), "--device", s(&src)], "differ");
    ok(backup(&["incr", "--device", s(&src), "--base", s(&incr), "--out", s(&incr2)]));
    let dst2 = device::create_file(&dir.path().join("dst2"), 32 << 20).expect("create");
    ok(backup(&["restore", "--device", s(&dst2), s(&merged), s(&incr2)]));
    assert_blocks_match(&src, &dst2);
    assert_eq!(records(&src), records(&dst2));
}

/// Writes a simulated device's current image to a file.
fn to_file(sim: &SimDevice, path: &Path) {
    std::fs::write(path, sim.live_image()).expect("write image file");
}

#[test]
fn after_power_cuts_full_plus_incremental_restores_what_the_engine_recovers_from_the_crashed_device() {
    let dir = tempdir();
    let size = 4u64 << 20;
    for crash_after in [1u64, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144] {
        let sim = Arc::new(SimDevice::new("sim", size, crash_after));
        let cfg = config(vec![]);
        Engine::format_devices(&cfg, &[sim.clone() as Arc<dyn Device>], false).expect("format");
        let engine = Engine::open_devices(cfg.clone(), vec![sim.clone()]).expect("open");
        fill(&engine, 0..300, 0);
        engine.close().expect("close");
        let (before, full, incr, restored) = (
            dir.path().join(format!("before-{crash_after}")),
            dir.path().join(format!("full-{crash_after}.img")),
            dir.path().join(format!("incr-{crash_after}.img")),
            dir.path().join(format!("restored-{crash_after}")),
        );
        to_file(&sim, &before);
        ok(backup(&["full", "--device", s(&before), "--out", s(&full)]));
        // The backup started a new generation: continue from the file it wrote.
        let sim = Arc::new(SimDevice::from_image("sim", std::fs::read(&before).expect("read"), crash_after));
        let engine = Engine::open_devices(cfg.clone(), vec![sim.clone()]).expect("reopen");
        let writes = sim.counts().writes;
        sim.set_faults(SimFaults { crash_after_writes: Some(writes + crash_after), ..Default::default() });
        let mut rng = SimRng::new(crash_after);
        for op in 0..2000u64 {
            let k = rng.below(400);
            let result = if rng.below(4) == 0 {
                engine.delete(&key(k))
            } else {
                engine.put(&key(k), &value(k, op + 1), &WriteOptions::default()).map(|_| ())
            };
            if result.is_err() && sim.has_crashed() {
                break;
            }
        }
        let crashed = sim.crash(crash_after * 31 + 7);
        drop(engine);
        let crashed_file = dir.path().join(format!("crashed-{crash_after}"));
        to_file(&crashed, &crashed_file);
        let out = ok(backup(&["incr", "--device", s(&crashed_file), "--base", s(&full), "--out", s(&incr)]));
        assert!(!out.contains("WARNING"), "crash after {crash_after}: {out}");
        device::create_file(&restored, size).expect("create target");
        ok(backup(&["restore", "--device", s(&restored), s(&full), s(&incr)]));

        let expected = {
            let image = Arc::new(SimDevice::from_image("crashed", crashed.live_image(), 1));
            let engine = Engine::open_devices(cfg.clone(), vec![image]).expect("open crashed");
            let found = engine_records(&engine);
            drop(engine);
            found
        };
        let (found, _) = records_via_engine(&restored, false);
        assert!(found == expected, "crash after {crash_after} writes: restored records differ");
        for path in [&before, &full, &incr, &restored, &crashed_file] {
            std::fs::remove_file(path).expect("remove");
        }
    }
}

/// A small device with a full image and an incremental, for the bad-input tests.
struct Fixture {
    dir: tempfile::TempDir,
    src: PathBuf,
    full: PathBuf,
    incr: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempdir();
    let (src, cfg) = filled_source(dir.path(), DEVICE_SIZE, 600);
    let (full, incr) = (dir.path().join("full.img"), dir.path().join("incr.img"));
    ok(backup(&["full", "--device", s(&src), "--out", s(&full)]));
    let engine = open_engine(cfg);
    fill(&engine, 0..100, 1);
    engine.close().expect("close");
    ok(backup(&["incr", "--device", s(&src), "--base", s(&full), "--out", s(&incr)]));
    Fixture { dir, src, full, incr }
}

/// A formatted Spike device to restore onto (so "untouched" is checkable), and its bytes.
fn spike_target(dir: &Path, name: &str, size: u64) -> (PathBuf, Vec<u8>) {
    let path = device::create_file(&dir.join(name), size).expect("create");
    Engine::format(&config(vec![path.clone()]), false).expect("format");
    let bytes = std::fs::read(&path).expect("read");
    (path, bytes)
}

#[track_caller]
fn assert_untouched_or_headerless(path: &Path, before: &[u8]) {
    let now = std::fs::read(path).expect("read");
    assert!(now == before || !has_valid_header(path), "target changed and still has a valid header");
}

#[test]
fn a_corrupted_byte_anywhere_in_an_image_is_refused_and_leaves_no_valid_header() {
    let f = fixture();
    let (target, pristine) = spike_target(f.dir.path(), "target", DEVICE_SIZE);
    let bytes = std::fs::read(&f.incr).expect("read");
    let bad = f.dir.path().join("bad.img");
    let mut offsets: Vec<usize> = (0..bytes.len()).step_by(bytes.len() / 48).collect();
    offsets.extend([
        0,
        8,
        30,
        4095,
        4096,
        bytes.len() - 1,
        bytes.len() - 9,
        bytes.len() - 60,
        bytes.len() - 200,
    ]);
    for at in offsets {
        let mut copy = bytes.clone();
        copy[at] ^= 0x04;
        std::fs::write(&bad, &copy).expect("write");
        let output = backup(&["restore", "--force", "--device", s(&target), s(&f.full), s(&bad)]);
        let all = text(&output);
        assert!(!output.status.success(), "byte {at} flipped: restore succeeded");
        assert!(
            ["corrupt", "checksum", "digest", "not a spike backup image", "truncated", "version"]
                .iter()
                .any(|w| all.to_lowercase().contains(w)),
            "byte {at}: unclear error: {all}"
        );
        assert_untouched_or_headerless(&target, &pristine);
        assert!(!backup(&["verify", s(&f.full), s(&bad)]).status.success(), "verify missed byte {at}");
        std::fs::write(&target, &pristine).expect("reset target");
    }
}

#[test]
fn truncated_images_future_versions_and_small_targets_are_refused_before_writing() {
    let f = fixture();
    let (target, pristine) = spike_target(f.dir.path(), "target", DEVICE_SIZE);
    let bytes = std::fs::read(&f.full).expect("read");
    let bad = f.dir.path().join("bad.img");
    for cut in [0, 100, 4096, bytes.len() / 2, bytes.len() - 128, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..cut]).expect("write");
        let needle = if cut < 8 { "not a spike backup image" } else { "truncated" };
        fails(&["restore", "--force", "--device", s(&target), s(&bad)], needle);
        assert_eq!(std::fs::read(&target).expect("read"), pristine, "cut at {cut}: target touched");
    }
    // A future format version, its header checksum re-sealed.
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&2u32.to_le_bytes());
    let checksum = xxh3_64(&future[..4088]);
    future[4088..4096].copy_from_slice(&checksum.to_le_bytes());
    std::fs::write(&bad, &future).expect("write");
    fails(&["restore", "--force", "--device", s(&target), s(&bad)], "format version 2");
    fails(&["info", s(&bad)], "format version 2");
    assert_eq!(std::fs::read(&target).expect("read"), pristine);
    // Too small a target.
    let (small, small_bytes) = spike_target(f.dir.path(), "small", DEVICE_SIZE / 2);
    fails(&["restore", "--force", "--device", s(&small), s(&f.full)], "too small");
    assert_eq!(std::fs::read(&small).expect("read"), small_bytes);
    // Not an image at all.
    fails(&["restore", "--force", "--device", s(&target), s(&f.src)], "not a spike backup image");
    assert_eq!(std::fs::read(&target).expect("read"), pristine);
}

#[test]
fn incrementals_refuse_the_wrong_base_and_restore_refuses_chains_out_of_order() {
    let f = fixture();
    let (target, pristine) = spike_target(f.dir.path(), "target", DEVICE_SIZE);
    let cfg = config(vec![f.src.clone()]);
    let engine = open_engine(cfg);
    fill(&engine, 200..260, 1);
    engine.close().expect("close");
    let incr2 = f.dir.path().join("incr2.img");
    // The base must be the last image taken of this device.
    let out = fails(
        &["incr", "--device", s(&f.src), "--base", s(&f.full), "--out", s(&incr2)],
        "not the last image taken of this device",
    );
    assert!(out.contains("full backup is needed"), "{out}");
    assert!(!incr2.exists());
    ok(backup(&["incr", "--device", s(&f.src), "--base", s(&f.incr), "--out", s(&incr2)]));

    for chain in
        [vec![&f.full, &incr2], vec![&f.full, &incr2, &f.incr], vec![&f.incr, &incr2], vec![&f.full, &f.full]]
    {
        let mut args = vec!["restore", "--force", "--device", s(&target)];
        args.extend(chain.iter().map(|p| s(p)));
        let output = backup(&args);
        assert!(!output.status.success(), "{chain:?} restored");
        let all = text(&output);
        assert!(
            all.contains("wrong base or out of order")
                || all.contains("a chain starts with a full image")
                || all.contains("holds only incrementals"),
            "{chain:?}: {all}"
        );
        assert_eq!(std::fs::read(&target).expect("read"), pristine, "{chain:?}: target touched");
    }
    ok(backup(&["restore", "--force", "--device", s(&target), s(&f.full), s(&f.incr), s(&incr2)]));
    assert_eq!(records(&target), records(&f.src));

    // Another device's image as the base: refused; --auto-full takes a full one and says so.
    let other = fixture();
    let out3 = f.dir.path().join("incr3.img");
    fails(&["incr", "--device", s(&f.src), "--base", s(&other.incr), "--out", s(&out3)], "is of device");
    let said = ok(backup(&[
        "incr",
        "--auto-full",
        "--device",
        s(&f.src),
        "--base",
        s(&other.incr),
        "--out",
        s(&out3),
    ]));
    assert!(said.contains("taking a FULL image instead") && said.contains("full image"), "{said}");
    assert!(!ok(backup(&["info", s(&out3)])).contains("incremental"));
}

#[test]
fn a_device_in_use_is_refused_and_a_failed_backup_leaves_the_bitmap_generation_unchanged() {
    let f = fixture();
    let generation = header_of(&f.src).bitmap_generation;
    let engine = open_engine(config(vec![f.src.clone()]));
    fails(&["full", "--device", s(&f.src), "--out", s(&f.dir.path().join("x.img"))], "in use");
    fails(&["restore", "--force", "--device", s(&f.src), s(&f.full)], "in use");
    engine.close().expect("close");
    let generation_after_engine = header_of(&f.src).bitmap_generation;
    assert_eq!(generation_after_engine, generation);

    // Output directory missing: nothing happens to the device.
    fails(&["full", "--device", s(&f.src), "--out", "/nonexistent-dir/x.img"], "nonexistent-dir");
    // An existing output file is never replaced.
    fails(&["incr", "--device", s(&f.src), "--base", s(&f.incr), "--out", s(&f.full)], "exists");
    // Killed half-way through writing the image (file size limit: SIGXFSZ).
    let out = f.dir.path().join("killed.img");
    let status = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -f 512; exec {} full --device {} --out {}",
                env!("CARGO_BIN_EXE_spike-backup"),
                s(&f.src),
                s(&out)
            ),
        ])
        .status()
        .expect("run bash");
    assert!(!status.success());
    assert!(!out.exists(), "an interrupted backup left a file under the image's name");
    assert_eq!(header_of(&f.src).bitmap_generation, generation, "a failed backup changed the generation");
    for entry in std::fs::read_dir(f.dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains(".partial-") {
            fails(&["info", s(&path)], "truncated");
        }
    }
    // A write error half-way (file size limit with SIGXFSZ ignored: EFBIG) is reported as
    // such, promptly (`timeout`: a stalled pipeline would hang here), and leaves nothing.
    let out = f.dir.path().join("efbig.img");
    let run = Command::new("bash")
        .args([
            "-c",
            &format!(
                "trap '' XFSZ; ulimit -f 512; exec timeout 60 {} full --device {} --out {}",
                env!("CARGO_BIN_EXE_spike-backup"),
                s(&f.src),
                s(&out)
            ),
        ])
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(!out.exists());
    let partials = std::fs::read_dir(f.dir.path())
        .expect("read dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().contains("efbig")))
        .count();
    assert_eq!(partials, 0, "a failed backup left its partial file");
    assert_eq!(header_of(&f.src).bitmap_generation, generation, "a failed backup changed the generation");
    // The incremental still works after all those failures.
    ok(backup(&[
        "incr",
        "--device",
        s(&f.src),
        "--base",
        s(&f.incr),
        "--out",
        s(&f.dir.path().join("ok.img")),
    ]));
}

#[test]
fn a_target_holding_other_data_needs_force_and_a_blank_one_does_not() {
    let f = fixture();
    let target = device::create_file(&f.dir.path().join("target"), DEVICE_SIZE).expect("create");
    let file = std::fs::OpenOptions::new().write(true).open(&target).expect("open");
    file.write_all_at(b"some file system", 1024).expect("write");
    fails(&["restore", "--device", s(&target), s(&f.full), s(&f.incr)], "--force");
    file.write_all_at(&[0; 16], 1024).expect("write");
    ok(backup(&["restore", "--device", s(&target), s(&f.full), s(&f.incr)]));
    assert_eq!(records(&target), records(&f.src));
}

#[test]
fn blocks_the_bitmap_missed_are_still_taken_by_their_write_sequence_and_reported() {
    let f = fixture();
    let engine = open_engine(config(vec![f.src.clone()]));
    fill(&engine, 300..500, 2);
    engine.close().expect("close");
    // Forget every change while keeping the generation: a bitmap that missed them all.
    {
        let dev = open_device(&f.src);
        let mut header = match probe(dev.as_ref()).expect("probe") {
            DeviceContent::Spike(h) => *h,
            other => panic!("{other:?}"),
        };
        let (generation, image) = (header.bitmap_generation, header.bitmap_reset_image_uuid);
        spike::offline::namespace::start_generation(dev.as_ref(), &mut header, generation, image)
            .expect("reset");
    }
    let incr2 = f.dir.path().join("incr2.img");
    let out = ok(backup(&["incr", "--device", s(&f.src), "--base", s(&f.incr), "--out", s(&incr2)]));
    assert!(out.contains("WARNING") && out.contains("missed"), "{out}");
    let target = device::create_file(&f.dir.path().join("target"), DEVICE_SIZE).expect("create");
    ok(backup(&["restore", "--device", s(&target), s(&f.full), s(&f.incr), s(&incr2)]));
    assert_eq!(records(&target), records(&f.src));
}

#[test]
fn a_compressed_image_keeps_the_last_unit_of_an_uneven_group() {
    // `--compress` packs read units in groups of one per core; a device with a single block
    // in use is one unit, which only the end of the stream can send on.
    let dir = tempdir();
    let (src, _) = filled_source(dir.path(), DEVICE_SIZE, 20);
    let image = dir.path().join("c.img");
    let out = ok(backup(&["full", "--compress", "--device", s(&src), "--out", s(&image)]));
    assert!(!out.contains(" 0 stored"), "{out}");
    ok(backup(&["verify", s(&image), "--device", s(&src)]));
    let dst = device::create_file(&dir.path().join("dst"), DEVICE_SIZE).expect("create");
    ok(backup(&["restore", "--device", s(&dst), s(&image)]));
    assert_eq!(records(&src), records(&dst));
}

/// A device restored over itself after it went on writing keeps stale records of the later
/// run in blocks the restore leaves free: the restored device must continue above their
/// write sequences, which the target's own header knows; a blank target's are unknown.
#[test]
fn a_restored_device_continues_above_every_write_sequence_its_target_may_hold() {
    let dir = tempdir();
    let (src, cfg) = filled_source(dir.path(), 32 << 20, 2000);
    let full = dir.path().join("full.img");
    ok(backup(&["full", "--device", s(&src), "--out", s(&full)]));
    let captured = header_of(&src).write_seq_reserved;
    for version in 1..4 {
        let engine = open_engine(cfg.clone());
        fill(&engine, 0..2000, version);
        engine.close().expect("close");
    }
    let went_on_to = header_of(&src).write_seq_reserved;
    assert!(went_on_to > captured, "the later runs reserved nothing: {went_on_to} <= {captured}");
    ok(backup(&["restore", "--force", "--device", s(&src), s(&full)]));
    assert_eq!(header_of(&src).write_seq_reserved, went_on_to);
    assert_eq!(records_via_engine(&src, false).0.len(), 2000);

    let blank = device::create_file(&dir.path().join("blank"), 32 << 20).expect("create");
    ok(backup(&["restore", "--device", s(&blank), s(&full)]));
    assert!(header_of(&blank).write_seq_reserved > captured + (1 << 32));
}
