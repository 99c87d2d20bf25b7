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
#   benches/fetch.sh                  # 1 GiB image
#   SIZE_MIB=4096 benches/fetch.sh    # 4 GiB image (the RSS check of the issue)
#
# The generated image is kept in target/bench-fetch/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
cache=target/bench-fetch
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
bin=$PWD/target/release/extility

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

# The server under test, with a customer.
data=$work/data
export RUST_LOG=warn
customer=$("$bin" customer add --email bench@example.com --password bench-password --data-dir "$data")
vdc=$(echo "$customer" | sed -n 's/^vdc_id=//p')
"$bin" serve --data-dir "$data" --listen 127.0.0.1:0 --hypervisor none \
    --allow-fetch-from 127.0.0.0/8 >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
pids+=("$server_pid")
until grep -q "listening on" "$work/serve.out" 2>/dev/null; do sleep 0.1; done
api=$(sed -n 's/^extility listening on //p' "$work/serve.out")
call() {
    curl -sf -u bench@example.com:bench-password -H 'content-type: application/json' \
        -d "$2" "$api/api/v1/$1"
}
rss_before=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")

echo "image: ${SIZE_MIB} MiB, gzip'd to $((gz_bytes >> 20)) MiB; md5 $md5" >&2

t0=$(now)
md5sum "$raw" >/dev/null
t_md5=$(secs "$t0" "$(now)")

t0=$(now)
piped=$(curl -s "$url" | gzip -dc | md5sum | cut -d' ' -f1)
t_pipe=$(secs "$t0" "$(now)")
[ "$piped" = "$md5" ] || { echo "the shell pipeline computed $piped" >&2; exit 1; }

# The 10 GB disk offer holds images up to 10 GiB.
offer=30
[ "$SIZE_MIB" -le 10240 ] || { echo "SIZE_MIB must be at most 10240" >&2; exit 1; }
t0=$(now)
job=$(call FetchDisk "{\"url\": \"$url\", \"checksum\": \"$md5\", \"name\": \"bench\",
    \"disk_productoffer_id\": $offer, \"vdc_id\": $vdc, \"make_image\": false}" |
    sed 's/[^0-9]//g')
status=2
while [ "$status" != 1 ] && [ "$status" != 3 ] && [ "$status" != 4 ]; do
    result=$(call WaitForJob "{\"job_id\": $job, \"timeout_seconds\": 300}")
    status=$(echo "$result" | sed 's/.*"status":\([0-9]*\).*/\1/')
done
t_fetch=$(secs "$t0" "$(now)")
[ "$status" = 1 ] || { echo "FetchDisk failed: $result" >&2; exit 1; }
rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")

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
