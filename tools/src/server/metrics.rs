//! The Prometheus text endpoint (`--metrics ADDR`): every namespace's `spike::Stats` as
//! `spike_*` series labelled by namespace, on a thread of its own answering any GET.

use super::Server;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A series name, its help text and how to read it from the stats.
type Counter = (&'static str, &'static str, fn(&spike::Stats) -> u64);
type Gauge = (&'static str, &'static str, fn(&spike::Stats) -> f64);
/// A secondary index's series: name, help, and its value from (records, keys) and load_pct.
type IndexGauge = (&'static str, &'static str, fn(&(usize, usize), u32) -> f64);

/// The exposition text.
pub fn render(server: &Server) -> String {
    let mut out = String::new();
    let mut series = |name: &str, help: &str, kind: &str, values: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(out, "# HELP spike_{name} {help}\n# TYPE spike_{name} {kind}");
        for (labels, value) in values {
            let _ = writeln!(out, "spike_{name}{{{labels}}} {value}");
        }
    };
    let stats: Vec<(String, spike::Stats)> = server
        .namespaces
        .iter()
        .map(|ns| (format!("namespace=\"{}\"", ns.name), ns.engine.stats()))
        .collect();
    let counters: [Counter; 15] = [
        ("puts_total", "Writes.", |s| s.puts),
        ("gets_total", "Reads.", |s| s.gets),
        ("deletes_total", "Deletes.", |s| s.deletes),
        ("touches_total", "Touches.", |s| s.touches),
        ("updates_total", "Read-modify-writes.", |s| s.updates),
        ("batch_reads_total", "Records asked for by batch reads.", |s| s.batch_reads),
        ("records_scanned_total", "Records returned by scans.", |s| s.records_scanned),
        ("not_found_total", "Operations that found no record.", |s| s.not_found),
        ("errors_total", "Operations that failed.", |s| s.errors),
        (
            "reads_from_memory_total",
            "Record reads served from RAM: the open block, the write queue or the post-write cache.",
            |s| s.reads_from_memory,
        ),
        ("reads_from_device_total", "Record reads that read the device.", |s| s.reads_from_device),
        ("client_bytes_written_total", "Record bytes written for clients.", |s| s.client_bytes_written),
        ("device_bytes_written_total", "Bytes written to devices.", |s| s.device_bytes_written),
        ("blocks_defragged_total", "Write blocks defragmented.", |s| s.blocks_defragged),
        ("tags_shared_total", "Index tags found shared by two digests (crafted); both kept.", |s| {
            s.tags_shared
        }),
    ];
    for (name, help, get) in counters {
        series(name, help, "counter", &mut stats.iter().map(|(l, s)| (l.clone(), get(s) as f64)));
    }
    let gauges: [Gauge; 6] = [
        ("objects", "Live records.", |s| (s.index_entries - s.tombstones) as f64),
        ("tombstones", "Tombstones held.", |s| s.tombstones as f64),
        ("index_bytes", "Index memory.", |s| s.index_bytes as f64),
        ("index_mapped_bytes", "Memory mapped for the index, free slots included.", |s| {
            s.index_mapped_bytes as f64
        }),
        ("write_amplification", "Device bytes per client byte written.", |s| s.write_amplification()),
        ("restart_duration_ms", "Duration of the last start.", |s| s.recovery.duration_ms as f64),
    ];
    for (name, help, get) in gauges {
        series(name, help, "gauge", &mut stats.iter().map(|(l, s)| (l.clone(), get(s))));
    }
    series(
        "restart_fast",
        "1 if the last start was a fast restart.",
        "gauge",
        &mut stats.iter().map(|(l, s)| (l.clone(), (s.recovery.kind == "fast") as u8 as f64)),
    );
    // Neither fast nor cold: the first start after a format, which reads nothing.
    series(
        "restart_cold",
        "1 if the last start rebuilt the index by reading the devices (a cold start).",
        "gauge",
        &mut stats.iter().map(|(l, s)| (l.clone(), (s.recovery.kind == "cold") as u8 as f64)),
    );
    series(
        "device_free_blocks",
        "Free write blocks.",
        "gauge",
        &mut stats.iter().flat_map(|(l, s)| {
            s.devices.iter().map(move |d| (format!("{l},device=\"{}\"", d.name), d.wblocks_free as f64))
        }),
    );
    series(
        "errors_by_op_total",
        "Failed operations by operation and error kind.",
        "counter",
        &mut stats.iter().flat_map(|(l, s)| {
            s.errors_by_op
                .iter()
                .map(move |e| (format!("{l},op=\"{}\",kind=\"{}\"", e.op, e.kind), e.count as f64))
        }),
    );
    series(
        "server_commands_total",
        "Client commands by origin (client, batch_sub), kind and result, as the namespace statistics count them.",
        "counter",
        &mut server.namespaces.iter().flat_map(|ns| {
            ns.counters.named().into_iter().map(move |(name, value)| {
                (format!("namespace=\"{}\",command=\"{name}\"", ns.name), value as f64)
            })
        }),
    );
    let indexes: Vec<(String, (usize, usize), u32)> = server
        .namespaces
        .iter()
        .flat_map(|ns| {
            ns.sindexes.all().into_iter().map(move |index| {
                let labels = format!("namespace=\"{}\",index=\"{}\"", ns.name, index.definition.name);
                (labels, index.counts(), index.load_pct())
            })
        })
        .collect();
    let index_series: [IndexGauge; 3] = [
        ("sindex_records", "Records a secondary index holds.", |c, _| c.0 as f64),
        ("sindex_keys", "Keys (value, record pairs) a secondary index holds.", |c, _| c.1 as f64),
        ("sindex_load_pct", "How far a secondary index is built.", |_, pct| pct as f64),
    ];
    for (name, help, get) in index_series {
        series(name, help, "gauge", &mut indexes.iter().map(|(l, c, pct)| (l.clone(), get(c, *pct))));
    }
    for op in spike::OP_NAMES {
        let name = format!("{op}_latency_us");
        let _ =
            writeln!(out, "# HELP spike_{name} {op} latency, microseconds.\n# TYPE spike_{name} histogram");
        for (labels, s) in &stats {
            let Some(latency) = s.latencies.iter().find(|l| l.op == op) else { continue };
            let mut cumulative = 0;
            for (i, count) in latency.us_log2.iter().enumerate() {
                cumulative += count;
                let _ =
                    writeln!(out, "spike_{name}_bucket{{{labels},le=\"{}\"}} {cumulative}", 1u64 << (i + 1));
            }
            let _ = writeln!(out, "spike_{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "spike_{name}_count{{{labels}}} {cumulative}");
        }
    }
    out
}

/// Serves the endpoint until `stop` is set.
pub fn serve(server: Arc<Server>, listener: std::net::TcpListener, stop: Arc<AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let body = render(&server);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
