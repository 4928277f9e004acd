//! `spike-server`: Aerospike's wire protocol on the Spike engine, so that applications
//! written for Aerospike, with the official clients, run on Spike.
//!
//! Modules: `wire` (frames, messages, fields, ops; pure), `bins` (the record encoding in
//! the engine's value; pure), `info` (the info protocol), `record` (single-record
//! commands), `batch`, `scan`, `net` (the event loops), `config` (the TOML file and
//! flags), `metrics` (the Prometheus endpoint).
//!
//! More modules: `msgpack` (lists and maps as the clients encode them), `cdt` (list and
//! map operations), `filter` (filter expressions), `udf` (record UDFs in Lua), `catalog`
//! (registered UDF modules and index definitions), `counters` (per-namespace command
//! counts).
//!
//! Threads: one acceptor, `threads` event loops (each an epoll set of connections, via
//! mio) that decode requests, run them on the engine (the single-record commands of one
//! round together, so a loop blocks once per round on the device) and write the replies,
//! `workers` threads that take a connection from its loop for a command that may take
//! long (a UDF call, a batch, a scan, a truncate) and hand it back, and the engine's own
//! flusher and janitor threads per namespace.

pub mod batch;
pub mod bins;
pub mod bits;
pub mod catalog;
pub mod cdt;
pub mod cdt_context;
pub mod cdt_path;
pub mod cdt_select;
pub mod compression;
pub mod config;
pub mod counters;
pub mod exp_math;
pub mod exp_op;
pub mod filter;
pub mod geo;
pub mod hll;
pub mod index_query;
pub mod info;
pub mod jobs;
pub mod metrics;
pub mod msgpack;
pub mod net;
pub mod record;
pub mod scan;
pub mod sindex;
pub mod string_ops;
pub mod udf;
pub mod udf_values;
pub mod wire;

use spike::Engine;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// A namespace served: its engine and the settings the protocol needs.
pub struct Namespace {
    pub name: String,
    pub engine: Engine,
    /// TTL of a write that asks for the namespace default (TTL 0); 0 = never expires.
    pub default_ttl_s: u32,
    /// Keep the user key a client sends (scans and batches then return it).
    pub store_keys: bool,
    /// Commands served, by origin, kind and result (the `namespace/<ns>` statistics).
    pub counters: counters::Counters,
    /// Secondary indexes kept in memory (`sindex`).
    pub sindexes: sindex::Indexes,
}

impl Namespace {
    pub fn new(name: String, engine: Engine, default_ttl_s: u32, store_keys: bool) -> Namespace {
        Namespace {
            name,
            engine,
            default_ttl_s,
            store_keys,
            counters: Default::default(),
            sindexes: Default::default(),
        }
    }

    /// Deletes the records of `set` (or all) last updated before `before_ms`, durably.
    pub fn truncate(&self, set: Option<&[u8]>, before_ms: u64) -> spike::Result<u64> {
        let mut matches = |record: &spike::Record| match set {
            None => true,
            Some(set) => bins::StoredRecord::decode(&record.value).is_ok_and(|r| r.set == set),
        };
        self.engine.truncate(0..spike::limits::PARTITION_COUNT, before_ms, &mut matches)
    }

    /// Records per set name. Cost: a scan of the whole namespace (the engine keeps no
    /// per-set index), so it answers `sets` info requests, not a hot path.
    pub fn set_counts(&self) -> Vec<(Vec<u8>, u64)> {
        let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for partition in 0..spike::limits::PARTITION_COUNT {
            let _ = self.engine.scan_partition_by_digest(partition, None, &mut |record| {
                if let Ok(Ok(stored)) = record.map(|r| bins::StoredRecord::decode(&r.value)) {
                    if !stored.set.is_empty() {
                        *counts.entry(stored.set).or_default() += 1;
                    }
                }
                true
            });
        }
        counts.into_iter().collect()
    }
}

/// Everything the event loops share.
pub struct Server {
    pub namespaces: Vec<Namespace>,
    pub node_id: String,
    pub cluster_name: Option<String>,
    pub threads: usize,
    pub workers: usize,
    pub connections_max: usize,
    pub frame_bytes_max: usize,
    pub idle_timeout_s: u64,
    /// How often the job thread sweeps the secondary indexes (0: never).
    pub index_sweep_s: u64,
    pub connections: AtomicUsize,
    pub started: Instant,
    /// UDF modules and index definitions clients registered (kept in `udf_dir`, if any).
    pub catalog: catalog::Catalog,
    /// Background jobs: queued, running and recently finished (`jobs`).
    pub jobs: jobs::Jobs,
}

/// The limits of `Server`, with the defaults of the example configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    pub threads: usize,
    pub workers: usize,
    pub connections_max: usize,
    pub frame_bytes_max: usize,
    pub idle_timeout_s: u64,
    pub index_sweep_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            threads: config::default_threads(),
            workers: config::default_workers(),
            connections_max: 10_000,
            frame_bytes_max: 16 << 20,
            idle_timeout_s: 0,
            index_sweep_s: config::default_index_sweep_s(),
        }
    }
}

impl Server {
    pub fn new(
        namespaces: Vec<Namespace>,
        node_id: String,
        cluster_name: Option<String>,
        limits: Limits,
    ) -> Server {
        Server {
            namespaces,
            node_id,
            cluster_name,
            threads: limits.threads,
            workers: limits.workers,
            connections_max: limits.connections_max,
            frame_bytes_max: limits.frame_bytes_max,
            idle_timeout_s: limits.idle_timeout_s,
            index_sweep_s: limits.index_sweep_s,
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            catalog: catalog::Catalog::default(),
            jobs: jobs::Jobs::default(),
        }
    }

    /// Adds the secondary indexes the catalog holds (saved before a restart) to their
    /// namespaces and queues their builds; until an index is built, its queries scan.
    pub fn build_kept_indexes(&self) {
        for (namespace, args) in self.catalog.index_definitions() {
            let (Some(ns), Some(definition)) =
                (self.namespace(namespace.as_bytes()), sindex::Definition::from_args(&args))
            else {
                continue;
            };
            if ns.sindexes.find(&definition.name).is_some() {
                continue;
            }
            let index = ns.sindexes.add(definition);
            jobs::submit_or_run(self, jobs::Task::BuildIndex { namespace: ns.name.clone(), index });
        }
    }

    pub fn namespace(&self, name: &[u8]) -> Option<&Namespace> {
        self.namespaces.iter().find(|ns| ns.name.as_bytes() == name)
    }
}
