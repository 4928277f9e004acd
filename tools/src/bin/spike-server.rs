//! `spike-server`: serves Spike namespaces over Aerospike's wire protocol (see
//! [`spike_tools::server`]). With no arguments it serves a namespace `test` on a file
//! device in a data directory, so that a client can connect at once.
//!
//! Exit codes: 0 after a clean stop (SIGTERM or SIGINT: in-flight requests finish, every
//! namespace closes, so the next start is a fast restart), 2 bad usage or configuration,
//! 1 a namespace could not be opened or the listener failed.

use clap::Parser;
use spike::Engine;
use spike_tools::server::catalog::Catalog;
use spike_tools::server::config::{ServerConfig, EXAMPLE};
use spike_tools::server::{metrics, net, Limits, Namespace, Server};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "spike-server",
    version,
    about = "An Aerospike-compatible server on the Spike storage engine",
    after_help = format!("With no --config: namespace `test` on <data-dir>/test.dat (4 GiB, sparse), formatted if blank.\n\nExample configuration:\n\n{EXAMPLE}")
)]
struct Cli {
    /// TOML configuration file (see the example below).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory of the quick-start namespace (default: ./spike-data).
    #[arg(long, conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, overriding the configuration.
    #[arg(long)]
    listen: Option<String>,
    /// Format blank (all-zero) devices of every namespace; never a device holding data.
    #[arg(long)]
    format: bool,
    /// Event-loop threads (1 to 256), overriding the configuration.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9145).
    #[arg(long)]
    metrics: Option<String>,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let mut config = match load_config(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("spike-server: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = &cli.listen {
        config.listen = listen.clone();
    }
    if let Some(threads) = cli.threads {
        config.threads = threads as usize;
    }
    config.metrics = cli.metrics.clone().or(config.metrics);
    match run(config, cli.format) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spike-server: {err}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<ServerConfig, String> {
    match &cli.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            ServerConfig::parse(&text, path)
        }
        None => {
            let dir = cli.data_dir.clone().unwrap_or_else(|| PathBuf::from("spike-data"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Ok(ServerConfig::quick_start(&dir))
        }
    }
}

fn run(config: ServerConfig, format: bool) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let listener = std::net::TcpListener::bind(&config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    // Before any device is opened: a bad catalog file stops the start with nothing touched.
    let catalog = Catalog::open(config.udf_dir.clone())?;
    let mut namespaces = Vec::new();
    for ns in &config.namespaces {
        namespaces.push(open_namespace(ns, format)?);
    }
    let limits = Limits {
        threads: config.threads,
        workers: config.workers,
        connections_max: config.connections_max,
        frame_bytes_max: config.frame_bytes_max,
        idle_timeout_s: config.idle_timeout_s,
        index_sweep_s: config.index_sweep_s,
    };
    let mut server = Server::new(namespaces, node_id(&config.listen), config.cluster_name.clone(), limits);
    server.catalog = catalog;
    let server = Arc::new(server);
    let metrics_thread = match &config.metrics {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            let (server, stop) = (server.clone(), stop.clone());
            Some(std::thread::spawn(move || metrics::serve(server, listener, stop)))
        }
        None => None,
    };
    log::info!("listening on {} ({} event loops, {} workers)", config.listen, config.threads, config.workers);
    net::serve(server.clone(), listener, stop.clone()).map_err(|e| format!("listener failed: {e}"))?;
    stop.store(true, std::sync::atomic::Ordering::Release);
    if let Some(thread) = metrics_thread {
        let _ = thread.join();
    }
    let server = Arc::try_unwrap(server).map_err(|_| "a thread still holds the namespaces".to_string())?;
    let mut first_error = None;
    for ns in server.namespaces {
        match ns.engine.close() {
            Ok(()) => log::info!("namespace {} closed cleanly", ns.name),
            Err(err) => {
                first_error.get_or_insert(format!("namespace {}: close failed: {err}", ns.name));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn open_namespace(
    ns: &spike_tools::server::config::NamespaceConfig,
    format: bool,
) -> Result<Namespace, String> {
    let engine_config = ns.engine_config()?;
    if let Some(size) = ns.device_size_bytes()? {
        for path in &ns.devices {
            create_sparse(path, size)?;
        }
    }
    let engine = match Engine::open(engine_config.clone()) {
        Ok(engine) => engine,
        Err(open_err) if format || ns.format => {
            // Formats only blank devices: a foreign or used one is refused here too.
            Engine::format(&engine_config, false)
                .map_err(|e| format!("namespace {}: cannot open ({open_err}) nor format ({e})", ns.name))?;
            log::info!("namespace {}: formatted blank devices", ns.name);
            Engine::open(engine_config).map_err(|e| format!("namespace {}: {e}", ns.name))?
        }
        Err(err @ spike::Error::Refused { .. }) if err.to_string().contains("blank device") => {
            return Err(format!(
                "namespace {}: {err} (pass --format, or set format = true, to format it)",
                ns.name
            ))
        }
        Err(err) => return Err(format!("namespace {}: {err}", ns.name)),
    };
    let recovery = engine.stats().recovery;
    log::info!(
        "namespace {}: {} start, {} records, {} ms",
        ns.name,
        recovery.kind,
        recovery.records_kept,
        recovery.duration_ms
    );
    Ok(Namespace::new(ns.name.clone(), engine, ns.default_ttl_s, ns.store_keys))
}

/// Creates a missing device file as a sparse file of `size` bytes (an existing one is
/// left as it is).
fn create_sparse(path: &Path, size: u64) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(size).map_err(|e| format!("cannot size {}: {e}", path.display()))
}

/// A node id stable for this host and port, at most 16 hex digits (clients keep 19).
fn node_id(listen: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{}|{listen}", host.trim()).as_bytes());
    format!("{:X}", hash & 0x00FF_FFFF_FFFF_FFFF)
}

/// Log lines to stderr at the level in `SPIKE_LOG` (error, warn, info, debug; info by default).
fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::max_level()
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                eprintln!("spike-server {}: {}", record.level(), record.args());
            }
        }
        fn flush(&self) {}
    }
    let level =
        std::env::var("SPIKE_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(log::LevelFilter::Info);
    let _ = log::set_logger(&Stderr);
    log::set_max_level(level);
}
