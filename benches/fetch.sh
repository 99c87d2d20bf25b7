#!/usr/bin/env bash
# FetchDisk throughput, end to end, beside the shell pipeline a person would use.
#
# Generates an image of SIZE_MIB MiB (default 1024: per 4 MiB, 1 MiB of random data then
# 3 MiB of zeros, so about a quarter random), gzips it, serves it over loopback HTTP (a small
# sendfile server, so the server costs next to nothing), and times in the same run:
#   - `md5sum` of the uncompressed file (page cache warm): the ceiling on this machine;
#   - `curl -s URL | gzip -dc | md5sum`;
#   - FetchDisk with the MD5, from the API call until the job has succeeded (download,
#     gunzip, MD5, thin write, disk made).
# It prints MB/s (of uncompressed image) for each, the ratios, and the server's peak RSS
# (VmHWM) after the fetch.
#
# Then the same image as qcow2 (`qemu-img convert -O qcow2`, gzipped too), fetched by the
# same server with the qcow2 file's MD5: download, gunzip, MD5, inspection and conversion into
# the raw disk (`qemu-img convert -f qcow2 -O raw`). It prints both times and their ratio (the
# issue's aim: qcow2 at most 1.5 times raw).
#
# Then the same server fetches a decompression bomb: 1.2 GB of one repeated byte in 170 KiB of
# xz whose header asks for a 1.5 GiB dictionary (what `xz --lzma2=dict=1536MiB` writes; made
# here with `xz -0` and the dictionary byte of its block header rewritten, since an encoder
# with that dictionary needs many GiB). The job must fail with DECOMPRESSION_LIMIT and the
# server's peak RSS stay where it was. With HOSTILE_UNLIMITED=1 a second server, with
# `--max-decompression-memory 2G`, fetches it too: what the bomb costs without the limit.
#
#   benches/fetch.sh                      # 1 GiB image
#   SIZE_MIB=4096 benches/fetch.sh        # 4 GiB image (the RSS check of the issue)
#   HOSTILE_UNLIMITED=1 benches/fetch.sh  # and the bomb without a limit (1.2 GB of RSS)
#
# The generated files are kept in target/bench-fetch/ (under $CARGO_TARGET_DIR when it is
# set) for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
target=${CARGO_TARGET_DIR:-$PWD/target}
cache=$target/bench-fetch
work=$(mktemp -d /tmp/extility-fetch-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "building extility (release)..." >&2
cargo build --release --quiet
bin=$target/release/extility

mkdir -p "$cache"
raw=$cache/image-${SIZE_MIB}M.raw
gz=$raw.gz
bytes=$((SIZE_MIB << 20))
if [ ! -s "$gz" ] || [ "$(stat -c %s "$raw" 2>/dev/null || echo 0)" != "$bytes" ]; then
    echo "generating a ${SIZE_MIB} MiB image (1/4 random) and gzipping it..." >&2
    for ((i = 0; i < SIZE_MIB / 4; i++)); do
        head -c 1M /dev/urandom
        head -c 3M /dev/zero
    done >"$raw"
    gzip -c "$raw" >"$gz"
fi
qcow2_gz=$cache/image-${SIZE_MIB}M.qcow2.gz
if [ ! -s "$qcow2_gz" ] || [ "$qcow2_gz" -ot "$raw" ]; then
    echo "converting it to qcow2 and gzipping that..." >&2
    qemu-img convert -f raw -O qcow2 "$raw" "$cache/image-${SIZE_MIB}M.qcow2"
    gzip -c "$cache/image-${SIZE_MIB}M.qcow2" >"$qcow2_gz"
fi
qcow2_md5=$(gzip -dc "$qcow2_gz" | md5sum | cut -d' ' -f1)
bomb=$cache/bomb-1536MiB-dictionary.xz
if [ ! -s "$bomb" ]; then
    echo "making the decompression bomb..." >&2
    head -c 1200000000 /dev/zero | tr '\0' 'x' | xz -0 -T1 -c >"$bomb.tmp"
    # The block header (after the 12-byte stream header): its size, flags, LZMA2 (0x21), one
    # property byte, the dictionary size (37 is 1.5 GiB), padding, CRC32.
    python3 - "$bomb.tmp" <<'EOF'
import struct, sys, zlib
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
size = (data[12] + 1) * 4
header = data[12:12 + size]
assert header[1] == 0 and header[2:4] == b"\x21\x01", header.hex()
header[4] = 37
struct.pack_into("<I", header, size - 4, zlib.crc32(bytes(header[:size - 4])))
data[12:12 + size] = header
open(path, "wb").write(data)
EOF
    xz -lvv "$bomb.tmp" | grep -q -- '--lzma2=dict=1536MiB'
    mv "$bomb.tmp" "$bomb"
fi
bomb_bytes=$(stat -c %s "$bomb")

md5=$(md5sum "$raw" | cut -d' ' -f1)
gz_bytes=$(stat -c %s "$gz")
cat "$raw" "$gz" >/dev/null # warm the page cache for every contender alike

# A loopback HTTP server that sends files with sendfile(2).
python3 - "$cache" >"$work/http.out" <<'EOF' &
import http.server, os, sys
root = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path = os.path.join(root, os.path.basename(self.path))
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                offset += os.sendfile(self.connection.fileno(), f.fileno(), offset, size - offset)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
EOF
pids+=($!)
until [ -s "$work/http.out" ]; do sleep 0.1; done
url="http://127.0.0.1:$(head -n1 "$work/http.out")/$(basename "$gz")"

# A server under test with a customer: `serve NAME [ARGS...]` sets server_pid, api and vdc.
export RUST_LOG=warn
serve() {
    local name=$1 data=$work/data-$1 customer
    shift
    customer=$("$bin" customer add --email bench@example.com --password bench-password \
        --data-dir "$data")
    vdc=$(echo "$customer" | sed -n 's/^vdc_id=//p')
    "$bin" serve --data-dir "$data" --listen 127.0.0.1:0 --hypervisor none \
        --allow-fetch-from 127.0.0.0/8 "$@" >"$work/serve-$name.out" 2>"$work/serve-$name.log" &
    server_pid=$!
    pids+=("$server_pid")
    until grep -q "listening on" "$work/serve-$name.out" 2>/dev/null; do sleep 0.1; done
    api=$(sed -n 's/^extility listening on //p' "$work/serve-$name.out")
}
call() {
    curl -sf -u bench@example.com:bench-password -H 'content-type: application/json' \
        -d "$2" "$api/api/v1/$1"
}
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$server_pid/status"; }
# `fetch_disk URL [MD5]`: FetchDisk into the 10 GB disk offer (images up to 10 GiB), waiting
# for the job; sets status (1 succeeded, 3 failed) and result (the job).
offer=30
fetch_disk() {
    local checksum=null job
    [ -z "${2:-}" ] || checksum="\"$2\""
    job=$(call FetchDisk "{\"url\": \"$1\", \"checksum\": $checksum, \"name\": \"bench\",
        \"disk_productoffer_id\": $offer, \"vdc_id\": $vdc, \"make_image\": false}" |
        sed 's/[^0-9]//g')
    status=2
    while [ "$status" != 1 ] && [ "$status" != 3 ] && [ "$status" != 4 ]; do
        result=$(call WaitForJob "{\"job_id\": $job, \"timeout_seconds\": 300}")
        status=$(echo "$result" | sed 's/.*"status":\([0-9]*\).*/\1/')
    done
}
error_code() { echo "$result" | sed -n 's/.*"error_code":"\([A-Z_]*\)".*/\1/p'; }

serve main
rss_before=$(peak_rss_kib)

echo "image: ${SIZE_MIB} MiB, gzip'd to $((gz_bytes >> 20)) MiB; md5 $md5" >&2

t0=$(now)
md5sum "$raw" >/dev/null
t_md5=$(secs "$t0" "$(now)")

t0=$(now)
piped=$(curl -s "$url" | gzip -dc | md5sum | cut -d' ' -f1)
t_pipe=$(secs "$t0" "$(now)")
[ "$piped" = "$md5" ] || { echo "the shell pipeline computed $piped" >&2; exit 1; }

[ "$SIZE_MIB" -le 10240 ] || { echo "SIZE_MIB must be at most 10240" >&2; exit 1; }
t0=$(now)
fetch_disk "$url" "$md5"
t_fetch=$(secs "$t0" "$(now)")
[ "$status" = 1 ] || { echo "FetchDisk failed: $result" >&2; exit 1; }
rss_peak=$(peak_rss_kib)

# The same image as qcow2: fetched, inspected, converted.
qcow2_url="http://127.0.0.1:$(head -n1 "$work/http.out")/$(basename "$qcow2_gz")"
cat "$qcow2_gz" >/dev/null
t0=$(now)
fetch_disk "$qcow2_url" "$qcow2_md5"
t_qcow2=$(secs "$t0" "$(now)")
[ "$status" = 1 ] || { echo "FetchDisk of the qcow2 image failed: $result" >&2; exit 1; }
rss_qcow2=$(peak_rss_kib)

# The decompression bomb, on the same server (the default limit, 256 MiB).
bomb_url="http://127.0.0.1:$(head -n1 "$work/http.out")/$(basename "$bomb")"
t0=$(now)
fetch_disk "$bomb_url"
t_bomb=$(secs "$t0" "$(now)")
[ "$status" = 3 ] && [ "$(error_code)" = DECOMPRESSION_LIMIT ] ||
    { echo "the bomb did not fail with DECOMPRESSION_LIMIT: $result" >&2; exit 1; }
rss_bomb=$(peak_rss_kib)

fetch_mbps=$(mbps "$bytes" "$t_fetch")
pipe_mbps=$(mbps "$bytes" "$t_pipe")
md5_mbps=$(mbps "$bytes" "$t_md5")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
printf '%-40s %8s s %8s MB/s\n' "md5sum (uncompressed file)" "$t_md5" "$md5_mbps"
printf '%-40s %8s s %8s MB/s\n' "curl -s URL | gzip -dc | md5sum" "$t_pipe" "$pipe_mbps"
printf '%-40s %8s s %8s MB/s\n' "FetchDisk (end to end)" "$t_fetch" "$fetch_mbps"
echo
echo "FetchDisk / shell pipeline: $(ratio "$t_pipe" "$t_fetch")x (aim: >= 1.5)"
echo "FetchDisk / md5sum:         $(ratio "$t_md5" "$t_fetch")x (aim: >= 0.80)"
echo "server peak RSS (VmHWM):    $((rss_peak / 1024)) MiB (before the fetch: $((rss_before / 1024)) MiB; aim: < 64 MiB)"
echo
printf '%-40s %8s s\n' "FetchDisk, raw image (gzip'd)" "$t_fetch"
printf '%-40s %8s s\n' "FetchDisk, same image as qcow2 (gzip'd)" "$t_qcow2"
echo "qcow2 / raw:                $(ratio "$t_qcow2" "$t_fetch")x (aim: <= 1.5); peak RSS after it $((rss_qcow2 / 1024)) MiB"
echo
echo "decompression bomb ($((bomb_bytes >> 10)) KiB of xz: 1.2 GB of one byte, 1.5 GiB dictionary):"
echo "  DECOMPRESSION_LIMIT after ${t_bomb} s; server peak RSS $((rss_bomb / 1024)) MiB (aim: unchanged from after the qcow2 fetch, $((rss_qcow2 / 1024)) MiB)"
if [ "${HOSTILE_UNLIMITED:-0}" = 1 ]; then
    serve unlimited --max-decompression-memory 2G
    rss_before=$(peak_rss_kib)
    t0=$(now)
    fetch_disk "$bomb_url"
    t_bomb=$(secs "$t0" "$(now)")
    [ "$status" = 1 ] || { echo "the bomb failed without the limit: $result" >&2; exit 1; }
    echo "  with --max-decompression-memory 2G it decodes in ${t_bomb} s; server peak RSS" \
        "$(($(peak_rss_kib) / 1024)) MiB (before: $((rss_before / 1024)) MiB)"
fi
