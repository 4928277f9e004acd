//! String operations (Aerospike 8.2) on string bins: an op `[sub-op, args…]`, sent as a
//! STRING_READ (17) or STRING_MODIFY (18) op or run by an expression call (module 3).
//!
//! Reads (0–16): length in code points, substring, character at, find (the nth match,
//! -1 the last), contains, starts/ends with, to integer, to double, byte length, is
//! numeric (any, integer or float), is upper/lower case, to blob, split (by code point or
//! a separator), base64 decode, regular-expression match. Modifies (50–68): insert,
//! overwrite, concat, snip, replace (first or all), upper, lower, trim (start, end, both),
//! pad (start, end), repeat, regular-expression replace, append, prepend. Indexes count
//! code points; a negative one counts from the end; one out of range is clamped.
//!
//! A modify's last argument is its write flags: CREATE_ONLY (1: only the ops that can
//! create a bin from nothing, which fail with BIN_EXISTS on a live bin), UPDATE_ONLY (2:
//! an absent bin is left absent) and NO_FAIL (4: a failed op leaves the bin as it was).
//! An absent bin is created by insert, overwrite, concat, append, prepend, pad and
//! repeat, and left alone by the others. A read of an absent bin reads nothing.
//!
//! Find, contains, starts/ends with and replace match canonically equivalent forms alike
//! (both sides composed, NFC, unless both already are); normalize makes NFC.
//!
//! Partial, as documented in the README: regular expressions are the `regex` crate's
//! syntax (as ICU's on common forms); case folding is lower-casing plus the sharp s and
//! final sigma folds (not the rarer multi-character ones). A context names a string inside
//! a list or map bin (by index, rank, key or value; it creates nothing).
//!
//! Pure; cost: the string is decoded from UTF-8 and walked once per op.

use super::msgpack::{self, Value};
use base64::Engine as _;
use std::borrow::Cow;
use unicode_normalization::UnicodeNormalization;

pub const PARTICLE_STRING: u8 = 3;
const PARTICLE_BLOB: u8 = 4;
/// A string an op makes may be at most this long (a record is at most a write block).
const STRING_BYTES_MAX: usize = 8 << 20;

const CREATE_ONLY: i64 = 1;
const UPDATE_ONLY: i64 = 2;
const NO_FAIL: i64 = 4;
const REGEX_CASE_INSENSITIVE: i64 = 1;
const REGEX_MULTILINE: i64 = 2;
const REGEX_DOT_ALL: i64 = 4;
const REGEX_GLOBAL: i64 = 16;

/// Why an op was refused, as result codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringError {
    /// 4: malformed arguments, or an op that cannot be done (without NO_FAIL).
    Parameter,
    /// 6: CREATE_ONLY on a live bin.
    BinExists,
    /// 12: the bin is not a string.
    BinType,
    /// 16: a form this server does not serve.
    Unsupported,
}

impl StringError {
    pub fn code(self) -> u8 {
        match self {
            StringError::Parameter => 4,
            StringError::BinExists => 6,
            StringError::BinType => 12,
            StringError::Unsupported => 16,
        }
    }
}

type Result<T> = std::result::Result<T, StringError>;

/// What an op did: a read's result, and a modify's new bin, particle type and bytes (the
/// string, or the list or map holding it; None: unchanged).
#[derive(Debug, PartialEq)]
pub struct Applied {
    pub result: Option<Value>,
    pub new_bin: Option<(u8, Vec<u8>)>,
}

/// Runs the op encoded in `op` on the bin (`None`: no such bin). A read (`modify` false)
/// may not change the bin.
pub fn apply(bin: Option<(u8, &[u8])>, op: &[u8], modify: bool) -> Result<Applied> {
    let Ok(Value::List(items)) = msgpack::decode(op) else { return Err(StringError::Parameter) };
    match items.split_first() {
        Some((Value::Int(0xff), [Value::List(ctx), Value::List(inner)])) => {
            in_context(bin, ctx, inner, modify)
        }
        Some((Value::Int(sub_op), args)) if *sub_op != 0xff => {
            let text = match bin {
                None => None,
                Some((PARTICLE_STRING, bytes)) => {
                    Some(String::from_utf8(bytes.to_vec()).map_err(|_| StringError::Parameter)?)
                }
                Some(_) => return Err(StringError::BinType),
            };
            let (result, new) = run(*sub_op, text, args, modify, false)?;
            Ok(Applied { result, new_bin: new.map(|t| (PARTICLE_STRING, t.into_bytes())) })
        }
        _ => Err(StringError::Parameter),
    }
}

