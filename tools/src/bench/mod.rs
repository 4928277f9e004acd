//! `spike-bench`: the engine driven in-process the way a server drives it, next to the raw
//! device measured through the engine's own I/O layer.
//!
//! A run: find or create the devices and check that the bench may use them (`devices`),
//! measure the raw device (`raw`), format, open the engine, load the records and run the
//! mixed or ACT phase (`workload`), then print one report (`report`). Options are checked
//! up front (`options`); keys and their distributions live in `keys`.
//!
//! Bounds: threads (`THREADS_MAX`), phase length (`DURATION_MAX`), key ids (12 digits),
//! and the records loaded must fit the device. Memory: one HDR histogram (~150 KiB) per
//! thread and operation kind in use, plus the engine's index.

pub mod defrag_watch;
pub mod devices;
pub mod keys;
pub mod options;
pub mod raw;
pub mod remote;
pub mod report;
mod report_json;
pub mod workload;

use anyhow::{anyhow, bail, Context as _, Result};
use options::{Mix, OpKind, Plan, ACT_READS_PER_S_1X, ACT_WRITES_PER_S_1X, DEFAULT_FILL_FRACTION, OP_KINDS};
use report::{act_verdict, latency_summary, ActOutcome, Out, Report};
use spike::offline::format::{WBLOCK_HEADER_SIZE, WBLOCK_SIZE_DEFAULT};
use spike::{Config, Engine};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use workload::{run_phase, Context, PhaseSpec, Work};

/// The most of a device's capacity a load may fill: beyond it the mixed phase has no room.
const LOAD_FILL_MAX: f64 = 0.95;
/// Longest wait after the load for the engine to drain its write queue and defrag backlog.
const SETTLE_MAX: Duration = Duration::from_secs(60);
const SETTLE_POLL: Duration = Duration::from_millis(100);
/// ACT fills the device to this share first; its defrag (lwm 50) then keeps it there.
const ACT_FILL_FRACTION: f64 = 0.5;
/// ACT's defrag low-water mark.
const ACT_DEFRAG_LWM_PCT: u32 = 50;

