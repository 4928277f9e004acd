//! The engine phases: load (insert ids `0..records`) and the mixed phase, driven by client
//! threads against one in-process `Engine`, the way a server's transaction threads would.
//!
//! Each thread has one operation in flight and records its latency into its own HDR
//! histograms (behind an uncontended mutex: ~20 ns per operation); the coordinating thread
//! drains them every interval into the interval and phase totals, so intervals cost no
//! allocation and threads never wait on each other.
//!
//! With a target rate, each thread runs a fixed schedule and a late operation's latency
//! counts from its scheduled start, not from when the thread got to it: a stall then shows
//! in the percentiles of every operation it delayed (no coordinated omission), as ACT and
//! wrk2 measure. An operation issued on time starts its clock when the thread wakes, so
//! the sleep's own overshoot is not charged to the engine.

use super::defrag_watch::{DefragStalls, DefragWatch};
use super::keys::{key_of, KeyChooser, KeyDistribution, Rng, KEY_ID_MAX, KEY_LEN};
use super::options::{Mix, OpKind, ValueSizes, OP_KINDS};
use super::remote::{Remote, RemoteError};
use super::report::{self, Out};
use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;
use spike::{Engine, Error, Stats, WriteOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Highest latency the histograms hold (100 s); slower operations count as 100 s.
pub const LATENCY_NS_MAX: u64 = 100_000_000_000;
/// Ids handed to a loading thread at a time: few enough atomic increments to be free,
/// small enough that threads finish together.
const LOAD_CHUNK: u64 = 256;
/// Longest a paced thread sleeps before looking at the stop flag again.
const SLEEP_SLICE: Duration = Duration::from_millis(20);
/// Coordinator wake-ups between interval lines, to notice the end of a phase promptly.
const POLL: Duration = Duration::from_millis(20);

pub enum Work {
    /// Insert ids `0..records` (each exactly once).
    Load { records: u64 },
    /// Operations drawn from `mix`; with `interleave`, each thread cycles through the
    /// kinds in exact proportion instead of drawing at random (ACT's fixed rates).
    Mix { mix: Mix, keys: KeyDistribution, interleave: bool },
}

pub struct PhaseSpec {
    pub work: Work,
    pub threads: usize,
    pub rate_ops_s: Option<f64>,
    pub duration: Option<Duration>,
    pub ops_max: Option<u64>,
    /// Most operations a thread issues together (reads through one `get_many`).
    pub batch: usize,
    pub interval: Duration,
}

/// What the phases drive: an engine in this process, or a server through the wire.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Engine(&'a Engine),
    Server(&'a Remote),
}

impl Target<'_> {
    /// The engine's statistics; through the wire there are none (all zero).
    pub fn stats(&self) -> Stats {
        match self {
            Target::Engine(engine) => engine.stats(),
            Target::Server(_) => Stats::default(),
        }
    }
}

/// What the phases share: the target, the values to write, the key space.
pub struct Context<'a> {
    pub target: Target<'a>,
    pub value_sizes: ValueSizes,
    /// Random bytes; a value is a slice of it at a random offset.
    pub values: Vec<u8>,
    pub seed: u64,
    /// Ids `0..key_count` have been inserted (inserts in the mixed phase extend it).
    pub key_count: AtomicU64,
    pub out: &'a Out,
}

impl<'a> Context<'a> {
    pub fn new(target: Target<'a>, value_sizes: ValueSizes, seed: u64, key_count: u64, out: &'a Out) -> Self {
        let mut rng = Rng::new(seed, u64::MAX);
        let values = (0..value_sizes.max + 4096).map(|_| rng.next_u64() as u8).collect();
        Context { target, value_sizes, values, seed, key_count: AtomicU64::new(key_count), out }
    }

    fn value(&self, rng: &mut Rng) -> &[u8] {
        let span = (self.value_sizes.max - self.value_sizes.min) as u64;
        let len = self.value_sizes.min + rng.below(span + 1) as usize;
        let at = rng.below((self.values.len() - len + 1) as u64) as usize;
        &self.values[at..at + len]
    }
}

