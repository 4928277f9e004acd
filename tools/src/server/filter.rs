//! Filter expressions (the FILTER field): a MessagePack tree `[op, args…]` evaluated on a
//! record; a command whose record does not pass is answered FILTERED_OUT (27) and does
//! nothing, a scan leaves the record out.
//!
//! Served: comparisons (EQ NE GT GE LT LE), in-list, AND OR NOT XOR, the numeric operators
//! of `exp_math`; bins by type, bin types; the record's TTL, void time, last-update time,
//! time since update, set name, its stored key and whether it has one, its size, digest
//! modulo; let/var and cond; literals and quoted values. A bin of another type than the
//! one asked, or a missing bin, is "unknown", which fails a comparison, as in Aerospike.
//! Calls (op 127) run a list, map, bit or HLL op on a bin (or on what an inner expression
//! made of it): a read call yields the op's result, a modify call the bin as changed, never
//! stored; a call that fails is unknown. `exp_op` evaluates expressions for read and write
//! ops. Regular expressions (op 7) match string bins. Path calls (`cdt_path`) select or
//! modify along a path whose filters read loop variables (op 122); `remove_result` (100),
//! map keys (101) and map values (102) serve them. Not served (the command gets 16):
//! string calls.
//!
//! Pure; cost: a decode of the expression and a walk per record.

use super::bins::StoredRecord;
use super::cdt::{self, CdtError};
use super::cdt_path;
use super::msgpack::{self, canonical_cmp, Value};
use std::cmp::Ordering;

/// What an expression is evaluated on.
pub struct Subject<'a> {
    pub record: &'a StoredRecord,
    pub generation: u32,
    /// Unix seconds; 0 = never expires.
    pub void_time: u32,
    pub last_update_ms: u64,
    pub digest: &'a [u8; 20],
    pub size_bytes: usize,
}

/// Why an expression was not evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterError {
    /// 4: not a well-formed expression.
    Parameter,
    /// 16: an op this server does not evaluate.
    Unsupported,
}

impl FilterError {
    pub fn code(self) -> u8 {
        match self {
            FilterError::Parameter => 4,
            FilterError::Unsupported => 16,
        }
    }
}

/// A value during evaluation: `Unknown` is what a missing or mistyped bin yields;
/// `Remove` is `remove_result`, which a path's modify expression gives to drop a leaf.
#[derive(Clone, Debug)]
enum Term {
    Known(Value),
    Unknown,
    Remove,
}

/// Whether a record read from the engine (and its decoded bins) passes the expression.
pub fn record_passes(
    bytes: &[u8],
    record: &spike::Record,
    stored: &StoredRecord,
) -> Result<bool, FilterError> {
    let subject = Subject {
        record: stored,
        generation: record.generation,
        void_time: record.void_time,
        last_update_ms: record.last_update_ms,
        digest: &record.digest,
        size_bytes: record.value.len(),
    };
    passes(bytes, &subject)
}

/// Whether the subject passes the expression in `bytes`.
pub fn passes(bytes: &[u8], subject: &Subject<'_>) -> Result<bool, FilterError> {
    let expression = msgpack::decode(bytes).map_err(|_| FilterError::Parameter)?;
    Ok(matches!(eval(&expression, subject, &Vars::default())?, Term::Known(Value::Bool(true))))
}

/// The value of a decoded expression on the subject; None when it is unknown.
pub fn evaluate(expression: &Value, subject: &Subject<'_>) -> Result<Option<Value>, FilterError> {
    Ok(match eval(expression, subject, &Vars::default())? {
        Term::Known(value) => Some(value),
        Term::Unknown | Term::Remove => None,
    })
}