/// A read's result, or a modify's new string, of op `sub_op` on `text` (None: absent).
fn run(
    sub_op: i64,
    text: Option<String>,
    args: &[Value],
    modify: bool,
    in_context: bool,
) -> Result<(Option<Value>, Option<String>)> {
    match sub_op {
        0..=16 => Ok((text.map(|text| read(sub_op, &text, args)).transpose()?, None)),
        50..=68 if modify => Ok((None, modify_op(sub_op, text, args, in_context)?)),
        _ => Err(StringError::Parameter),
    }
}

/// `[0xff, contexts, [sub-op, args…]]`: the op on the string the contexts name inside a
/// list or map bin (one they name nothing at reads nothing and changes nothing); the bin
/// is written back whole.
fn in_context(bin: Option<(u8, &[u8])>, ctx: &[Value], inner: &[Value], modify: bool) -> Result<Applied> {
    let nothing = Applied { result: None, new_bin: None };
    let (particle, bytes) = match bin {
        None => return Ok(nothing),
        Some((particle @ (super::cdt::PARTICLE_LIST | super::cdt::PARTICLE_MAP), bytes)) => (particle, bytes),
        Some(_) => return Err(StringError::BinType),
    };
    let Some((Value::Int(sub_op), args)) = inner.split_first() else { return Err(StringError::Parameter) };
    let mut root = msgpack::decode(bytes).map_err(|_| StringError::Parameter)?;
    let Some(leaf) = super::cdt_context::select(&mut root, ctx) else { return Ok(nothing) };
    let text = match leaf {
        Value::Bytes { payload, .. } if payload.first() == Some(&PARTICLE_STRING) => {
            String::from_utf8(payload[1..].to_vec()).map_err(|_| StringError::Parameter)?
        }
        _ => return Err(StringError::BinType),
    };
    let (result, new) = run(*sub_op, Some(text), args, modify, true)?;
    let Some(new) = new else { return Ok(Applied { result, new_bin: None }) };
    *leaf = string(&new);
    Ok(Applied { result, new_bin: Some((particle, msgpack::encode(&root))) })
}

fn int(value: Option<&Value>) -> Result<i64> {
    match value {
        Some(Value::Int(i)) => Ok(*i),
        _ => Err(StringError::Parameter),
    }
}

fn opt_int(value: Option<&Value>) -> Result<Option<i64>> {
    value.map(|v| int(Some(v))).transpose()
}

/// A string argument (a str payload whose first byte is the string particle type).
fn text_arg(value: Option<&Value>) -> Result<&str> {
    match value {
        Some(Value::Bytes { payload, .. }) if payload.first() == Some(&PARTICLE_STRING) => {
            std::str::from_utf8(&payload[1..]).map_err(|_| StringError::Parameter)
        }
        _ => Err(StringError::Parameter),
    }
}

fn string(text: &str) -> Value {
    Value::string(text.as_bytes())
}

/// Code-point index `at` (negative from the end) of a string of `len`, clamped to 0..=len.
fn clamp_index(at: i64, len: usize) -> usize {
    let at = if at < 0 { len as i64 + at } else { at };
    at.clamp(0, len as i64) as usize
}

/// The byte offset of code point `index` (the length at the end).
fn byte_at(text: &str, index: usize) -> usize {
    text.char_indices().nth(index).map_or(text.len(), |(at, _)| at)
}

