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
use super::record::{self, code, select_bins, Command, ReplyBins};
use super::wire::*;
use super::Server;
use std::io;

/// Records a background query writes together (one durability wait for them all).
const BACKGROUND_CHUNK: usize = 1024;
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
    send: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut reply = Reply::default();
    let status = scan(server, message, &mut reply, send)?;
    reply.message(&MsgHeader { info3: INFO3_LAST, result_code: status, ..MsgHeader::default() });
    send(&reply.finish())
}

fn scan(
    server: &Server,
    message: &Message<'_>,
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
        return Ok(background(server, ns, message, index_filter.as_ref()));
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
            if let Some(wait) = pace.ahead_by() {
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
        if let Err(err) = ns.engine.scan_partition_by_digest(partition, after.as_ref(), &mut visit) {
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

/// A background query (`query_operate`, or a record UDF over a query): the message's write
/// ops, or its UDF call, run on every record of the namespace or set that its index filter
/// keeps, each as its own single-record command (its filter expression included). The
/// digests are gathered first, a partition at a time, so that no write runs inside a scan.
/// Partial: the job runs to its end before the reply (the real server replies at once and
/// runs it in the background; the clients then poll `query-show`, which an unknown id
/// answers as done).
fn background(
    server: &Server,
    ns: &super::Namespace,
    message: &Message<'_>,
    index_filter: Option<&IndexFilter>,
) -> u8 {
    let set = message.field(FIELD_SET).filter(|s| !s.is_empty());
    let call = super::net::udf_call(message);
    if call.is_none() && message.ops.is_empty() {
        return code::PARAMETER;
    }
    let source = call.as_ref().map(|call| server.catalog.udf_source(call.module));
    let mut header = message.header;
    header.info1 &= !INFO1_READ;
    let filter = message.field(FIELD_FILTER);
    let mut chosen: Vec<([u8; DIGEST_SIZE], Vec<u8>)> = Vec::new();
    let run = |chosen: &mut Vec<([u8; DIGEST_SIZE], Vec<u8>)>| {
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
        match (&call, &source) {
            (Some(call), Some(source)) => commands.iter().for_each(|command| {
                record::execute_udf(ns, source.clone(), command, call, Origin::Client);
            }),
            // Together, as the event loops gather commands: one durability wait a chunk.
            _ => {
                let (gathered, alone): (Vec<_>, Vec<_>) =
                    commands.into_iter().partition(record::is_gatherable);
                record::execute_many(ns, &gathered, Origin::Client);
                alone.iter().for_each(|command| drop(record::execute(ns, command, Origin::Client)));
            }
        }
        chosen.clear();
    };
    for partition in 0..spike::limits::PARTITION_COUNT {
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
        if let Err(err) = ns.engine.scan_partition_by_digest(partition, None, &mut keep) {
            log::warn!("namespace {}: background query of partition {partition} failed: {err}", ns.name);
            return code::SERVER_ERROR;
        }
        if chosen.len() >= BACKGROUND_CHUNK {
            run(&mut chosen);
        }
    }
    run(&mut chosen);
    code::OK
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
    fn ahead_by(&self) -> Option<std::time::Duration> {
        if self.records_per_s == 0 {
            return None;
        }
        let due = std::time::Duration::from_secs_f64((self.sent + 1) as f64 / self.records_per_s as f64);
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
        let wait = pace.ahead_by().expect("the last record is not due yet");
        assert!(wait <= Duration::from_millis(3), "{wait:?}");
        assert_eq!(Pace { start, records_per_s: 333, sent: 998 }.ahead_by(), None);
        assert_eq!(Pace { start, records_per_s: 0, sent: 10_000 }.ahead_by(), None);
    }
}
