//! Record UDFs: a function of a registered Lua module run on one record, inside the
//! record's atomic update, as Aerospike runs them.
//!
//! The function gets `rec` (a table of the record's bins) and the call's arguments; it
//! changes bins by assigning `rec[name]`, and keeps its changes by calling
//! `aerospike:update(rec)` or `aerospike:create(rec)` (or deletes the record with
//! `aerospike:remove(rec)`); `aerospike:exists(rec)`, `record.gen(rec)` and
//! `record.ttl(rec)` read the record's state. The return value is the reply's `SUCCESS`
//! bin; a failure is result 100 with its message in a `FAILURE` bin.
//!
//! Bins, arguments and return values are integers, floats, strings, blobs (as Lua
//! strings), booleans, and lists and maps (`udf_values`: Aerospike's `list` and `map`).
//! Partial, and said so: HLL and geo bins are not shown to the function (and are kept as
//! they are); stream UDFs (aggregations) are not run. The Lua has the table, string, math and utf8 libraries, not io, os or package,
//! so that a registered module cannot reach the server's files.
//!
//! Cost: a fresh Lua state and one load of the module per call (about 0.1 ms), so UDFs are
//! for logic, not for the hot path. A call runs at most `UDF_TIME_MAX` (then result 9)
//! and takes at most `UDF_MEMORY_MAX` of memory (then result 100).

use super::bins::{self, StoredRecord, PARTICLE_NULL};
use super::msgpack;
use super::udf_values::{self, from_lua, to_lua};
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value as LuaValue, VmState};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest a call may run, as the real server's default transaction time.
pub const UDF_TIME_MAX: Duration = Duration::from_secs(1);
/// Most memory a call's Lua state may take (then the call fails, result 100).
pub const UDF_MEMORY_MAX: usize = 64 << 20;
/// Result code of a failed call (Aerospike's UDF_BAD_RESPONSE).
pub const UDF_FAILED: u8 = 100;
const TIMEOUT: u8 = 9;

/// A UDF call from a message's or batch row's UDF fields.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub module: &'a [u8],
    pub function: &'a [u8],
    /// The arguments, a MessagePack list.
    pub args: &'a [u8],
}

/// What the function asked to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Write,
    Remove,
}

/// What a call came to: the record to write (if it asked), and the reply's bin.
pub struct Ran {
    pub action: Action,
    pub record: StoredRecord,
    /// `(result code, bin name, particle, value)`: SUCCESS or FAILURE.
    pub code: u8,
    pub reply: (u8, Vec<u8>, Vec<u8>),
}

/// Runs `call` of `source` (the module's Lua text) on the held record (None: none).
pub fn run(source: Option<&[u8]>, call: &Call<'_>, existing: Option<(StoredRecord, u32, u32)>) -> Ran {
    let existed = existing.is_some();
    let (record, generation, void_time) = existing.unwrap_or_default();
    let outcome = source
        .ok_or_else(|| Failure::Bad("module not found".into()))
        .and_then(|source| call_lua(source, call, &record, existed, generation, void_time));
    match outcome {
        Ok((action, bins, returned)) => {
            let mut record = record;
            apply_bins(&mut record, bins);
            Ran { action, record, code: 0, reply: (returned.0, b"SUCCESS".to_vec(), returned.1) }
        }
        Err(Failure::TimedOut) => {
            Ran { action: Action::None, record, code: TIMEOUT, reply: failure("UDF timed out") }
        }
        Err(Failure::Bad(message)) => {
            Ran { action: Action::None, record, code: UDF_FAILED, reply: failure(&message) }
        }
    }
}

fn failure(message: &str) -> (u8, Vec<u8>, Vec<u8>) {
    (3, b"FAILURE".to_vec(), message.as_bytes().to_vec())
}

enum Failure {
    TimedOut,
    Bad(String),
}

/// A value as a bin holds it: particle type and bytes.
type Particle = (u8, Vec<u8>);

/// The bins after the call: name → value (None: the function set it to nil).
type BinChanges = Vec<(Vec<u8>, Option<Particle>)>;