fn read(sub_op: i64, text: &str, args: &[Value]) -> Result<Value> {
    let len = text.chars().count();
    Ok(match sub_op {
        0 => Value::Int(len as i64),
        1 => {
            let start = clamp_index(int(args.first())?, len);
            let end = opt_int(args.get(1))?.map_or(len, |end| clamp_index(end, len));
            match start < end {
                true => string(&text[byte_at(text, start)..byte_at(text, end)]),
                false => string(""),
            }
        }
        2 => match len {
            0 => string(""),
            _ => {
                let at = clamp_index(int(args.first())?, len).min(len - 1);
                string(&text[byte_at(text, at)..byte_at(text, at + 1)])
            }
        },
        3..=6 => {
            let (text, needle) = canonical(text, text_arg(args.first())?);
            match sub_op {
                3 => Value::Int(find(&text, &needle, opt_int(args.get(1))?.unwrap_or(1))?),
                4 => Value::Bool(text.contains(&*needle)),
                5 => Value::Bool(text.starts_with(&*needle)),
                _ => Value::Bool(text.ends_with(&*needle)),
            }
        }
        7 => Value::Int(text.parse::<i64>().map_err(|_| StringError::Parameter)?),
        8 => match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Value::F64(x),
            _ => return Err(StringError::Parameter),
        },
        9 => Value::Int(text.len() as i64),
        10 => Value::Bool(is_numeric(text, opt_int(args.first())?.unwrap_or(0))?),
        11 => Value::Bool(!text.chars().any(char::is_lowercase)),
        12 => Value::Bool(!text.chars().any(char::is_uppercase)),
        13 => blob(text.as_bytes()),
        14 => split(text, args.first().map(|v| text_arg(Some(v))).transpose()?)?,
        15 => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(text);
            blob(&decoded.map_err(|_| StringError::Parameter)?)
        }
        16 => {
            let regex = compile(text_arg(args.first())?, opt_int(args.get(1))?.unwrap_or(0))?;
            Value::Bool(regex.is_match(text))
        }
        _ => return Err(StringError::Parameter),
    })
}

/// TO_STRING (op 19, expression 99): an integer, float, string or blob (UTF-8) as a
/// string; any other type is BIN_TYPE_ERROR.
pub fn to_string(value: &Value) -> Result<Value> {
    Ok(match value {
        Value::Int(i) => string(&i.to_string()),
        Value::UInt(u) => string(&u.to_string()),
        Value::F32(x) => string(&x.to_string()),
        Value::F64(x) => string(&x.to_string()),
        Value::Bytes { payload, .. }
            if matches!(payload.first(), Some(&PARTICLE_STRING | &PARTICLE_BLOB)) =>
        {
            let text = std::str::from_utf8(&payload[1..]).map_err(|_| StringError::Parameter)?;
            string(text)
        }
        _ => return Err(StringError::BinType),
    })
}

fn blob(bytes: &[u8]) -> Value {
    let mut payload = vec![PARTICLE_BLOB];
    payload.extend_from_slice(bytes);
    Value::Bytes { payload, bin: true }
}

/// `text` and `other` in one normalization form, so that canonically equivalent
/// strings match: as they are when both are NFC already (the common case), else both
/// composed (NFC).
fn canonical<'a>(text: &'a str, other: &'a str) -> (Cow<'a, str>, Cow<'a, str>) {
    let composed =
        |s: &str| unicode_normalization::is_nfc_quick(s.chars()) == unicode_normalization::IsNormalized::Yes;
    if composed(text) && composed(other) {
        return (Cow::Borrowed(text), Cow::Borrowed(other));
    }
    (Cow::Owned(text.nfc().collect()), Cow::Owned(other.nfc().collect()))
}

/// The code-point index of the `occurrence`-th match of `needle` (1 the first, -1 the
/// last), or -1; occurrence 0 names none and is refused.
fn find(text: &str, needle: &str, occurrence: i64) -> Result<i64> {
    let matches: Vec<usize> = text.match_indices(needle).map(|(at, _)| at).collect();
    let chosen = match occurrence {
        0 => return Err(StringError::Parameter),
        n if n > 0 => matches.get(n as usize - 1),
        n => matches.len().checked_sub(n.unsigned_abs() as usize).and_then(|i| matches.get(i)),
    };
    Ok(chosen.map_or(-1, |&at| text[..at].chars().count() as i64))
}