pub fn run(plan: Plan) -> Result<ExitCode> {
    if let Some(address) = plan.server.clone() {
        return run_server(plan, &address);
    }
    let out = Out::new(plan.json);
    let prepared = devices::prepare(&plan, &out)?;
    let (namespace, write_block_size) = match (&prepared.existing, plan.format) {
        (Some(header), false) => (
            plan.namespace.clone().unwrap_or_else(|| header.namespace_name.clone()),
            plan.write_block_size.unwrap_or(header.write_block_size),
        ),
        _ => (
            plan.namespace.clone().unwrap_or_else(|| "spike".into()),
            plan.write_block_size.unwrap_or(WBLOCK_SIZE_DEFAULT),
        ),
    };
    let record_max = spike::offline::format::record_size(0, plan.value_sizes.max);
    if record_max > write_block_size as usize - WBLOCK_HEADER_SIZE {
        bail!(
            "--value-size {} does not fit the device's {write_block_size}-byte write blocks",
            plan.value_sizes.max
        );
    }
    let config = Config {
        namespace: namespace.clone(),
        devices: plan.devices.clone(),
        write_block_size,
        durability: plan.durability,
        io_backend: plan.io_backend,
        defrag_lwm_pct: match (plan.defrag_lwm, plan.act) {
            (Some(lwm), _) => lwm as u32,
            (None, Some(_)) => ACT_DEFRAG_LWM_PCT,
            (None, None) => Config::default().defrag_lwm_pct,
        },
        ..Config::default()
    };
    let config = match plan.post_write_cache_bytes {
        Some(bytes) => {
            Config { post_write_cache_blocks: config.post_write_cache_blocks_for(bytes), ..config }
        }
        None => config,
    };
    let defrag_lwm_pct = config.defrag_lwm_pct;
    config.validate().map_err(|e| anyhow!(e))?;
    let device_sizes: Vec<u64> = prepared.devices.iter().map(|d| d.size_bytes()).collect();
    let backend = prepared.devices[0].backend().to_string();
    let mut notes = Vec::new();
    for (label, size) in prepared.labels.iter().zip(&device_sizes) {
        out.line(&format!("device {label}: {}, {backend}", report::bytes(*size)));
    }

    let raw = if plan.raw {
        out.progress(&format!(
            "raw device: measuring ({} s each for sequential write and random read)...",
            plan.raw_duration.as_secs_f64()
        ));
        let raw = raw::measure(
            &prepared.devices,
            prepared.destroyable,
            write_block_size as usize,
            plan.threads,
            plan.raw_duration,
            plan.seed,
        )?;
        match &raw.seq_write {
            Some(w) => out.progress_done(&format!(
                "raw device: sequential write {:.0} MB/s ({} blocks, sync each), random 4 KiB read {} IOPS p99 {} ({} threads)",
                w.mb_s(),
                report::bytes(write_block_size as u64),
                report::count(raw.rand_read.iops()),
                report::latency(raw.rand_read.latency.p99_us),
                plan.threads
            )),
            None => out.progress_done(&format!(
                "raw device: random 4 KiB read {} IOPS p99 {} ({} threads); sequential write skipped: {}",
                report::count(raw.rand_read.iops()),
                report::latency(raw.rand_read.latency.p99_us),
                plan.threads,
                raw.seq_write_skipped.unwrap_or("")
            )),
        }
        Some(raw)
    } else {
        None
    };

    if plan.raw_only {
        if plan.format && !plan.owns_device() {
            // The raw write test overwrote the device; leave it formatted, as asked.
            Engine::format_devices(&config, &prepared.devices, true).map_err(|e| anyhow!(e))?;
        }
        let report = Report {
            plan: &plan,
            labels: &prepared.labels,
            device_sizes,
            backend,
            namespace,
            write_block_size,
            defrag_lwm_pct,
            settle_seconds: 0.0,
            records: 0,
            raw: raw.as_ref(),
            load: None,
            run: None,
            stats: None,
            act: None,
            notes,
        };
        print_report(&out, &report);
        return Ok(ExitCode::SUCCESS);
    }

    if plan.format {
        // Safe to force: `devices::prepare` refused what the user did not allow us to
        // destroy, and the raw write test has since overwritten the start of the device.
        Engine::format_devices(&config, &prepared.devices, true)
            .map_err(|e| anyhow!(e))
            .context("format failed")?;
    }
    let device_count = prepared.devices.len();
    let engine = Engine::open_devices(config, prepared.devices)
        .map_err(|e| anyhow!(e))
        .context("cannot open the engine on the devices")?;
    let stats = engine.stats();
    let capacity_bytes: f64 = stats
        .devices
        .iter()
        .map(|d| d.wblocks_total as f64 * (write_block_size as usize - WBLOCK_HEADER_SIZE) as f64)
        .sum();

    let act_rates = plan.act.map(|n| {
        let scale = n as f64 * device_count as f64;
        (ACT_READS_PER_S_1X * scale, ACT_WRITES_PER_S_1X * scale)
    });
    let mut act_fill = 0.0;
    let records = match (plan.load, plan.records) {
        (false, given) => {
            let on_device = stats.index_entries;
            if on_device == 0 {
                bail!("--no-load: the device holds no records; run once without --no-load to fill it");
            }
            given.unwrap_or(on_device)
        }
        (true, Some(records)) => {
            let need = records as f64 * plan.value_sizes.mean_record_bytes();
            if need > LOAD_FILL_MAX * capacity_bytes {
                bail!(
                    "--records {records} of about {:.0} bytes need {}, more than {:.0}% of the device's {}",
                    plan.value_sizes.mean_record_bytes(),
                    report::bytes(need as u64),
                    LOAD_FILL_MAX * 100.0,
                    report::bytes(capacity_bytes as u64)
                );
            }
            records
        }
        (true, None) => {
            let fill = if plan.act.is_some() { ACT_FILL_FRACTION } else { DEFAULT_FILL_FRACTION };
            act_fill = fill;
            ((fill * capacity_bytes / plan.value_sizes.mean_record_bytes()) as u64).max(1)
        }
    };
    if records > keys::KEY_ID_MAX {
        bail!("--records {records} is above the bench's key space ({})", keys::KEY_ID_MAX);
    }

    let mut settle_seconds = 0.0;
    let ctx = Context::new(
        workload::Target::Engine(&engine),
        plan.value_sizes,
        plan.seed,
        if plan.load { 0 } else { records },
        &out,
    );
    let load = if plan.load {
        let share = format!(
            "{:.0}% of the device",
            records as f64 * plan.value_sizes.mean_record_bytes() * 100.0 / capacity_bytes
        );
        let load = load_phase(&ctx, &plan, records, &share)?;
        settle_seconds = settle(&engine, &out);
        Some(load)
    } else {
        None
    };

    let load_failed = load.as_ref().and_then(|l| l.stopped_early.clone());
    let run = if load_failed.is_none() {
        let (mix, keys, rate, interleave) = match act_rates {
            Some((reads, writes)) => {
                // Two reads then one write, in turn on every thread: ACT's exact 2:1.
                let mut weights = [0; OP_KINDS];
                weights[OpKind::Read.index()] = 2;
                weights[OpKind::Update.index()] = 1;
                debug_assert_eq!(ACT_READS_PER_S_1X, 2.0 * ACT_WRITES_PER_S_1X);
                (Mix { weights }, keys::KeyDistribution::Uniform, Some(reads + writes), true)
            }
            None => (plan.workload.mix, plan.keys, plan.rate_ops_s, false),
        };
        let label = plan.act.map_or(plan.workload.label.clone(), |n| format!("ACT {n}x"));
        Some(mixed_phase(&ctx, &plan, records, (mix, keys, rate, interleave), &label)?)
    } else {
        None
    };
    drop(ctx);

    let act = match (plan.act, act_rates, &run) {
        (Some(multiplier), Some((target_reads, target_writes)), Some(run)) => {
            let reads = latency_summary(&run.kind(OpKind::Read).hist);
            let writes = latency_summary(&run.kind(OpKind::Update).hist);
            let (reads_per_s, writes_per_s) = (run.ops_per_s(OpKind::Read), run.ops_per_s(OpKind::Update));
            let carried = (reads.count + writes.count) as f64 / run.seconds();
            let (mut pass, mut failures) = act_verdict(&reads, carried, target_reads + target_writes);
            if run.stopped_early.is_some() || run.errors() > 0 {
                pass = false;
                failures.push(format!(
                    "{} errors; stopped early: {}",
                    run.errors(),
                    run.stopped_early.is_some()
                ));
            }
            Some(ActOutcome {
                multiplier,
                devices: device_count,
                target_reads_per_s: target_reads,
                target_writes_per_s: target_writes,
                reads_per_s,
                writes_per_s,
                reads,
                writes,
                fill_fraction: act_fill,
                pass,
                failures,
            })
        }
        _ => None,
    };
    if let Some(reason) = &load_failed {
        notes.push(format!("the load stopped early: {reason}"));
    }
    let stats = engine.stats();
    let close_result = engine.close();
    let report = Report {
        plan: &plan,
        labels: &prepared.labels,
        device_sizes,
        backend,
        namespace,
        write_block_size,
        defrag_lwm_pct,
        settle_seconds,
        records,
        raw: raw.as_ref(),
        load: load.as_ref(),
        run: run.as_ref(),
        stats: Some(&stats),
        act: act.as_ref(),
        notes,
    };
    print_report(&out, &report);
    close_result.map_err(|e| anyhow!(e)).context("closing the engine")?;
    let failed = load_failed.is_some() || run.as_ref().is_some_and(|r| r.stopped_early.is_some());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Inserts ids `0..records`, printing a line before and after.
fn load_phase(ctx: &Context<'_>, plan: &Plan, records: u64, share: &str) -> Result<workload::PhaseResult> {
    ctx.out.line(&format!(
        "load: {} records of {} ({} of records, {share}), {} threads",
        report::count(records as f64),
        plan.value_sizes,
        report::bytes((records as f64 * plan.value_sizes.mean_record_bytes()) as u64),
        plan.threads
    ));
    let spec = PhaseSpec {
        work: Work::Load { records },
        threads: plan.threads,
        rate_ops_s: None,
        duration: None,
        ops_max: None,
        batch: 1,
        interval: plan.interval,
    };
    let load = run_phase(ctx, &spec)?;
    ctx.key_count.store(records, std::sync::atomic::Ordering::Relaxed);
    let lat = latency_summary(&load.kind(OpKind::Insert).hist);
    ctx.out.line(&format!(
        "load: done in {:.1} s, {}/s, {:.0} MB/s of records, p99 {}",
        load.seconds(),
        report::count(lat.count as f64 / load.seconds()),
        load.client_mb_s(),
        report::latency(lat.p99_us)
    ));
    Ok(load)
}

/// The mixed phase: `how` is the mix, key distribution, target rate and interleaving.
fn mixed_phase(
    ctx: &Context<'_>,
    plan: &Plan,
    records: u64,
    how: (Mix, keys::KeyDistribution, Option<f64>, bool),
    label: &str,
) -> Result<workload::PhaseResult> {
    let (mix, keys, rate, interleave) = how;
    ctx.out.line(&format!(
        "run: {label} ({mix}), {} keys over {} records, {} threads, batch {}{}{}{}",
        keys,
        report::count(records as f64),
        plan.threads,
        plan.batch,
        plan.duration.map_or(String::new(), |d| format!(", {:.0} s", d.as_secs_f64())),
        plan.ops.map_or(String::new(), |n| format!(", {n} ops")),
        rate.map_or(", full speed".into(), |r| format!(", target {}/s", report::count(r)))
    ));
    let spec = PhaseSpec {
        work: Work::Mix { mix, keys, interleave },
        threads: plan.threads,
        rate_ops_s: rate,
        duration: plan.duration,
        ops_max: plan.ops,
        batch: plan.batch,
        interval: plan.interval,
    };
    run_phase(ctx, &spec)
}

/// `--server`: the same phases through the wire, against a server's namespace.
fn run_server(plan: Plan, address: &str) -> Result<ExitCode> {
    let out = Out::new(plan.json);
    let namespace = plan.namespace.clone().unwrap_or_else(|| "test".into());
    let remote = remote::Remote::connect(address, &namespace)?;
    out.line(&format!("server {address}, namespace {namespace}, set {} (official Rust client)", remote::SET));
    let records = match (plan.load, plan.records) {
        (true, records) => records.unwrap_or(SERVER_RECORDS_DEFAULT),
        (false, Some(records)) => records,
        (false, None) => match remote.objects()? {
            0 => bail!(
                "--no-load: namespace {namespace} on {address} holds no records; run once without --no-load"
            ),
            objects => objects,
        },
    };
    if records > keys::KEY_ID_MAX {
        bail!("--records {records} is above the bench's key space ({})", keys::KEY_ID_MAX);
    }
    let ctx = Context::new(
        workload::Target::Server(&remote),
        plan.value_sizes,
        plan.seed,
        if plan.load { 0 } else { records },
        &out,
    );
    let load = if plan.load { Some(load_phase(&ctx, &plan, records, "through the wire")?) } else { None };
    let load_failed = load.as_ref().and_then(|l| l.stopped_early.clone());
    let run = match load_failed {
        None => {
            let how = (plan.workload.mix, plan.keys, plan.rate_ops_s, false);
            Some(mixed_phase(&ctx, &plan, records, how, &plan.workload.label)?)
        }
        Some(_) => None,
    };
    drop(ctx);
    let mut notes = vec![
        "through the wire: device, space and write-amplification figures are the server's own (its info and metrics), not measured here".to_string(),
    ];
    if let Some(reason) = &load_failed {
        notes.push(format!("the load stopped early: {reason}"));
    }
    let labels = [format!("server {address}")];
    let report = Report {
        plan: &plan,
        labels: &labels,
        device_sizes: Vec::new(),
        backend: "wire".into(),
        namespace,
        write_block_size: 0,
        defrag_lwm_pct: 0,
        settle_seconds: 0.0,
        records,
        raw: None,
        load: load.as_ref(),
        run: run.as_ref(),
        stats: None,
        act: None,
        notes,
    };
    print_report(&out, &report);
    let failed = load_failed.is_some() || run.as_ref().is_some_and(|r| r.stopped_early.is_some());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Records a `--server` run loads when `--records` is not given: the anchor's 300 k.
const SERVER_RECORDS_DEFAULT: u64 = 300_000;

/// Waits (at most `SETTLE_MAX`) until the load's writes are on the device and defrag has
/// nothing queued, so that the measured phase starts from a steady engine rather than
/// inheriting the load's backlog (YCSB's load and run are separate processes for the same
/// reason). Returns the seconds waited.
fn settle(engine: &Engine, out: &Out) -> f64 {
    let start = Instant::now();
    let mut last_progress = start;
    loop {
        let stats = engine.stats();
        let queued: u64 = stats.devices.iter().map(|d| d.write_queue_blocks + d.wblocks_defrag_queued).sum();
        if queued == 0 || start.elapsed() >= SETTLE_MAX {
            let seconds = start.elapsed().as_secs_f64();
            if seconds >= 0.1 {
                out.progress_done(&format!(
                    "settle: {seconds:.1} s for the write queue and defrag to drain{}",
                    if queued > 0 {
                        format!(" (gave up, {queued} blocks still queued)")
                    } else {
                        String::new()
                    }
                ));
            }
            return seconds;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            out.progress(&format!(
                "settle: waiting for the write queue and defrag to drain ({queued} blocks queued, {:.0} s)",
                start.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

fn print_report(out: &Out, report: &Report<'_>) {
    if out.json() {
        println!("{:#}", report.json());
    } else {
        out.line(&report.text());
    }
}