/// One kind's totals over a phase.
pub struct KindTotals {
    pub hist: Histogram<u64>,
    pub not_found: u64,
    pub errors: u64,
}

pub struct PhaseResult {
    pub elapsed: Duration,
    pub kinds: Vec<KindTotals>,
    pub first_error: Option<String>,
    /// Why the phase ended before its duration or operation count.
    pub stopped_early: Option<String>,
    pub stats_before: Stats,
    pub stats_after: Stats,
    pub intervals: Vec<IntervalLine>,
    /// Defrag while space was short (in-process runs only).
    pub defrag: Option<DefragStalls>,
}

impl PhaseResult {
    pub fn kind(&self, kind: OpKind) -> &KindTotals {
        &self.kinds[kind.index()]
    }

    pub fn all(&self) -> Result<Histogram<u64>> {
        let mut all = new_histogram()?;
        for kind in &self.kinds {
            all.add(&kind.hist).map_err(|e| anyhow!("histogram: {e}"))?;
        }
        Ok(all)
    }

    pub fn ops(&self) -> u64 {
        self.kinds.iter().map(|k| k.hist.len()).sum()
    }

    pub fn errors(&self) -> u64 {
        self.kinds.iter().map(|k| k.errors).sum()
    }

    pub fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ops_per_s(&self, kind: OpKind) -> f64 {
        self.kind(kind).hist.len() as f64 / self.seconds()
    }

    /// Record bytes the clients wrote per second (decimal MB).
    pub fn client_mb_s(&self) -> f64 {
        let bytes = self.stats_after.client_bytes_written - self.stats_before.client_bytes_written;
        bytes as f64 / 1e6 / self.seconds()
    }

    pub fn device_bytes_written(&self) -> u64 {
        self.stats_after.device_bytes_written - self.stats_before.device_bytes_written
    }

    /// Device bytes per client byte written in this phase.
    pub fn write_amplification(&self) -> Option<f64> {
        let client = self.stats_after.client_bytes_written - self.stats_before.client_bytes_written;
        (client > 0).then(|| self.device_bytes_written() as f64 / client as f64)
    }
}

/// One interval's figures, as printed.
pub struct IntervalLine {
    pub at_s: f64,
    pub ops_per_s: f64,
    pub p99_us: f64,
}

pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// A thread's measurements since the coordinator last drained them.
struct Recorder {
    hist: Vec<Option<Histogram<u64>>>,
    not_found: [u64; OP_KINDS],
    errors: [u64; OP_KINDS],
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            hist: (0..OP_KINDS).map(|_| None).collect(),
            not_found: [0; OP_KINDS],
            errors: [0; OP_KINDS],
        }
    }
}

/// Shared between the threads of one phase.
struct PhaseState {
    stop: AtomicBool,
    finished: AtomicUsize,
    next_load_id: AtomicU64,
    /// Why the phase stopped early (out of space, failed device), first reason wins.
    stop_reason: Mutex<Option<String>>,
    first_error: Mutex<Option<String>>,
    slots: Vec<Mutex<Recorder>>,
}

impl PhaseState {
    fn stop_with(&self, reason: String) {
        self.stop_reason.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(reason);
        self.stop.store(true, Relaxed);
    }
}

/// Counts a worker as finished however it ends; a panic (an engine assertion, say) stops
/// the phase instead of leaving the coordinator waiting for it.
struct FinishGuard<'a>(&'a PhaseState);

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop_with("a bench thread panicked inside the engine (its message is above)".into());
        }
        self.0.finished.fetch_add(1, Relaxed);
    }
}

/// How one operation ended.
enum Outcome {
    Ok,
    NotFound,
    /// Counted, and the phase goes on (e.g. an overloaded device).
    Error(String),
    /// The phase cannot go on (no space, failed device).
    Fatal(String),
}

