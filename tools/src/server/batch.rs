//! Batch-index requests (`../shared/aerospike-wire.md` §5): the rows of one BATCH field,
//! each run as a single-record command, answered one message per row (the row index in
//! transaction_ttl) in frames of at most `BATCH_FRAME_BYTES`, then a LAST message.

use super::counters::Origin;
use super::record::{self, code, Command, Outcome};
use super::wire::*;
use super::{udf, Server};

/// Rows one batch may hold (the real server's default `batch-max-requests`).
pub const BATCH_ROWS_MAX: usize = 5000;
/// Reply bytes gathered before a frame is closed (the real server's buffer size).
pub const BATCH_FRAME_BYTES: usize = 128 * 1024;

const ROW_REPEAT: u8 = 0x01;
const ROW_INFO: u8 = 0x02;
const ROW_GEN: u8 = 0x04;
const ROW_TTL: u8 = 0x08;
const ROW_INFO4: u8 = 0x10;

/// One decoded row: what a repeat row reuses from the row before it.
#[derive(Clone)]
struct Row<'a> {
    index: u32,
    digest: [u8; DIGEST_SIZE],
    header: MsgHeader,
    namespace: &'a [u8],
    set: &'a [u8],
    key: Option<&'a [u8]>,
    /// The row's filter expression, or else the batch's.
    filter: Option<&'a [u8]>,
    udf: Option<udf::Call<'a>>,
    ops: Vec<Op<'a>>,
}

/// Decodes the rows of a BATCH field.
fn decode_rows(data: &[u8]) -> Result<Vec<Row<'_>>, (u8, WireError)> {
    let parameter = |e| (code::PARAMETER, e);
    let mut c = ByteReader::new(data);
    let count = c.u32().map_err(parameter)? as usize;
    let _flags = c.u8().map_err(parameter)?;
    if count > BATCH_ROWS_MAX {
        return Err((151, WireError(format!("batch of {count} rows, at most {BATCH_ROWS_MAX}"))));
    }
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(count);
    for _ in 0..count {
        let index = c.u32().map_err(parameter)?;
        let digest: [u8; DIGEST_SIZE] = c.take(DIGEST_SIZE).map_err(parameter)?.try_into().unwrap_or([0; 20]);
        let kind = c.u8().map_err(parameter)?;
        if kind == ROW_REPEAT {
            let previous =
                rows.last().ok_or_else(|| parameter(WireError("first batch row repeats".into())))?;
            rows.push(Row { index, digest, ..previous.clone() });
            continue;
        }
        rows.push(decode_row(&mut c, index, digest, kind).map_err(parameter)?);
    }
    Ok(rows)
}

fn decode_row<'a>(
    c: &mut ByteReader<'a>,
    index: u32,
    digest: [u8; 20],
    kind: u8,
) -> Result<Row<'a>, WireError> {
    let mut header = MsgHeader::default();
    if kind == 0 {
        header.info1 = c.u8()?;
    }
    if kind & ROW_INFO != 0 {
        header.info1 = c.u8()?;
        header.info2 = c.u8()?;
        header.info3 = c.u8()?;
    }
    if kind & ROW_INFO4 != 0 {
        header.info4 = c.u8()?;
    }
    if kind & ROW_GEN != 0 {
        header.generation = c.u16()? as u32;
    }
    if kind & ROW_TTL != 0 {
        header.record_ttl = c.u32()?;
    }
    let n_fields = c.u16()?;
    let n_ops = c.u16()?;
    let fields = decode_fields(c.b, &mut c.at, n_fields)?;
    let ops = decode_ops(c.b, &mut c.at, n_ops)?;
    let field = |kind| fields.iter().find(|f| f.kind == kind).map(|f| f.data);
    Ok(Row {
        index,
        digest,
        header,
        namespace: field(FIELD_NAMESPACE).ok_or_else(|| WireError("batch row without a namespace".into()))?,
        set: field(FIELD_SET).unwrap_or(&[]),
        key: field(FIELD_KEY),
        filter: field(FIELD_FILTER),
        udf: field(FIELD_UDF_PACKAGE).map(|module| udf::Call {
            module,
            function: field(FIELD_UDF_FUNCTION).unwrap_or(&[]),
            args: field(FIELD_UDF_ARGLIST).unwrap_or(&[0x90]),
        }),
        ops,
    })
}