/// The subject of an expression on `stored`, the bins of the engine's `held` record (None:
/// a record being created, with no generation, TTL or size yet).
pub fn subject<'a>(
    stored: &'a StoredRecord,
    held: Option<&'a spike::Record>,
    digest: &'a [u8; 20],
) -> Subject<'a> {
    Subject {
        record: stored,
        generation: held.map_or(0, |r| r.generation),
        void_time: held.map_or(0, |r| r.void_time),
        last_update_ms: held.map_or(0, |r| r.last_update_ms),
        digest,
        size_bytes: held.map_or(0, |r| r.value.len()),
    }
}

/// Values bound by `let` (the innermost last) and, in a path's expressions, the child the
/// loop variables name.
#[derive(Clone, Default)]
struct Vars<'a> {
    /// Borrowed from the enclosing scope until a `let` adds to it, so that a path's
    /// expression, evaluated once per child, copies none of them.
    named: std::borrow::Cow<'a, [(Vec<u8>, Term)]>,
    element: Option<(Option<&'a Value>, &'a Value, Option<usize>)>,
}

/// Recursion is bounded by the decoder's depth limit.
fn eval(expression: &Value, subject: &Subject<'_>, vars: &Vars<'_>) -> Result<Term, FilterError> {
    let Value::List(items) = expression else { return Ok(Term::Known(expression.clone())) };
    let Some((Value::Int(op), args)) = items.split_first() else { return Err(FilterError::Parameter) };
    let arg = |at: usize| args.get(at).ok_or(FilterError::Parameter);
    let sub = |at: usize| arg(at).and_then(|a| eval(a, subject, vars));
    let all = || args.iter().map(|a| eval(a, subject, vars)).collect::<Result<Vec<_>, _>>();
    Ok(match *op {
        1..=6 => compare(*op, sub(0)?, sub(1)?),
        7 => match (arg(0)?, sub(2)?) {
            (Value::Int(flags), Term::Known(Value::Bytes { payload, .. })) if payload.first() == Some(&3) => {
                Term::Known(Value::Bool(regex_matches(*flags, raw_name(arg(1)?)?, &payload[1..])?))
            }
            _ => Term::Unknown,
        },
        8 => match (sub(0)?, sub(1)?) {
            (
                Term::Known(Value::Bytes { payload: left, .. }),
                Term::Known(Value::Bytes { payload: right, .. }),
            ) if left.first() == Some(&23) && right.first() == Some(&23) => {
                let (left, right) = (super::geo::shape_of(&left[1..]), super::geo::shape_of(&right[1..]));
                match (left, right) {
                    (Some(left), Some(right)) => {
                        Term::Known(Value::Bool(super::geo::query_matches(&right, &left)))
                    }
                    _ => Term::Unknown,
                }
            }
            _ => Term::Unknown,
        },
        9 => match (sub(0)?, sub(1)?) {
            (Term::Known(value), Term::Known(Value::List(list))) => {
                Term::Known(Value::Bool(list.iter().any(|v| canonical_cmp(v, &value) == Ordering::Equal)))
            }
            _ => Term::Unknown,
        },
        16 | 17 => logic(*op == 16, all()?),
        18 => match sub(0)? {
            Term::Known(Value::Bool(b)) => Term::Known(Value::Bool(!b)),
            _ => Term::Unknown,
        },
        19 => {
            let bools: Option<Vec<bool>> = all()?
                .into_iter()
                .map(|t| if let Term::Known(Value::Bool(b)) = t { Some(b) } else { None })
                .collect();
            bools.map_or(Term::Unknown, |b| {
                Term::Known(Value::Bool(b.into_iter().filter(|b| *b).count() % 2 == 1))
            })
        }
        20..=41 | 50 | 51 => {
            let known: Option<Vec<Value>> =
                all()?.into_iter().map(|t| if let Term::Known(v) = t { Some(v) } else { None }).collect();
            known.and_then(|v| super::exp_math::apply(*op, &v)).map_or(Term::Unknown, Term::Known)
        }
        64..=82 => record_info(*op, args, subject)?,
        100 => Term::Remove,
        101 | 102 => match sub(0)? {
            Term::Known(Value::Map { entries, .. }) => Term::Known(Value::List(
                entries.into_iter().map(|(key, value)| if *op == 101 { key } else { value }).collect(),
            )),
            _ => Term::Unknown,
        },
        122 => loop_var(vars, arg(0)?, arg(1)?)?,
        99 => match sub(0)? {
            Term::Known(value) => super::string_ops::to_string(&value).map_or(Term::Unknown, Term::Known),
            _ => Term::Unknown,
        },
        123 => cond(args, subject, vars)?,
        124 => {
            let name = raw_name(arg(0)?)?;
            vars.named
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or(FilterError::Parameter)?
        }
        125 => let_in(args, subject, vars)?,
        126 => Term::Known(arg(0)?.clone()),
        127 => call(subject, vars, arg(1)?, arg(2)?, sub(3)?)?,
        _ => return Err(FilterError::Unsupported),
    })
}

