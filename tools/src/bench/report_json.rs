//! The bench's report as one JSON document (`--json`): the same figures as the text
//! report, with latencies in microseconds and fields in a fixed order.

use super::options::OpKind;
use super::report::Json;
use super::report::{
    durability_name, latency_json, latency_summary, num, obj, opt_num, over_ms_json, Report,
};

impl Report<'_> {
    pub fn json(&self) -> Json {
        let plan = self.plan;
        let mut fields: Vec<(&str, Json)> = Vec::new();
        let mode = match (self.run.is_some() || self.load.is_some(), plan.act.is_some()) {
            (false, _) => "raw",
            (true, true) => "act",
            (true, false) => "run",
        };
        fields.push(("mode", Json::String(mode.into())));
        fields.push((
            "config",
            obj(vec![
                ("devices", Json::Array(self.labels.iter().map(|l| Json::String(l.clone())).collect())),
                (
                    "device_size_bytes",
                    Json::Array(self.device_sizes.iter().map(|s| Json::from(*s)).collect()),
                ),
                ("namespace", Json::String(self.namespace.clone())),
                ("write_block_size", Json::from(self.write_block_size as u64)),
                ("io_backend", Json::String(self.backend.clone())),
                ("records", Json::from(self.records)),
                (
                    "value_size",
                    obj(vec![
                        ("min", Json::from(plan.value_sizes.min as u64)),
                        ("max", Json::from(plan.value_sizes.max as u64)),
                    ]),
                ),
                ("workload", Json::String(plan.workload.label.clone())),
                ("mix", Json::String(plan.workload.mix.to_string())),
                ("keys", Json::String(plan.keys.to_string())),
                ("threads", Json::from(plan.threads as u64)),
                ("duration_s", opt_num(plan.duration.map(|d| d.as_secs_f64()), 3)),
                ("ops", plan.ops.map_or(Json::Null, Json::from)),
                ("rate", opt_num(plan.rate_ops_s, 3)),
                ("batch", Json::from(plan.batch as u64)),
                ("durability", Json::String(durability_name(plan).into())),
                ("seed", Json::from(plan.seed)),
            ]),
        ));
        if let Some(raw) = self.raw {
            let r = &raw.rand_read;
            fields.push((
                "raw",
                obj(vec![
                    ("seq_write_mb_s", opt_num(raw.seq_write.as_ref().map(|w| w.mb_s()), 1)),
                    (
                        "seq_write_block_p99_us",
                        opt_num(raw.seq_write.as_ref().map(|w| w.block_latency.p99_us), 1),
                    ),
                    ("write_block_size", Json::from(raw.write_block_size as u64)),
                    ("rand_read_iops", num(r.iops(), 1)),
                    ("rand_read_threads", Json::from(r.threads as u64)),
                    ("rand_read_p50_us", num(r.latency.p50_us, 1)),
                    ("rand_read_p99_us", num(r.latency.p99_us, 1)),
                    ("rand_read_p999_us", num(r.latency.p999_us, 1)),
                    ("rand_read_max_us", num(r.latency.max_us, 1)),
                    ("rand_read_over_ms", over_ms_json(&r.latency)),
                ]),
            ));
        }
        if let Some(load) = self.load {
            let lat = latency_summary(&load.kind(OpKind::Insert).hist);
            fields.push((
                "load",
                obj(vec![
                    ("records", Json::from(lat.count)),
                    ("seconds", num(load.seconds(), 3)),
                    ("ops_per_sec", num(lat.count as f64 / load.seconds(), 1)),
                    ("mb_s", num(load.client_mb_s(), 1)),
                    ("device_mb_s", num(load.device_bytes_written() as f64 / 1e6 / load.seconds(), 1)),
                    ("write_amplification", opt_num(load.write_amplification(), 3)),
                    ("latency_us", latency_json(&lat)),
                    ("errors", Json::from(load.errors())),
                    ("settle_s", num(self.settle_seconds, 3)),
                ]),
            ));
        }
        if let Some(run) = self.run {
            let all = run.all().map(|h| latency_summary(&h)).unwrap_or_default();
            fields.push(("duration_s", num(run.seconds(), 3)));
            fields.push(("ops_per_sec", num(all.count as f64 / run.seconds(), 1)));
            fields.push(("latency_us", latency_json(&all)));
            fields.push(("over_ms", over_ms_json(&all)));
            let mut per_kind = Vec::new();
            for kind in OpKind::ALL {
                let k = run.kind(kind);
                if k.hist.is_empty() && k.errors == 0 {
                    continue;
                }
                let s = latency_summary(&k.hist);
                per_kind.push((
                    kind.name(),
                    obj(vec![
                        ("count", Json::from(s.count)),
                        ("ops_per_sec", num(s.count as f64 / run.seconds(), 1)),
                        ("not_found", Json::from(k.not_found)),
                        ("errors", Json::from(k.errors)),
                        ("latency_us", latency_json(&s)),
                        ("over_ms", over_ms_json(&s)),
                    ]),
                ));
            }
            fields.push(("ops", obj(per_kind)));
            fields.push(("errors", Json::from(run.errors())));
            fields.push(("first_error", run.first_error.clone().map_or(Json::Null, Json::String)));
            fields.push(("stopped_early", run.stopped_early.clone().map_or(Json::Null, Json::String)));
            fields.push(("run_write_amplification", opt_num(run.write_amplification(), 3)));
            if let Some(defrag) = run.defrag {
                fields.push((
                    "defrag_while_space_short",
                    obj(vec![
                        ("short_s", num(defrag.short_for.as_secs_f64(), 2)),
                        ("longest_stall_ms", num(defrag.longest_stall.as_secs_f64() * 1e3, 0)),
                    ]),
                ));
            }
            fields.push((
                "intervals",
                Json::Array(
                    run.intervals
                        .iter()
                        .map(|i| {
                            obj(vec![
                                ("at_s", num(i.at_s, 2)),
                                ("ops_per_sec", num(i.ops_per_s, 1)),
                                ("p99_us", num(i.p99_us, 1)),
                            ])
                        })
                        .collect(),
                ),
            ));
        }
        if let Some(stats) = self.stats {
            fields.push(("write_amplification", num(stats.write_amplification(), 3)));
            fields.push((
                "engine",
                obj(vec![
                    ("client_bytes_written", Json::from(stats.client_bytes_written)),
                    ("device_bytes_written", Json::from(stats.device_bytes_written)),
                    ("reads_from_memory", Json::from(stats.reads_from_memory)),
                    ("reads_from_device", Json::from(stats.reads_from_device)),
                    ("index_entries", Json::from(stats.index_entries)),
                    ("index_bytes", Json::from(stats.index_bytes)),
                    ("wblocks_total", Json::from(stats.devices.iter().map(|d| d.wblocks_total).sum::<u64>())),
                    ("wblocks_free", Json::from(stats.devices.iter().map(|d| d.wblocks_free).sum::<u64>())),
                ]),
            ));
            fields.push((
                "defrag",
                obj(vec![
                    ("lwm_pct", Json::from(self.defrag_lwm_pct as u64)),
                    ("blocks_defragged", Json::from(stats.blocks_defragged)),
                    ("blocks_read", Json::from(stats.defrag_blocks_read)),
                    ("bytes_written", Json::from(stats.defrag_bytes_written)),
                    ("blocks_freed", Json::from(stats.blocks_freed)),
                    (
                        "blocks_queued",
                        Json::from(stats.devices.iter().map(|d| d.wblocks_defrag_queued).sum::<u64>()),
                    ),
                ]),
            ));
        }
        let ratios = self.ratios();
        if self.raw.is_some() && self.stats.is_some() {
            fields.push((
                "ratio",
                obj(vec![
                    ("write", opt_num(ratios.write, 3)),
                    ("read", opt_num(ratios.read, 3)),
                    ("read_p99", opt_num(ratios.read_p99, 3)),
                ]),
            ));
        }
        if let Some(act) = self.act {
            fields.push((
                "act",
                obj(vec![
                    ("multiplier", Json::from(act.multiplier as u64)),
                    ("devices", Json::from(act.devices as u64)),
                    ("fill_fraction", num(act.fill_fraction, 3)),
                    ("target_reads_per_sec", num(act.target_reads_per_s, 1)),
                    ("target_writes_per_sec", num(act.target_writes_per_s, 1)),
                    ("reads_per_sec", num(act.reads_per_s, 1)),
                    ("writes_per_sec", num(act.writes_per_s, 1)),
                    ("reads_over_ms", over_ms_json(&act.reads)),
                    ("writes_over_ms", over_ms_json(&act.writes)),
                    ("pass", Json::Bool(act.pass)),
                    ("failures", Json::Array(act.failures.iter().map(|f| Json::String(f.clone())).collect())),
                ]),
            ));
        }
        fields.push(("notes", Json::Array(self.notes.iter().map(|n| Json::String(n.clone())).collect())));
        obj(fields)
    }
}
