#!/usr/bin/env bash
# RBD storage beside file storage, in one run, on a throwaway Ceph cluster of one monitor and
# one memstore OSD (scripts/ceph-test-cluster.sh, the test suite's; a pool of 32 PGs):
#   (a) FetchDisk with make_image=true of one image of SIZE_MIB MiB (default 1024: per 4 MiB,
#       1 MiB of random data then 3 MiB of zeros, as benches/fetch.sh makes it, gzip'd and
#       served over loopback HTTP with its MD5) into a server on files and into a server on
#       RBD, each timed from the API call until the job has succeeded; the ratio (aim: at most
#       1.15x). While each fetch runs, the server's data directory is watched every 50 ms:
#       the most it grew (du) and the most the free space of its file system dropped (df;
#       other work on the machine moves this one too). On RBD a raw image streams into its
#       staging image: the aim is no growth at all. Then `rbd du` of the image's RBD volume
#       (10 GiB, the disk offer's size): it counts whole 4 MiB objects, and every 4 MiB of
#       this image holds data, so it shows the image's size, nothing beyond it;
#   (b) CreateServer from that image, REPS times (default 50) on each server, after one
#       call not counted (on RBD it takes the image's protected snapshot, so the REPS are
#       from an image cloned before): the call makes the boot disk (BOOT_OFFER, default 31,
#       the 20 GB disk offer), on RBD a clone of the image's snapshot grown to 20 GB, on files
#       a qcow2 thin clone. Its p50, p99 and max, as curl times the request (aim on RBD: p50
#       under 25 ms, p99 under 60 ms), and the CPU time the REPS calls took, per call, in the
#       server's process with the processes it ran (on files, `qemu-img`) and in the OSD
#       (on RBD): what a call costs whatever else the machine runs, where its latency also
#       counts the time it waited for a core (the load average is printed at the start and
#       at the end of the run).
# Both servers run on SQLite with `--hypervisor none --network user` (no QEMU, and neither
# binds the host's metadata port, so the two can run side by side). Needs curl, jq,
# ceph-mon, ceph-osd and ceph-common (librbd1).
#
#   benches/rbd.sh                    # 1 GiB image, 50 CreateServer calls each
#   SIZE_MIB=4096 REPS=100 benches/rbd.sh
#   EXTILITY_BIN=/tmp/extility benches/rbd.sh   # that binary, built before, instead of building
#
# The generated image is kept in target/bench-fetch/ (under $CARGO_TARGET_DIR when it is set),
# shared with benches/fetch.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
REPS=${REPS:-50}
BOOT_OFFER=${BOOT_OFFER:-31}
[ "$SIZE_MIB" -le 10240 ] || { echo "SIZE_MIB must be at most 10240" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$PWD/target}
cache=$target/bench-fetch
work=$(mktemp -d /tmp/extility-rbd-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

if [ -n "${EXTILITY_BIN:-}" ]; then
    bin=$EXTILITY_BIN # a release build made before (several runs of one build)
else
    echo "building extility (release)..." >&2
    cargo build --release --quiet
    bin=$target/release/extility
fi

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

# The cluster, and the pool. setpriv: the cluster dies with this script even on SIGKILL (and
# the script's daemons with it); the trap stops it otherwise.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "starting a Ceph cluster..." >&2
setpriv --pdeathsig KILL scripts/ceph-test-cluster.sh "$work/ceph" \
    >"$work/ceph.out" 2>"$work/ceph.err" &
cluster_pid=$!
pids+=("$cluster_pid")
until grep -q '^ready ' "$work/ceph.out" 2>/dev/null; do
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/ceph.err" >&2; exit 1; }
    sleep 0.2
done
conf=$(sed -n 's/^ready //p' "$work/ceph.out")
osd_pid=$(pgrep -f "^ceph-osd -i 0 --conf $conf") # the cluster's one OSD
pool=bench
ceph_() { timeout 120 ceph --conf "$conf" "$@"; }
rbd_() { timeout 300 rbd --conf "$conf" "$@"; }
ceph_ osd pool create "$pool" 32 32 >/dev/null 2>&1
rbd_ pool init "$pool"

# A loopback HTTP server that sends files with sendfile(2), as in benches/fetch.sh.
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

# `serve NAME [ARGS...]`: a server with a customer of its own; sets api, vdc and
# server_pid.
export RUST_LOG=warn
serve() {
    local name=$1 data=$work/data-$1 customer pid
    shift
    customer=$("$bin" customer add --email bench@example.com --password bench-password \
        --data-dir "$data")
    vdc=$(echo "$customer" | sed -n 's/^vdc_id=//p')
    "$bin" serve --data-dir "$data" --listen 127.0.0.1:0 --hypervisor none --network user \
        --allow-fetch-from 127.0.0.0/8 "$@" >"$work/serve-$name.out" 2>"$work/serve-$name.log" &
    pid=$!
    pids+=("$pid")
    until grep -q "listening on" "$work/serve-$name.out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/serve-$name.log" >&2; exit 1; }
        sleep 0.1
    done
    api=$(sed -n 's/^extility listening on //p' "$work/serve-$name.out")
    server_pid=$pid
}
# `cpu_ms PID`: the CPU time (user and system) process PID and the children it waited for
# (the server's `qemu-img` runs) have used, in milliseconds.
hz=$(getconf CLK_TCK)
cpu_ms() { awk -v hz="$hz" '{ printf "%d", ($14 + $15 + $16 + $17) * 1000 / hz }' "/proc/$1/stat"; }
call() {
    curl -sf -u bench@example.com:bench-password -H 'content-type: application/json' \
        -d "$2" "$api/api/v1/$1"
}
# `watch_data DIR OUT`: until sent TERM, every 50 ms, the bytes the files under DIR take on
# disk (as du counts them) and the free space of its file system (as df); then writes
# "FIRST_SIZE MAX_SIZE FIRST_FREE MIN_FREE" to OUT. One process: a du and a df run every
# 50 ms would take a tenth of a core from what is measured.
# Run in the background (`exec`: the job is the watcher itself); it creates OUT.ready once it
# has its first sample.
watch_data() {
    exec python3 - "$1" "$2" <<'EOF'
import os, signal, sys, time
root, out = sys.argv[1], sys.argv[2]
def used():
    total, seen = 0, set()
    for top, dirs, files in os.walk(root):
        for name in [top] + [os.path.join(top, f) for f in files]:
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
def free():
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize
first_size, first_free = used(), free()
max_size, min_free = first_size, first_free
open(out + ".ready", "w").close()
def stop(*_):
    with open(out, "w") as f:
        f.write(f"{first_size} {max_size} {first_free} {min_free}\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    max_size, min_free = max(max_size, used()), min(min_free, free())
    time.sleep(0.05)
EOF
}
# `fetch_image DATA_DIR`: FetchDisk of the image as a private image of the 10 GB disk offer
# (images up to 10 GiB), waiting for the job, with DATA_DIR watched; sets image (its id),
# t_fetch (seconds), grew (the most the data directory grew, bytes) and dropped (the most
# its file system's free space dropped, bytes).
fetch_image() {
    local data=$1 job result status=2 t0 watcher size0 max_size free0 min_free
    cat "$gz" >/dev/null # warm the page cache for both servers alike
    rm -f "$work/watch.out" "$work/watch.out.ready"
    watch_data "$data" "$work/watch.out" &
    watcher=$!
    until [ -e "$work/watch.out.ready" ]; do sleep 0.02; done
    t0=$(now)
    job=$(call FetchDisk "{\"url\": \"$url\", \"checksum\": \"$md5\", \"name\": \"bench\",
        \"disk_productoffer_id\": 30, \"vdc_id\": $vdc, \"make_image\": true}" | jq .job_id)
    while [ "$status" != 1 ] && [ "$status" != 3 ] && [ "$status" != 4 ]; do
        result=$(call WaitForJob "{\"job_id\": $job, \"timeout_seconds\": 300}")
        status=$(jq .status <<<"$result")
    done
    t_fetch=$(secs "$t0" "$(now)")
    kill -TERM "$watcher"
    wait "$watcher" || true
    [ "$status" = 1 ] || { echo "FetchDisk failed: $result" >&2; exit 1; }
    image=$(jq .item_id <<<"$result")
    read -r size0 max_size free0 min_free <"$work/watch.out"
    grew=$((max_size > size0 ? max_size - size0 : 0))
    dropped=$((free0 > min_free ? free0 - min_free : 0))
}
# `create_servers`: one CreateServer call from the image, not counted (on RBD it takes the
# image's snapshot), then REPS; sets first (the uncounted call's seconds), p50, p99 and max
# (seconds of each request, as curl measures it), and cpu_server and cpu_osd (milliseconds of
# CPU per counted call in the server's process and in the OSD).
create_servers() {
    local i out times=() server0 osd0
    for ((i = 0; i <= REPS; i++)); do
        if ((i == 1)); then
            server0=$(cpu_ms "$server_pid")
            osd0=$(cpu_ms "$osd_pid")
        fi
        out=$(curl -sf -u bench@example.com:bench-password -H 'content-type: application/json' \
            -w '\n%{time_total}' -d "{\"vdc_id\": $vdc, \"vlan_id\": -1,
            \"server_name\": \"b$i\", \"image_id\": $image, \"server_productoffer_id\": 17,
            \"disk_productoffer_ids\": [$BOOT_OFFER]}" "$api/api/v1/CreateServer") ||
            { echo "CreateServer failed" >&2; exit 1; }
        times+=("$(tail -n1 <<<"$out")")
    done
    cpu_server=$(awk -v a="$server0" -v b="$(cpu_ms "$server_pid")" -v n="$REPS" \
        'BEGIN { printf "%.1f", (b - a) / n }')
    cpu_osd=$(awk -v a="$osd0" -v b="$(cpu_ms "$osd_pid")" -v n="$REPS" \
        'BEGIN { printf "%.1f", (b - a) / n }')
    first=${times[0]}
    read -r p50 p99 max < <(printf '%s\n' "${times[@]:1}" | sort -g |
        awk '{ t[NR] = $1 } END {
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1
            print t[int((NR + 1) / 2)], t[i99], t[NR] }')
}

echo "image: ${SIZE_MIB} MiB, gzip'd to $(($(stat -c %s "$gz") >> 20)) MiB; md5 $md5" >&2

# (a) and (b) on files...
serve files
fetch_image "$work/data-files"
fetch_files=("$t_fetch" "$grew" "$dropped")
create_servers
cs_files=("$p50" "$p99" "$max" "$first" "$cpu_server" "$cpu_osd")

# ... and on RBD.
serve rbd --storage rbd --rbd-pool "$pool" --ceph-conf "$conf"
[ -z "$(rbd_ ls "$pool")" ] || { echo "the pool is not empty" >&2; exit 1; }
fetch_image "$work/data-rbd"
fetch_rbd=("$t_fetch" "$grew" "$dropped")
volume=$(rbd_ ls "$pool") # the image's volume, the pool's only image
read -r du_volume size_volume < <(rbd_ du --format json "$pool/$volume" |
    jq -r '.images[0] | "\(.used_size) \(.provisioned_size)"')
create_servers
cs_rbd=("$p50" "$p99" "$max" "$first" "$cpu_server" "$cpu_osd")
clones=$(rbd_ ls "$pool" | wc -l)

ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
echo
echo "FetchDisk of a ${SIZE_MIB} MiB image (make_image=true), API call to job success:"
printf '  %-6s %8s s   data directory grew at most %5s MiB; free space dropped at most %5s MiB\n' \
    files "${fetch_files[0]}" "$(mib "${fetch_files[1]}")" "$(mib "${fetch_files[2]}")" \
    RBD "${fetch_rbd[0]}" "$(mib "${fetch_rbd[1]}")" "$(mib "${fetch_rbd[2]}")"
echo "  RBD / files: $(ratio "${fetch_rbd[0]}" "${fetch_files[0]}")x (aim: at most 1.15x);" \
    "rbd du of the image's volume: $(mib "$du_volume") MiB used of $(mib "$size_volume") MiB"
echo
echo "CreateServer from that image, boot disk offer $BOOT_OFFER, $REPS calls each after a first (ms;"
echo "CPU: per counted call, in the server's process with its qemu-img runs, and in the OSD, whose idle upkeep is in it):"
printf '  %-8s %8s %8s %8s %8s %11s %8s\n' "" p50 p99 max first "CPU server" OSD
for store in files rbd; do
    if [ $store = files ]; then t=("${cs_files[@]}"); else t=("${cs_rbd[@]}"); fi
    printf '  %-8s %8s %8s %8s %8s %11s %8s\n' "$store" "$(ms "${t[0]}")" "$(ms "${t[1]}")" \
        "$(ms "${t[2]}")" "$(ms "${t[3]}")" "${t[4]}" "${t[5]}"
done
echo "  RBD aim: p50 under 25 ms, p99 under 60 ms; the pool holds $clones images (the image and its clones)"
echo "load average: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(nproc) cores"