/// Answers a batch request, handing each reply frame to `send` as it fills (about
/// `BATCH_FRAME_BYTES`), so that a big batch streams as the real server's does instead of
/// being held whole.
pub fn execute(
    server: &Server,
    message: &Message<'_>,
    send: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut reply = Reply::default();
    let Some(data) = message.field(FIELD_BATCH) else {
        return send(&finish(reply, code::PARAMETER));
    };
    let mut rows = match decode_rows(data) {
        Ok(rows) => rows,
        Err((code, err)) => {
            log::debug!("batch refused: {err}");
            return send(&finish(reply, code));
        }
    };
    // The batch's filter (its policy's) stands for every row without one of its own.
    if let Some(batch_filter) = message.field(FIELD_FILTER) {
        for row in rows.iter_mut().filter(|row| row.filter.is_none()) {
            row.filter = Some(batch_filter);
        }
    }
    // Runs of plain reads of one namespace go to the engine together; any other row is
    // answered alone, in row order, so a row that writes is seen by the reads after it.
    let mut at = 0;
    while at < rows.len() {
        let run = plain_read_run(server, &rows[at..]);
        let outcomes = match run {
            Some((ns, len)) => {
                let commands: Vec<Command> = rows[at..at + len].iter().map(command_of).collect();
                record::execute_many(ns, &commands, Origin::BatchRow)
            }
            None => vec![match server.namespace(rows[at].namespace) {
                None => Outcome::code(code::NAMESPACE),
                Some(ns) => match &rows[at].udf {
                    Some(call) => {
                        let source = server.catalog.udf_source(call.module);
                        record::execute_udf(ns, source, &command_of(&rows[at]), call, Origin::BatchRow)
                    }
                    None => record::execute(ns, &command_of(&rows[at]), Origin::BatchRow),
                },
            }],
        };
        for outcome in outcomes {
            let row = &rows[at];
            let info1 = if outcome.bins.is_empty() { row.header.info1 & INFO1_NOBINDATA } else { 0 };
            record::write_outcome(&mut reply, &outcome, info1, row.index);
            if reply.frame_bytes() >= BATCH_FRAME_BYTES {
                reply.end_frame();
                send(&std::mem::take(&mut reply.out))?;
            }
            at += 1;
        }
    }
    send(&finish(reply, code::OK))
}

fn command_of<'a>(row: &'a Row<'a>) -> Command<'a> {
    Command {
        header: row.header,
        set: row.set,
        key: row.key,
        digest: row.digest,
        ops: &row.ops,
        filter: row.filter,
    }
}

/// The namespace and length of the run of plain reads of one namespace that `rows`
/// starts with, if it starts with one.
fn plain_read_run<'s>(server: &'s Server, rows: &[Row<'_>]) -> Option<(&'s super::Namespace, usize)> {
    let first = rows.first()?;
    let ns = server.namespace(first.namespace)?;
    let plain = |row: &Row| {
        row.namespace == first.namespace && row.udf.is_none() && record::is_plain_read(&command_of(row))
    };
    let len = rows.iter().take_while(|row| plain(row)).count();
    (len > 0).then_some((ns, len))
}

/// The last frame: what is left of the reply and the LAST message with `code`.
fn finish(mut reply: Reply, code: u8) -> Vec<u8> {
    reply.message(&MsgHeader { info3: INFO3_LAST, result_code: code, ..MsgHeader::default() });
    reply.finish()
}
