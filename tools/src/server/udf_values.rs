//! Values between bins and a UDF's Lua: integers, floats, strings and blobs (Lua
//! strings), booleans, and Aerospike's `list` and `map` (Lua tables marked by one of two
//! metatables, built with `list()`/`list{…}` and `map()`/`map{…}`, with the
//! `list.size/append/prepend/iterator` and `map.size/keys/values/pairs/remove` helpers of
//! the real server's Lua API).
//!
//! A list or map bin is shown to the function as such a table, nested values included; a
//! table the function returns or stores must carry one of the marks (a plain table is
//! refused, as the real server refuses it). A map comes back with its entries in key
//! order (MessagePack's canonical order), since a Lua table keeps none. Nesting is bounded
//! by `DEPTH_MAX`, so that a table that holds itself is an error, not a loop.

use super::msgpack::{self, Value};
use mlua::{Lua, Table, Value as LuaValue};

/// Deepest nesting of lists and maps converted either way.
const DEPTH_MAX: usize = 32;
const LIST_MARK: &str = "spike.list";
const MAP_MARK: &str = "spike.map";

/// Defines `list` and `map`; returns their metatables.
const PRELUDE: &str = r#"
local LIST, MAP = {}, {}
local function copy(into, from, mt)
  if from then for k, v in pairs(from) do into[k] = v end end
  return setmetatable(into, mt)
end
list = setmetatable({}, { __call = function(_, t) return copy({}, t, LIST) end })
function list.size(l) return #l end
function list.append(l, v) l[#l + 1] = v end
function list.prepend(l, v) table.insert(l, 1, v) end
function list.iterator(l)
  local i = 0
  return function() i = i + 1; return l[i] end
end
map = setmetatable({}, { __call = function(_, t) return copy({}, t, MAP) end })
function map.size(m) local n = 0; for _ in pairs(m) do n = n + 1 end; return n end
function map.pairs(m) return pairs(m) end
function map.remove(m, k) m[k] = nil end
function map.keys(m)
  local k = nil
  return function() k = next(m, k); return k end
end
function map.values(m)
  local k, v = nil, nil
  return function() k, v = next(m, k); return v end
end
return LIST, MAP
"#;

/// Installs `list` and `map` in `lua`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let (list_mt, map_mt): (Table, Table) = lua.load(PRELUDE).set_name("spike prelude").call(())?;
    lua.set_named_registry_value(LIST_MARK, list_mt)?;
    lua.set_named_registry_value(MAP_MARK, map_mt)
}

/// A bin value as Lua sees it; None for the types not shown to functions (HLL, geo, …).
pub fn to_lua(lua: &Lua, particle: u8, bytes: &[u8]) -> mlua::Result<Option<LuaValue>> {
    let eight = || <[u8; 8]>::try_from(bytes).ok();
    Ok(match particle {
        0 => Some(LuaValue::Nil),
        1 => eight().map(|b| LuaValue::Integer(i64::from_be_bytes(b))),
        2 => eight().map(|b| LuaValue::Number(f64::from_be_bytes(b))),
        3 | 4 => Some(LuaValue::String(lua.create_string(bytes)?)),
        17 => Some(LuaValue::Boolean(bytes.first().is_some_and(|b| *b != 0))),
        19 | 20 => match msgpack::decode(bytes) {
            Ok(value) => value_to_lua(lua, &value, 0)?,
            Err(_) => None,
        },
        _ => None,
    })
}

fn marked(lua: &Lua, mark: &str) -> mlua::Result<Table> {
    lua.named_registry_value(mark)
}

/// None: a value Lua is not shown (an HLL or geo element, an ext).
fn value_to_lua(lua: &Lua, value: &Value, depth: usize) -> mlua::Result<Option<LuaValue>> {
    if depth > DEPTH_MAX {
        return Ok(None);
    }
    Ok(match value {
        Value::Nil => Some(LuaValue::Nil),
        Value::Bool(b) => Some(LuaValue::Boolean(*b)),
        Value::Int(i) => Some(LuaValue::Integer(*i)),
        Value::UInt(u) => Some(LuaValue::Number(*u as f64)),
        Value::F32(x) => Some(LuaValue::Number(*x as f64)),
        Value::F64(x) => Some(LuaValue::Number(*x)),
        Value::Bytes { payload, .. } if matches!(payload.first(), Some(3 | 4)) => {
            Some(LuaValue::String(lua.create_string(&payload[1..])?))
        }
        Value::List(items) => {
            let table = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, value_to_lua(lua, item, depth + 1)?.unwrap_or(LuaValue::Nil))?;
            }
            table.set_metatable(Some(marked(lua, LIST_MARK)?))?;
            Some(LuaValue::Table(table))
        }
        Value::Map { entries, .. } => {
            let table = lua.create_table()?;
            for (key, item) in entries {
                if let (Some(key), Some(item)) =
                    (value_to_lua(lua, key, depth + 1)?, value_to_lua(lua, item, depth + 1)?)
                {
                    if key != LuaValue::Nil {
                        table.raw_set(key, item)?;
                    }
                }
            }
            table.set_metatable(Some(marked(lua, MAP_MARK)?))?;
            Some(LuaValue::Table(table))
        }
        _ => None,
    })
}

