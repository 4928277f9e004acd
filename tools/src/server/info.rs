//! The info protocol (`../shared/aerospike-wire.md` §2): one reply line per request line,
//! the request echoed, a TAB, the value. The values the clients parse at connect and on
//! every tend (node, build, partition-generation, peers, replicas) have exactly the
//! forms the fact sheet gives; unknown commands get `ERROR:4:unrecognized command`.

use super::counters::Kind;
use super::{catalog, jobs, Namespace, Server};
use std::fmt::Write;

pub const BUILD: &str = "8.1.2.0";
const FEATURES: &str = "batch-any;batch-index;blob-bits;float;peers;pipelining;pquery;pscans;query-show;replicas;replicas-all;replicas-master;truncate-namespace";

/// Answers an info request body; `local_addr` is the accepting socket's address.
pub fn answer(server: &Server, request: &[u8], local_addr: &str) -> String {
    let text = String::from_utf8_lossy(request);
    let mut out = String::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let value = command(server, line, local_addr);
        // A value never carries the separators of the reply.
        let value = value.replace(['\t', '\n'], " ");
        let _ = writeln!(out, "{line}\t{value}");
    }
    out
}

fn command(server: &Server, line: &str, local_addr: &str) -> String {
    let (name, args) = line.split_once(':').unwrap_or((line, ""));
    match name {
        "node" => server.node_id.clone(),
        "build" => BUILD.to_string(),
        "version" => format!("Spike (Aerospike-compatible) build {BUILD}"),
        "edition" => "Spike".to_string(),
        "partition-generation" => "1".to_string(),
        "rebalance-generation" | "peers-generation" | "cluster-generation" => "0".to_string(),
        "cluster-name" => server.cluster_name.clone().unwrap_or_else(|| "null".to_string()),
        "peers-clear-std" | "peers-clear-alt" | "peers-tls-std" | "peers-tls-alt" => "0,3000,[]".to_string(),
        "service-clear-std" | "service-clear-alt" | "service" | "services" => local_addr.to_string(),
        "services-alumni" | "services-alternate" => String::new(),
        "replicas" | "replicas-all" | "replicas-master" => replicas(server, name),
        "rack-ids" => {
            server.namespaces.iter().map(|ns| format!("{}:0", ns.name)).collect::<Vec<_>>().join(";")
        }
        "user-agent-set" => "ok".to_string(),
        "features" => FEATURES.to_string(),
        "partitions" => spike::limits::PARTITION_COUNT.to_string(),
        "namespaces" => server.namespaces.iter().map(|ns| ns.name.as_str()).collect::<Vec<_>>().join(";"),
        "status" => "ok".to_string(),
        "statistics" => statistics(server),
        "cluster-stable" => "5B1C3".to_string(),
        "udf-put" => server.catalog.udf_put(&catalog::args(args)),
        "udf-list" => server.catalog.udf_list(),
        "udf-get" => server.catalog.udf_get(&catalog::args(args)),
        "udf-remove" => server.catalog.udf_remove(&catalog::args(args)),
        "sindex-create" => index_create(server, args),
        "sindex-delete" => {
            let parsed = catalog::args(args);
            let ns = parsed.get("namespace").or_else(|| parsed.get("ns"));
            if let (Some(ns), Some(name)) =
                (ns.and_then(|n| server.namespace(n.as_bytes())), parsed.get("indexname"))
            {
                ns.sindexes.remove(name);
            }
            server.catalog.index_delete(&parsed)
        }
        "query-show" | "scan-show" => server.jobs.show(args),
        "query-abort" | "scan-abort" | "query-kill" => server.jobs.abort(args),
        "sindex-exists" => {
            let parsed = catalog::args(args);
            let ns = parsed.get("namespace").or_else(|| parsed.get("ns")).map_or("", String::as_str);
            let exists = server.catalog.index_exists(ns, parsed.get("indexname").map_or("", String::as_str));
            exists.to_string()
        }
        "sindex-stat" => {
            let parsed = catalog::args(args);
            let ns = parsed.get("namespace").or_else(|| parsed.get("ns")).map_or("", String::as_str);
            index_stat(server, ns, parsed.get("indexname").map_or("", String::as_str))
        }
        "sindex-list" => {
            let parsed = catalog::args(args);
            server
                .catalog
                .index_list(parsed.get("ns").or_else(|| parsed.get("namespace")).map(String::as_str))
        }
        "get-config" => {
            format!("batch-index-threads={};proto-fd-max={}", server.threads, server.connections_max)
        }
        "truncate" | "truncate-namespace" => truncate(server, args),
        _ => namespaced(server, line),
    }
}