fn call_lua(
    source: &[u8],
    call: &Call<'_>,
    record: &StoredRecord,
    existed: bool,
    generation: u32,
    void_time: u32,
) -> Result<(Action, BinChanges, Particle), Failure> {
    let bad = |e: mlua::Error| Failure::Bad(first_line(&e.to_string()));
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8;
    let lua = Lua::new_with(libs, LuaOptions::default()).map_err(bad)?;
    // A function cannot take the server's memory either.
    lua.set_memory_limit(UDF_MEMORY_MAX).map_err(bad)?;
    let started = Instant::now();
    let timed_out = Rc::new(Cell::new(false));
    let flag = timed_out.clone();
    lua.set_hook(HookTriggers::new().every_nth_instruction(10_000), move |_, _| {
        if started.elapsed() > UDF_TIME_MAX {
            flag.set(true);
            return Err(mlua::Error::RuntimeError("UDF timed out".into()));
        }
        Ok(VmState::Continue)
    })
    .map_err(bad)?;
    udf_values::install(&lua).map_err(bad)?;
    let module = String::from_utf8_lossy(call.module).into_owned();
    lua.load(source).set_name(module).exec().map_err(bad)?;
    let function: LuaValue = lua.globals().get(&*String::from_utf8_lossy(call.function)).map_err(bad)?;
    let LuaValue::Function(function) = function else {
        return Err(Failure::Bad("function not found".into()));
    };
    let action = Rc::new(Cell::new(Action::None));
    install_api(&lua, action.clone(), existed, generation, void_time).map_err(bad)?;
    let rec = lua.create_table().map_err(bad)?;
    for bin in &record.bins {
        if let Some(value) = to_lua(&lua, bin.particle, &bin.value).map_err(bad)? {
            rec.set(lua.create_string(&bin.name).map_err(bad)?, value).map_err(bad)?;
        }
    }
    let mut args = vec![LuaValue::Table(rec.clone())];
    let Ok(msgpack::Value::List(items)) = msgpack::decode(call.args) else {
        return Err(Failure::Bad("the argument list does not decode".into()));
    };
    for item in &items {
        let (particle, bytes) = item.to_particle();
        args.push(to_lua(&lua, particle, &bytes).map_err(bad)?.unwrap_or(LuaValue::Nil));
    }
    let returned: LuaValue = match function.call(mlua::MultiValue::from_iter(args)) {
        Ok(value) => value,
        Err(_) if timed_out.get() => return Err(Failure::TimedOut),
        Err(e) => return Err(bad(e)),
    };
    let returned = from_lua(&lua, &returned)
        .ok_or_else(|| Failure::Bad("the function returned a value of an unsupported type".into()))?;
    Ok((action.get(), bin_changes(&lua, record, &rec)?, returned.unwrap_or((PARTICLE_NULL, Vec::new()))))
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("UDF failed").to_string()
}

/// The `aerospike` and `record` tables the function calls.
fn install_api(
    lua: &Lua,
    action: Rc<Cell<Action>>,
    existed: bool,
    generation: u32,
    void_time: u32,
) -> mlua::Result<()> {
    let aerospike = lua.create_table()?;
    let set = |name: &str, to: Action| -> mlua::Result<()> {
        let action = action.clone();
        aerospike.set(
            name,
            lua.create_function(move |_, _: mlua::MultiValue| {
                action.set(to);
                Ok(0)
            })?,
        )
    };
    set("update", Action::Write)?;
    set("create", Action::Write)?;
    set("remove", Action::Remove)?;
    let kept = action.clone();
    aerospike.set(
        "exists",
        lua.create_function(move |_, _: mlua::MultiValue| Ok(existed || kept.get() == Action::Write))?,
    )?;
    lua.globals().set("aerospike", aerospike)?;
    let record = lua.create_table()?;
    record.set("gen", lua.create_function(move |_, _: mlua::MultiValue| Ok(generation))?)?;
    let ttl_s = move || void_time.saturating_sub(super::record::spike_now_s());
    record.set(
        "ttl",
        lua.create_function(move |_, _: mlua::MultiValue| {
            Ok(if void_time == 0 { -1 } else { ttl_s() as i64 })
        })?,
    )?;
    lua.globals().set("record", record)
}

