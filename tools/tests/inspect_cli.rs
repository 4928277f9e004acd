//! `spike-inspect` as an operator runs it: on device files an engine wrote and closed, on
//! images a simulated power cut left, on a device an engine holds, and on files that are
//! not Spike devices. Device files live under the target directory (a file system with
//! `O_DIRECT`, unlike a tmpfs `/tmp`).

use spike::device::sim::{SimDevice, SimFaults};
use spike::device::{self, Device};
use spike::offline::format::{
    block_records, decode_record, pick_header, BlockItem, DeviceHeader, WblockHeader, DEVICE_HEADER_SIZE,
    WBLOCK_KIND_DATA, WBLOCK_KIND_FREE,
};
use spike::{Config, Durability, Engine, WriteOptions};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

const WBLOCK_SIZE: u32 = 128 * 1024;
const DEVICE_SIZE: u64 = 16 << 20;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("spike-inspect-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

fn config(devices: Vec<PathBuf>, durability: Durability) -> Config {
    Config {
        namespace: "inspect".into(),
        devices,
        write_block_size: WBLOCK_SIZE,
        durability,
        flush_max_ms: 20,
        store_keys: true,
        ..Config::default()
    }
}

/// Formatted device files of `DEVICE_SIZE` bytes in `dir`.
fn formatted_files(dir: &Path, count: usize) -> Config {
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| device::create_file(&dir.join(format!("dev{i}")), DEVICE_SIZE).expect("create device file"))
        .collect();
    let config = config(paths, Durability::Buffered);
    Engine::format(&config, false).expect("format");
    config
}

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spike-inspect")).args(args).output().expect("run spike-inspect")
}

fn inspect_device(subcommand: &str, path: &Path) -> Output {
    inspect(&[subcommand, "--device", path.to_str().expect("UTF-8 path")])
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The line `records` prints for a live record.
fn record_line(digest: &[u8], generation: u32, void_time: u32, value: &[u8]) -> String {
    format!(
        "{} gen={generation} void={void_time} len={} xxh3={:016x}",
        hex(digest),
        value.len(),
        xxh3_64(value)
    )
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u64, version: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u64 * 31 + i * 7 + version * 131) as u8).collect()
}

/// The lines `records` must print for what `engine` holds now, sorted like the tool.
fn engine_lines(engine: &Engine) -> Vec<String> {
    let mut lines = Vec::new();
    engine
        .scan_all(&mut |record| {
            lines.push(record_line(&record.digest, record.generation, record.void_time, &record.value));
            true
        })
        .expect("scan");
    lines.sort();
    lines
}

fn listed(output: &Output) -> Vec<String> {
    stdout(output).lines().map(str::to_string).collect()
}

/// Header of a device file, decoded by the test itself.
fn read_header(path: &Path) -> DeviceHeader {
    let bytes = std::fs::read(path).expect("read device file");
    pick_header(&bytes[..DEVICE_HEADER_SIZE], &bytes[DEVICE_HEADER_SIZE..2 * DEVICE_HEADER_SIZE])
        .expect("header")
}

