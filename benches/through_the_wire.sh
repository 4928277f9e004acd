#!/bin/bash
# Through the wire vs in-process on one 4 GiB file: spike-server with N event loops
# (default 2), driven by spike-bench --server (the official Rust client, 32 tasks, 300 k
# records of 1 KiB, uniform keys), then spike-bench in-process on the same file. Prints
# each phase with the server CPU it took (utime + stime from /proc/PID/stat). With
# SPIKE_WIRE_CACHE=256M both keep that post-write cache a device (default: the engine's
# 8 write blocks); a cache near the data set's size serves most reads from RAM. Needs the
# release builds and a free port 3100:
#   cargo build --release --bin spike-server --bin spike-bench
#   benches/through_the_wire.sh 2
# The file lives in a temporary directory (or $SPIKE_WIRE_DIR) and is removed at the end.
set -eu
loops=${1:-2}
bin=$(realpath "${SPIKE_BIN:-target/release}")
dir=${SPIKE_WIRE_DIR:-$(mktemp -d)}
cache=${SPIKE_WIRE_CACHE:-}
device="$dir/test.dat"
cat > "$dir/server.toml" <<EOT
listen = "127.0.0.1:3100"
threads = $loops
[[namespace]]
name = "test"
devices = ["$device"]
device_size = "4G"
format = true
durability = "buffered"
store_keys = false
${cache:+post_write_cache = \"$cache\"}
EOT
"$bin/spike-server" --config "$dir/server.toml" > "$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep 2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
ticks_per_s=$(getconf CLK_TCK)

phase() { # name, spike-bench arguments
  local name=$1; shift
  local before after
  before=$(cpu_ticks)
  "$bin/spike-bench" --server 127.0.0.1:3100 --records 300000 --threads 32 --keys uniform "$@" \
    2>/dev/null > "$dir/$name.out"
  after=$(cpu_ticks)
  echo "== through spike-server ($loops loops), $name: server CPU $(( (after - before) * 1000 / ticks_per_s )) ms"
  grep -E "^load |^  (read|update|all) " "$dir/$name.out"
}
phase load --workload c --duration 1
phase "reads (c)" --no-load --workload c --duration 20
phase "YCSB-A" --no-load --workload a --duration 20
phase "updates" --no-load --workload update=100 --duration 15
kill -TERM $server
wait $server || true

echo "== in-process, same file"
"$bin/spike-bench" --device "$device" --records 300000 --threads 32 --workload c --keys uniform \
  ${cache:+--post-write-cache "$cache"} --duration 20 2>/dev/null | grep -E "^load |^  (read|all) "
"$bin/spike-bench" --device "$device" --no-load --records 300000 --threads 32 --workload a \
  --keys uniform ${cache:+--post-write-cache "$cache"} --duration 20 2>/dev/null | grep -E "^  (read|update|all) "
