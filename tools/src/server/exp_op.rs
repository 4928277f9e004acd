//! Expression operations (op type 7 reads, 8 modifies): an expression (`filter`'s
//! language) evaluated on the record as the operate has built it so far; a read returns
//! the value under the op's name, a modify stores it in the op's bin. The op's value is
//! `[expression, flags]` (flags optional), with the real server's flags and result codes.
//!
//! Pure; cost: a decode and a walk of the expression per op.

use super::bins::PARTICLE_NULL;
use super::filter::{self, Subject};
use super::msgpack::{decode, Value};
use super::record::code::{BIN_EXISTS, BIN_NOT_FOUND, OP_NOT_APPLICABLE, PARAMETER};

const FLAG_CREATE_ONLY: u64 = 1;
const FLAG_UPDATE_ONLY: u64 = 1 << 1;
const FLAG_ALLOW_DELETE: u64 = 1 << 2;
const FLAG_POLICY_NO_FAIL: u64 = 1 << 3;
const FLAG_EVAL_NO_FAIL: u64 = 1 << 4;
const MODIFY_FLAGS: u64 =
    FLAG_CREATE_ONLY | FLAG_UPDATE_ONLY | FLAG_ALLOW_DELETE | FLAG_POLICY_NO_FAIL | FLAG_EVAL_NO_FAIL;

/// The expression and flags of an op's value.
fn parse(op_value: &[u8], flags_allowed: u64) -> Result<(Value, u64), u8> {
    let Ok(Value::List(mut items)) = decode(op_value) else { return Err(PARAMETER) };
    let flags = match items.len() {
        1 => 0,
        2 => match items.pop() {
            Some(Value::Int(flags)) if flags >= 0 => flags as u64,
            _ => return Err(PARAMETER),
        },
        _ => return Err(PARAMETER),
    };
    if flags & !flags_allowed != 0 {
        return Err(PARAMETER);
    }
    Ok((items.remove(0), flags))
}

/// The value of the expression (None: nil), or the op's result code: OP_NOT_APPLICABLE
/// when it is unknown (a missing or mistyped bin) unless EVAL_NO_FAIL.
fn evaluate(expression: &Value, flags: u64, subject: &Subject<'_>) -> Result<Option<Value>, u8> {
    match filter::evaluate(expression, subject).map_err(|e| e.code())? {
        Some(Value::Nil) => Ok(None),
        Some(value) => Ok(Some(value)),
        None if flags & FLAG_EVAL_NO_FAIL != 0 => Ok(None),
        None => Err(OP_NOT_APPLICABLE),
    }
}

/// A read op's result as a bin (particle type and bytes), or None for nil.
pub fn read(op_value: &[u8], subject: &Subject<'_>) -> Result<Option<(u8, Vec<u8>)>, u8> {
    let (expression, flags) = parse(op_value, FLAG_EVAL_NO_FAIL)?;
    Ok(evaluate(&expression, flags, subject)?.map(|value| value.to_particle()))
}

/// What a modify op does to its bin: the new value (particle type and bytes; a NULL
/// particle deletes the bin), or None to leave it as it is.
pub fn modify(op_value: &[u8], bin: &[u8], subject: &Subject<'_>) -> Result<Option<(u8, Vec<u8>)>, u8> {
    let (expression, flags) = parse(op_value, MODIFY_FLAGS)?;
    let refuse = |code| if flags & FLAG_POLICY_NO_FAIL != 0 { Ok(None) } else { Err(code) };
    let was_live = subject.record.bin(bin).is_some();
    if was_live && flags & FLAG_CREATE_ONLY != 0 {
        return refuse(BIN_EXISTS);
    }
    if !was_live && flags & FLAG_UPDATE_ONLY != 0 {
        return refuse(BIN_NOT_FOUND);
    }
    match filter::evaluate(&expression, subject).map_err(|e| e.code())? {
        None if flags & FLAG_EVAL_NO_FAIL != 0 => Ok(None),
        None => Err(OP_NOT_APPLICABLE),
        Some(Value::Nil) if !was_live => Ok(None),
        Some(Value::Nil) if flags & FLAG_ALLOW_DELETE != 0 => Ok(Some((PARTICLE_NULL, Vec::new()))),
        // The real server tests `flags && NO_FAIL`: any flag at all makes this a no-op.
        Some(Value::Nil) if flags != 0 => Ok(None),
        Some(Value::Nil) => Err(OP_NOT_APPLICABLE),
        Some(value) => Ok(Some(value.to_particle())),
    }
}
