//! Filter expressions (the FILTER field): a MessagePack tree `[op, args…]` evaluated on a
//! record; a command whose record does not pass is answered FILTERED_OUT (27) and does
//! nothing, a scan leaves the record out.
//!
//! Served: comparisons (EQ NE GT GE LT LE), AND OR NOT, integer and float add, sub, mul,
//! div, mod, abs; bins by type, bin types; the record's TTL, void time, last-update time,
//! time since update, set name, whether its key is stored, its size, digest modulo; and
//! literals. A bin of another type than the one asked, or a missing bin, is "unknown",
//! which fails a comparison, as in Aerospike. Calls (op 127) run a list, map, bit or HLL
//! op on a bin (or on what an inner expression made of it): a read call yields the op's
//! result, a modify call the bin as changed, never stored; a call that fails is unknown.
//! Not served (the command gets 16): other ops (regex, geo, string calls, let/var, cond).
//!
//! Pure; cost: a decode of the expression and a walk per record.

use super::bins::StoredRecord;
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

/// A value during evaluation: `Unknown` is what a missing or mistyped bin yields.
#[derive(Clone, Debug)]
enum Term {
    Known(Value),
    Unknown,
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
    Ok(matches!(eval(&expression, subject)?, Term::Known(Value::Bool(true))))
}

/// Recursion is bounded by the decoder's depth limit.
fn eval(expression: &Value, subject: &Subject<'_>) -> Result<Term, FilterError> {
    let Value::List(items) = expression else { return Ok(Term::Known(expression.clone())) };
    let Some((Value::Int(op), args)) = items.split_first() else { return Err(FilterError::Parameter) };
    let arg = |at: usize| args.get(at).ok_or(FilterError::Parameter);
    let sub = |at: usize| arg(at).and_then(|a| eval(a, subject));
    Ok(match *op {
        1..=6 => compare(*op, sub(0)?, sub(1)?),
        16 | 17 => logic(*op == 16, args.iter().map(|a| eval(a, subject)).collect::<Result<_, _>>()?),
        18 => match sub(0)? {
            Term::Known(Value::Bool(b)) => Term::Known(Value::Bool(!b)),
            _ => Term::Unknown,
        },
        20..=24 | 26 | 27 => {
            arithmetic(*op, args.iter().map(|a| eval(a, subject)).collect::<Result<_, _>>()?)
        }
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
        81 => bin(subject, arg(0)?, arg(1)?)?,
        82 => {
            let name = raw_name(arg(0)?)?;
            Term::Known(Value::Int(subject.record.bin(name).map_or(0, |b| b.particle as i64)))
        }
        126 => Term::Known(arg(0)?.clone()),
        127 => call(subject, arg(1)?, arg(2)?, sub(3)?)?,
        _ => return Err(FilterError::Unsupported),
    })
}

/// The module bits of a call's flags, and its modify flag.
const CALL_MODIFY: i64 = 0x40;
const MODULE_CDT: i64 = 0;
const MODULE_BITS: i64 = 1;
const MODULE_HLL: i64 = 2;

/// `[127, return type, module | modify, op, bin]`: the op (`[code, args…]`, or `[0xff,
/// context, [code, args…]]` for a list or map op in a nested element) run on the bin's
/// value, its arguments evaluated first.
fn call(subject: &Subject<'_>, flags: &Value, op: &Value, bin: Term) -> Result<Term, FilterError> {
    let Value::Int(flags) = flags else { return Err(FilterError::Parameter) };
    let modify = flags & CALL_MODIFY != 0;
    let Some(op) = evaluated_op(subject, op)? else { return Ok(Term::Unknown) };
    let op = msgpack::encode(&op);
    let bin = match &bin {
        Term::Known(value) => Some(value.to_particle()),
        Term::Unknown => None,
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
        _ => return Err(FilterError::Unsupported),
    };
    let value = match modify {
        true => new_bin.or(bin).and_then(|(particle, bytes)| Value::from_particle(particle, &bytes).ok()),
        false => result,
    };
    Ok(value.map_or(Term::Unknown, Term::Known))
}

/// A call's op with every argument after the op code evaluated (None: one is unknown).
fn evaluated_op(subject: &Subject<'_>, op: &Value) -> Result<Option<Value>, FilterError> {
    let Value::List(items) = op else { return Err(FilterError::Parameter) };
    if let [Value::Int(0xff), context, inner] = &items[..] {
        return Ok(evaluated_op(subject, inner)?
            .map(|inner| Value::List(vec![Value::Int(0xff), context.clone(), inner])));
    }
    let Some((code, args)) = items.split_first() else { return Err(FilterError::Parameter) };
    let mut out = vec![code.clone()];
    for arg in args {
        match eval(arg, subject)? {
            Term::Known(value) => out.push(value),
            Term::Unknown => return Ok(None),
        }
    }
    Ok(Some(Value::List(out)))
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
    let matches = match bin.particle {
        1 => *wanted == 2,
        2 => *wanted == 7,
        3 => *wanted == 3,
        4 => *wanted == 6,
        17 => *wanted == 1,
        18 => *wanted == 9,
        19 => *wanted == 5,
        20 => *wanted == 4,
        23 => *wanted == 8,
        _ => false,
    };
    if !matches {
        return Ok(Term::Unknown);
    }
    Ok(Value::from_particle(bin.particle, &bin.value).map_or(Term::Unknown, Term::Known))
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

fn arithmetic(op: i64, terms: Vec<Term>) -> Term {
    let mut values = Vec::with_capacity(terms.len());
    for term in terms {
        match term {
            Term::Known(v @ (Value::Int(_) | Value::F64(_))) => values.push(v),
            _ => return Term::Unknown,
        }
    }
    let Some((first, rest)) = values.split_first() else { return Term::Unknown };
    if op == 27 {
        return match first {
            Value::Int(i) => i.checked_abs().map_or(Term::Unknown, |a| Term::Known(Value::Int(a))),
            Value::F64(x) => Term::Known(Value::F64(x.abs())),
            _ => Term::Unknown,
        };
    }
    let mut acc = first.clone();
    for next in rest {
        acc = match (&acc, next) {
            (Value::Int(a), Value::Int(b)) => {
                let result = match op {
                    20 => a.checked_add(*b),
                    21 => a.checked_sub(*b),
                    22 => a.checked_mul(*b),
                    23 => a.checked_div(*b),
                    24 => u32::try_from(*b).ok().and_then(|b| a.checked_pow(b)),
                    _ => a.checked_rem(*b),
                };
                match result {
                    Some(r) => Value::Int(r),
                    None => return Term::Unknown,
                }
            }
            (Value::F64(a), Value::F64(b)) => Value::F64(match op {
                20 => a + b,
                21 => a - b,
                22 => a * b,
                23 => a / b,
                24 => a.powf(*b),
                _ => a % b,
            }),
            // Mixed integer and float is an error in Aerospike's expressions too.
            _ => return Term::Unknown,
        };
    }
    Term::Known(acc)
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
        assert_eq!(passes(&encode(&op(7, vec![])), &subject), Err(FilterError::Unsupported));
        assert_eq!(passes(&[0xc1], &subject), Err(FilterError::Parameter));
        assert_eq!(passes(&encode(&op(1, vec![Value::Int(1)])), &subject), Err(FilterError::Parameter));
    }
}