/// Every bin the function set, with its value after the call. A bin it left as it was
/// is not among them, so that it keeps its own type (a blob that happens to be UTF-8
/// stays a blob).
fn bin_changes(lua: &Lua, record: &StoredRecord, rec: &Table) -> Result<BinChanges, Failure> {
    let bad = |e: mlua::Error| Failure::Bad(first_line(&e.to_string()));
    let mut changes = BinChanges::new();
    for pair in rec.pairs::<LuaValue, LuaValue>() {
        let (name, value) = pair.map_err(bad)?;
        let LuaValue::String(name) = name else {
            return Err(Failure::Bad("a bin name that is not a string".into()));
        };
        let name = name.as_bytes().to_vec();
        if name.len() > super::wire::BIN_NAME_MAX {
            return Err(Failure::Bad("a bin name over 15 bytes".into()));
        }
        let held = record.bin(&name);
        // Scalars compare as Lua values; lists and maps by their contents, below.
        let scalar = held.filter(|bin| !matches!(bin.particle, 19 | 20));
        let shown = scalar.and_then(|bin| to_lua(lua, bin.particle, &bin.value).ok().flatten());
        if shown.is_some_and(|before| same_lua_value(&before, &value)) {
            continue;
        }
        let value =
            from_lua(lua, &value).ok_or_else(|| Failure::Bad("a bin value of an unsupported type".into()))?;
        if let (Some(bin), Some((particle, bytes))) = (held, &value) {
            if same_collection(bin.particle, &bin.value, *particle, bytes) {
                continue;
            }
        }
        changes.push((name, value));
    }
    // A bin the function saw and set to nil is no longer among the table's pairs.
    for bin in record.bins.iter().filter(|bin| matches!(bin.particle, 1 | 2 | 3 | 4 | 17 | 19 | 20)) {
        let held: LuaValue = rec.raw_get(lua.create_string(&bin.name).map_err(bad)?).map_err(bad)?;
        if held == LuaValue::Nil {
            changes.push((bin.name.clone(), None));
        }
    }
    Ok(changes)
}

fn same_lua_value(a: &LuaValue, b: &LuaValue) -> bool {
    match (a, b) {
        (LuaValue::Integer(x), LuaValue::Integer(y)) => x == y,
        (LuaValue::Number(x), LuaValue::Number(y)) => x.to_bits() == y.to_bits(),
        (LuaValue::Boolean(x), LuaValue::Boolean(y)) => x == y,
        (LuaValue::String(x), LuaValue::String(y)) => x.as_bytes() == y.as_bytes(),
        _ => false,
    }
}

/// Whether a list or map the function left as it was shown (the same values, a map's
/// entries in any order) is the bin's value: then the bin keeps its own encoding and order.
fn same_collection(held_particle: u8, held: &[u8], particle: u8, bytes: &[u8]) -> bool {
    if held_particle != particle || !matches!(particle, 19 | 20) {
        return false;
    }
    match (msgpack::decode(held), msgpack::decode(bytes)) {
        (Ok(a), Ok(b)) => canonical(a) == canonical(b),
        _ => false,
    }
}

/// A value with every map's entries in key order and no order flags.
fn canonical(value: msgpack::Value) -> msgpack::Value {
    match value {
        msgpack::Value::List(items) => msgpack::Value::List(items.into_iter().map(canonical).collect()),
        msgpack::Value::Map { entries, .. } => {
            let mut entries: Vec<_> =
                entries.into_iter().map(|(k, v)| (canonical(k), canonical(v))).collect();
            entries.sort_by(|a, b| msgpack::canonical_cmp(&a.0, &b.0));
            msgpack::Value::Map { order: None, entries }
        }
        msgpack::Value::F32(x) => msgpack::Value::F64(x as f64),
        msgpack::Value::Bytes { payload, .. } => msgpack::Value::Bytes { payload, bin: false },
        other => other,
    }
}

fn apply_bins(record: &mut StoredRecord, changes: BinChanges) {
    for (name, value) in changes {
        match value {
            Some((particle, bytes)) => record.set_bin(&name, particle, &bytes),
            None => record.bins.retain(|b: &bins::Bin| b.name != name),
        }
    }
}
