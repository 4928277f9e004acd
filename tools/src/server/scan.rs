//! Partition scans (a query without a digest, `../shared/aerospike-wire.md` §6): the
//! partitions of PID_ARRAY from their start and those of DIGEST_ARRAY strictly after
//! their digest, in descending digest order (Aerospike's, so resume points carry over),
//! for the namespace or one set. Records stream in frames of about `SCAN_FRAME_BYTES`,
//! handed to `send` as they fill, then a LAST message. A scan with RECS_PER_SEC sends
//! what it has and sleeps whenever it is ahead of that rate; it holds its event loop
//! meanwhile, as every request does until its reply is written. A query by secondary index
//! is such a scan that keeps the records its index filter matches (`index_query`).

use super::bins::StoredRecord;
use super::counters::Origin;
use super::filter::{record_passes, subject};
use super::index_query::{self, IndexFilter};
use super::jobs::{self, Ending, Job, Queued, Task};
use super::record::{self, code, select_bins, Command, ReplyBins};
use super::sindex::SecondaryIndex;
use super::wire::*;
use super::Server;
use std::io;
use std::sync::atomic::Ordering;

/// Records a background query writes together (one durability wait for them all).
const BACKGROUND_CHUNK: usize = 1024;
/// Records an index query reads from the device together.
const CANDIDATES_READ_TOGETHER: usize = 256;
/// Reply bytes gathered before a frame is sent (the real server's chunk size).
pub const SCAN_FRAME_BYTES: usize = 1 << 20;

/// A partition to scan and the digest it resumes after.
type PartitionStart = (usize, Option<[u8; DIGEST_SIZE]>);

/// Partitions to scan and where each resumes.
fn partitions(message: &Message<'_>) -> Result<Vec<PartitionStart>, u8> {
    let mut wanted: Vec<PartitionStart> = Vec::new();
    if let Some(pids) = message.field(FIELD_PID_ARRAY) {
        if pids.len() % 2 != 0 {
            return Err(code::PARAMETER);
        }
        wanted.extend(pids.chunks(2).map(|p| (u16::from_le_bytes([p[0], p[1]]) as usize, None)));
    }
    if let Some(digests) = message.field(FIELD_DIGEST_ARRAY) {
        if digests.len() % DIGEST_SIZE != 0 {
            return Err(code::PARAMETER);
        }
        for d in digests.chunks(DIGEST_SIZE) {
            let digest: [u8; DIGEST_SIZE] = d.try_into().map_err(|_| code::PARAMETER)?;
            wanted.push((spike::partition_of(&digest), Some(digest)));
        }
    }
    if message.field(FIELD_PID_ARRAY).is_none() && message.field(FIELD_DIGEST_ARRAY).is_none() {
        return Err(code::PARAMETER);
    }
    let mut seen = vec![false; spike::limits::PARTITION_COUNT];
    for (p, _) in &wanted {
        if *p >= seen.len() || std::mem::replace(&mut seen[*p], true) {
            return Err(code::PARAMETER);
        }
    }
    Ok(wanted)
}

/// Runs a scan; `send` writes a finished frame to the client.
pub fn execute(
    server: &Server,
    message: &Message<'_>,
    body: &[u8],
    send: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut reply = Reply::default();
    let status = scan(server, message, body, &mut reply, send)?;
    reply.message(&MsgHeader { info3: INFO3_LAST, result_code: status, ..MsgHeader::default() });
    send(&reply.finish())
}

