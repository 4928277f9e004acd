//! Real devices: regular files opened with O_DIRECT through both I/O backends, a loop
//! device (when running as root), exclusive locking, and every way open and format refuse
//! a device they must not touch, leaving it unchanged.

mod common;

use common::key;
use spike::device::{self, IoBackend};
use spike::{Config, Durability, Engine, Error, WriteOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn file_config(dir: &Path, name: &str, size: u64) -> Config {
    let path = dir.join(name);
    device::create_file(&path, size).unwrap();
    Config {
        namespace: "files".into(),
        devices: vec![path],
        write_block_size: 128 * 1024,
        durability: Durability::CommitToDevice,
        post_write_cache_blocks: 1,
        ..Config::default()
    }
}

fn exercise(config: &Config, records: u64) {
    let engine = Engine::open(config.clone()).unwrap();
    for i in 0..records {
        engine.put(&key(i), &common::value(i, 1, 700), &WriteOptions::default()).unwrap();
    }
    for i in 0..records {
        assert_eq!(engine.get(&key(i)).unwrap().value, common::value(i, 1, 700));
    }
    assert!(engine.stats().reads_from_device > 0, "reads should go to the device");
    // A batch counts its reads by where they came from, like single gets: the last record
    // is in the open block, the first on the device.
    let before = engine.stats();
    let (first, last) = (key(0), key(records - 1));
    for found in engine.get_many(&[&first[..], &last[..]]) {
        found.unwrap();
    }
    let after = engine.stats();
    assert_eq!(after.reads_from_device - before.reads_from_device, 1, "batch reads from the device");
    assert_eq!(after.reads_from_memory - before.reads_from_memory, 1, "batch reads from RAM");
    engine.close().unwrap();
    let engine = Engine::open(config.clone()).unwrap();
    assert_eq!(engine.stats().recovery.records_kept, records);
    for i in 0..records {
        assert_eq!(engine.get(&key(i)).unwrap().value, common::value(i, 1, 700));
    }
}

#[test]
fn file_devices_work_with_both_io_backends() {
    for backend in [IoBackend::Blocking, IoBackend::Auto] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = file_config(dir.path(), "dev", 16 << 20);
        config.io_backend = backend;
        Engine::format(&config, false).unwrap();
        exercise(&config, 3000);
        // Which backend really served the engine: pread/pwrite when asked, io_uring for
        // Auto whenever this kernel lets a ring be set up (else say it was skipped).
        let engine = Engine::open(config.clone()).unwrap();
        let served_by = engine.stats().devices[0].backend;
        engine.close().unwrap();
        let uring_works = device::open(&config.devices[0], IoBackend::Uring);
        match (backend, &uring_works) {
            (IoBackend::Blocking, _) => assert_eq!(served_by, "pread/pwrite"),
            (_, Ok(_)) => assert_eq!(served_by, "io_uring"),
            (_, Err(err)) => {
                assert_eq!(served_by, "pread/pwrite");
                println!("skipped the io_uring check: io_uring cannot be set up here ({err})");
            }
        }
        println!("backend {backend:?} -> {served_by}");
    }
}

