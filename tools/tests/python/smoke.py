"""Smoke test of spike-server with the official Python client (which bundles Aerospike's
C client): the operations of the Rust client tests, through an independent client.
Usage: smoke.py PORT. Exits non-zero on the first mismatch."""
import os
import sys
import tempfile
import time

import aerospike
from aerospike import exception as ex

port = int(sys.argv[1])
client = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
key = ("test", "py", "user-1")

bins = {"name": "Grace", "n": 1, "f": 1.5, "ok": True, "l": [1, 2, "x"], "m": {"a": 1}, "blob": bytearray(b"\x00\x01")}
client.put(key, bins)
_, meta, got = client.get(key)
assert meta["gen"] == 1, meta
assert got["name"] == "Grace" and got["l"] == [1, 2, "x"] and got["m"] == {"a": 1}, got
assert got["f"] == 1.5 and got["ok"] is True and got["blob"] == b"\x00\x01", got
_, meta = client.exists(key)
assert meta is not None

client.increment(key, "n", 4)
client.append(key, "name", " Hopper")
client.prepend(key, "name", "Dr ")
_, _, got = client.select(key, ["name", "n"])
assert got == {"name": "Dr Grace Hopper", "n": 5}, got

# Existence and generation policies.
try:
    client.put(key, {"x": 1}, policy={"exists": aerospike.POLICY_EXISTS_CREATE})
    raise AssertionError("create-only on an existing record succeeded")
except ex.RecordExistsError:
    pass
try:
    client.put(key, {"x": 1}, meta={"gen": 1}, policy={"gen": aerospike.POLICY_GEN_EQ})
    raise AssertionError("a stale generation was accepted")
except ex.RecordGenerationError:
    pass
client.put(key, {"x": 1}, policy={"exists": aerospike.POLICY_EXISTS_REPLACE})
_, _, got = client.get(key)
assert got == {"x": 1}, got

# TTL: a one-second record expires; touch renews a record.
short = ("test", "py", "short")
client.put(short, {"v": 1}, meta={"ttl": 1})
client.touch(key, 3600)
_, meta = client.exists(key)
assert 3500 < meta["ttl"] <= 3600, meta
time.sleep(2.2)
_, meta = client.exists(short)
assert meta is None, "a record outlived its TTL"

# Batch reads with missing keys, and a scan of the set.
for i in range(20):
    client.put(("test", "pybatch", i), {"i": i})
keys = [("test", "pybatch", i) for i in range(25)]
records = client.batch_read(keys).batch_records
found = {r.key[2]: r.record[2]["i"] for r in records if r.result == 0}
assert found == {i: i for i in range(20)}, found
assert sum(1 for r in records if r.result == 2) == 5
scanned = sorted(rec[2]["i"] for rec in client.scan("test", "pybatch").results())
assert scanned == list(range(20)), scanned

# List and map operations, and a record UDF, through the C client inside.
from aerospike_helpers.operations import list_operations as lops, map_operations as mops
lkey = ("test", "pycdt", 1)
client.put(lkey, {"l": [3, 1, 2], "m": {"z": 1, "a": 2}})
_, _, bins = client.operate(lkey, [lops.list_append("l", 4), lops.list_size("l")])
assert bins["l"] == 4, bins
_, _, bins = client.operate(lkey, [lops.list_sort("l", 0), lops.list_get_by_index("l", 0, aerospike.LIST_RETURN_VALUE)])
assert bins["l"] == 1, bins
_, _, bins = client.operate(lkey, [mops.map_put("m", "b", 3), mops.map_get_by_key("m", "b", aerospike.MAP_RETURN_VALUE)])
assert bins["m"] == 3, bins
_, _, bins = client.get(lkey)
assert bins["l"] == [1, 2, 3, 4] and list(bins["m"].keys()) == ["a", "b", "z"], bins
module = "function bump(rec, n)\n  rec['c'] = (rec['c'] or 0) + n\n  aerospike:update(rec)\n  return rec['c']\nend\n"
with open(os.path.join(tempfile.mkdtemp(), "pysmoke.lua"), "w") as f:
    f.write(module)
client.udf_put(f.name)
assert client.apply(lkey, "pysmoke", "bump", [5]) == 5
assert client.apply(lkey, "pysmoke", "bump", [2]) == 7

# HyperLogLog: the C client's own encoding of the ops and of a sketch.
from aerospike_helpers.operations import hll_operations as hops
hkey = ("test", "pyhll", 1)
_, _, bins = client.operate(hkey, [hops.hll_add("h", [f"e{i}" for i in range(1000)], 10), hops.hll_get_count("h")])
assert 900 <= bins["h"] <= 1100, bins
_, _, bins = client.operate(hkey, [hops.hll_describe("h")])
assert bins["h"] == [10, 0], bins