/// Regex flags: ignore case, and newline-sensitive matching.
const REGEX_ICASE: i64 = 2;
const REGEX_NEWLINE: i64 = 8;
/// Compiled patterns kept per thread: a scan tests one pattern on every record.
const REGEX_CACHE_MAX: usize = 16;
/// A pattern may compile to at most this much (a crafted one could ask for gigabytes).
const REGEX_BYTES_MAX: usize = 1 << 20;

/// Compiled patterns by (pattern, flags), the oldest first.
type RegexCache = Vec<((Vec<u8>, i64), regex::bytes::Regex)>;

thread_local! {
    static REGEXES: std::cell::RefCell<RegexCache> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `text` has a match of `pattern`, a POSIX extended regular expression (read with
/// the `regex` crate, whose syntax agrees with POSIX ERE on its common forms). As in POSIX,
/// '.' matches a newline and ^ $ only the ends, unless REGEX_NEWLINE. A pattern that does
/// not compile is a PARAMETER error.
fn regex_matches(flags: i64, pattern: &[u8], text: &[u8]) -> Result<bool, FilterError> {
    let key = (pattern.to_vec(), flags & (REGEX_ICASE | REGEX_NEWLINE));
    let cached = REGEXES.with_borrow(|cache| cache.iter().find(|(k, _)| *k == key).map(|(_, r)| r.clone()));
    let regex = match cached {
        Some(regex) => regex,
        None => {
            let source = std::str::from_utf8(pattern).map_err(|_| FilterError::Parameter)?;
            let newline = flags & REGEX_NEWLINE != 0;
            let regex = regex::bytes::RegexBuilder::new(source)
                .case_insensitive(flags & REGEX_ICASE != 0)
                .dot_matches_new_line(!newline)
                .multi_line(newline)
                .size_limit(REGEX_BYTES_MAX)
                .build()
                .map_err(|_| FilterError::Parameter)?;
            REGEXES.with_borrow_mut(|cache| {
                if cache.len() == REGEX_CACHE_MAX {
                    cache.remove(0);
                }
                cache.push((key, regex.clone()));
            });
            regex
        }
    };
    Ok(regex.is_match(text))
}

/// `[cond, test, value, test, value, …, default]`: the value of the first test that is
/// true; only that branch is evaluated.
fn cond(args: &[Value], subject: &Subject<'_>, vars: &Vars<'_>) -> Result<Term, FilterError> {
    let (default, pairs) = args.split_last().ok_or(FilterError::Parameter)?;
    if pairs.len() % 2 != 0 {
        return Err(FilterError::Parameter);
    }
    for pair in pairs.chunks(2) {
        match eval(&pair[0], subject, vars)? {
            Term::Known(Value::Bool(true)) => return eval(&pair[1], subject, vars),
            Term::Known(Value::Bool(false)) => {}
            _ => return Ok(Term::Unknown),
        }
    }
    eval(default, subject, vars)
}

/// `[let, name, value, name, value, …, scope]`: each value (which may use the names
/// bound before it) bound to its name while the scope is evaluated.
fn let_in(args: &[Value], subject: &Subject<'_>, vars: &Vars<'_>) -> Result<Term, FilterError> {
    let (scope, definitions) = args.split_last().ok_or(FilterError::Parameter)?;
    if definitions.len() % 2 != 0 {
        return Err(FilterError::Parameter);
    }
    let mut inner = vars.clone();
    for definition in definitions.chunks(2) {
        let value = eval(&definition[1], subject, &inner)?;
        inner.named.to_mut().push((raw_name(&definition[0])?.to_vec(), value));
    }
    eval(scope, subject, &inner)
}

/// The record's metadata (op codes 64 to 74), its key (80) and its bins (81, 82).
fn record_info(op: i64, args: &[Value], subject: &Subject<'_>) -> Result<Term, FilterError> {
    let arg = |at: usize| args.get(at).ok_or(FilterError::Parameter);
    Ok(match op {
        64 => match arg(0)? {
            Value::Int(n) if *n > 0 => {
                let tail = u32::from_le_bytes([
                    subject.digest[8],
                    subject.digest[9],
                    subject.digest[10],
                    subject.digest[11],
                ]);
                Term::Known(Value::Int(tail as i64 % n))
            }
            _ => return Err(FilterError::Parameter),
        },
        66 => Term::Known(Value::Int(subject.last_update_ms as i64 * 1_000_000)),
        67 => Term::Known(Value::Int(now_ms().saturating_sub(subject.last_update_ms) as i64)),
        68 => Term::Known(Value::Int(if subject.void_time == 0 {
            -1
        } else {
            subject.void_time as i64 * 1_000_000_000
        })),
        69 => Term::Known(Value::Int(match subject.void_time {
            0 => -1,
            void_time => (void_time as i64 - (now_ms() / 1000) as i64).max(0),
        })),
        70 => Term::Known(Value::string(&subject.record.set)),
        71 => Term::Known(Value::Bool(subject.record.key.is_some())),
        72 => Term::Known(Value::Bool(false)),
        74 => Term::Known(Value::Int(subject.size_bytes as i64)),
        80 => {
            let Value::Int(wanted) = arg(0)? else { return Err(FilterError::Parameter) };
            match &subject.record.key {
                Some((particle, bytes)) if expression_type(*particle) == Some(*wanted) => {
                    Value::from_particle(*particle, bytes).map_or(Term::Unknown, Term::Known)
                }
                _ => Term::Unknown,
            }
        }
        81 => bin(subject, arg(0)?, arg(1)?)?,
        82 => {
            let name = raw_name(arg(0)?)?;
            Term::Known(Value::Int(subject.record.bin(name).map_or(0, |b| b.particle as i64)))
        }
        _ => return Err(FilterError::Unsupported),
    })
}

/// The module bits of a call's flags, and its modify flag.
const CALL_MODIFY: i64 = 0x40;
const MODULE_CDT: i64 = 0;
const MODULE_BITS: i64 = 1;
const MODULE_HLL: i64 = 2;
const MODULE_STRING: i64 = 3;

/// `[127, return type, module | modify, op, bin]`: the op (`[code, args…]`, or `[0xff,
/// context, [code, args…]]` for a list or map op in a nested element) run on the bin's
/// value, its arguments evaluated first.
fn call(
    subject: &Subject<'_>,
    vars: &Vars<'_>,
    flags: &Value,
    op: &Value,
    bin: Term,
) -> Result<Term, FilterError> {
    let Value::Int(flags) = flags else { return Err(FilterError::Parameter) };
    let modify = flags & CALL_MODIFY != 0;
    if let Value::List(items) = op {
        if let [Value::Int(cdt_path::PATH_MARKER), path @ ..] = &items[..] {
            return path_call(subject, vars, modify, path, bin);
        }
    }
    let Some(op) = evaluated_op(subject, vars, op)? else { return Ok(Term::Unknown) };
    let op = msgpack::encode(&op);
    let bin = match &bin {
        Term::Known(value) => Some(value.to_particle()),
        Term::Unknown | Term::Remove => None,
    };
    let held = bin.as_ref().map(|(particle, bytes)| (*particle, &bytes[..]));
    let (result, new_bin) = match flags & !CALL_MODIFY {
        MODULE_CDT => match super::cdt::apply(held, &op, modify) {
            Ok(applied) => (Some(applied.result), applied.new_bin),
            Err(_) => return Ok(Term::Unknown),
        },
        MODULE_BITS => match super::bits::apply(held, super::bits::PARTICLE_BLOB, &op, modify) {
            Ok(applied) => (applied.result, applied.new_bin.map(|b| (super::bits::PARTICLE_BLOB, b))),
            Err(_) => return Ok(Term::Unknown),
        },
        MODULE_HLL => match super::hll::apply(held, &op, modify) {
            Ok(applied) => (applied.result, applied.new_bin.map(|b| (super::hll::PARTICLE_HLL, b))),
            Err(_) => return Ok(Term::Unknown),
        },
        MODULE_STRING => match super::string_ops::apply(held, &op, modify) {
            Ok(applied) => (applied.result, applied.new_bin),
            Err(_) => return Ok(Term::Unknown),
        },
        _ => return Err(FilterError::Unsupported),
    };
    let value = match modify {
        true => new_bin.or(bin).and_then(|(particle, bytes)| Value::from_particle(particle, &bytes).ok()),
        false => result,
    };
    Ok(value.map_or(Term::Unknown, Term::Known))
}

/// A call's op with every argument after the op code evaluated (None: one is unknown).
fn evaluated_op(subject: &Subject<'_>, vars: &Vars<'_>, op: &Value) -> Result<Option<Value>, FilterError> {
    let Value::List(items) = op else { return Err(FilterError::Parameter) };
    if let [Value::Int(0xff), context, inner] = &items[..] {
        let inner = evaluated_op(subject, vars, inner)?;
        return Ok(inner.map(|inner| Value::List(vec![Value::Int(0xff), context.clone(), inner])));
    }
    let Some((code, args)) = items.split_first() else { return Err(FilterError::Parameter) };
    let mut out = vec![code.clone()];
    for arg in args {
        match eval(arg, subject, vars)? {
            Term::Known(value) => out.push(value),
            Term::Unknown | Term::Remove => return Ok(None),
        }
    }
    Ok(Some(Value::List(out)))
}

/// A path call (`[0xfe, contexts, flags(, modify expression)]` on the bin's value): what
/// it selects, or the bin as it modifies it; unknown where the bin is not a list or map or
/// the path fails.
fn path_call(
    subject: &Subject<'_>,
    vars: &Vars<'_>,
    modify: bool,
    args: &[Value],
    bin: Term,
) -> Result<Term, FilterError> {
    let path = cdt_path::Path::parse(args).map_err(|_| FilterError::Parameter)?;
    if path.modifies() != modify {
        return Err(FilterError::Parameter);
    }
    let Term::Known(mut root) = bin else { return Ok(Term::Unknown) };
    let mut evaluator = PathEvaluator { subject, named: &vars.named, error: None };
    let result = match modify {
        true => path.modify(&mut root, &mut evaluator).map(|()| root),
        false => path.select(&root, &mut evaluator),
    };
    if let Some(err) = evaluator.error {
        return Err(err);
    }
    Ok(result.map_or(Term::Unknown, Term::Known))
}

/// Runs a list or map op on `bin` (`None`: the record has no such bin): a path op, whose
/// expressions may read the record, with `subject`; any other through `cdt::apply`. A
/// path op on a missing bin reads nothing and changes nothing.
pub fn apply_cdt(
    bin: Option<(u8, &[u8])>,
    op: &[u8],
    modify: bool,
    subject: &Subject<'_>,
) -> Result<cdt::Applied, CdtError> {
    if !is_path_op(op) {
        return cdt::apply(bin, op, modify);
    }
    let Ok(Value::List(items)) = msgpack::decode(op) else { return Err(CdtError::Parameter) };
    let path = cdt_path::Path::parse(items.get(1..).unwrap_or_default())?;
    if path.modifies() && !modify {
        return Err(CdtError::Parameter);
    }
    let nothing = cdt::Applied { result: Value::Nil, new_bin: None };
    let (particle, mut root) = match bin {
        None => return Ok(nothing),
        Some((particle @ (cdt::PARTICLE_MAP | cdt::PARTICLE_LIST), bytes)) => {
            (particle, msgpack::decode(bytes).map_err(|_| CdtError::Parameter)?)
        }
        Some(_) => return Err(CdtError::IncompatibleType),
    };
    let mut evaluator = PathEvaluator { subject, named: &[], error: None };
    let outcome = match path.modifies() {
        true => path
            .modify(&mut root, &mut evaluator)
            .map(|()| cdt::Applied { result: Value::Nil, new_bin: Some((particle, msgpack::encode(&root))) }),
        false => path.select(&root, &mut evaluator).map(|result| cdt::Applied { result, new_bin: None }),
    };
    match evaluator.error {
        Some(FilterError::Unsupported) => Err(CdtError::Unsupported),
        Some(FilterError::Parameter) => Err(CdtError::Parameter),
        None => outcome,
    }
}

/// Whether an op's bytes start `[0xfe, …` (a path op), as the clients pack it.
fn is_path_op(op: &[u8]) -> bool {
    matches!(op, [0x93 | 0x94, 0xcc, 0xfe, ..] | [0x93 | 0x94, 0xcd | 0xd1, 0x00, 0xfe, ..])
}

/// Evaluates a path's filter and modify expressions on the record, with the loop
/// variables bound to the child at hand. The first evaluation error is kept (and the walk
/// stopped) so that the caller reports it rather than a path error.
struct PathEvaluator<'s, 'r> {
    subject: &'s Subject<'r>,
    named: &'s [(Vec<u8>, Term)],
    error: Option<FilterError>,
}

impl cdt_path::Evaluator for PathEvaluator<'_, '_> {
    fn eval(
        &mut self,
        expression: &Value,
        var: &cdt_path::LoopVar<'_>,
    ) -> Result<cdt_path::Outcome, CdtError> {
        let vars = Vars { named: self.named.into(), element: Some((var.key, var.value, var.index)) };
        match eval(expression, self.subject, &vars) {
            Ok(Term::Known(value)) => Ok(cdt_path::Outcome::Value(value)),
            Ok(Term::Unknown) => Ok(cdt_path::Outcome::Unknown),
            Ok(Term::Remove) => Ok(cdt_path::Outcome::Remove),
            Err(err) => {
                self.error = Some(err);
                Err(CdtError::Parameter)
            }
        }
    }
}

/// `[122, type, part]`: a part of the child a path's expression is evaluated on (0 its
/// map key, 1 its value, 2 its list index), if it is of the type asked; else unknown.
fn loop_var(vars: &Vars<'_>, wanted: &Value, part: &Value) -> Result<Term, FilterError> {
    let (Value::Int(wanted), Value::Int(part)) = (wanted, part) else { return Err(FilterError::Parameter) };
    let Some((key, value, index)) = vars.element else { return Err(FilterError::Parameter) };
    let found = match part {
        0 => key.cloned(),
        1 => Some(value.clone()),
        2 => index.map(|i| Value::Int(i as i64)),
        _ => return Err(FilterError::Parameter),
    };
    Ok(match found {
        Some(found) if value_type(&found) == Some(*wanted) => Term::Known(found),
        _ => Term::Unknown,
    })
}

/// The expression type of a value inside a list or map.
fn value_type(value: &Value) -> Option<i64> {
    Some(match value {
        Value::Nil => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::UInt(_) => 2,
        Value::List(_) => 4,
        Value::Map { .. } => 5,
        Value::F32(_) | Value::F64(_) => 7,
        Value::Bytes { payload, .. } => return payload.first().and_then(|p| expression_type(*p)),
        Value::Ext { .. } => return None,
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A bin name is sent as a raw string (no particle-type byte).
fn raw_name(value: &Value) -> Result<&[u8], FilterError> {
    match value {
        Value::Bytes { payload, .. } => Ok(payload),
        _ => Err(FilterError::Parameter),
    }
}

/// `[81, type, name]`: the bin's value if it is of the type asked (the expression types:
/// 0 nil, 1 bool, 2 int, 3 string, 4 list, 5 map, 6 blob, 7 float, 8 GeoJSON, 9 HLL).
fn bin(subject: &Subject<'_>, wanted: &Value, name: &Value) -> Result<Term, FilterError> {
    let Value::Int(wanted) = wanted else { return Err(FilterError::Parameter) };
    let Some(bin) = subject.record.bin(raw_name(name)?) else { return Ok(Term::Unknown) };
    if expression_type(bin.particle) != Some(*wanted) {
        return Ok(Term::Unknown);
    }
    Ok(Value::from_particle(bin.particle, &bin.value).map_or(Term::Unknown, Term::Known))
}

/// The expression type of a particle type.
fn expression_type(particle: u8) -> Option<i64> {
    Some(match particle {
        1 => 2,
        2 => 7,
        3 => 3,
        4 => 6,
        17 => 1,
        18 => 9,
        19 => 5,
        20 => 4,
        23 => 8,
        _ => return None,
    })
}

fn compare(op: i64, left: Term, right: Term) -> Term {
    let (Term::Known(a), Term::Known(b)) = (left, right) else { return Term::Unknown };
    // A string literal carries its particle byte, as a string bin's value does.
    let order = canonical_cmp(&a, &b);
    let same_type = std::mem::discriminant(&a) == std::mem::discriminant(&b)
        || matches!((&a, &b), (Value::F32(_) | Value::F64(_), Value::F32(_) | Value::F64(_)));
    if !same_type && op != 1 && op != 2 {
        return Term::Unknown;
    }
    Term::Known(Value::Bool(match op {
        1 => order == Ordering::Equal,
        2 => order != Ordering::Equal,
        3 => order == Ordering::Greater,
        4 => order != Ordering::Less,
        5 => order == Ordering::Less,
        _ => order != Ordering::Greater,
    }))
}

/// AND (`all`) or OR over the terms, with unknown in between false and true.
fn logic(all: bool, terms: Vec<Term>) -> Term {
    let mut unknown = false;
    for term in terms {
        match term {
            Term::Known(Value::Bool(b)) if b != all => return Term::Known(Value::Bool(b)),
            Term::Known(Value::Bool(_)) => {}
            _ => unknown = true,
        }
    }
    if unknown {
        Term::Unknown
    } else {
        Term::Known(Value::Bool(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::bins::StoredRecord;
    use crate::server::msgpack::encode;

    fn raw(text: &str) -> Value {
        Value::Bytes { payload: text.as_bytes().to_vec(), bin: false }
    }

    fn int_bin(name: &str) -> Value {
        Value::List(vec![Value::Int(81), Value::Int(2), raw(name)])
    }

    fn op(code: i64, args: Vec<Value>) -> Value {
        let mut items = vec![Value::Int(code)];
        items.extend(args);
        Value::List(items)
    }

    #[test]
    fn comparisons_logic_and_unknown_bins_decide_as_aerospike_does() {
        let mut record = StoredRecord::default();
        record.set_bin(b"n", 1, &7i64.to_be_bytes());
        record.set_bin(b"s", 3, b"abc");
        record.set = b"people".to_vec();
        let subject = Subject {
            record: &record,
            generation: 1,
            void_time: 0,
            last_update_ms: 0,
            digest: &[0; 20],
            size_bytes: 64,
        };
        let check = |e: Value| passes(&encode(&e), &subject).unwrap();
        assert!(check(op(1, vec![int_bin("n"), Value::Int(7)])));
        assert!(!check(op(1, vec![int_bin("n"), Value::Int(99)])));
        assert!(check(op(3, vec![int_bin("n"), Value::Int(6)])));
        assert!(!check(op(1, vec![int_bin("missing"), Value::Int(7)])));
        // A bin read as another type is unknown: neither equal nor not equal.
        assert!(!check(op(2, vec![int_bin("s"), Value::Int(7)])));
        assert!(!check(op(18, vec![op(1, vec![int_bin("s"), Value::Int(7)])])));
        let string_bin = Value::List(vec![Value::Int(81), Value::Int(3), raw("s")]);
        assert!(check(op(1, vec![string_bin, Value::string(b"abc")])));
        assert!(check(op(
            16,
            vec![
                op(1, vec![int_bin("n"), Value::Int(7)]),
                op(1, vec![op(70, vec![]), Value::string(b"people")])
            ]
        )));
        assert!(check(op(
            17,
            vec![op(1, vec![int_bin("missing"), Value::Int(1)]), op(5, vec![int_bin("n"), Value::Int(8)])]
        )));
        assert!(check(op(1, vec![op(20, vec![int_bin("n"), Value::Int(3)]), Value::Int(10)])));
        assert!(check(op(1, vec![op(69, vec![]), Value::Int(-1)])));
        // let x = n + 1 in (cond x > 100: false, x == 8: true, default false), and a var
        // nobody bound; in_list and xor.
        let x = || op(124, vec![raw("x")]);
        let choice = op(
            123,
            vec![
                op(3, vec![x(), Value::Int(100)]),
                Value::Bool(false),
                op(1, vec![x(), Value::Int(8)]),
                Value::Bool(true),
                Value::Bool(false),
            ],
        );
        assert!(check(op(125, vec![raw("x"), op(20, vec![int_bin("n"), Value::Int(1)]), choice])));
        assert_eq!(passes(&encode(&op(124, vec![raw("y")])), &subject), Err(FilterError::Parameter));
        let list = op(126, vec![Value::List(vec![Value::Int(3), Value::Int(7)])]);
        assert!(check(op(9, vec![int_bin("n"), list])));
        assert!(check(op(19, vec![Value::Bool(true), Value::Bool(false), Value::Bool(false)])));
        assert!(!check(op(19, vec![Value::Bool(true), Value::Bool(true)])));
        let string_bin = || Value::List(vec![Value::Int(81), Value::Int(3), raw("s")]);
        assert!(check(op(7, vec![Value::Int(0), raw("^a.c$"), string_bin()])));
        assert!(!check(op(7, vec![Value::Int(0), raw("B"), string_bin()])));
        assert!(check(op(7, vec![Value::Int(REGEX_ICASE), raw("B"), string_bin()])));
        assert!(!check(op(7, vec![Value::Int(0), raw("b"), int_bin("n")])), "an int bin is unknown");
        assert_eq!(
            passes(&encode(&op(7, vec![Value::Int(0), raw("("), string_bin()])), &subject),
            Err(FilterError::Parameter)
        );
        assert_eq!(passes(&encode(&op(8, vec![])), &subject), Err(FilterError::Parameter), "geo takes two");
        assert_eq!(passes(&encode(&op(90, vec![])), &subject), Err(FilterError::Unsupported));
        assert_eq!(
            passes(&encode(&op(99, vec![])), &subject),
            Err(FilterError::Parameter),
            "to_string takes one"
        );
        assert_eq!(passes(&[0xc1], &subject), Err(FilterError::Parameter));
        assert_eq!(passes(&encode(&op(1, vec![Value::Int(1)])), &subject), Err(FilterError::Parameter));
    }
}