/// A file whose every 4 KiB unit starts with its own index, opened with `backend`.
fn patterned_device(dir: &Path, units: u64, backend: IoBackend) -> std::sync::Arc<dyn device::Device> {
    let path = dir.join("stream");
    let mut bytes = vec![0u8; (units * 4096) as usize];
    for (i, unit) in bytes.chunks_mut(4096).enumerate() {
        unit[..8].copy_from_slice(&(i as u64).to_le_bytes());
        unit[8] = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    device::open(&path, backend).unwrap()
}

#[test]
fn read_streams_deliver_every_read_in_order_on_both_backends() {
    use device::{AlignedBuf, StreamRead};
    let dir = tempfile::tempdir().unwrap();
    // (first unit, units): out of order, overlapping, empty and large reads.
    let reads: Vec<(u64, usize)> =
        (0..200u64).map(|i| ((i * 37) % 480, [1, 2, 0, 8, 32][i as usize % 5])).collect();
    for backend in [IoBackend::Blocking, IoBackend::Uring] {
        let device = patterned_device(dir.path(), 512, backend);
        for depth in [1, 3, 16, 1000] {
            let mut issued = reads.iter();
            let mut delivered = 0usize;
            device
                .read_stream(
                    depth,
                    &mut || {
                        Ok(issued.next().map(|&(unit, units)| StreamRead {
                            offset: unit * 4096,
                            buf: AlignedBuf::zeroed(32 * 4096),
                            len: units * 4096,
                        }))
                    },
                    &mut |read| {
                        let (unit, units) = reads[delivered];
                        assert_eq!((read.offset, read.len), (unit * 4096, units * 4096), "in order");
                        for (k, got) in read.buf[..read.len].chunks(4096).enumerate() {
                            assert_eq!(got[..8], (unit + k as u64).to_le_bytes());
                            assert_eq!(got[8], 0xA5);
                        }
                        delivered += 1;
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(delivered, reads.len(), "{backend:?} depth {depth}");
        }
    }
}

#[test]
fn a_read_stream_stops_at_the_first_error_and_returns_it() {
    use device::{AlignedBuf, StreamRead};
    let dir = tempfile::tempdir().unwrap();
    for backend in [IoBackend::Blocking, IoBackend::Uring] {
        let device = patterned_device(dir.path(), 64, backend);
        let read = |unit: u64| StreamRead { offset: unit * 4096, buf: AlignedBuf::zeroed(4096), len: 4096 };
        // A read past the end: its error, naming the offset; nothing after it is asked for.
        let (mut asked, mut delivered) = (0u64, 0u64);
        let err = device
            .read_stream(
                4,
                &mut || {
                    asked += 1;
                    Ok(Some(read(if asked == 10 { 64 } else { asked })))
                },
                &mut |_| {
                    delivered += 1;
                    Ok(())
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("offset 262144"), "{backend:?}: {err}");
        assert_eq!(asked, 10, "{backend:?}");
        assert!(delivered <= 9, "{backend:?}");
        // `done` failing: that error comes back and `next` is asked at most `depth` more.
        let (mut asked, mut delivered) = (0u64, 0u64);
        let err = device
            .read_stream(
                4,
                &mut || {
                    asked += 1;
                    Ok((asked < 60).then(|| read(asked)))
                },
                &mut |_| {
                    delivered += 1;
                    if delivered == 5 {
                        return Err(Error::Config("consumer gave up".into()));
                    }
                    Ok(())
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("consumer gave up"), "{backend:?}: {err}");
        assert_eq!(delivered, 5, "{backend:?}");
        assert!(asked <= 5 + 4, "{backend:?}: asked {asked}");
        // `next` failing ends the stream with its error.
        let mut asked = 0u64;
        let err = device
            .read_stream(
                4,
                &mut || {
                    asked += 1;
                    if asked == 7 {
                        return Err(Error::Config("producer failed".into()));
                    }
                    Ok(Some(read(asked)))
                },
                &mut |_| Ok(()),
            )
            .unwrap_err();
        assert!(err.to_string().contains("producer failed"), "{backend:?}: {err}");
    }
}

/// A lock left behind by a process that is gone (here: `flock` exits while the `sleep` it
/// started keeps the locked descriptor for a second, as a dead process's io_uring does
/// for a moment after `kill -9`) is waited for, not refused; a live holder is refused at
/// once.
/// A file that shrinks to an unaligned size under an open device: every read of its last
/// unit is a short transfer that moves less than one 4 KiB unit, so a retry loop without a
/// bound would spin on it forever. Both backends must end in an error naming the stall.
#[test]
fn a_device_that_keeps_returning_short_transfers_ends_in_an_error() {
    use device::AlignedBuf;
    let dir = tempfile::tempdir().unwrap();
    for backend in [IoBackend::Blocking, IoBackend::Uring] {
        let device = patterned_device(dir.path(), 64, backend);
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("stream"))
            .unwrap()
            .set_len(63 * 4096 + 100)
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = AlignedBuf::zeroed(4096);
            let _ = tx.send(device.read_at(&mut buf, 63 * 4096).map_err(|e| e.to_string()));
        });
        let outcome = rx.recv_timeout(std::time::Duration::from_secs(20));
        let err = match outcome {
            Ok(Err(err)) => err,
            Ok(Ok(())) => panic!("{backend:?}: a short read of the last unit succeeded"),
            Err(_) => panic!("{backend:?}: the read still spins after 20 s"),
        };
        assert!(err.contains("no progress"), "{backend:?}: {err}");
    }
}

#[test]
fn a_lock_left_by_a_dead_process_is_waited_for_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), "dev", 8 << 20);
    Engine::format(&config, false).unwrap();
    let path = &config.devices[0];
    let status = std::process::Command::new("flock")
        .arg(path)
        .args(["sh", "-c", "sleep 1 >/dev/null 2>&1 &"])
        .status();
    let Ok(status) = status else {
        println!("skipped: the flock command is not installed");
        return;
    };
    assert!(status.success());
    let start = std::time::Instant::now();
    let engine = Engine::open(config.clone()).expect("open after the holder died");
    let waited = start.elapsed();
    assert!(waited >= std::time::Duration::from_millis(300), "the lock was free at once ({waited:?})");
    assert!(waited < std::time::Duration::from_millis(spike::device::DEVICE_LOCK_WAIT_MS_MAX + 1000));
    // A live holder (this process) is refused without the wait.
    let start = std::time::Instant::now();
    assert!(matches!(Engine::open(config.clone()), Err(Error::DeviceInUse { .. })));
    assert!(start.elapsed() < std::time::Duration::from_millis(500), "{:?}", start.elapsed());
    engine.close().unwrap();
}