#[test]
fn clean_device_checks_consistent_and_lists_exactly_the_live_records() {
    let dir = tempdir();
    let config = formatted_files(dir.path(), 1);
    let engine = Engine::open(config.clone()).expect("open");
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for i in 0..400u64 {
        let v = value(i, 0, 20 + (i as usize * 37) % 3000);
        let options = WriteOptions { ttl_s: (i % 7 == 0).then_some(3600), ..Default::default() };
        engine.put(&key(i), &v, &options).expect("put");
        model.insert(i, v);
    }
    for i in (0..400u64).step_by(3) {
        let v = value(i, 1, 100 + i as usize);
        engine.put(&key(i), &v, &WriteOptions::default()).expect("overwrite");
        model.insert(i, v);
    }
    for i in (0..400u64).step_by(5) {
        engine.delete(&key(i)).expect("delete");
        model.remove(&i);
    }
    let mut expected: Vec<String> = model
        .iter()
        .map(|(&i, v)| {
            let record = engine.get(&key(i)).expect("get");
            assert_eq!(&record.value, v);
            assert_eq!(record.digest, engine.digest(&key(i)));
            record_line(&engine.digest(&key(i)), record.generation, record.void_time, v)
        })
        .collect();
    expected.sort();
    assert!(expected.iter().any(|l| !l.contains(" void=0 ")), "some records carry a TTL");
    assert!(expected.iter().any(|l| l.contains(" gen=2 ")), "some records were overwritten");
    engine.close().expect("close");
    let path = &config.devices[0];
    let image_before = std::fs::read(path).expect("read device");

    let check = inspect_device("check", path);
    assert_exit(&check, 0);
    let report = stdout(&check);
    assert!(report.contains("result: consistent"), "{report}");
    assert!(report.contains(&format!("records kept:     {} live, 80 tombstones", model.len())), "{report}");
    assert!(report.contains("damaged regions:  0"), "{report}");

    let records = inspect_device("records", path);
    assert_exit(&records, 0);
    assert_eq!(listed(&records), expected);
    assert_eq!(stderr(&records), "", "a clean device gives no warning");

    let header = read_header(path);
    let shown = inspect_device("header", path);
    assert_exit(&shown, 0);
    let shown = stdout(&shown);
    for line in [
        format!("device uuid           {}", hex(&header.device_uuid)),
        format!("namespace uuid        {}", hex(&header.namespace_uuid)),
        "namespace             \"inspect\"".to_string(),
        "device index          0 of 1".to_string(),
        "write-block size      131072 bytes (128 KiB)".to_string(),
        format!("write blocks          {} ", header.wblock_count),
        format!("first wblock offset   {} ", header.first_wblock_offset),
        "clean shutdown        yes".to_string(),
        "open count            1".to_string(),
        if header.snapshot.len_bytes == 0 {
            "snapshot              none".to_string()
        } else {
            format!("snapshot              offset {} ", header.snapshot.offset)
        },
        format!("bitmap length         {} bytes", header.bitmap_len_bytes),
        format!("created               {}", "20"),
    ] {
        assert!(shown.contains(&line), "missing {line:?} in\n{shown}");
    }
    assert!(shown.contains("(in force)"), "{shown}");

    let stats = inspect_device("stats", path);
    assert_exit(&stats, 0);
    let stats = stdout(&stats);
    assert!(stats.contains(&format!("records           {} live", model.len())), "{stats}");
    assert!(stats.contains("tombstones        80"), "{stats}");
    assert!(stats.contains("fill of blocks in use"), "{stats}");
    assert!(std::fs::read(path).expect("read device") == image_before, "the tool never writes");

    // The index snapshot written at close is verified like the fast restart reads it; a
    // damaged one is an error (the engine would fall back to a cold start).
    assert!(header.snapshot.len_bytes > 0, "close writes an index snapshot");
    assert!(report.contains("index snapshot: valid, "), "{report}");
    flip_byte(path, header.snapshot.offset + 64 + 16 + 100);
    let check = inspect_device("check", path);
    assert_exit(&check, 1);
    let report = stdout(&check);
    assert!(
        report.contains(&format!(
            "index snapshot (device offset {}): length or checksum",
            header.snapshot.offset
        )),
        "{report}"
    );
    let records = inspect_device("records", path);
    assert_exit(&records, 0);
    assert_eq!(listed(&records), expected, "the records do not depend on the snapshot");
}