fn classify(result: spike::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(Error::NotFound) => Outcome::NotFound,
        Err(err @ Error::OutOfSpace { .. }) => Outcome::Fatal(format!(
            "{err}: the records and the updates' garbage outgrew what defrag could reclaim; \
             load fewer --records, raise --defrag-lwm or use a larger device"
        )),
        Err(err @ (Error::DeviceFailed { .. } | Error::Io { .. } | Error::ShutDown)) => {
            Outcome::Fatal(err.to_string())
        }
        Err(err) => Outcome::Error(err.to_string()),
    }
}

fn classify_remote(result: Result<(), RemoteError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(RemoteError::NotFound) => Outcome::NotFound,
        Err(RemoteError::Failed(text)) => Outcome::Error(text),
    }
}

pub fn run_phase(ctx: &Context<'_>, spec: &PhaseSpec) -> Result<PhaseResult> {
    if spec.threads == 0 {
        bail!("a phase needs at least one thread");
    }
    let chooser = match &spec.work {
        Work::Mix { keys, .. } => Some(KeyChooser::new(*keys, ctx.key_count.load(Relaxed))),
        Work::Load { .. } => None,
    };
    let state = PhaseState {
        stop: AtomicBool::new(false),
        finished: AtomicUsize::new(0),
        next_load_id: AtomicU64::new(0),
        stop_reason: Mutex::new(None),
        first_error: Mutex::new(None),
        slots: (0..spec.threads).map(|_| Mutex::new(Recorder::new())).collect(),
    };
    let mut kinds: Vec<KindTotals> = Vec::with_capacity(OP_KINDS);
    for _ in 0..OP_KINDS {
        kinds.push(KindTotals { hist: new_histogram()?, not_found: 0, errors: 0 });
    }
    let stats_before = ctx.target.stats();
    let start = Instant::now();
    let mut intervals = Vec::new();
    let mut defrag = DefragWatch::default();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::with_capacity(spec.threads);
        for t in 0..spec.threads {
            let (state, chooser) = (&state, chooser.as_ref());
            let quota = spec
                .ops_max
                .map(|n| n / spec.threads as u64 + u64::from((t as u64) < n % spec.threads as u64));
            let handle =
                std::thread::Builder::new().name(format!("bench-{t}")).spawn_scoped(scope, move || {
                    let _finished = FinishGuard(state);
                    worker(ctx, spec, state, chooser, t, quota, start);
                });
            match handle {
                Ok(handle) => handles.push(handle),
                Err(err) => {
                    state.stop_with(format!("cannot start bench thread {t}: {err}"));
                    state.finished.fetch_add(spec.threads - t, Relaxed);
                    break;
                }
            }
        }
        let coordinated = coordinate(ctx, spec, &state, start, &mut kinds, &mut intervals, &mut defrag);
        // Normally every thread is done already; after a coordinator error they must stop.
        state.stop.store(true, Relaxed);
        // Joined here, so that a panicked thread (already reported by its guard) does
        // not make the scope panic too.
        for handle in handles {
            let _ = handle.join();
        }
        coordinated
    })?;
    let elapsed = start.elapsed();
    let stats_after = ctx.target.stats();
    let stopped_early = state.stop_reason.into_inner().unwrap_or_else(|e| e.into_inner());
    let first_error = state.first_error.into_inner().unwrap_or_else(|e| e.into_inner());
    let defrag = matches!(ctx.target, Target::Engine(_)).then(|| defrag.seen());
    Ok(PhaseResult {
        elapsed,
        kinds,
        first_error,
        stopped_early,
        stats_before,
        stats_after,
        intervals,
        defrag,
    })
}

/// One operation of a batch: its kind, its key id and when its clock started.
struct Pending {
    kind: OpKind,
    id: u64,
    started: Instant,
}

