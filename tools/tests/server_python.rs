//! `spike-server` driven by a second, independent official client: the Python client
//! (`pip install aerospike`, which bundles Aerospike's C client) runs
//! `tests/python/smoke.py`. Skipped, saying why, where the package is not installed
//! (CI installs it).

#[path = "common/server.rs"]
#[allow(dead_code)]
mod server;

use std::process::Command;

#[test]
fn the_official_python_client_passes_the_smoke_test() {
    let probe = Command::new("python3").args(["-c", "import aerospike"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let reason = String::from_utf8_lossy(&out.stderr);
            println!(
                "skipped: the Python client is not installed (pip install aerospike): {}",
                reason.trim()
            );
            return;
        }
        Err(err) => {
            println!("skipped: python3 cannot run: {err}");
            return;
        }
    }
    let server = server::ServerProcess::start("commit-to-device", "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/smoke.py");
    let out = Command::new("python3").arg(script).arg(server.port.to_string()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python smoke test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("smoke test: ok"), "{stdout}");
}