#[test]
fn each_device_of_a_namespace_lists_its_own_records() {
    let dir = tempdir();
    let config = formatted_files(dir.path(), 2);
    let engine = Engine::open(config.clone()).expect("open");
    let mut expected = Vec::new();
    for i in 0..300u64 {
        let v = value(i, 0, 10 + i as usize * 3);
        engine.put(&key(i), &v, &WriteOptions::default()).expect("put");
        expected.push((engine.digest(&key(i)), record_line(&engine.digest(&key(i)), 1, 0, &v)));
    }
    engine.close().expect("close");
    let mut all_listed = Vec::new();
    for (index, path) in config.devices.iter().enumerate() {
        let check = inspect_device("check", path);
        assert_exit(&check, 0);
        let records = inspect_device("records", path);
        assert_exit(&records, 0);
        let lines = listed(&records);
        let mut own: Vec<String> = expected
            .iter()
            .filter(|(digest, _)| u16::from_le_bytes([digest[2], digest[3]]) as usize % 2 == index)
            .map(|(_, line)| line.clone())
            .collect();
        own.sort();
        assert!(!own.is_empty());
        assert_eq!(lines, own, "device {index}");
        all_listed.extend(lines);
    }
    all_listed.sort();
    let mut all: Vec<String> = expected.into_iter().map(|(_, line)| line).collect();
    all.sort();
    assert_eq!(all_listed, all);
}

/// Keys written once before the churn: they keep the oldest blocks in use.
const STATIC_KEYS: std::ops::Range<u64> = 10_000..11_300;
/// Keys overwritten and deleted over and over, so that blocks are freed and reused.
const CHURN_KEYS: u64 = 100;

/// Runs the engine on a small simulated device (31 write blocks): about 14 blocks of
/// records written once, then overwrites and deletes of a small working set until a power
/// cut after `writes_max` more device writes. Returns the device as it was at the cut.
fn run_until_power_cut(config: &Config, writes_max: u64, seed: u64) -> Arc<SimDevice> {
    let sim = Arc::new(SimDevice::new("sim", 4 << 20, seed));
    let devices = vec![sim.clone() as Arc<dyn Device>];
    Engine::format_devices(config, &devices, false).expect("format");
    let engine = Engine::open_devices(config.clone(), devices).expect("open");
    for i in STATIC_KEYS {
        engine.put(&key(i), &value(i, 0, 1300), &WriteOptions::default()).expect("put");
    }
    sim.set_faults(SimFaults {
        crash_after_writes: Some(sim.counts().writes + writes_max),
        ..Default::default()
    });
    for op in 0..100_000u64 {
        let i = (op * 7919 + seed) % CHURN_KEYS;
        let result = if op % 9 == 4 {
            engine.delete(&key(i))
        } else {
            let len = 200 + (op as usize * 389) % 2500;
            engine.put(&key(i), &value(i, op, len), &WriteOptions::default()).map(|_| ())
        };
        if result.is_err() && sim.has_crashed() {
            return sim;
        }
    }
    panic!("no power cut after {writes_max} writes");
}