/// Where a worker's operations come from.
struct OpSource<'a> {
    ctx: &'a Context<'a>,
    spec: &'a PhaseSpec,
    state: &'a PhaseState,
    chooser: Option<&'a KeyChooser>,
    load_ids: std::ops::Range<u64>,
    drawn: u64,
}

impl OpSource<'_> {
    /// The next operation, or `None` when the phase's work is done.
    fn next(&mut self, rng: &mut Rng) -> Option<(OpKind, u64)> {
        let (kind, id) = match &self.spec.work {
            Work::Load { records } => {
                if self.load_ids.is_empty() {
                    let first = self.state.next_load_id.fetch_add(LOAD_CHUNK, Relaxed);
                    self.load_ids = first.min(*records)..(first + LOAD_CHUNK).min(*records);
                }
                (OpKind::Insert, self.load_ids.next()?)
            }
            Work::Mix { mix, interleave, .. } => {
                let draw = if *interleave { self.drawn % mix.total() } else { rng.below(mix.total()) };
                let kind = mix.pick(draw);
                let id = match kind {
                    OpKind::Insert => self.ctx.key_count.fetch_add(1, Relaxed),
                    _ => self.chooser.map_or(0, |c| c.choose(rng, self.ctx.key_count.load(Relaxed))),
                };
                (kind, id)
            }
        };
        self.drawn += 1;
        if id > KEY_ID_MAX {
            self.state.stop_with(format!("key ids exhausted at {KEY_ID_MAX}"));
            return None;
        }
        Some((kind, id))
    }
}

fn worker(
    ctx: &Context<'_>,
    spec: &PhaseSpec,
    state: &PhaseState,
    chooser: Option<&KeyChooser>,
    thread: usize,
    quota: Option<u64>,
    phase_start: Instant,
) {
    let mut rng = Rng::new(ctx.seed, thread as u64 + 1);
    let pace = spec.rate_ops_s.map(|rate| Duration::from_secs_f64(spec.threads as f64 / rate));
    // Threads' schedules are staggered so that they do not all fire at once.
    let mut next_at =
        phase_start + pace.map_or(Duration::ZERO, |p| p.mul_f64(thread as f64 / spec.threads as f64));
    let mut source = OpSource { ctx, spec, state, chooser, load_ids: 0..0, drawn: 0 };
    let batch_max = spec.batch.max(1);
    let mut batch: Vec<Pending> = Vec::with_capacity(batch_max);
    let mut done = 0u64;
    let mut exhausted = false;
    while !exhausted && !state.stop.load(Relaxed) && quota.is_none_or(|q| done < q) {
        batch.clear();
        while batch.len() < batch_max && quota.is_none_or(|q| done + (batch.len() as u64) < q) {
            let started = match pace {
                Some(pace) if batch.is_empty() => {
                    let scheduled = next_at;
                    next_at += pace;
                    if scheduled > Instant::now() {
                        while let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                            if state.stop.load(Relaxed) {
                                return;
                            }
                            std::thread::sleep(wait.min(SLEEP_SLICE));
                        }
                        // On time: the sleep's overshoot (timer slack, ~50 µs) is the bench's,
                        // not the engine's, so the clock starts now.
                        Instant::now()
                    } else {
                        // Late because earlier operations ran long: that wait is the engine's.
                        scheduled
                    }
                }
                // Later operations join the batch only if they are already due.
                Some(_) if next_at > Instant::now() => break,
                Some(pace) => {
                    let scheduled = next_at;
                    next_at += pace;
                    scheduled
                }
                None => Instant::now(),
            };
            let Some((kind, id)) = source.next(&mut rng) else {
                exhausted = true;
                break;
            };
            batch.push(Pending { kind, id, started });
        }
        execute_batch(ctx, state, thread, &batch, &mut rng);
        done += batch.len() as u64;
    }
}

