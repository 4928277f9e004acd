//! Background jobs: the queries that write (`query_operate`, a record UDF over a query).
//! As on the real server, such a query is answered at once and run behind by the job
//! runner (`net::serve` starts one thread for it); the clients then poll `query-show`
//! until it says `done`, and may stop a job with `query-abort`.
//!
//! The runner also builds new secondary indexes (`sindex::build`) and sweeps them after a
//! truncate (`sindex::sweep`), in the same queue.
//!
//! Owns the table of jobs: those queued or running, and the last [`FINISHED_KEPT`]
//! finished (the real server's `query-max-done`), so that a client polling late still
//! learns what its job did. Invariants: a job is finished once (its status never goes
//! back to active); a job asked to stop ends at its next chunk of records, whose writes
//! are complete and durable as every client write is. Cost: one mutex taken per job
//! started, per status poll and per chunk of records, never per record.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use super::sindex::SecondaryIndex;
use super::Server;

/// Finished jobs kept for `query-show`.
pub const FINISHED_KEPT: usize = 100;

/// Why a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Done,
    /// `query-abort` asked it to stop.
    UserAborted,
    /// The server shut down before the job was through.
    Shutdown,
    /// The engine failed a scan of one of its partitions.
    Failed,
}

impl Ending {
    fn status(self) -> &'static str {
        match self {
            Ending::Done => "done(ok)",
            Ending::UserAborted => "done(user-aborted)",
            Ending::Shutdown => "done(abandoned-shutdown)",
            Ending::Failed => "done(abandoned-unknown)",
        }
    }
}

/// One background job and its progress, updated by the runner as it goes.
pub struct Job {
    pub id: u64,
    /// `background-udf` or `background-ops`, the real server's names.
    pub kind: &'static str,
    pub namespace: String,
    pub set: String,
    started: Instant,
    ended: Mutex<Option<(Instant, Ending)>>,
    /// Records the job's ops or UDF changed (or read, for a UDF that only reads).
    pub succeeded: AtomicU64,
    /// Records on which they failed.
    pub failed: AtomicU64,
    /// Records the job's filter expression left out.
    pub filtered: AtomicU64,
    /// Records held back by the job's records-per-second limit.
    pub throttled: AtomicU64,
    partitions_done: AtomicU32,
    /// Why the job was asked to stop: 0 not asked, else `STOP_REASONS` index + 1.
    stop: AtomicU8,
}

/// The reasons a job may be asked to stop, as `Job::stop` numbers them (from 1).
const STOP_REASONS: [Ending; 2] = [Ending::UserAborted, Ending::Shutdown];

impl Job {
    pub fn new(id: u64, kind: &'static str, namespace: &str, set: &[u8]) -> Job {
        Job {
            id,
            kind,
            namespace: namespace.to_string(),
            set: String::from_utf8_lossy(set).into_owned(),
            started: Instant::now(),
            ended: Mutex::new(None),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            partitions_done: AtomicU32::new(0),
            stop: AtomicU8::new(0),
        }
    }

