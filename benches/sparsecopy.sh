#!/usr/bin/env bash
# Compares sparsecopy with `cp --sparse=always` and `dd conv=sparse` on the same generated
# 1 GiB image (mostly zeros, with 64 MiB of random data in 1 MiB runs and scattered 4 KiB
# blocks), in one run. Each tool copies two versions of it: fully allocated (every zero is on
# disk, so zero detection is what counts) and sparse (zeros are holes, so reading only the
# data is what counts). The page cache is warm; each copy runs RUNS times and the best counts.
#
#   benches/sparsecopy.sh            # files in a temporary folder under $TMPDIR
#   BENCH_DIR=/mnt/scratch RUNS=5 benches/sparsecopy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SIZE_MIB=1024
cargo build --release --quiet --bin sparsecopy
SPARSECOPY=$PWD/target/release/sparsecopy

dir=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/sparsecopy-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cd "$dir"

echo "generating a ${SIZE_MIB} MiB image in $dir ..."
dd if=/dev/zero of=allocated.img bs=1M count=$SIZE_MIB status=none
for i in $(seq 0 63); do # 64 runs of 1 MiB of random data, spread over the image
    dd if=/dev/urandom of=allocated.img bs=1M count=1 seek=$(( (i * 16 + i * 7 % 13) % SIZE_MIB )) \
        conv=notrunc status=none
done
# 256 lone 4 KiB blocks: zero detection must work block by block, not only in large runs.
head -c $((256 * 4096)) /dev/urandom > blocks
awk -v n=256 -v blocks=$((SIZE_MIB * 256)) 'BEGIN { for (i = 0; i < n; i++) print (i * 1009 * 97) % blocks, i }' |
while read -r block i; do
    dd if=blocks of=allocated.img bs=4096 count=1 skip="$i" seek="$block" conv=notrunc status=none
done
rm blocks
cp --sparse=always allocated.img sparse.img
sync

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
allocated() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }

declare -A best
run() { # name source command...
    local name=$1 src=$2
    shift 2
    local t0 t1 secs fastest=""
    for _ in $(seq "$RUNS"); do
        rm -f out.img
        cat "$src" > /dev/null # warm cache, the same for every tool
        t0=$(date +%s%N)
        "$@" > /dev/null 2>&1
        t1=$(date +%s%N)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
        if [ -z "$fastest" ] || awk -v a="$secs" -v b="$fastest" 'BEGIN { exit !(a < b) }'; then
            fastest=$secs
        fi
    done
    cmp -s "$src" out.img || { echo "$name: the copy of $src differs!" >&2; exit 1; }
    local bytes
    bytes=$(stat -c %s "$src")
    printf "%-24s %-14s %8s s %10s MB/s %12s MB allocated\n" "$name" "$src" "$fastest" \
        "$(awk -v b="$bytes" -v s="$fastest" 'BEGIN { printf "%.0f", b / 1e6 / s }')" \
        "$(mb "$(allocated out.img)")"
    best["$name/$src"]=$fastest
}

printf "%-24s %-14s %10s %15s %23s\n" tool source time speed "output"
for src in allocated.img sparse.img; do
    run "sparsecopy" "$src" "$SPARSECOPY" -q "$src" out.img
    run "cp --sparse=always" "$src" cp --sparse=always "$src" out.img
    run "dd conv=sparse bs=1M" "$src" dd if="$src" of=out.img bs=1M conv=sparse status=none
done

echo
for src in allocated.img sparse.img; do
    ours=${best["sparsecopy/$src"]}
    other=$(printf "%s\n%s\n" "${best["cp --sparse=always/$src"]}" "${best["dd conv=sparse bs=1M/$src"]}" | sort -g | head -n1)
    awk -v o="$ours" -v t="$other" -v s="$src" \
        'BEGIN { printf "%s: sparsecopy %.3f s, fastest other %.3f s: %.2fx\n", s, o, t, t / o }'
done