/// Runs a batch: writes one by one, then every read together (one `get_many`, its device
/// reads in flight at once, or one batch request to a server), and records each
/// operation's latency from its own start.
fn execute_batch(ctx: &Context<'_>, state: &PhaseState, thread: usize, batch: &[Pending], rng: &mut Rng) {
    let results = match ctx.target {
        Target::Engine(engine) => run_batch(ctx, engine, batch, rng),
        Target::Server(remote) => run_batch(ctx, remote, batch, rng),
    };
    record_results(state, thread, results);
}

type Done = (OpKind, Instant, Instant, Outcome);

/// What a batch runs on: the engine in-process or a server through the wire.
trait Store {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome;
    fn get(&self, key: &[u8]) -> Outcome;
    fn delete(&self, key: &[u8]) -> Outcome;
    fn get_many(&self, keys: &[&[u8]]) -> Vec<Outcome>;
}

impl Store for Engine {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        classify(Engine::put(self, key, value, &WriteOptions::default()).map(|_| ()))
    }
    fn get(&self, key: &[u8]) -> Outcome {
        classify(Engine::get(self, key).map(|_| ()))
    }
    fn delete(&self, key: &[u8]) -> Outcome {
        classify(Engine::delete(self, key))
    }
    fn get_many(&self, keys: &[&[u8]]) -> Vec<Outcome> {
        Engine::get_many(self, keys).into_iter().map(|r| classify(r.map(|_| ()))).collect()
    }
}

impl Store for Remote {
    fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        classify_remote(Remote::put(self, key, value))
    }
    fn get(&self, key: &[u8]) -> Outcome {
        classify_remote(Remote::get(self, key))
    }
    fn delete(&self, key: &[u8]) -> Outcome {
        classify_remote(Remote::delete(self, key))
    }
    fn get_many(&self, keys: &[&[u8]]) -> Vec<Outcome> {
        Remote::get_many(self, keys).into_iter().map(classify_remote).collect()
    }
}

fn run_batch(ctx: &Context<'_>, store: &impl Store, batch: &[Pending], rng: &mut Rng) -> Vec<Done> {
    let mut results: Vec<Done> = Vec::with_capacity(batch.len());
    for op in batch.iter().filter(|op| op.kind != OpKind::Read) {
        let key = key_of(op.id);
        let outcome = match op.kind {
            OpKind::Update | OpKind::Insert => store.put(&key, ctx.value(rng)),
            OpKind::Delete => store.delete(&key),
            OpKind::ReadModifyWrite => match store.get(&key) {
                Outcome::Ok | Outcome::NotFound => store.put(&key, ctx.value(rng)),
                failed => failed,
            },
            OpKind::Read => continue,
        };
        results.push((op.kind, op.started, Instant::now(), outcome));
    }
    let reads: Vec<&Pending> = batch.iter().filter(|op| op.kind == OpKind::Read).collect();
    match reads.as_slice() {
        [] => {}
        [op] => {
            let outcome = store.get(&key_of(op.id));
            results.push((OpKind::Read, op.started, Instant::now(), outcome));
        }
        many => {
            let keys: Vec<[u8; KEY_LEN]> = many.iter().map(|op| key_of(op.id)).collect();
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            let got = store.get_many(&key_refs);
            let finished = Instant::now();
            for (op, outcome) in many.iter().zip(got) {
                results.push((OpKind::Read, op.started, finished, outcome));
            }
        }
    }
    results
}

fn record_results(state: &PhaseState, thread: usize, results: Vec<Done>) {
    let mut slot = state.slots[thread].lock().unwrap_or_else(|e| e.into_inner());
    for (kind, started, finished, outcome) in results {
        let latency_ns =
            finished.saturating_duration_since(started).as_nanos().min(LATENCY_NS_MAX as u128) as u64;
        let i = kind.index();
        match outcome {
            outcome @ (Outcome::Ok | Outcome::NotFound) => {
                if matches!(outcome, Outcome::NotFound) {
                    slot.not_found[i] += 1;
                }
                match &mut slot.hist[i] {
                    Some(hist) => hist.saturating_record(latency_ns.max(1)),
                    none => match new_histogram() {
                        Ok(mut hist) => {
                            hist.saturating_record(latency_ns.max(1));
                            *none = Some(hist);
                        }
                        Err(err) => state.stop_with(err.to_string()),
                    },
                }
            }
            Outcome::Error(err) => {
                slot.errors[i] += 1;
                let mut first = state.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{}: {err}", kind.name()));
            }
            Outcome::Fatal(reason) => {
                slot.errors[i] += 1;
                state.stop_with(reason);
            }
        }
    }
}