fn scan(
    server: &Server,
    message: &Message<'_>,
    body: &[u8],
    reply: &mut Reply,
    send: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u8> {
    let Some(ns) = message.field(FIELD_NAMESPACE).and_then(|n| server.namespace(n)) else {
        return Ok(code::NAMESPACE);
    };
    let index_filter = match index_query::parse(message, &server.catalog, &ns.name) {
        Ok(index_filter) => index_filter,
        Err(code) => return Ok(code),
    };
    if message.header.info2 & INFO2_WRITE != 0 {
        return Ok(start_background(server, ns, message, body));
    }
    if message.field(FIELD_UDF_PACKAGE).is_some() {
        return Ok(code::UNSUPPORTED_FEATURE);
    }
    let wanted = match partitions(message) {
        Ok(wanted) => wanted,
        Err(code) => return Ok(code),
    };
    let set = message.field(FIELD_SET).filter(|s| !s.is_empty());
    let mut budget = message
        .field(FIELD_MAX_RECORDS)
        .and_then(|m| m.try_into().ok())
        .map(u64::from_be_bytes)
        .filter(|&m| m > 0)
        .unwrap_or(u64::MAX);
    let index = index_filter.as_ref().and_then(|f| ns.sindexes.serving(f, set));
    let header = message.header;
    let mut failure = None;
    let filter = message.field(FIELD_FILTER);
    // The code of a filter expression this server cannot evaluate.
    let mut refused = None;
    let records_per_s =
        message.field(FIELD_RECS_PER_SEC).and_then(|r| r.try_into().ok()).map(u32::from_be_bytes);
    let mut pace =
        Pace { start: std::time::Instant::now(), records_per_s: records_per_s.unwrap_or(0), sent: 0 };
    for (partition, after) in wanted {
        let mut visit = |record: spike::Result<spike::Record>| {
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    log::warn!("namespace {}: scan skips a record: {err}", ns.name);
                    return true;
                }
            };
            let wants_bins = header.info1 & INFO1_NOBINDATA == 0;
            let (stored, bins) = match selected(&record, set, filter, index_filter.as_ref(), message) {
                Ok(Some(selected)) => selected,
                Ok(None) => return true,
                Err(code) => {
                    refused = Some(code);
                    return false;
                }
            };
            if let Some(wait) = pace.ahead_by(1) {
                // Ahead of the asked rate: let the client have what is ready, then wait.
                reply.end_frame();
                if let Err(err) = send(&std::mem::take(&mut reply.out)) {
                    failure = Some(err);
                    return false;
                }
                std::thread::sleep(wait);
            }
            write_record(reply, ns.name.as_bytes(), &record, &stored, &bins, wants_bins);
            pace.sent += 1;
            budget -= 1;
            if reply.frame_bytes() >= SCAN_FRAME_BYTES {
                reply.end_frame();
                if let Err(err) = send(&std::mem::take(&mut reply.out)) {
                    failure = Some(err);
                    return false;
                }
            }
            budget > 0
        };
        if let Err(err) = visit_partition(
            ns,
            index.as_deref(),
            index_filter.as_ref(),
            partition,
            after.as_ref(),
            &mut visit,
        ) {
            log::warn!("namespace {}: scan of partition {partition} failed: {err}", ns.name);
            return Ok(code::SERVER_ERROR);
        }
        if let Some(err) = failure {
            return Err(err);
        }
        if let Some(code) = refused {
            return Ok(code);
        }
        if budget == 0 {
            break;
        }
    }
    Ok(code::OK)
}

/// Starts a background query (`query_operate`, or a record UDF over a query): registers
/// the job under the client's task id and queues it for the job runner, so that the reply
/// goes out at once, as the real server's does. Without a runner (a caller of `respond`
/// alone) the job runs here, before the reply.
fn start_background(server: &Server, ns: &super::Namespace, message: &Message<'_>, body: &[u8]) -> u8 {
    let call = super::net::udf_call(message);
    if call.is_none() && message.ops.is_empty() {
        return code::PARAMETER;
    }
    let id = message.field(FIELD_TRID).and_then(|t| t.try_into().ok()).map(u64::from_be_bytes);
    let kind = if call.is_some() { "background-udf" } else { "background-ops" };
    let set = message.field(FIELD_SET).unwrap_or(&[]);
    let job = server.jobs.register(Job::new(id.unwrap_or_else(unasked_job_id), kind, &ns.name, set));
    jobs::submit_or_run(server, Task::Query(Queued { job, body: body.to_vec() }));
    code::OK
}