#[test]
fn crash_images_check_consistent_and_list_what_recovery_keeps() {
    let dir = tempdir();
    let path = dir.path().join("crashed");
    let mut tolerated_total = 0;
    let mut corrupt_total = 0;
    let mut images = 0;
    // Commit-to-device cuts land in partial flushes of the open block; buffered ones
    // mostly in whole-block writes of a group commit. Both runs go on long enough that
    // freed blocks are rewritten and the oldest blocks fall out of the crash window.
    let cuts = [
        (Durability::CommitToDevice, 90),
        (Durability::CommitToDevice, 1500),
        (Durability::CommitToDevice, 3000),
        (Durability::Buffered, 12),
        (Durability::Buffered, 45),
        (Durability::Buffered, 90),
        (Durability::Buffered, 140),
    ];
    for (round, (durability, writes_max)) in cuts.into_iter().enumerate() {
        let config = config(Vec::new(), durability);
        let sim = run_until_power_cut(&config, writes_max, round as u64);
        for crash_seed in 0..3u64 {
            let image = sim.crash(crash_seed * 1000 + round as u64).live_image();
            std::fs::write(&path, &image).expect("write image");
            let context =
                format!("{durability:?}, power cut after {writes_max} writes, crash seed {crash_seed}");

            let check = inspect_device("check", &path);
            assert_eq!(check.status.code(), Some(0), "{context}\n{}{}", stdout(&check), stderr(&check));
            let report = stdout(&check);
            let tolerated = report
                .lines()
                .find_map(|l| l.strip_prefix("damaged regions:  "))
                .and_then(|rest| rest.split(" (").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no damage count in\n{report}"));
            tolerated_total += tolerated;
            let data_blocks = report
                .lines()
                .find_map(|l| l.strip_prefix("  data:           "))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no data block count in\n{report}"));
            assert!(
                data_blocks > 12,
                "{context}: the oldest blocks must lie outside the crash window\n{report}"
            );

            let records = inspect_device("records", &path);
            assert_exit(&records, 0);
            let recovered = Arc::new(SimDevice::from_image("recovered", image, 1));
            let engine =
                Engine::open_devices(config.clone(), vec![recovered as Arc<dyn Device>]).expect("recover");
            assert_eq!(listed(&records), engine_lines(&engine), "{context}");
            // `check` counts what the cold start of the same image counts, rule for rule.
            let r = engine.stats().recovery;
            assert_eq!(r.kind, "cold", "{context}");
            let restart = format!(
                "a cold start:     records_found={} records_kept={} tombstones_kept={} expired_dropped={} \
                 stale_records={} corrupt_records={} blocks_in_use={} blocks_freed={}",
                r.records_found,
                r.records_kept,
                r.tombstones_kept,
                r.expired_dropped,
                r.stale_records,
                r.corrupt_records,
                r.blocks_in_use,
                r.blocks_freed
            );
            assert!(
                report.lines().any(|line| line == restart),
                "{context}: expected\n{restart}\nin\n{report}"
            );
            corrupt_total += r.corrupt_records;
            drop(engine);
            images += 1;
        }
    }
    assert_eq!(images, 3 * cuts.len());
    assert!(tolerated_total > 0, "no crash image had a torn write: the tolerance rule went untested");
    assert!(corrupt_total > 0, "no crash image had a corrupt record: that count went untested");
}

#[test]
fn torn_free_marking_of_an_emptied_block_is_tolerated_anywhere() {
    // The engine frees an emptied block by rewriting its first 4 KiB page as a free
    // header and zeroes. A power cut can keep that page's zeroes but lose its first
    // sector: the old data header survives over a zeroed page. Rebuild that state from a
    // block the engine freed, with the block's old header and sequence.
    let config = config(Vec::new(), Durability::Buffered);
    let sim = Arc::new(SimDevice::new("sim", 4 << 20, 7));
    let devices = vec![sim.clone() as Arc<dyn Device>];
    Engine::format_devices(&config, &devices, false).expect("format");
    let engine = Engine::open_devices(config.clone(), devices).expect("open");
    for i in STATIC_KEYS {
        engine.put(&key(i), &value(i, 0, 1300), &WriteOptions::default()).expect("put");
    }
    for op in 0..4000u64 {
        let i = op % CHURN_KEYS;
        engine
            .put(&key(i), &value(i, op, 200 + (op as usize * 389) % 2500), &WriteOptions::default())
            .expect("put");
    }
    engine.close().expect("close");
    let mut image = sim.live_image();
    let header =
        pick_header(&image[..DEVICE_HEADER_SIZE], &image[DEVICE_HEADER_SIZE..2 * DEVICE_HEADER_SIZE])
            .expect("header");
    let wbs = WBLOCK_SIZE as usize;
    // Freed blocks and the sequence their stale records carry; the oldest one is far
    // outside the crash window.
    let (old_seq, block) = (0..header.wblock_count as u32)
        .filter_map(|b| {
            let at = header.wblock_offset(b) as usize;
            let wblock = WblockHeader::decode(&image[at..at + wbs])?;
            if wblock.kind != WBLOCK_KIND_FREE {
                return None;
            }
            let stale = (4096..wbs).step_by(16).find_map(|o| decode_record(&image[at + o..at + wbs]).ok())?;
            Some((stale.meta.wblock_seq_lo as u64, b))
        })
        .min()
        .expect("a freed block with old records past its first page");
    let at = header.wblock_offset(block) as usize;
    let old_header = WblockHeader {
        kind: WBLOCK_KIND_DATA,
        write_seq: old_seq,
        device_uuid: header.device_uuid,
        wblock_index: block,
    };
    old_header.encode_into(&mut image[at..at + 64]);
    let dir = tempdir();
    let path = dir.path().join("torn-free");
    std::fs::write(&path, &image).expect("write image");

    let check = inspect_device("check", &path);
    assert_exit(&check, 0);
    let report = stdout(&check);
    assert!(report.contains(&format!("block {block} (write seq {old_seq},")), "{report}");
    assert!(report.contains("torn free-marking"), "{report}");
    let records = inspect_device("records", &path);
    assert_exit(&records, 0);
    let recovered = Arc::new(SimDevice::from_image("recovered", image.clone(), 1));
    let engine = Engine::open_devices(config, vec![recovered as Arc<dyn Device>]).expect("recover");
    assert_eq!(listed(&records), engine_lines(&engine));
    drop(engine);

    // Strict about the same damage in a block that still holds live records: the oldest
    // static block, with bytes 512..4096 zeroed the same way.
    let static_block = (0..header.wblock_count as u32)
        .filter_map(|b| {
            let at = header.wblock_offset(b) as usize;
            let wblock = WblockHeader::decode(&image[at..at + wbs])?;
            (wblock.kind == WBLOCK_KIND_DATA && wblock.write_seq != old_seq).then_some((wblock.write_seq, b))
        })
        .min()
        .expect("data blocks")
        .1;
    let static_at = header.wblock_offset(static_block) as usize;
    image[static_at + 512..static_at + 4096].fill(0);
    std::fs::write(&path, &image).expect("write image");
    let check = inspect_device("check", &path);
    assert_exit(&check, 1);
    assert!(
        stdout(&check).contains(&format!("ERROR: {}: block {static_block} ", path.display())),
        "{}",
        stdout(&check)
    );
}

/// Offsets (block, record offset in block, record size) of the records of the data block
/// with the lowest write sequence and of the one after it.
fn two_oldest_blocks(path: &Path, header: &DeviceHeader) -> Vec<(u32, Vec<(usize, usize)>)> {
    let bytes = std::fs::read(path).expect("read device");
    let mut blocks: Vec<(u64, u32)> = (0..header.wblock_count as u32)
        .filter_map(|b| {
            let at = header.wblock_offset(b) as usize;
            let wblock = WblockHeader::decode(&bytes[at..at + WBLOCK_SIZE as usize])?;
            (wblock.kind == WBLOCK_KIND_DATA).then_some((wblock.write_seq, b))
        })
        .collect();
    blocks.sort();
    assert!(blocks.len() > 12, "enough blocks that the oldest lie outside the crash window");
    blocks[..2]
        .iter()
        .map(|&(seq, b)| {
            let at = header.wblock_offset(b) as usize;
            let records = block_records(&bytes[at..at + WBLOCK_SIZE as usize], seq)
                .filter_map(|item| match item {
                    BlockItem::Record { offset, view } => Some((offset, view.size_bytes)),
                    _ => None,
                })
                .collect();
            (b, records)
        })
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open device file");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0x20;
    file.write_all_at(&byte, offset).expect("write byte");
}

#[test]
fn check_names_device_block_and_offset_of_corruption_in_an_old_block() {
    let dir = tempdir();
    let config = formatted_files(dir.path(), 1);
    let engine = Engine::open(config.clone()).expect("open");
    for i in 0..1400u64 {
        engine.put(&key(i), &value(i, 0, 2000), &WriteOptions::default()).expect("put");
    }
    engine.close().expect("close");
    let path = &config.devices[0];
    let header = read_header(path);
    let oldest = two_oldest_blocks(path, &header);
    // A flipped bit inside a record in the middle of the oldest block (a hole), and one in
    // the last record of the next block (a tail, as a torn write would look, but in a
    // block no crash could have left half-written).
    let (hole_block, hole_records) = &oldest[0];
    let hole_at = header.wblock_offset(*hole_block) + hole_records[3].0 as u64;
    flip_byte(path, hole_at + 300);
    let (tail_block, tail_records) = &oldest[1];
    let tail_record = tail_records.last().expect("records");
    let tail_at = header.wblock_offset(*tail_block) + tail_record.0 as u64;
    flip_byte(path, tail_at + 100);

    let check = inspect_device("check", path);
    assert_exit(&check, 1);
    let report = stdout(&check);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("ERROR: ")).collect();
    assert_eq!(errors.len(), 2, "{report}");
    let name = path.display().to_string();
    for (line, block, at) in [(errors[0], hole_block, hole_at), (errors[1], tail_block, tail_at)] {
        assert!(line.contains(&name), "{line}");
        assert!(line.contains(&format!("block {block} ")), "{line}");
        assert!(line.contains(&format!("device offset {at})")), "{line}");
        assert!(line.contains("record checksum mismatch"), "{line}");
    }
    assert!(errors[0].contains("followed by more of its records"), "{}", errors[0]);
    assert!(errors[1].contains("torn tail"), "{}", errors[1]);
    assert!(report.contains("result: 2 inconsistencies"), "{report}");

    // The listing still stands (recovery skips the damage too), with a warning.
    let records = inspect_device("records", path);
    assert_exit(&records, 0);
    assert_eq!(listed(&records).len(), 1400 - 2);
    assert!(stderr(&records).contains("2 damaged region(s)"), "{}", stderr(&records));

    // An operator who knows the device crashed and ran on can widen the window.
    let lenient = inspect(&["check", "--device", path.to_str().expect("UTF-8"), "--crash-window", "1000"]);
    assert_exit(&lenient, 0);
}