/// `sindex-create`: the definition goes into the catalog, and an index this server keeps
/// in memory (`sindex`) is added and queued to be built from the records already there.
fn index_create(server: &Server, args: &str) -> String {
    let parsed = catalog::args(args);
    let ns =
        parsed.get("namespace").or_else(|| parsed.get("ns")).and_then(|n| server.namespace(n.as_bytes()));
    let name = parsed.get("indexname").map_or("", String::as_str);
    let existed = ns.is_some_and(|ns| server.catalog.index_exists(&ns.name, name));
    let answer = server.catalog.index_create(&parsed, ns.is_some());
    if answer == "ok" && !existed {
        server.build_kept_indexes();
    }
    answer
}

/// `sindex-stat`: how far a kept index is built (the clients' create task waits for
/// `load_pct=100`) and its size; an index answered by scans is always loaded.
fn index_stat(server: &Server, namespace: &str, name: &str) -> String {
    let kept = server.namespace(namespace.as_bytes()).and_then(|ns| ns.sindexes.find(name));
    match kept {
        Some(index) => {
            let (records, keys) = index.counts();
            format!(
                "keys={keys};entries={records};query_lookups={};load_pct={}",
                index.lookups(),
                index.load_pct()
            )
        }
        None => server.catalog.index_stat(namespace, name),
    }
}

/// `namespace/<ns>`, `sets[/<ns>[/<set>]]`: commands with `/` arguments.
fn namespaced(server: &Server, line: &str) -> String {
    let mut parts = line.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("namespace"), Some(ns), None) => match server.namespace(ns.as_bytes()) {
            Some(ns) => namespace_stats(ns),
            None => "type=unknown".to_string(),
        },
        (Some("sets"), ns, set) => sets(server, ns, set),
        (Some("sindex"), Some(ns), Some(name)) => index_stat(server, ns, name),
        (Some("sindex"), ns, None) => server.catalog.index_list(ns),
        _ => "ERROR:4:unrecognized command".to_string(),
    }
}

fn replicas(server: &Server, name: &str) -> String {
    // Every partition is this node's: a 4096-bit map of ones, base64 with padding.
    let all = format!("{}//8=", "////".repeat(170));
    let line = |ns: &Namespace| match name {
        "replicas" => format!("{}:0,1,{all}", ns.name),
        _ => format!("{}:{all}", ns.name),
    };
    server.namespaces.iter().map(line).collect::<Vec<_>>().join(";")
}