#[test]
fn a_device_in_use_is_refused_to_a_second_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), "dev", 8 << 20);
    Engine::format(&config, false).unwrap();
    let engine = Engine::open(config.clone()).unwrap();
    assert!(matches!(Engine::open(config.clone()), Err(Error::DeviceInUse { .. })));
    assert!(matches!(Engine::format(&config, true), Err(Error::DeviceInUse { .. })));
    engine.close().unwrap();
    Engine::open(config).unwrap().close().unwrap();
}

fn refused_and_unchanged(config: &Config, expect: &str) {
    let before = std::fs::read(&config.devices[0]).unwrap();
    let err = Engine::open(config.clone()).err().expect("open must refuse");
    let message = err.to_string();
    assert!(message.contains(expect), "{message:?} does not say {expect:?}");
    assert!(
        message.contains(&config.devices[0].display().to_string()) || matches!(err, Error::Config(_)),
        "{message}"
    );
    assert_eq!(before, std::fs::read(&config.devices[0]).unwrap(), "a refused open changed the device");
}

#[test]
fn blank_foreign_and_mismatched_devices_are_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), "blank", 8 << 20);
    refused_and_unchanged(&config, "blank device");

    let foreign = file_config(dir.path(), "ext4", 8 << 20);
    let mut bytes = std::fs::read(&foreign.devices[0]).unwrap();
    bytes[1080] = 0x53;
    bytes[1081] = 0xEF;
    std::fs::write(&foreign.devices[0], &bytes).unwrap();
    refused_and_unchanged(&foreign, "ext2/3/4");
    let err = Engine::format(&foreign, false).unwrap_err().to_string();
    assert!(err.contains("needs force"), "{err}");
    assert_eq!(bytes, std::fs::read(&foreign.devices[0]).unwrap());
    Engine::format(&foreign, true).unwrap();
    Engine::open(foreign.clone()).unwrap().close().unwrap();

    let config = file_config(dir.path(), "spike", 8 << 20);
    Engine::format(&config, false).unwrap();
    let other_namespace = Config { namespace: "other".into(), ..config.clone() };
    refused_and_unchanged(&other_namespace, "belongs to namespace \"files\"");
    let other_block_size = Config { write_block_size: 256 * 1024, ..config.clone() };
    refused_and_unchanged(&other_block_size, "131072-byte write blocks");
    let err = Engine::format(&config, false).unwrap_err().to_string();
    assert!(err.contains("already a Spike device"), "{err}");
}

