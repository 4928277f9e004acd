//! A `spike-server` process for tests: its own data directory and port on 127.0.0.1,
//! started with a TOML config, stopped with SIGTERM (clean) or SIGKILL (a crash).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    pub child: Option<Child>,
    pub port: u16,
    /// Holds the device file and config until the test ends.
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// Where the server's log goes (at level info) when started by `start_logged`; else
    /// it shares the test's stderr.
    pub log_path: Option<PathBuf>,
}

/// Ports handed to test servers: below Linux's ephemeral range (32768 and up), so that
/// no client socket of a concurrent test is given one as its source port, and the probe
/// in `launch` cannot connect to itself (a TCP self-connect to a port nobody listens on
/// succeeds when the kernel picks that same port as the source), which made a server
/// find its port taken and a test connect to nothing.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port free now on 127.0.0.1, outside the ephemeral range.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    for attempt in 0u64..1000 {
        let draw = state.hash_one((std::process::id(), attempt, Instant::now()));
        let port = TEST_PORTS.start + (draw % (TEST_PORTS.end - TEST_PORTS.start) as u64) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

impl ServerProcess {
    /// Starts a server with one namespace `test` on a 256 MiB file (`extra` is appended
    /// to the namespace's table).
    pub fn start(durability: &str, extra: &str) -> ServerProcess {
        Self::start_with(durability, "", extra)
    }

    /// `start`, with `top` added to the configuration's top level.
    pub fn start_with(durability: &str, top: &str, extra: &str) -> ServerProcess {
        let mut server = Self::configure(durability, top, extra);
        server.launch();
        server
    }

    /// `start_with`, with the server's log kept at level info in a file (`log`).
    #[allow(dead_code)] // not every test crate that includes this file reads logs
    pub fn start_logged(durability: &str, top: &str, extra: &str) -> ServerProcess {
        let mut server = Self::configure(durability, top, extra);
        server.log_path = Some(server._dir.path().join("server.log"));
        server.launch();
        server
    }

    /// A data directory, port and config, not launched yet.
    fn configure(durability: &str, top: &str, extra: &str) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nthreads = 4\n{top}\n\n[[namespace]]\nname = \"test\"\n\
             devices = [\"{}\"]\ndevice_size = \"256M\"\nformat = true\ndurability = \"{durability}\"\n\
             write_block_size = 131072\nflush_max_ms = 50\n{extra}\n",
            dir.path().join("test.dat").display()
        );
        let config_path = dir.path().join("spike.toml");
        std::fs::write(&config_path, config).unwrap();
        ServerProcess { child: None, port, _dir: dir, config_path, log_path: None }
    }

    /// What the server logged so far (`start_logged`).
    #[allow(dead_code)] // not every test crate that includes this file reads logs
    pub fn log(&self) -> String {
        self.log_path
            .as_ref()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn launch(&mut self) {
        let (level, stderr) = match &self.log_path {
            Some(path) => {
                let file = std::fs::File::options().create(true).append(true).open(path).unwrap();
                ("info".to_string(), Stdio::from(file))
            }
            None => (std::env::var("SPIKE_LOG").unwrap_or_else(|_| "warn".into()), Stdio::inherit()),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_spike-server"))
            .arg("--config")
            .arg(&self.config_path)
            .env("SPIKE_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "spike-server did not listen on port {}", self.port);
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "spike-server exited before listening on port {}: {exited:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait: returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok()?.code()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