/// Case folding for caseless comparison: lower case, with the folds that lower-casing
/// does not make for the common scripts (sharp s to "ss", final sigma to sigma).
fn case_fold(text: &str) -> String {
    text.to_lowercase().replace(['ß', 'ẞ'], "ss").replace('ς', "σ")
}

/// Whether `text` is a number of `kind`: 0 either, 1 an integer (an i64), 2 a float,
/// which must have a '.' followed by a digit.
fn is_numeric(text: &str, kind: i64) -> Result<bool> {
    let integer = text.parse::<i64>().is_ok();
    let float =
        text.split_once('.').is_some_and(|(_, after)| after.starts_with(|c: char| c.is_ascii_digit()))
            && text.parse::<f64>().is_ok_and(f64::is_finite);
    match kind {
        0 => Ok(integer || float),
        1 => Ok(integer),
        2 => Ok(float),
        _ => Err(StringError::Parameter),
    }
}

fn split(text: &str, separator: Option<&str>) -> Result<Value> {
    let parts: Vec<Value> = match separator {
        None => text.chars().map(|c| string(c.encode_utf8(&mut [0; 4]))).collect(),
        Some("") => return Err(StringError::Parameter),
        Some(separator) => text.split(separator).map(string).collect(),
    };
    Ok(Value::List(parts))
}

fn compile(pattern: &str, flags: i64) -> Result<regex::Regex> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(flags & REGEX_CASE_INSENSITIVE != 0)
        .multi_line(flags & REGEX_MULTILINE != 0)
        .dot_matches_new_line(flags & REGEX_DOT_ALL != 0)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| StringError::Parameter)
}

/// The arguments a modify op takes before its write flags, and whether it may create the
/// bin; None for an op this module does not know.
fn modify_shape(sub_op: i64) -> Option<(usize, bool)> {
    Some(match sub_op {
        50 | 51 | 63 | 64 => (2, true),
        52 | 65 | 67 | 68 => (1, true),
        53 | 66 => (2, false),
        54 | 55 => (1, false),
        56..=62 => (0, false),
        _ => return None,
    })
}

/// A modify: the bin's new string, or None where it stays as it is.
fn modify_op(sub_op: i64, text: Option<String>, args: &[Value], in_context: bool) -> Result<Option<String>> {
    let (arity, creates) = modify_shape(sub_op).ok_or(StringError::Parameter)?;
    let flags = opt_int(args.get(arity))?.unwrap_or(0);
    let create_only = flags & CREATE_ONLY != 0;
    if args.len() > arity + 1 || create_only && (!creates || flags & UPDATE_ONLY != 0 || in_context) {
        return Err(StringError::Parameter);
    }
    let no_fail = flags & NO_FAIL != 0;
    let source = match text {
        Some(_) if flags & CREATE_ONLY != 0 => {
            return if no_fail { Ok(None) } else { Err(StringError::BinExists) };
        }
        Some(text) => text,
        None if flags & UPDATE_ONLY != 0 || !creates => return Ok(None),
        None => String::new(),
    };
    match changed(sub_op, &source, &args[..arity.min(args.len())]) {
        Ok(new) if new.len() <= STRING_BYTES_MAX => Ok(Some(new)),
        Ok(_) | Err(Refusal::Failed) if no_fail => Ok(None),
        Ok(_) | Err(Refusal::Failed) | Err(Refusal::Malformed) => Err(StringError::Parameter),
    }
}

/// Why a modify made no string: its arguments are malformed (PARAMETER whatever the
/// flags), or the op cannot be done with them (PARAMETER, or nothing under NO_FAIL).
enum Refusal {
    Malformed,
    Failed,
}

impl From<StringError> for Refusal {
    fn from(_: StringError) -> Self {
        Refusal::Malformed
    }
}

