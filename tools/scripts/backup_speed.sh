#!/bin/bash
# Measures spike-backup against fio, dd and qemu-img on the same device, in paired rounds
# (each tool in turn, so that they share the machine's mood), and prints one line per round.
#
#   tools/scripts/backup_speed.sh DEVICE [ROUNDS] [IMAGE_DIR]
#
# DEVICE: a Spike device or file nothing else has open (make one with
#   cargo run --release -p spike-tools --example fill -- /path/dev.img 2048 1024 fill 75
#   cargo run --release -p spike-tools --example fill -- /path/dev.img 2048 1024 change 30).
# IMAGE_DIR (default /dev/shm) receives the image, dd's and qemu-img's copies; each is
# removed after its run. Needs fio, qemu-img and a release build (cargo build --release).
# Rates are MB/s: fio, dd and verify over the bytes they read, spike-backup over the bytes it
# read (headers and blocks in use), qemu-img over the file's size (it skips holes).
set -euo pipefail
dev=${1:?usage: backup_speed.sh DEVICE [ROUNDS] [IMAGE_DIR]}
rounds=${2:-5}
out=${3:-/dev/shm}
bin=$(dirname "$0")/../../target/release/spike-backup
size=$(stat -L -c %s "$dev")
rate() { python3 -c "print(round($1 / ($3 - $2) / 1e6))"; }
for _ in $(seq 1 "$rounds"); do
  rm -f "$out/speed-full.img" "$out/speed-dd.raw" "$out/speed-q.raw"
  fio=$(fio --name=seq --filename="$dev" --rw=read --bs=1M --direct=1 --ioengine=io_uring \
    --iodepth=8 --readonly --output-format=terse 2>/dev/null | awk -F';' '{printf "%.0f", $7*1024/1e6}')
  backup=$("$bin" full --device "$dev" --out "$out/speed-full.img" 2>&1 | grep -o '([0-9.]* MB/s)' | tr -d '(MB/s) ')
  verify=$("$bin" verify "$out/speed-full.img" --device "$dev" 2>&1 | grep 'match the images' \
    | grep -o '[0-9.]* MB/s' | tr -d 'MB/s ')
  rm -f "$out/speed-full.img"
  t0=$(date +%s.%N); dd if="$dev" of="$out/speed-dd.raw" bs=1M iflag=direct status=none; t1=$(date +%s.%N)
  rm -f "$out/speed-dd.raw"
  t2=$(date +%s.%N); qemu-img convert -T none -O raw "$dev" "$out/speed-q.raw"; t3=$(date +%s.%N)
  rm -f "$out/speed-q.raw"
  echo "fio $fio backup $backup verify $verify dd $(rate "$size" "$t0" "$t1") qemu-img $(rate "$size" "$t2" "$t3")"
done