/// A job id for a request that carries none (the clients always send one).
fn unasked_job_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.finish()
}

/// Runs a queued background job to its end (or until it is asked to stop) and records how
/// it ended. The request is decoded again from its bytes; its namespace and index filter
/// were checked before it was queued, so a failure here means the index was dropped since.
pub fn run_job(server: &Server, queued: Queued) {
    let job = &queued.job;
    if let Some(why) = job.stop_reason() {
        job.finish(why);
        return;
    }
    let ending = match decode_message(&queued.body) {
        Ok(message) => match message.field(FIELD_NAMESPACE).and_then(|n| server.namespace(n)) {
            Some(ns) => match index_query::parse(&message, &server.catalog, &ns.name) {
                Ok(index_filter) => background(ns, &message, index_filter.as_ref(), server, job),
                Err(_) => Ending::Failed,
            },
            None => Ending::Failed,
        },
        Err(_) => Ending::Failed,
    };
    job.finish(ending);
    let (succeeded, failed) = (job.succeeded.load(Ordering::Relaxed), job.failed.load(Ordering::Relaxed));
    log::info!(
        "background job {} on {}: {ending:?}, {succeeded} records changed, {failed} failed",
        job.id,
        job.namespace
    );
}

/// The body of a background job: the message's write ops, or its UDF call, run on every
/// record of the namespace or set that its index filter keeps, each as its own
/// single-record command (its filter expression included) that only updates: a record
/// deleted since it was found stays deleted. The digests are gathered first, a partition
/// at a time, so that no write runs inside a scan; they run in chunks of at most
/// `BACKGROUND_CHUNK` (fewer under a records-per-second limit), and the job checks before
/// each chunk and each partition whether it was asked to stop.
fn background(
    ns: &super::Namespace,
    message: &Message<'_>,
    index_filter: Option<&IndexFilter>,
    server: &Server,
    job: &Job,
) -> Ending {
    let set = message.field(FIELD_SET).filter(|s| !s.is_empty());
    let call = super::net::udf_call(message);
    let source = call.as_ref().map(|call| server.catalog.udf_source(call.module));
    let header = updating_only(message.header);
    let filter = message.field(FIELD_FILTER);
    let records_per_s = message
        .field(FIELD_RECS_PER_SEC)
        .and_then(|r| r.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    let chunk_max =
        if records_per_s > 0 { (records_per_s as usize).min(BACKGROUND_CHUNK) } else { BACKGROUND_CHUNK };
    let mut pace = Pace { start: std::time::Instant::now(), records_per_s, sent: 0 };
    let index = index_filter.and_then(|f| ns.sindexes.serving(f, set));
    let mut chosen: Vec<([u8; DIGEST_SIZE], Vec<u8>)> = Vec::new();
    let mut run = |chosen: &mut Vec<([u8; DIGEST_SIZE], Vec<u8>)>| {
        if let Some(wait) = pace.ahead_by(chosen.len() as u64) {
            job.throttled.fetch_add(chosen.len() as u64, Ordering::Relaxed);
            std::thread::sleep(wait);
        }
        pace.sent += chosen.len() as u64;
        let commands: Vec<Command<'_>> = chosen
            .iter()
            .map(|(digest, set)| Command {
                header,
                set,
                key: None,
                digest: *digest,
                ops: &message.ops,
                filter,
            })
            .collect();
        let outcomes: Vec<u8> = match (&call, &source) {
            (Some(call), Some(source)) => commands
                .iter()
                .map(|command| record::execute_udf(ns, source.clone(), command, call, Origin::Client).code)
                .collect(),
            // Together, as the event loops gather commands: one durability wait a chunk.
            _ => {
                let (gathered, alone): (Vec<_>, Vec<_>) =
                    commands.into_iter().partition(record::is_gatherable);
                let many = record::execute_many(ns, &gathered, Origin::Client).into_iter().map(|o| o.code);
                many.chain(alone.iter().map(|command| record::execute(ns, command, Origin::Client).code))
                    .collect()
            }
        };
        outcomes.into_iter().for_each(|code| tally(job, code));
        chosen.clear();
    };
    for partition in 0..spike::limits::PARTITION_COUNT {
        if let Some(why) = job.stop_reason() {
            return why;
        }
        let mut keep = |record: spike::Result<spike::Record>| {
            let Ok(record) = record else { return true };
            let Ok(stored) = StoredRecord::decode(&record.value) else { return true };
            let in_set = set.is_none_or(|s| s == stored.set);
            let indexed = index_filter
                .is_none_or(|f| f.matches(&stored, &subject(&stored, Some(&record), &record.digest)));
            if in_set && indexed {
                chosen.push((record.digest, stored.set));
            }
            true
        };
        if let Err(err) = visit_partition(ns, index.as_deref(), index_filter, partition, None, &mut keep) {
            log::warn!(
                "namespace {}: background job {} failed in partition {partition}: {err}",
                ns.name,
                job.id
            );
            return Ending::Failed;
        }
        // A partition may hold many chunks (and, under a rate limit, a wait before each):
        // the job checks before each whether it was asked to stop.
        while chosen.len() >= chunk_max {
            if let Some(why) = job.stop_reason() {
                return why;
            }
            let mut chunk: Vec<_> = chosen.drain(..chunk_max).collect();
            run(&mut chunk);
        }
        job.partition_done();
    }
    if let Some(why) = job.stop_reason() {
        return why;
    }
    run(&mut chosen);
    Ending::Done
}

/// Calls `visit` with the records of `partition` after `after` (strictly smaller digests),
/// in descending digest order: those an in-memory index names for the query's index
/// filter, read `CANDIDATES_READ_TOGETHER` at a time (a record gone since it was indexed
/// is skipped), or, without such an index, every record (a scan). Either way `visit`
/// checks each record against the filter.
fn visit_partition(
    ns: &super::Namespace,
    index: Option<&SecondaryIndex>,
    index_filter: Option<&IndexFilter>,
    partition: usize,
    after: Option<&[u8; DIGEST_SIZE]>,
    visit: &mut dyn FnMut(spike::Result<spike::Record>) -> bool,
) -> spike::Result<bool> {
    let (Some(index), Some(filter)) = (index, index_filter) else {
        return ns.engine.scan_partition_by_digest(partition, after, visit);
    };
    let mut digests = index.candidates(partition, &filter.range);
    if let Some(after) = after {
        digests.retain(|digest| digest < after);
    }
    for chunk in digests.chunks(CANDIDATES_READ_TOGETHER) {
        for result in ns.engine.get_each_by_digest(chunk) {
            if matches!(result, Err(spike::Error::NotFound)) {
                continue;
            }
            if !visit(result) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A background job's commands only update what exists: an update becomes update-only and
/// a replace replace-only (create-only is left, and fails on every record, as it would on
/// the real server).
fn updating_only(mut header: MsgHeader) -> MsgHeader {
    header.info1 &= !INFO1_READ;
    if header.info2 & INFO2_CREATE_ONLY == 0 {
        if header.info3 & INFO3_CREATE_OR_REPLACE != 0 {
            header.info3 = header.info3 & !INFO3_CREATE_OR_REPLACE | INFO3_REPLACE_ONLY;
        } else if header.info3 & INFO3_REPLACE_ONLY == 0 {
            header.info3 |= INFO3_UPDATE_ONLY;
        }
    }
    header
}

/// Counts one record's outcome in the job's progress.
fn tally(job: &Job, result: u8) {
    let counter = match result {
        code::OK => &job.succeeded,
        code::FILTERED_OUT => &job.filtered,
        // Deleted after the job found it: not the job's failure.
        code::KEY_NOT_FOUND => return,
        _ => &job.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A scanned record as the scan returns it, its stored form and the bins asked for; None
/// when it is left out: not of the set, filtered out, a list or map read that fails on
/// it, or none of the bins asked for. Err: the code of a filter this server cannot
/// evaluate, which ends the scan.
fn selected(
    record: &spike::Record,
    set: Option<&[u8]>,
    filter: Option<&[u8]>,
    index_filter: Option<&IndexFilter>,
    message: &Message<'_>,
) -> Result<Option<(StoredRecord, ReplyBins)>, u8> {
    let Ok(mut stored) = StoredRecord::decode(&record.value) else { return Ok(None) };
    if set.is_some_and(|s| s != stored.set) {
        return Ok(None);
    }
    if let Some(index_filter) = index_filter {
        if !index_filter.matches(&stored, &subject(&stored, Some(record), &record.digest)) {
            return Ok(None);
        }
    }
    let passes = filter.map_or(Ok(true), |expression| record_passes(expression, record, &stored));
    if !passes.map_err(|err| err.code())? {
        return Ok(None);
    }
    let header = message.header;
    let Ok(bins) = select_bins(&mut stored, record, &header, &message.ops) else { return Ok(None) };
    let wants_bins = header.info1 & INFO1_NOBINDATA == 0;
    if wants_bins && bins.is_empty() && !message.ops.is_empty() {
        return Ok(None);
    }
    Ok(Some((stored, bins)))
}

/// A scan's rate limit (0 = none): how far ahead of it the records sent are. At r records
/// a second the n-th record (counting from 1) goes out no sooner than n/r seconds after
/// the start, so that N records take at least N/r seconds, as the clients' tests expect.
struct Pace {
    start: std::time::Instant,
    records_per_s: u32,
    sent: u64,
}

impl Pace {
    /// How long to wait before the next `count` records may go.
    fn ahead_by(&self, count: u64) -> Option<std::time::Duration> {
        if self.records_per_s == 0 {
            return None;
        }
        let due = std::time::Duration::from_secs_f64((self.sent + count) as f64 / self.records_per_s as f64);
        due.checked_sub(self.start.elapsed()).filter(|wait| !wait.is_zero())
    }
}

fn write_record(
    reply: &mut Reply,
    namespace: &[u8],
    record: &spike::Record,
    stored: &StoredRecord,
    bins: &[(u8, Vec<u8>, Vec<u8>)],
    wants_bins: bool,
) {
    let n_fields = 2 + !stored.set.is_empty() as u16 + stored.key.is_some() as u16;
    let header = MsgHeader {
        info1: if wants_bins { 0 } else { INFO1_NOBINDATA },
        generation: record.generation,
        record_ttl: void_time_since_2010(record.void_time),
        n_fields,
        n_ops: bins.len() as u16,
        ..MsgHeader::default()
    };
    reply.message(&header);
    reply.field(FIELD_NAMESPACE, namespace);
    reply.field(FIELD_DIGEST, &record.digest);
    if !stored.set.is_empty() {
        reply.field(FIELD_SET, &stored.set);
    }
    if let Some((particle, key)) = &stored.key {
        let mut data = Vec::with_capacity(1 + key.len());
        data.push(*particle);
        data.extend_from_slice(key);
        reply.field(FIELD_KEY, &data);
    }
    for (particle, name, value) in bins {
        reply.op(OP_READ, *particle, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;
    use std::time::{Duration, Instant};

    #[test]
    fn the_last_of_n_paced_records_waits_until_n_over_the_rate_seconds() {
        // 1000 records at 333 a second: the 1000th may not leave before 3.003 s.
        let start = Instant::now() - Duration::from_millis(3001);
        let pace = Pace { start, records_per_s: 333, sent: 999 };
        let wait = pace.ahead_by(1).expect("the last record is not due yet");
        assert!(wait <= Duration::from_millis(3), "{wait:?}");
        assert_eq!(Pace { start, records_per_s: 333, sent: 998 }.ahead_by(1), None);
        assert_eq!(Pace { start, records_per_s: 0, sent: 10_000 }.ahead_by(1), None);
    }
}