#[test]
fn a_namespace_with_a_missing_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = file_config(dir.path(), "a", 8 << 20);
    config.devices.push(file_config(dir.path(), "b", 8 << 20).devices[0].clone());
    Engine::format(&config, false).unwrap();
    Engine::open(config.clone()).unwrap().close().unwrap();
    let only_first = Config { devices: vec![config.devices[0].clone()], ..config.clone() };
    let err = Engine::open(only_first).err().expect("must refuse").to_string();
    assert!(err.contains("missing device index 1"), "{err}");
    // Given in the wrong order, the devices are put back in index order.
    let swapped = Config { devices: vec![config.devices[1].clone(), config.devices[0].clone()], ..config };
    Engine::open(swapped).unwrap().close().unwrap();
}

#[test]
fn a_version_from_the_future_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), "dev", 8 << 20);
    Engine::format(&config, false).unwrap();
    let mut bytes = std::fs::read(&config.devices[0]).unwrap();
    for slot in [0usize, 4096] {
        if bytes[slot..slot + 8] == *b"SPIKEDEV" {
            let mut header = spike::offline::format::DeviceHeader::decode(&bytes[slot..slot + 4096]).unwrap();
            header.format_version = 99;
            bytes[slot..slot + 4096].copy_from_slice(&header.encode());
        }
    }
    std::fs::write(&config.devices[0], &bytes).unwrap();
    refused_and_unchanged(&config, "format version 99");
}

/// A loop device with direct I/O over a file in a temporary directory; detached on drop.
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    fn attach(backing: &Path) -> Option<LoopDevice> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipping loop device test: not running as root");
            return None;
        }
        let output = Command::new("losetup").args(["--direct-io=on", "-f", "--show"]).arg(backing).output();
        match output {
            Ok(out) if out.status.success() => {
                Some(LoopDevice { path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()) })
            }
            Ok(out) => {
                println!(
                    "skipping loop device test: losetup failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
            Err(err) => {
                println!("skipping loop device test: cannot run losetup: {err}");
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

#[test]
fn loop_device_with_direct_io() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    device::create_file(&backing, 32 << 20).unwrap();
    let Some(loop_device) = LoopDevice::attach(&backing) else { return };
    let config = Config {
        namespace: "loop".into(),
        devices: vec![loop_device.path.clone()],
        write_block_size: 128 * 1024,
        durability: Durability::CommitToDevice,
        post_write_cache_blocks: 1,
        ..Config::default()
    };
    Engine::format(&config, false).unwrap();
    exercise(&config, 5000);
    let engine = Engine::open(config.clone()).unwrap();
    assert!(matches!(Engine::open(config.clone()), Err(Error::DeviceInUse { .. })));
    println!("loop device {} served by {}", loop_device.path.display(), engine.stats().devices[0].backend);
    engine.close().unwrap();
}

#[test]
fn a_closed_device_can_be_opened_again_at_once_even_while_a_forked_child_holds_its_file() {
    // A process forked while the engine is open shares the device's open file (until it
    // execs or exits), and with it the flock. `close` must release the lock anyway, or a
    // server that spawns processes could not reopen a namespace it just closed.
    let dir = tempfile::tempdir().unwrap();
    let config = Config { fast_restart: false, ..file_config(dir.path(), "dev", 8 << 20) };
    Engine::format(&config, false).unwrap();
    let engine = Engine::open(config.clone()).unwrap();
    engine.put(b"k", b"v", &WriteOptions::default()).unwrap();
    // SAFETY: the child calls only async-signal-safe functions (nanosleep, _exit).
    let child = unsafe { libc::fork() };
    if child == 0 {
        let two_seconds = libc::timespec { tv_sec: 2, tv_nsec: 0 };
        unsafe {
            libc::nanosleep(&two_seconds, std::ptr::null_mut());
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork failed");
    engine.close().unwrap();
    let reopened = Engine::open(config.clone());
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let reopened = reopened.expect("reopen while the forked child still holds the file");
    assert_eq!(reopened.get(b"k").unwrap().value, b"v");
    reopened.close().unwrap();
    for round in 0..50 {
        let engine = Engine::open(config.clone()).unwrap_or_else(|err| panic!("round {round}: {err}"));
        engine.put(b"k", &[round as u8; 3000], &WriteOptions::default()).unwrap();
        engine.close().unwrap();
    }
}