fn statistics(server: &Server) -> String {
    let mut objects = 0;
    let mut reads = 0;
    let mut writes = 0;
    for ns in &server.namespaces {
        let stats = ns.engine.stats();
        objects += stats.index_entries - stats.tombstones;
        reads += ns.counters.total(Kind::Read);
        writes += ns.counters.total(Kind::Write) + ns.counters.total(Kind::Delete);
    }
    format!(
        "cluster_size=1;uptime={};objects={objects};client_connections={};stat_read_reqs={reads};stat_write_reqs={writes}",
        server.started.elapsed().as_secs(),
        server.connections.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// Of the record reads since the start, the percentage served from RAM (open block, write
/// queue, post-write cache), the figure to size `post_write_cache` by; 0 before any read.
fn cache_read_pct(stats: &spike::Stats) -> u64 {
    let reads = stats.reads_from_memory + stats.reads_from_device;
    (stats.reads_from_memory * 100).checked_div(reads).unwrap_or(0)
}

fn namespace_stats(ns: &Namespace) -> String {
    let stats = ns.engine.stats();
    let total: u64 = stats.devices.iter().map(|d| d.wblocks_total).sum();
    let free: u64 = stats.devices.iter().map(|d| d.wblocks_free).sum();
    let free_pct = (free * 100).checked_div(total).unwrap_or(0);
    let mut out = format!(
        "objects={};tombstones={};replication-factor=1;effective_replication_factor=1;\
         default-ttl={};single-bin=false;storage-engine=device;device_free_pct={free_pct};\
         index_used_bytes={};data_used_bytes={};restart_kind={};cache_read_pct={}",
        stats.index_entries - stats.tombstones,
        stats.tombstones,
        ns.default_ttl_s,
        stats.index_bytes,
        stats.devices.iter().map(|d| d.live_bytes).sum::<u64>(),
        stats.recovery.kind,
        cache_read_pct(&stats),
    );
    for (name, value) in ns.counters.named() {
        let _ = write!(out, ";{name}={value}");
    }
    let indexes = ns.sindexes.all();
    let keys: usize = indexes.iter().map(|index| index.counts().1).sum();
    let _ = write!(out, ";sindexes={};sindex_keys={keys}", indexes.len());
    out
}

fn sets(server: &Server, ns: Option<&str>, set: Option<&str>) -> String {
    let mut out = String::new();
    for namespace in &server.namespaces {
        if ns.is_some_and(|n| n != namespace.name) {
            continue;
        }
        for (name, objects) in namespace.set_counts() {
            if set.is_some_and(|s| s.as_bytes() != name.as_slice()) {
                continue;
            }
            let name = String::from_utf8_lossy(&name);
            let _ = write!(
                out,
                "ns={}:set={name}:objects={objects}:tombstones=0:truncate_lut=0:sindexes=0;",
                namespace.name
            );
        }
    }
    if out.is_empty() && ns.is_some_and(|n| server.namespace(n.as_bytes()).is_none()) {
        return "ns_type=unknown".to_string();
    }
    out
}

/// `truncate:namespace=<ns>;set=<set>[;lut=<ns since epoch>]` and `truncate-namespace`.
fn truncate(server: &Server, args: &str) -> String {
    let arg = |key: &str| args.split(';').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
    let Some(ns) = arg("namespace").and_then(|n| server.namespace(n.as_bytes())) else {
        return "ERROR:4:namespace not found".to_string();
    };
    let before_ms = match arg("lut").map(str::parse::<u64>) {
        None => u64::MAX,
        Some(Ok(lut_ns)) => lut_ns / 1_000_000,
        Some(Err(_)) => return "ERROR:4:lut is not a number".to_string(),
    };
    let set = arg("set").map(|s| s.as_bytes().to_vec());
    match ns.truncate(set.as_deref(), before_ms) {
        Ok(deleted) => {
            log::info!("namespace {}: truncate deleted {deleted} records", ns.name);
            // The secondary indexes drop the deleted records' entries behind the reply.
            let task = jobs::Task::SweepIndexes { namespace: ns.name.clone(), set };
            jobs::submit_or_run(server, task);
            "ok".to_string()
        }
        Err(err) => format!("ERROR:1:{err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_read_pct_is_the_share_of_reads_served_from_ram() {
        let stats = |from_memory, from_device| spike::Stats {
            reads_from_memory: from_memory,
            reads_from_device: from_device,
            ..spike::Stats::default()
        };
        assert_eq!(cache_read_pct(&stats(0, 0)), 0, "no read yet");
        assert_eq!(cache_read_pct(&stats(3, 1)), 75);
        assert_eq!(cache_read_pct(&stats(0, 9)), 0);
        assert_eq!(cache_read_pct(&stats(9, 0)), 100);
    }
}