/// A Lua value as a bin: Some(None) for nil, None for a value that cannot be one.
pub fn from_lua(lua: &Lua, value: &LuaValue) -> Option<Option<(u8, Vec<u8>)>> {
    match value {
        LuaValue::Nil => Some(None),
        other => lua_to_value(lua, other, 0).map(|v| Some(v.to_particle())),
    }
}

fn lua_to_value(lua: &Lua, value: &LuaValue, depth: usize) -> Option<Value> {
    if depth > DEPTH_MAX {
        return None;
    }
    Some(match value {
        LuaValue::Nil => Value::Nil,
        LuaValue::Integer(i) => Value::Int(*i),
        LuaValue::Number(x) => Value::F64(*x),
        LuaValue::Boolean(b) => Value::Bool(*b),
        // A Lua string is text when it is UTF-8 (the clients decode a STRING as UTF-8),
        // else a blob.
        LuaValue::String(s) => {
            let bytes = s.as_bytes();
            let particle = if std::str::from_utf8(&bytes).is_ok() { 3 } else { 4 };
            let mut payload = vec![particle];
            payload.extend_from_slice(&bytes);
            Value::Bytes { payload, bin: particle == 4 }
        }
        LuaValue::Table(table) => {
            let mt = table.metatable()?;
            if mt.to_pointer() == marked(lua, LIST_MARK).ok()?.to_pointer() {
                let len = table.raw_len();
                let items: Option<Vec<Value>> =
                    (1..=len).map(|i| lua_to_value(lua, &table.raw_get(i).ok()?, depth + 1)).collect();
                Value::List(items?)
            } else if mt.to_pointer() == marked(lua, MAP_MARK).ok()?.to_pointer() {
                let mut entries = Vec::new();
                for pair in table.pairs::<LuaValue, LuaValue>() {
                    let (key, item) = pair.ok()?;
                    entries.push((lua_to_value(lua, &key, depth + 1)?, lua_to_value(lua, &item, depth + 1)?));
                }
                entries.sort_by(|a, b| msgpack::canonical_cmp(&a.0, &b.0));
                Value::Map { order: None, entries }
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        install(&lua).unwrap();
        lua
    }

    #[test]
    fn lists_and_maps_go_to_lua_and_back_nested_and_maps_come_back_in_key_order() {
        let lua = lua();
        let inner = Value::Map {
            order: None,
            entries: vec![(Value::string(b"b"), Value::Int(2)), (Value::string(b"a"), Value::F64(1.5))],
        };
        let list = Value::List(vec![Value::Int(1), Value::string(b"x"), inner.clone(), Value::Bool(true)]);
        let shown = to_lua(&lua, 20, &msgpack::encode(&list)).unwrap().unwrap();
        lua.globals().set("l", shown).unwrap();
        let size: i64 = lua.load("return list.size(l) + map.size(l[3]) + l[3].b").eval().unwrap();
        assert_eq!(size, 4 + 2 + 2);
        let back = from_lua(&lua, &lua.globals().get::<LuaValue>("l").unwrap()).unwrap().unwrap();
        let sorted = Value::Map {
            order: None,
            entries: vec![(Value::string(b"a"), Value::F64(1.5)), (Value::string(b"b"), Value::Int(2))],
        };
        assert_eq!(
            back,
            (
                20,
                msgpack::encode(&Value::List(vec![
                    Value::Int(1),
                    Value::string(b"x"),
                    sorted,
                    Value::Bool(true)
                ]))
            )
        );
    }

    #[test]
    fn built_tables_carry_their_mark_and_plain_or_cyclic_tables_are_refused() {
        let lua = lua();
        let built: LuaValue = lua
            .load("local m = map{status = 'OK'}; m.res = 5; local l = list(); list.append(l, 7); list.prepend(l, 6); m.l = l; return m")
            .eval()
            .unwrap();
        let (particle, bytes) = from_lua(&lua, &built).unwrap().unwrap();
        assert_eq!(particle, 19);
        let Value::Map { entries, .. } = msgpack::decode(&bytes).unwrap() else { panic!() };
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![Value::string(b"l"), Value::string(b"res"), Value::string(b"status")]);
        assert_eq!(entries[0].1, Value::List(vec![Value::Int(6), Value::Int(7)]));
        let plain: LuaValue = lua.load("return {1, 2}").eval().unwrap();
        assert_eq!(from_lua(&lua, &plain), None);
        let cyclic: LuaValue = lua.load("local l = list(); l[1] = l; return l").eval().unwrap();
        assert_eq!(from_lua(&lua, &cyclic), None);
        let keys: i64 = lua
            .load("local n = 0; for k in map.keys(map{a=1, b=2}) do n = n + 1 end; return n")
            .eval()
            .unwrap();
        assert_eq!(keys, 2);
    }
}