/// The string a modify makes of `text`.
fn changed(sub_op: i64, text: &str, args: &[Value]) -> std::result::Result<String, Refusal> {
    let len = text.chars().count();
    let at = |i: usize| -> std::result::Result<usize, Refusal> {
        Ok(byte_at(text, clamp_index(int(args.get(i))?, len)))
    };
    Ok(match sub_op {
        50 => {
            let at = at(0)?;
            [&text[..at], text_arg(args.get(1))?, &text[at..]].concat()
        }
        51 => {
            let value = text_arg(args.get(1))?;
            let start = clamp_index(int(args.first())?, len);
            let end = byte_at(text, (start + value.chars().count()).min(len));
            [&text[..byte_at(text, start)], value, &text[end..]].concat()
        }
        52 => match args.first() {
            Some(Value::List(parts)) => {
                let parts: Vec<&str> = parts.iter().map(|p| text_arg(Some(p))).collect::<Result<_>>()?;
                [text].into_iter().chain(parts).collect()
            }
            _ => return Err(Refusal::Malformed),
        },
        53 => {
            let start = clamp_index(int(args.first())?, len);
            let end = opt_int(args.get(1))?.map_or(len, |end| clamp_index(end, len));
            match start < end {
                true => [&text[..byte_at(text, start)], &text[byte_at(text, end)..]].concat(),
                false => text.to_string(),
            }
        }
        54 | 55 | 66 => replaced(sub_op, text, args)?,
        56 => text.to_uppercase(),
        57 => text.to_lowercase(),
        58 => case_fold(text),
        59 => text.nfc().collect(),
        60 => text.trim_start().to_string(),
        61 => text.trim_end().to_string(),
        62 => text.trim().to_string(),
        63 | 64 => padded(sub_op == 63, text, len, int(args.first())?, text_arg(args.get(1))?)?,
        65 => {
            let count = usize::try_from(int(args.first())?).map_err(|_| Refusal::Failed)?;
            if text.len().saturating_mul(count) > STRING_BYTES_MAX {
                return Err(Refusal::Failed);
            }
            text.repeat(count)
        }
        67 => [text, text_arg(args.first())?].concat(),
        68 => [text_arg(args.first())?, text].concat(),
        _ => return Err(Refusal::Malformed),
    })
}

/// Replace (54: the first, 55: every occurrence of a needle) or a regular-expression
/// replace (66: the first match, every one with the GLOBAL flag); the pair
/// `[needle or pattern, replacement]` comes first.
fn replaced(sub_op: i64, text: &str, args: &[Value]) -> std::result::Result<String, Refusal> {
    let Some(Value::List(pair)) = args.first() else { return Err(Refusal::Malformed) };
    let (needle, replacement) = (text_arg(pair.first())?, text_arg(pair.get(1))?);
    if pair.len() != 2 {
        return Err(Refusal::Malformed);
    }
    Ok(match sub_op {
        54 | 55 if needle.is_empty() => return Err(Refusal::Failed),
        54 | 55 => {
            let (text, needle) = canonical(text, needle);
            let count = if sub_op == 54 { 1 } else { usize::MAX };
            text.replacen(&*needle, replacement, count)
        }
        _ => {
            let flags = opt_int(args.get(1))?.unwrap_or(0);
            let regex = compile(needle, flags).map_err(|_| Refusal::Failed)?;
            let limit = if flags & REGEX_GLOBAL != 0 { 0 } else { 1 };
            regex.replacen(text, limit, replacement).into_owned()
        }
    })
}

/// `text` padded at its start (or end) with repeats of `pad` to `target` code points.
fn padded(
    at_start: bool,
    text: &str,
    len: usize,
    target: i64,
    pad: &str,
) -> std::result::Result<String, Refusal> {
    let target = usize::try_from(target).map_err(|_| Refusal::Failed)?;
    if pad.is_empty() {
        return Err(Refusal::Failed);
    }
    if target <= len {
        return Ok(text.to_string());
    }
    if target.saturating_mul(4) > STRING_BYTES_MAX {
        return Err(Refusal::Failed);
    }
    let fill: String = pad.chars().cycle().take(target - len).collect();
    Ok(if at_start { fill + text } else { [text, &fill].concat() })
}

#[cfg(test)]
#[path = "string_ops_tests.rs"]
mod tests;