# A secondary index: a range query reads what the index names; a background query
# answers at once and its job reports how many records it changed; a UDF returns a map.
from aerospike import predicates
from aerospike_helpers.operations import operations as op
for i in range(30):
    client.put(("test", "pyidx", i), {"n": i, "l": [i, 100 + i]})
client.index_integer_create("test", "pyidx", "n", "pyidx_n")
query = client.query("test", "pyidx")
query.where(predicates.between("n", 10, 14))
assert sorted(bins["n"] for _, _, bins in query.results()) == [10, 11, 12, 13, 14]
background = client.query("test", "pyidx")
background.where(predicates.between("n", 20, 29))
background.add_ops([op.increment("n", 1000)])
job = background.execute_background()
while client.job_info(job, aerospike.JOB_QUERY)["status"] != aerospike.JOB_STATUS_COMPLETED:
    time.sleep(0.05)
assert client.job_info(job, aerospike.JOB_QUERY)["records_read"] == 10
query = client.query("test", "pyidx")
query.where(predicates.between("n", 1000, 2000))
assert sorted(bins["n"] for _, _, bins in query.results()) == list(range(1020, 1030))
client.index_remove("test", "pyidx_n")
module = "function shape(rec)\n  local m = map()\n  m['size'] = list.size(rec['l'])\n  m['first'] = rec['l'][1]\n  return m\nend\n"
with open(os.path.join(tempfile.mkdtemp(), "pyshape.lua"), "w") as f:
    f.write(module)
client.udf_put(f.name)
assert client.apply(("test", "pyidx", 3), "pyshape", "shape", []) == {"size": 2, "first": 3}

# Path expressions (8.1): select what a path reaches, its filter reading each child through
# a loop variable, then modify the leaves it reaches (clients before 19.x lack the helpers).
from aerospike_helpers import cdt_ctx
from aerospike_helpers import expressions as exp
from aerospike_helpers.operations import operations as path_ops
if hasattr(path_ops, "select_by_path"):
    store = ("test", "py", "store")
    client.put(store, {"s": {"book": [{"title": "A", "price": 8.5}, {"title": "B", "price": 12.0}]}})
    price = exp.MapGetByKey(None, aerospike.MAP_RETURN_VALUE, exp.ResultType.FLOAT, "price",
                            exp.LoopVarMap(aerospike.EXP_LOOPVAR_VALUE))
    cheap = cdt_ctx.cdt_ctx_all_children_with_filter(exp.LE(price, 10.0).compile())
    title = cdt_ctx.cdt_ctx_all_children_with_filter(
        exp.Eq(exp.LoopVarStr(aerospike.EXP_LOOPVAR_KEY), "title").compile())
    path = [cdt_ctx.cdt_ctx_map_key("book"), cheap, title]
    _, _, got = client.operate(store, [path_ops.select_by_path("s", path, aerospike.EXP_PATH_SELECT_VALUE)])
    assert got["s"] == ["A"], got
    prices = [cdt_ctx.cdt_ctx_map_key("book"), cdt_ctx.cdt_ctx_all_children(), cdt_ctx.cdt_ctx_map_key("price")]
    double = exp.Mul(exp.LoopVarFloat(aerospike.EXP_LOOPVAR_VALUE), 2.0).compile()
    client.operate(store, [path_ops.modify_by_path("s", prices, double, aerospike.EXP_PATH_MODIFY_DEFAULT)])
    _, _, got = client.get(store)
    assert [b["price"] for b in got["s"]["book"]] == [17.0, 24.0], got
else:
    print("python client smoke test: path expressions skipped (this client has no select_by_path)")

# String operations (8.2), through the C client's own encoder.
try:
    from aerospike_helpers.operations import string_operations as str_ops
except ImportError:
    str_ops = None
if str_ops is not None:
    words = ("test", "py", "words")
    client.put(words, {"w": "héllo wörld"})
    _, _, got = client.operate(words, [str_ops.strlen("w")])
    assert got["w"] == 11, got
    _, _, got = client.operate(words, [str_ops.find("w", "wö")])
    assert got["w"] == 6, got
    client.operate(words, [str_ops.upper("w")])
    client.operate(words, [str_ops.pad_start("w", 13, "*")])
    _, _, got = client.get(words)
    assert got["w"] == "**HÉLLO WÖRLD", got
else:
    print("python client smoke test: string operations skipped (this client has no string_operations)")

# Delete is durable and final; truncate empties a set.
client.remove(key)
try:
    client.get(key)
    raise AssertionError("a deleted record came back")
except ex.RecordNotFound:
    pass
client.truncate("test", "pybatch", 0)
assert client.scan("test", "pybatch").results() == []
assert "test" in client.info_all("namespaces")[next(iter(client.info_all("namespaces")))][1]
client.close()
print("python client smoke test: ok")
