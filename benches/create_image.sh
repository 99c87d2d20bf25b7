#!/usr/bin/env bash
# CreateImage cost against the data a disk holds: makes 20 GB disks holding 0, 64, 256 and
# 1024 MiB of data (in 64 MiB pieces spread over the disk), and times CreateImage + WaitForJob
# for each, with the space the image takes. Time and space should follow the data, not the
# 20 GB. Needs curl, jq and qemu-utils. Usage: benches/create_image.sh [MiB ...]
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-0 64 256 1024}")
cargo build --release -q
bin=$PWD/target/release/extility
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
data=$dir/data
"$bin" customer add --email bench@example.com --password bench-password --data-dir "$data" >/dev/null
"$bin" serve --listen 127.0.0.1:0 --data-dir "$data" --hypervisor none >"$dir/out" 2>"$dir/log" &
pid=$!
until grep -q "listening on" "$dir/out" 2>/dev/null; do
    kill -0 "$pid" || { cat "$dir/log"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/^extility listening on //p' "$dir/out")
api() {
    curl -sf -u bench@example.com:bench-password -H 'content-type: application/json' \
        -X POST "$url/api/v1/$1" -d "$2"
}
vdc=$(api ListVDCs '{}' | jq '.[0].vdc_id')
printf '%10s %12s %16s\n' "data MiB" "seconds" "image MiB on disk"
for mb in ${sizes[*]}; do
    before=$(ls "$data/volumes")
    disk=$(api CreateDisk "{\"vdc_id\":$vdc,\"name\":\"d$mb\",\"disk_productoffer_id\":31,\"image_id\":0}" \
        | jq .disk_id)
    file=$data/volumes/$(comm -13 <(echo "$before") <(ls "$data/volumes"))
    for ((i = 0; i < mb / 64; i++)); do
        dd if=/dev/urandom of="$file" bs=1M count=64 seek=$((i * 300)) conv=notrunc status=none
    done
    start=$(date +%s.%N)
    job=$(api CreateImage "{\"disk_id\":$disk,\"name\":\"i$mb\",\"generate_password\":false}" | jq .job_id)
    result=$(api WaitForJob "{\"job_id\":$job,\"timeout_seconds\":300}")
    end=$(date +%s.%N)
    [ "$(jq .status <<<"$result")" = 1 ] || { echo "CreateImage failed: $result"; exit 1; }
    allocated=$(du -m "$(ls -t "$data"/volumes/*.raw | head -n1)" | cut -f1) # the image's copy
    printf '%10s %12.3f %16s\n' "$mb" "$(echo "$end - $start" | bc)" "$allocated"
done