/// Ends the phase on time, drains the threads' recorders every interval and prints a line.
fn coordinate(
    ctx: &Context<'_>,
    spec: &PhaseSpec,
    state: &PhaseState,
    start: Instant,
    kinds: &mut [KindTotals],
    intervals: &mut Vec<IntervalLine>,
    defrag: &mut DefragWatch,
) -> Result<()> {
    let mut interval: Vec<Histogram<u64>> = Vec::with_capacity(OP_KINDS);
    for _ in 0..OP_KINDS {
        interval.push(new_histogram()?);
    }
    let mut last_tick = start;
    let mut last_device_bytes = ctx.target.stats().device_bytes_written;
    let mut last_progress_len = 0usize;
    loop {
        let all_done = state.finished.load(Relaxed) == spec.threads;
        if spec.duration.is_some_and(|d| start.elapsed() >= d) {
            state.stop.store(true, Relaxed);
        }
        if let Target::Engine(engine) = ctx.target {
            if defrag.due(Instant::now()) {
                defrag.sample(&engine.stats(), Instant::now());
            }
        }
        let due = last_tick.elapsed() >= spec.interval;
        if !(due || all_done) {
            std::thread::sleep(POLL);
            continue;
        }
        for slot in &state.slots {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            for i in 0..OP_KINDS {
                if let Some(hist) = slot.hist[i].as_mut() {
                    interval[i].add(&*hist).map_err(|e| anyhow!("histogram: {e}"))?;
                    hist.reset();
                }
                kinds[i].not_found += std::mem::take(&mut slot.not_found[i]);
                kinds[i].errors += std::mem::take(&mut slot.errors[i]);
            }
        }
        let now = Instant::now();
        let seconds = now.duration_since(last_tick).as_secs_f64().max(1e-9);
        last_tick = now;
        let device_bytes = ctx.target.stats().device_bytes_written;
        let device_mb_s = (device_bytes - last_device_bytes) as f64 / 1e6 / seconds;
        last_device_bytes = device_bytes;
        let mut all = new_histogram()?;
        for (i, hist) in interval.iter().enumerate() {
            all.add(hist).map_err(|e| anyhow!("histogram: {e}"))?;
            kinds[i].hist.add(hist).map_err(|e| anyhow!("histogram: {e}"))?;
        }
        let at_s = now.duration_since(start).as_secs_f64();
        if !all.is_empty() || !all_done {
            intervals.push(IntervalLine {
                at_s,
                ops_per_s: all.len() as f64 / seconds,
                p99_us: all.value_at_quantile(0.99) as f64 / 1e3,
            });
            let line = match &spec.work {
                Work::Load { records } => {
                    let loaded: u64 = kinds[OpKind::Insert.index()].hist.len();
                    report::load_progress_line(
                        loaded,
                        *records,
                        at_s,
                        all.len() as f64 / seconds,
                        &all,
                        device_mb_s,
                    )
                }
                Work::Mix { .. } => report::interval_line(spec, at_s, seconds, &interval, device_mb_s),
            };
            match &spec.work {
                Work::Load { .. } => {
                    ctx.out.progress(&line);
                    last_progress_len = line.len();
                }
                Work::Mix { .. } => ctx.out.line(&line),
            }
        }
        for hist in interval.iter_mut() {
            hist.reset();
        }
        if all_done {
            break;
        }
    }
    if last_progress_len > 0 {
        ctx.out.progress_end();
    }
    Ok(())
}