    /// Asks the job to stop at its next chunk; the first reason asked wins.
    pub fn ask_to_stop(&self, why: Ending) {
        if let Some(at) = STOP_REASONS.iter().position(|reason| *reason == why) {
            let _ = self.stop.compare_exchange(0, at as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Why the job should stop now, if it should (one atomic load).
    pub fn stop_reason(&self) -> Option<Ending> {
        let asked = self.stop.load(Ordering::Acquire) as usize;
        asked.checked_sub(1).and_then(|at| STOP_REASONS.get(at).copied())
    }

    pub fn partition_done(&self) {
        self.partitions_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the job finished; a second call changes nothing.
    pub fn finish(&self, how: Ending) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.get_or_insert((Instant::now(), how));
        }
    }

    pub fn ending(&self) -> Option<Ending> {
        self.ended.lock().ok().and_then(|ended| ended.map(|(_, how)| how))
    }

    /// The `query-show` line of the job, in the real server's `key=value:` form; the
    /// clients read `status`, `job-progress` and the `recs-*` counts.
    pub fn describe(&self) -> String {
        let ended = self.ended.lock().ok().and_then(|ended| *ended);
        let (status, run_time_ms, since_done_ms) = match ended {
            Some((at, how)) => (how.status(), at - self.started, at.elapsed().as_millis()),
            None => ("active(ok)", self.started.elapsed(), 0),
        };
        let partitions = self.partitions_done.load(Ordering::Relaxed) as f64;
        let progress = match ended {
            Some((_, Ending::Done)) => 100.0,
            _ => partitions * 100.0 / spike::limits::PARTITION_COUNT as f64,
        };
        let mut line = String::new();
        let _ = write!(
            line,
            "trid={}:job-type={}:ns={}:set={}:status={status}:job-progress={progress:.2}:run-time={}:\
             time-since-done={since_done_ms}:recs-throttled={}:recs-filtered-meta=0:recs-filtered-bins={}:\
             recs-succeeded={}:recs-failed={}",
            self.id,
            self.kind,
            self.namespace,
            self.set,
            run_time_ms.as_millis(),
            self.throttled.load(Ordering::Relaxed),
            self.filtered.load(Ordering::Relaxed),
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        line
    }
}

/// A job waiting for the runner: the request it was started by (the runner decodes it
/// again, so that the queue holds owned bytes rather than borrowed messages).
pub struct Queued {
    pub job: Arc<Job>,
    pub body: Vec<u8>,
}

/// What the runner is handed: a background query, or the build of a new secondary index.
pub enum Task {
    Query(Queued),
    BuildIndex {
        namespace: String,
        index: Arc<SecondaryIndex>,
    },
    /// Drop the index entries of the records a truncate of `set` (None: all) deleted.
    SweepIndexes {
        namespace: String,
        set: Option<Vec<u8>>,
    },
}

/// Runs one task: on the runner thread, or in place where there is no runner.
pub fn run(server: &Server, task: Task) {
    match task {
        Task::Query(queued) => super::scan::run_job(server, queued),
        Task::BuildIndex { namespace, index } => {
            if let Some(ns) = server.namespace(namespace.as_bytes()) {
                super::sindex::build(ns, &index, &|| server.jobs.stopping());
            }
        }
        // An index sweep at shutdown is moot: the indexes are built anew at the next start.
        Task::SweepIndexes { namespace, set } if !server.jobs.stopping() => {
            if let Some(ns) = server.namespace(namespace.as_bytes()) {
                super::sindex::sweep(ns, set.as_deref());
            }
        }
        Task::SweepIndexes { .. } => {}
    }
}

/// Hands `task` to the runner, or runs it in place where there is none.
pub fn submit_or_run(server: &Server, task: Task) {
    if let Err(task) = server.jobs.submit(task) {
        run(server, task);
    }
}

/// The table of jobs and the queue to the runner.
#[derive(Default)]
pub struct Jobs {
    table: Mutex<VecDeque<Arc<Job>>>,
    queue: Mutex<Option<mpsc::Sender<Task>>>,
    /// Set by `shut_down`: index builds and sweeps still queued, or running, stop at their
    /// next partition (the indexes live in memory and are built again at the next start).
    stopping: std::sync::atomic::AtomicBool,
}

impl Jobs {
    /// Opens the queue; the runner takes the jobs from the receiver in order.
    pub fn attach(&self) -> mpsc::Receiver<Task> {
        let (sender, receiver) = mpsc::channel();
        if let Ok(mut queue) = self.queue.lock() {
            *queue = Some(sender);
        }
        receiver
    }

    /// Closes the queue and asks every unfinished job to stop: the runner then ends each at
    /// its next chunk (queued ones at once) and returns.
    pub fn shut_down(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Ok(mut queue) = self.queue.lock() {
            *queue = None;
        }
        for job in self.table.lock().map(|t| t.clone()).unwrap_or_default() {
            if job.ending().is_none() {
                job.ask_to_stop(Ending::Shutdown);
            }
        }
    }

    /// Whether the server is shutting down (`shut_down`).
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Adds a job to the table, dropping the oldest finished ones beyond `FINISHED_KEPT`.
    pub fn register(&self, job: Job) -> Arc<Job> {
        let job = Arc::new(job);
        if let Ok(mut table) = self.table.lock() {
            table.push_back(job.clone());
            let finished = table.iter().filter(|j| j.ending().is_some()).count();
            if finished > FINISHED_KEPT {
                let mut extra = finished - FINISHED_KEPT;
                table.retain(|j| {
                    let drop = extra > 0 && j.ending().is_some();
                    extra -= drop as usize;
                    !drop
                });
            }
        }
        job
    }

    /// Hands a registered job to the runner; gives it back when no runner is attached
    /// (the caller then runs it in place: tests and the fuzz target answer requests
    /// without a runner).
    pub fn submit(&self, task: Task) -> Result<(), Task> {
        let queue = self.queue.lock().ok().and_then(|q| q.clone());
        match queue {
            Some(sender) => sender.send(task).map_err(|failed| failed.0),
            None => Err(task),
        }
    }

    pub fn find(&self, id: u64) -> Option<Arc<Job>> {
        let table = self.table.lock().ok()?;
        table.iter().rev().find(|job| job.id == id).cloned()
    }

    /// `query-show[:id=N]` (or `trid=N`): one job, or every job in the table.
    pub fn show(&self, args: &str) -> String {
        match job_id(args) {
            Some(Ok(id)) => {
                self.find(id).map_or_else(|| "ERROR:2:job not found".to_string(), |j| j.describe())
            }
            Some(Err(())) => "ERROR:4:bad job id".to_string(),
            None => {
                let table = self.table.lock().map(|t| t.clone()).unwrap_or_default();
                table.iter().map(|job| job.describe()).collect::<Vec<_>>().join(";")
            }
        }
    }

    /// `query-abort:id=N` (or `trid=N`): asks a running or queued job to stop.
    pub fn abort(&self, args: &str) -> String {
        match job_id(args) {
            Some(Ok(id)) => match self.find(id) {
                Some(job) if job.ending().is_none() => {
                    job.ask_to_stop(Ending::UserAborted);
                    "OK".to_string()
                }
                _ => "ERROR:2:job not found".to_string(),
            },
            _ => "ERROR:4:bad job id".to_string(),
        }
    }
}

/// The job id of `id=N` or `trid=N` among `;`-separated arguments.
fn job_id(args: &str) -> Option<Result<u64, ()>> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "id" || *k == "trid")
        .map(|(_, v)| v.trim().parse::<u64>().map_err(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(line: &'a str, name: &str) -> &'a str {
        line.split(':').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name)).unwrap().1
    }

    #[test]
    fn a_job_shows_active_then_done_with_its_counts_and_finishes_once() {
        let jobs = Jobs::default();
        let job = jobs.register(Job::new(7, "background-ops", "test", b"s"));
        let line = jobs.show("id=7");
        assert_eq!(field(&line, "status"), "active(ok)");
        assert_eq!(field(&line, "job-progress"), "0.00");
        job.succeeded.fetch_add(3, Ordering::Relaxed);
        job.partition_done();
        job.finish(Ending::Done);
        job.finish(Ending::Shutdown);
        let line = jobs.show("trid=7");
        assert_eq!(field(&line, "status"), "done(ok)");
        assert_eq!(field(&line, "job-progress"), "100.00");
        assert_eq!(field(&line, "recs-succeeded"), "3");
        assert_eq!(field(&line, "set"), "s");
        assert_eq!(jobs.show("id=8"), "ERROR:2:job not found");
        assert_eq!(jobs.show("id=x"), "ERROR:4:bad job id");
        assert_eq!(jobs.show(""), line);
    }

    #[test]
    fn abort_stops_an_unfinished_job_only_and_the_first_reason_wins() {
        let jobs = Jobs::default();
        let job = jobs.register(Job::new(1, "background-udf", "test", b""));
        assert_eq!(job.stop_reason(), None);
        assert_eq!(jobs.abort("id=1"), "OK");
        jobs.shut_down();
        assert_eq!(job.stop_reason(), Some(Ending::UserAborted));
        job.finish(Ending::UserAborted);
        assert_eq!(jobs.abort("id=1"), "ERROR:2:job not found");
        assert!(jobs.show("id=1").contains("status=done(user-aborted)"));
    }

    #[test]
    fn the_table_keeps_the_last_finished_jobs_and_every_unfinished_one() {
        let jobs = Jobs::default();
        let running = jobs.register(Job::new(0, "background-ops", "test", b""));
        for id in 1..=(FINISHED_KEPT as u64 + 5) {
            jobs.register(Job::new(id, "background-ops", "test", b"")).finish(Ending::Done);
        }
        jobs.register(Job::new(999, "background-ops", "test", b""));
        assert!(jobs.find(0).is_some_and(|j| Arc::ptr_eq(&j, &running)));
        assert!(jobs.find(1).is_none(), "the oldest finished job is dropped");
        assert!(jobs.find(FINISHED_KEPT as u64 + 5).is_some());
    }

    #[test]
    fn without_a_runner_a_job_is_handed_back_and_with_one_it_is_queued() {
        let jobs = Jobs::default();
        let job = jobs.register(Job::new(1, "background-ops", "test", b""));
        let back = jobs.submit(Task::Query(Queued { job: job.clone(), body: vec![1] }));
        assert!(back.is_err());
        let receiver = jobs.attach();
        assert!(jobs.submit(Task::Query(Queued { job, body: vec![2] })).is_ok());
        assert!(matches!(receiver.try_recv().unwrap(), Task::Query(q) if q.body == vec![2]));
        jobs.shut_down();
        let job = jobs.register(Job::new(2, "background-ops", "test", b""));
        assert!(jobs.submit(Task::Query(Queued { job, body: vec![3] })).is_err());
    }
}
