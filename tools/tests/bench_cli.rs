//! The `spike-bench` binary end to end: a tiny run on a file device, and option checking.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spike-bench"))
}

#[test]
fn tiny_run_on_a_file_device_prints_the_json_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let device = dir.path().join("device");
    let output = bench()
        .arg("--device")
        .arg(&device)
        .args(["--format", "--size", "64M", "--records", "2000", "--duration", "2", "--json"])
        .args(["--write-block-size", "131072", "--threads", "1", "--raw-duration", "0.3"])
        .output()
        .expect("run spike-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "spike-bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is not one JSON document ({e}): {}", String::from_utf8_lossy(&output.stdout))
    });

    assert!(report["ops_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{report}");
    for field in ["p50", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][field].as_f64().is_some_and(|x| x > 0.0),
            "latency_us.{field}: {report}"
        );
    }
    for ms in ["1", "8", "64"] {
        let share = report["over_ms"][ms].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&share), "over_ms.{ms} = {share}");
    }
    assert!(report["write_amplification"].as_f64().is_some_and(|x| x >= 1.0), "{report}");
    for field in ["seq_write_mb_s", "rand_read_iops", "rand_read_p99_us"] {
        assert!(report["raw"][field].as_f64().is_some_and(|x| x > 0.0), "raw.{field}: {report}");
    }
    for field in ["write", "read"] {
        assert!(report["ratio"][field].as_f64().is_some_and(|x| x > 0.0), "ratio.{field}: {report}");
    }
    assert_eq!(report["load"]["records"], 2000);
    assert_eq!(report["config"]["write_block_size"], 131072);

    // The device is now a Spike device holding the records: it can be reused as it is, here
    // at a fixed rate.
    let reuse = bench()
        .arg("--device")
        .arg(&device)
        .args(["--no-load", "--no-raw", "--workload", "c", "--ops", "500", "--threads", "2", "--json"])
        .args(["--rate", "2000"])
        .output()
        .expect("run spike-bench");
    let stderr = String::from_utf8_lossy(&reuse.stderr);
    assert!(reuse.status.success(), "reuse failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&reuse.stdout).expect("JSON report");
    assert_eq!(report["config"]["records"], 2000);
    assert_eq!(report["ops"]["read"]["count"], 500);
    // Paced runs batch the reads that are due together (through get_many) by default.
    assert_eq!(report["config"]["batch"], 16);
}

#[test]
fn bad_options_fail_with_a_message_and_touch_nothing() {
    let output = bench().args(["--value-size", "0..0"]).output().expect("run spike-bench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("value"));

    let output = bench().args(["--threads", "0"]).output().expect("run spike-bench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--threads"));
}

#[test]
fn a_device_that_is_not_spike_is_refused_without_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let device = dir.path().join("data");
    std::fs::write(&device, vec![0x5Au8; 32 << 20]).expect("write a foreign file");
    let output = bench().arg("--device").arg(&device).output().expect("run spike-bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a usable Spike device"), "{stderr}");
    let untouched = std::fs::read(&device).expect("read back");
    assert!(untouched.iter().all(|&b| b == 0x5A), "the bench wrote to a device it had to refuse");

    // --format alone still refuses data that is not Spike's.
    let output =
        bench().arg("--device").arg(&device).args(["--format", "--duration", "1"]).output().expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--force"));
    assert!(std::fs::read(&device).expect("read back").iter().all(|&b| b == 0x5A));
}
