//! Single-record commands on one namespace: read, exists, write and operate (with every
//! existence and generation policy and TTL rule of `../shared/aerospike-wire.md` §3.6),
//! delete and touch. A write is one `update_by_digest` of the engine, so the existence
//! and generation checks, the bin merge and the append happen atomically; a delete is
//! always durable (a tombstone).

use super::bins::{self, BinOpError, StoredRecord, PARTICLE_NULL};
use super::counters::{Kind, Origin};
use super::wire::*;
use super::Namespace;
use super::{bits, cdt, exp_op, filter, hll, msgpack, sindex, string_ops, udf};
use spike::{Change, Error};

pub mod code {
    pub const OK: u8 = 0;
    pub const SERVER_ERROR: u8 = 1;
    pub const KEY_NOT_FOUND: u8 = 2;
    pub const GENERATION: u8 = 3;
    pub const PARAMETER: u8 = 4;
    pub const KEY_EXISTS: u8 = 5;
    pub const BIN_EXISTS: u8 = 6;
    pub const OUT_OF_SPACE: u8 = 8;
    pub const TIMEOUT: u8 = 9;
    pub const INCOMPATIBLE_TYPE: u8 = 12;
    pub const RECORD_TOO_BIG: u8 = 13;
    pub const UNSUPPORTED_FEATURE: u8 = 16;
    pub const BIN_NOT_FOUND: u8 = 17;
    pub const DEVICE_OVERLOAD: u8 = 18;
    pub const KEY_MISMATCH: u8 = 19;
    pub const NAMESPACE: u8 = 20;
    pub const BIN_NAME: u8 = 21;
    pub const OP_NOT_APPLICABLE: u8 = 26;
    pub const FILTERED_OUT: u8 = 27;
    pub const INDEX_NOT_FOUND: u8 = 201;
}

/// Longest user key kept (particle type byte included); the bin encoding gives it 16 bits.
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// Bins one record may hold (the bin encoding counts them in 16 bits).
pub const BINS_MAX: usize = u16::MAX as usize;

/// TTLs above ten years are refused, as by the real server.
const TTL_MAX_S: u32 = 10 * 365 * 24 * 3600;
const TTL_NEVER: u32 = u32::MAX;
const TTL_UNCHANGED: u32 = u32::MAX - 1;

/// A single-record command, from a message or a batch row.
#[derive(Clone, Copy, Debug)]
pub struct Command<'a> {
    pub header: MsgHeader,
    pub set: &'a [u8],
    pub key: Option<&'a [u8]>,
    pub digest: [u8; DIGEST_SIZE],
    pub ops: &'a [Op<'a>],
    /// A filter expression the held record must pass (`filter`), else FILTERED_OUT.
    pub filter: Option<&'a [u8]>,
}