#[test]
fn a_device_held_by_an_engine_is_refused() {
    let dir = tempdir();
    let config = formatted_files(dir.path(), 1);
    let path = &config.devices[0];
    let engine = Engine::open(config.clone()).expect("open");
    engine.put(b"k", b"v", &WriteOptions::default()).expect("put");
    for subcommand in ["header", "check", "records", "stats"] {
        let output = inspect_device(subcommand, path);
        assert_exit(&output, 2);
        let message = stderr(&output);
        assert!(message.contains("in use"), "{subcommand}: {message}");
        assert!(message.contains(&path.display().to_string()), "{subcommand}: {message}");
        assert!(stdout(&output).is_empty());
    }
    engine.close().expect("close");
    assert_exit(&inspect_device("header", path), 0);
}

#[test]
fn files_that_are_not_spike_devices_are_refused_clearly() {
    let dir = tempdir();
    let foreign = dir.path().join("foreign");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&foreign, noise).expect("write");
    let blank = dir.path().join("blank");
    std::fs::write(&blank, vec![0u8; 1 << 20]).expect("write");
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, vec![1u8; 4096]).expect("write");
    let missing = dir.path().join("missing");
    let cases = [
        (&foreign, "not a Spike device: device holds data that is not Spike's"),
        (&blank, "not a Spike device: blank"),
        (&tiny, "not a Spike device: device is only 4096 bytes"),
        (&missing, "cannot open"),
    ];
    for (path, message) in cases {
        for subcommand in ["header", "stats", "check", "records"] {
            let output = inspect_device(subcommand, path);
            assert_exit(&output, 2);
            assert!(
                stderr(&output).contains(message),
                "{subcommand} {}: {}",
                path.display(),
                stderr(&output)
            );
            assert!(stdout(&output).is_empty(), "{subcommand}: {}", stdout(&output));
        }
    }
    assert_exit(&inspect(&["check"]), 2);
}