/// What a command answers: result code, the record's generation and Unix void time, and
/// the ops of the reply.
#[derive(Debug, Default)]
pub struct Outcome {
    pub code: u8,
    pub generation: u32,
    pub void_time: u32,
    pub bins: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

impl Outcome {
    pub fn code(code: u8) -> Outcome {
        Outcome { code, ..Outcome::default() }
    }
}

/// The result code the clients expect for an engine error.
pub fn engine_error_code(err: &Error) -> u8 {
    match err {
        Error::NotFound => code::KEY_NOT_FOUND,
        Error::AlreadyExists => code::KEY_EXISTS,
        Error::GenerationMismatch { .. } => code::GENERATION,
        Error::RecordTooBig { .. } => code::RECORD_TOO_BIG,
        Error::OutOfSpace { .. } => code::OUT_OF_SPACE,
        Error::DeviceOverloaded { .. } => code::DEVICE_OVERLOAD,
        Error::InDoubt { .. } => code::TIMEOUT,
        Error::InvalidArgument(_) => code::PARAMETER,
        _ => code::SERVER_ERROR,
    }
}

/// Runs a command and counts its result under `origin` in the namespace's counters.
pub fn execute(ns: &Namespace, command: &Command<'_>, origin: Origin) -> Outcome {
    let (kind, outcome) = dispatch(ns, command);
    ns.counters.count(origin, kind, outcome.code);
    outcome
}

/// Runs a record UDF call (`udf`) inside the record's atomic update, counted as a write.
pub fn execute_udf(
    ns: &Namespace,
    source: Option<Vec<u8>>,
    command: &Command<'_>,
    call: &udf::Call<'_>,
    origin: Origin,
) -> Outcome {
    let outcome = match refusal(command) {
        Some(code) => Outcome::code(code),
        None => run_udf(ns, source.as_deref(), command, call),
    };
    ns.counters.count(origin, Kind::Write, outcome.code);
    outcome
}

fn run_udf(ns: &Namespace, source: Option<&[u8]>, command: &Command<'_>, call: &udf::Call<'_>) -> Outcome {
    let result = sindex::update_by_digest(ns, &command.digest, |existing| {
        let held = match existing
            .map(|r| decode(ns, &r.value).map(|s| (s, r.generation, r.void_time)))
            .transpose()
        {
            Ok(held) => held,
            Err(outcome) => return Ok((Change::Keep, (outcome.code, Vec::new()))),
        };
        if let (Some(record), Some((stored, _, _))) = (existing, &held) {
            if let Some(code) = filtered(command, record, stored) {
                return Ok((Change::Keep, (code, Vec::new())));
            }
        }
        let mut ran = udf::run(source, call, held);
        let change = match ran.action {
            udf::Action::None => Change::Keep,
            udf::Action::Remove if existing.is_some() => Change::Delete,
            udf::Action::Remove => Change::Keep,
            udf::Action::Write if ran.record.bins.is_empty() => match existing {
                Some(_) => Change::Delete,
                None => Change::Keep,
            },
            udf::Action::Write => {
                ran.record.set = command.set.to_vec();
                if let Some(key) = command.key.filter(|k| !k.is_empty() && ns.store_keys) {
                    ran.record.key = Some((key[0], key[1..].to_vec()));
                }
                match ttl_for(ns, command.header.record_ttl, existing) {
                    Ok(ttl_s) => Change::Put { value: ran.record.encode(), ttl_s },
                    Err(code) => return Ok((Change::Keep, (code, Vec::new()))),
                }
            }
        };
        Ok((change, (ran.code, vec![ran.reply])))
    });
    match result {
        Ok(((code, bins), written)) => {
            Outcome { code, generation: written.generation, void_time: written.void_time, bins }
        }
        Err(err) => Outcome::code(engine_error_code(&err)),
    }
}

/// Dispatches on the info bits as the real server does.
fn dispatch(ns: &Namespace, command: &Command<'_>) -> (Kind, Outcome) {
    let kind = kind_of(&command.header);
    if let Some(code) = refusal(command) {
        return (kind, Outcome::code(code));
    }
    let outcome = match kind {
        Kind::Delete => delete(ns, command),
        Kind::Write => write(ns, command),
        Kind::Read if command.header.info1 & INFO1_READ != 0 => read(ns, command),
        Kind::Read => Outcome::code(code::PARAMETER),
    };
    (kind, outcome)
}

fn kind_of(h: &MsgHeader) -> Kind {
    match (h.info2 & INFO2_WRITE != 0, h.info2 & INFO2_DELETE != 0) {
        (true, true) => Kind::Delete,
        (true, false) => Kind::Write,
        (false, _) => Kind::Read,
    }
}

/// The result code of a command refused before it reaches the engine.
fn refusal(command: &Command<'_>) -> Option<u8> {
    if let Some(code) = check_ops(command.ops) {
        return Some(code);
    }
    let key_too_long = command.key.is_some_and(|k| k.len() > KEY_BYTES_MAX);
    (command.set.len() > bins::SET_NAME_MAX || key_too_long).then_some(code::PARAMETER)
}

/// Whether `command` is a read that `execute` would send to the engine's single-record
/// read: such reads, from many connections or batch rows, can go to the engine together
/// (`execute_many`) and answer exactly as one by one.
pub fn is_plain_read(command: &Command<'_>) -> bool {
    kind_of(&command.header) == Kind::Read && is_gatherable(command)
}

/// Whether `command` reaches the engine (it is not refused first): commands of different
/// connections, which may run in any order, can then go to the engine together.
pub fn is_gatherable(command: &Command<'_>) -> bool {
    let h = &command.header;
    (kind_of(h) != Kind::Read || h.info1 & INFO1_READ != 0) && refusal(command).is_none()
}

/// Answers gatherable commands (`is_gatherable`) of one namespace as if each ran alone,
/// in an order of their own: the reads first, with their device reads in flight together,
/// then the writes and deletes, with their current records read together and one wait
/// for durability. Each is counted under `origin` as `execute` counts it.
pub fn execute_many(ns: &Namespace, commands: &[Command<'_>], origin: Origin) -> Vec<Outcome> {
    debug_assert!(commands.iter().all(is_gatherable));
    let kinds: Vec<Kind> = commands.iter().map(|c| kind_of(&c.header)).collect();
    let (reads, updates): (Vec<usize>, Vec<usize>) =
        (0..commands.len()).partition(|&i| kinds[i] == Kind::Read);
    let mut outcomes: Vec<Outcome> = commands.iter().map(|_| Outcome::default()).collect();
    let digests = |picked: &[usize]| picked.iter().map(|&i| commands[i].digest).collect::<Vec<_>>();
    if !reads.is_empty() {
        for (&i, result) in reads.iter().zip(ns.engine.get_each_by_digest(&digests(&reads))) {
            outcomes[i] = read_outcome(ns, &commands[i], result);
        }
    }
    if !updates.is_empty() {
        let plan_of =
            |k: usize, existing: Option<&spike::Record>| Ok(plan(ns, &commands[updates[k]], existing));
        for (&i, result) in updates.iter().zip(sindex::update_each_by_digest(ns, &digests(&updates), plan_of))
        {
            outcomes[i] = update_outcome(kinds[i], result);
        }
    }
    for (kind, outcome) in kinds.iter().zip(&outcomes) {
        ns.counters.count(origin, *kind, outcome.code);
    }
    outcomes
}

fn check_ops(ops: &[Op<'_>]) -> Option<u8> {
    for op in ops {
        if op.name.len() > BIN_NAME_MAX {
            return Some(code::BIN_NAME);
        }
        if !matches!(
            op.code,
            OP_READ
                | OP_WRITE
                | OP_CDT_READ
                | OP_CDT_MODIFY
                | OP_INCR
                | OP_APPEND
                | OP_PREPEND
                | OP_TOUCH
                | OP_DELETE_ALL
                | OP_HLL_READ
                | OP_HLL_MODIFY
                | OP_BITS_READ
                | OP_BITS_MODIFY
                | OP_STRING_READ
                | OP_STRING_MODIFY
                | OP_TO_STRING
                | OP_EXP_READ
                | OP_EXP_MODIFY
        ) {
            return Some(code::UNSUPPORTED_FEATURE);
        }
    }
    None
}

fn decode(ns: &Namespace, value: &[u8]) -> Result<StoredRecord, Outcome> {
    StoredRecord::decode(value).map_err(|reason| {
        log::warn!("namespace {}: a stored record does not decode: {reason}", ns.name);
        Outcome::code(code::SERVER_ERROR)
    })
}

fn read(ns: &Namespace, command: &Command<'_>) -> Outcome {
    read_outcome(ns, command, ns.engine.get_by_digest(&command.digest))
}

/// A read's answer from what the engine returned for its digest.
fn read_outcome(ns: &Namespace, command: &Command<'_>, result: spike::Result<spike::Record>) -> Outcome {
    let record = match result {
        Ok(record) => read_touch(ns, command.header.record_ttl, record),
        Err(err) => return Outcome::code(engine_error_code(&err)),
    };
    let mut stored = match decode(ns, &record.value) {
        Ok(stored) => stored,
        Err(outcome) => return outcome,
    };
    if let Some(code) = filtered(command, &record, &stored) {
        return Outcome::code(code);
    }
    let bins = match select_bins(&mut stored, &record, &command.header, command.ops) {
        Ok(bins) => bins,
        Err(code) => return Outcome::code(code),
    };
    Outcome { code: code::OK, generation: record.generation, void_time: record.void_time, bins }
}

/// FILTERED_OUT, or the expression's own error code, when the held record does not pass
/// the command's filter expression.
fn filtered(command: &Command<'_>, record: &spike::Record, stored: &StoredRecord) -> Option<u8> {
    match filter::record_passes(command.filter?, record, stored) {
        Ok(true) => None,
        Ok(false) => Some(code::FILTERED_OUT),
        Err(err) => Some(err.code()),
    }
}

/// A read's TTL field is its read-touch percentage (1 to 100): a record read within that
/// share of its last write's TTL gets that TTL again (a touch, as in Aerospike 8). 0 (no
/// namespace default here) and -1 never touch.
fn read_touch(ns: &Namespace, percent: u32, record: spike::Record) -> spike::Record {
    let now_s = spike_now_s();
    let written_s = (record.last_update_ms / 1000) as u32;
    if !(1..=100).contains(&percent) || record.void_time <= now_s || record.void_time <= written_s {
        return record;
    }
    let ttl_s = record.void_time - written_s;
    if u64::from(record.void_time - now_s) * 100 > u64::from(ttl_s) * u64::from(percent) {
        return record;
    }
    let touched = sindex::update_by_digest(ns, &record.digest, |current| match current {
        Some(current) if current.generation == record.generation => {
            Ok((Change::Put { value: current.value.clone(), ttl_s: Some(ttl_s) }, ()))
        }
        _ => Ok((Change::Keep, ())),
    });
    match touched {
        Ok((_, written)) if written.generation != record.generation => {
            spike::Record { generation: written.generation, void_time: written.void_time, ..record }
        }
        _ => record,
    }
}

/// The bins a read returns: none for a header read, all for GET_ALL or no ops, else one
/// result per READ op that names an existing bin and per list or map read, in op order (a
/// bin named twice comes back twice, which the clients merge into one multi-result; an
/// empty name, which Rust sends for a header read, names none; with RESPOND_ALL_OPS a
/// missing bin is a nil); an expression read answers under its own name. All bins are
/// moved out of `stored`, not copied. Err: the result code of an op that failed.
pub fn select_bins(
    stored: &mut StoredRecord,
    held: &spike::Record,
    header: &MsgHeader,
    ops: &[Op<'_>],
) -> Result<ReplyBins, u8> {
    if header.info1 & INFO1_NOBINDATA != 0 {
        return Ok(Vec::new());
    }
    if header.info1 & INFO1_GET_ALL != 0 || ops.is_empty() {
        return Ok(std::mem::take(&mut stored.bins)
            .into_iter()
            .map(|b| (b.particle, b.name, b.value))
            .collect());
    }
    let respond_all = header.info2 & INFO2_RESPOND_ALL_OPS != 0;
    let mut out = Vec::new();
    for op in ops.iter().filter(|op| !op.name.is_empty()) {
        if op.code == OP_EXP_READ {
            let subject = filter::subject(stored, Some(held), &held.digest);
            push_reply(&mut out, op, exp_op::read(op.value, &subject)?, respond_all);
            continue;
        }
        let bin = stored.bin(op.name);
        match (op.code, bin) {
            (OP_READ, Some(b)) => out.push((b.particle, b.name.clone(), b.value.clone())),
            (OP_READ | OP_CDT_READ | OP_HLL_READ | OP_BITS_READ | OP_STRING_READ | OP_TO_STRING, None)
                if respond_all =>
            {
                out.push((PARTICLE_NULL, op.name.to_vec(), Vec::new()))
            }
            (OP_CDT_READ, Some(b)) => {
                let subject = filter::subject(stored, Some(held), &held.digest);
                let applied = filter::apply_cdt(Some((b.particle, &b.value)), op.value, false, &subject)
                    .map_err(|e| e.code())?;
                out.push(result_bin(op.name, &applied.result));
            }
            (OP_HLL_READ, Some(b)) => {
                let applied =
                    hll::apply(Some((b.particle, &b.value)), op.value, false).map_err(|e| e.code())?;
                out.extend(applied.result.map(|result| result_bin(op.name, &result)));
            }
            (OP_TO_STRING, Some(b)) => out.push(result_bin(op.name, &bin_to_string(b)?)),
            (OP_STRING_READ, Some(b)) => {
                let applied =
                    string_ops::apply(Some((b.particle, &b.value)), op.value, false).map_err(|e| e.code())?;
                out.extend(applied.result.map(|result| result_bin(op.name, &result)));
            }
            (OP_BITS_READ, Some(b)) => {
                let applied = bits::apply(Some((b.particle, &b.value)), op.particle, op.value, false)
                    .map_err(|e| e.code())?;
                out.extend(applied.result.map(|result| result_bin(op.name, &result)));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Runs a write's ops in order on the record being built: the reply ops, and whether an op
/// deletes the record. Err: the result code of the op that failed (the write then does
/// nothing).
fn run_ops(
    record: &mut StoredRecord,
    command: &Command<'_>,
    existing: Option<&spike::Record>,
) -> Result<(ReplyBins, bool), u8> {
    let h = &command.header;
    let respond_all = h.info2 & INFO2_RESPOND_ALL_OPS != 0;
    let mut replies = Vec::new();
    let mut delete_record = false;
    for op in command.ops {
        let applied = match op.code {
            OP_WRITE if op.particle == cdt::PARTICLE_MAP => match sorted_map(op.value) {
                Some(map) => {
                    record.set_bin(op.name, op.particle, &map);
                    Ok(())
                }
                None => Err(BinOpError::Parameter),
            },
            OP_WRITE => {
                record.set_bin(op.name, op.particle, op.value);
                Ok(())
            }
            OP_INCR => bins::add(record, op.name, op.particle, op.value),
            OP_APPEND => bins::concat(record, op.name, op.particle, op.value, false),
            OP_PREPEND => bins::concat(record, op.name, op.particle, op.value, true),
            OP_DELETE_ALL => {
                delete_record = true;
                Ok(())
            }
            OP_EXP_MODIFY => {
                let subject = filter::subject(record, existing, &command.digest);
                if let Some((particle, value)) = exp_op::modify(op.value, op.name, &subject)? {
                    record.set_bin(op.name, particle, &value);
                }
                Ok(())
            }
            OP_EXP_READ => {
                let subject = filter::subject(record, existing, &command.digest);
                push_reply(&mut replies, op, exp_op::read(op.value, &subject)?, respond_all);
                continue;
            }
            OP_CDT_READ | OP_CDT_MODIFY => match apply_cdt(record, op, existing, &command.digest) {
                Ok(reply) => {
                    replies.push(reply);
                    continue;
                }
                Err(code) => return Err(code),
            },
            OP_HLL_READ | OP_HLL_MODIFY => {
                push_reply(&mut replies, op, apply_hll(record, op)?, respond_all);
                continue;
            }
            OP_BITS_READ | OP_BITS_MODIFY => {
                push_reply(&mut replies, op, apply_bits(record, op)?, respond_all);
                continue;
            }
            OP_STRING_READ | OP_STRING_MODIFY => {
                push_reply(&mut replies, op, apply_string(record, op)?, respond_all);
                continue;
            }
            OP_TO_STRING => {
                let text = record.bin(op.name).map(bin_to_string).transpose()?;
                push_reply(&mut replies, op, text.map(|t| t.to_particle()), respond_all);
                continue;
            }
            OP_READ => {
                // An unnamed read is "all bins" with GET_ALL, else a header read (no bins).
                let selected: Vec<_> = match (op.name.is_empty(), h.info1 & INFO1_GET_ALL != 0) {
                    (true, true) => record.bins.iter().collect(),
                    (true, false) => Vec::new(),
                    (false, _) => record.bin(op.name).into_iter().collect(),
                };
                if selected.is_empty() && respond_all {
                    replies.push((PARTICLE_NULL, op.name.to_vec(), Vec::new()));
                }
                replies.extend(selected.into_iter().map(|b| (b.particle, b.name.clone(), b.value.clone())));
                continue;
            }
            _ => continue, // OP_TOUCH: the write itself renews the TTL; no reply op
        };
        if let Err(err) = applied {
            return Err(match err {
                BinOpError::IncompatibleType => code::INCOMPATIBLE_TYPE,
                BinOpError::Parameter => code::PARAMETER,
            });
        }
        if respond_all {
            replies.push((PARTICLE_NULL, op.name.to_vec(), Vec::new()));
        }
    }
    Ok((replies, delete_record))
}

/// A map written whole, with its keys put in the canonical order (the real server returns
/// every map so, whatever order it was written in); None if it is not MessagePack.
fn sorted_map(bytes: &[u8]) -> Option<Vec<u8>> {
    let map = cdt::Map::normalized(msgpack::decode(bytes).ok()?)?;
    Some(msgpack::encode(&map))
}

/// A list or map op's result as a reply op of bin `name`.
fn result_bin(name: &[u8], result: &msgpack::Value) -> (u8, Vec<u8>, Vec<u8>) {
    let (particle, bytes) = result.to_particle();
    (particle, name.to_vec(), bytes)
}

/// Runs a list or map op of a write on the record being built: the bin changes (a bin
/// left with nothing is kept empty, as the real server keeps an emptied list) and the
/// result is the op's reply.
fn apply_cdt(
    record: &mut StoredRecord,
    op: &Op<'_>,
    existing: Option<&spike::Record>,
    digest: &[u8; 20],
) -> Result<(u8, Vec<u8>, Vec<u8>), u8> {
    let subject = filter::subject(record, existing, digest);
    let bin = record.bin(op.name).map(|b| (b.particle, &b.value[..]));
    let applied =
        filter::apply_cdt(bin, op.value, op.code == OP_CDT_MODIFY, &subject).map_err(|e| e.code())?;
    if let Some((particle, value)) = &applied.new_bin {
        record.set_bin(op.name, *particle, value);
    }
    Ok(result_bin(op.name, &applied.result))
}

/// Adds an op's result (particle type and bytes) to the reply under the op's name; an op
/// with none answers a nil only with RESPOND_ALL_OPS.
fn push_reply(out: &mut ReplyBins, op: &Op<'_>, result: Option<(u8, Vec<u8>)>, respond_all: bool) {
    match result {
        Some((particle, value)) => out.push((particle, op.name.to_vec(), value)),
        None if respond_all => out.push((PARTICLE_NULL, op.name.to_vec(), Vec::new())),
        None => {}
    }
}

/// Runs an HLL op of a write on the record being built: the bin changes, and the op's
/// result, if it has one, is its reply.
fn apply_hll(record: &mut StoredRecord, op: &Op<'_>) -> Result<Option<(u8, Vec<u8>)>, u8> {
    let bin = record.bin(op.name).map(|b| (b.particle, &b.value[..]));
    let applied = hll::apply(bin, op.value, op.code == OP_HLL_MODIFY).map_err(|e| e.code())?;
    if let Some(value) = &applied.new_bin {
        record.set_bin(op.name, hll::PARTICLE_HLL, value);
    }
    Ok(applied.result.map(|result| result.to_particle()))
}

/// Runs a string op of a write on the record being built: the bin changes (a modify that
/// refused under NO_FAIL, or one on an absent bin it does not create, changes nothing),
/// and a read's result is its reply.
fn apply_string(record: &mut StoredRecord, op: &Op<'_>) -> Result<Option<(u8, Vec<u8>)>, u8> {
    let bin = record.bin(op.name).map(|b| (b.particle, &b.value[..]));
    let applied = string_ops::apply(bin, op.value, op.code == OP_STRING_MODIFY).map_err(|e| e.code())?;
    if let Some((particle, bytes)) = &applied.new_bin {
        record.set_bin(op.name, *particle, bytes);
    }
    Ok(applied.result.map(|result| result.to_particle()))
}

/// A bin as a string (TO_STRING): integers, floats, strings and blobs; else BIN_TYPE_ERROR.
fn bin_to_string(bin: &bins::Bin) -> Result<msgpack::Value, u8> {
    let value = msgpack::Value::from_particle(bin.particle, &bin.value).map_err(|_| code::PARAMETER)?;
    string_ops::to_string(&value).map_err(|e| e.code())
}

/// Runs a bit op of a write on the record being built: the bin changes (a modify that
/// refused under NO_FAIL changes nothing), and a read's result is its reply.
fn apply_bits(record: &mut StoredRecord, op: &Op<'_>) -> Result<Option<(u8, Vec<u8>)>, u8> {
    let bin = record.bin(op.name).map(|b| (b.particle, &b.value[..]));
    let applied = bits::apply(bin, op.particle, op.value, op.code == OP_BITS_MODIFY).map_err(|e| e.code())?;
    if let Some(value) = &applied.new_bin {
        record.set_bin(op.name, bits::PARTICLE_BLOB, value);
    }
    Ok(applied.result.map(|result| result.to_particle()))
}

/// The TTL a write asks for, as the engine takes it (None = never expires).
fn ttl_for(ns: &Namespace, record_ttl: u32, existing: Option<&spike::Record>) -> Result<Option<u32>, u8> {
    let ttl_s = match record_ttl {
        0 => ns.default_ttl_s,
        TTL_NEVER => 0,
        TTL_UNCHANGED => match existing {
            Some(r) if r.void_time != 0 => r.void_time.saturating_sub(spike_now_s()).max(1),
            Some(_) => 0,
            None => ns.default_ttl_s,
        },
        ttl if ttl > TTL_MAX_S => return Err(code::PARAMETER),
        ttl => ttl,
    };
    Ok((ttl_s > 0).then_some(ttl_s))
}

pub fn spike_now_s() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

/// Existence and generation checks of a write or delete against the held record.
fn policy_check(h: &MsgHeader, existing: Option<&spike::Record>, deleting: bool) -> Option<u8> {
    let exists = existing.is_some();
    if h.info2 & INFO2_CREATE_ONLY != 0 && exists {
        return Some(code::KEY_EXISTS);
    }
    if (h.info3 & (INFO3_UPDATE_ONLY | INFO3_REPLACE_ONLY) != 0 || deleting) && !exists {
        return Some(code::KEY_NOT_FOUND);
    }
    let generation = existing.map_or(0, |r| r.generation);
    if h.info2 & INFO2_GENERATION != 0 && h.generation != generation {
        return Some(code::GENERATION);
    }
    if h.info2 & INFO2_GENERATION_GT != 0 && h.generation <= generation {
        return Some(code::GENERATION);
    }
    None
}

fn delete(ns: &Namespace, command: &Command<'_>) -> Outcome {
    update_outcome(Kind::Delete, sindex::update_by_digest(ns, &command.digest, |e| Ok(plan(ns, command, e))))
}

fn write(ns: &Namespace, command: &Command<'_>) -> Outcome {
    update_outcome(Kind::Write, sindex::update_by_digest(ns, &command.digest, |e| Ok(plan(ns, command, e))))
}

/// What a write or delete does to the held record.
fn plan(ns: &Namespace, command: &Command<'_>, existing: Option<&spike::Record>) -> Plan {
    if kind_of(&command.header) != Kind::Delete {
        return plan_write(ns, command, existing);
    }
    let refused = policy_check(&command.header, existing, true).or_else(|| {
        let record = existing?;
        match decode(ns, &record.value) {
            Ok(stored) => filtered(command, record, &stored),
            Err(outcome) => Some(outcome.code),
        }
    });
    match refused {
        Some(code) => (Change::Keep, (code, Vec::new())),
        None => (Change::Delete, (code::OK, Vec::new())),
    }
}

/// A write's or delete's answer from what its engine update returned.
fn update_outcome(kind: Kind, result: spike::Result<((u8, ReplyBins), spike::Written)>) -> Outcome {
    match result {
        // The real server answers a delete with generation 0, alone or in a batch.
        Ok(((code, _), _)) if kind == Kind::Delete => Outcome::code(code),
        Ok(((code, bins), written)) if code == code::OK => {
            Outcome { code, generation: written.generation, void_time: written.void_time, bins }
        }
        Ok(((code, _), _)) => Outcome::code(code),
        Err(err) => Outcome::code(engine_error_code(&err)),
    }
}

/// One op of a reply: (particle type, bin name, value).
pub type ReplyBin = (u8, Vec<u8>, Vec<u8>);
pub type ReplyBins = Vec<ReplyBin>;
type Plan = (Change, (u8, ReplyBins));

/// Decides what a write or operate does to the held record: the policy checks, then
/// every op in order on a copy of the record.
fn plan_write(ns: &Namespace, command: &Command<'_>, existing: Option<&spike::Record>) -> Plan {
    let refuse = |code| (Change::Keep, (code, Vec::new()));
    let h = &command.header;
    if let Some(code) = policy_check(h, existing, false) {
        return refuse(code);
    }
    let mut record = match existing.map(|r| decode(ns, &r.value)).transpose() {
        Ok(record) => record.unwrap_or_default(),
        Err(outcome) => return refuse(outcome.code),
    };
    if let Some(code) = existing.and_then(|held| filtered(command, held, &record)) {
        return refuse(code);
    }
    if let (Some(key), Some((particle, held))) = (command.key, &record.key) {
        if key.first() != Some(particle) || key.get(1..) != Some(&held[..]) {
            return refuse(code::KEY_MISMATCH);
        }
    }
    if h.info3 & (INFO3_CREATE_OR_REPLACE | INFO3_REPLACE_ONLY) != 0 {
        record.bins.clear();
    }
    record.set = command.set.to_vec();
    if let Some(key) = command.key.filter(|k| !k.is_empty() && ns.store_keys) {
        record.key = Some((key[0], key[1..].to_vec()));
    }
    let (replies, delete_record) = match run_ops(&mut record, command, existing) {
        Ok(done) => done,
        Err(code) => return refuse(code),
    };
    if record.bins.len() > BINS_MAX {
        return refuse(code::PARAMETER);
    }
    let ttl_s = match ttl_for(ns, h.record_ttl, existing) {
        Ok(ttl) => ttl,
        Err(code) => return refuse(code),
    };
    let touch_only = command.ops.iter().all(|op| op.code == OP_TOUCH);
    if touch_only && existing.is_none() {
        return refuse(code::KEY_NOT_FOUND);
    }
    if delete_record || record.bins.is_empty() {
        // A record with no bins left is deleted, as in Aerospike.
        return match existing {
            Some(_) => (Change::Delete, (code::OK, replies)),
            None if delete_record => refuse(code::KEY_NOT_FOUND),
            None => (Change::Keep, (code::OK, replies)),
        };
    }
    (Change::Put { value: record.encode(), ttl_s }, (code::OK, replies))
}

/// Writes `outcome` as one reply message; `index` is the batch row index (batch rows
/// carry it in transaction_ttl). Error rows carry no ops.
pub fn write_outcome(reply: &mut Reply, outcome: &Outcome, info1: u8, index: u32) {
    // A failed UDF call answers its FAILURE bin; other failures answer no bins.
    let with_bins = outcome.code == code::OK || outcome.code == udf::UDF_FAILED;
    let bins: &[(u8, Vec<u8>, Vec<u8>)] = if with_bins { &outcome.bins } else { &[] };
    let header = MsgHeader {
        info1,
        result_code: outcome.code,
        generation: outcome.generation,
        record_ttl: void_time_since_2010(outcome.void_time),
        transaction_ttl: index,
        n_ops: bins.len() as u16,
        ..MsgHeader::default()
    };
    reply.message(&header);
    for (particle, name, value) in bins {
        reply.op(OP_READ, *particle, name, value);
    }
}
