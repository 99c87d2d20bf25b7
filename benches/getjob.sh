#!/usr/bin/env bash
# GetJob under load: requests per second and p99 latency of GetJob over JSON and over SOAP,
# next to a trivial endpoint (/health) of the same server, all in one run.
#
#   benches/getjob.sh [seconds per run, default 10] [connections, default 64]
#
# Needs wrk (Debian package wrk). Uses SQLite in a temporary data directory, or
# DATABASE_URL if set.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-64}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release --quiet
bin=target/release/extility
dir=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
db_args=()
[ -n "${DATABASE_URL:-}" ] && db_args=(--database-url "$DATABASE_URL")
$bin customer add --email bench@example.com --password bench-password --data-dir "$dir" "${db_args[@]}" >/dev/null
# One customer on many connections: the per-customer bound on calls in flight is lifted, or it
# would measure the bound.
RUST_LOG=warn $bin serve --data-dir "$dir" --listen 127.0.0.1:0 --hypervisor none \
    --max-calls-in-flight 0 "${db_args[@]}" >"$dir/out" 2>"$dir/err" &
server=$!
until grep -q "listening on" "$dir/out" 2>/dev/null; do
    kill -0 $server 2>/dev/null || { cat "$dir/err"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/.*listening on //p' "$dir/out")
auth="Authorization: Basic $(printf 'bench@example.com:bench-password' | base64 -w0)"
call() { curl -sf -H "$auth" -H "Content-Type: application/json" -X POST "$url/api/v1/$1" -d "$2"; }
server_id=$(call CreateServer '{"vdc_id":1,"vlan_id":-1,"server_name":"bench","image_id":66,"server_productoffer_id":18,"disk_productoffer_ids":[31]}' | sed 's/.*"server_id":\([0-9]*\).*/\1/')
job_id=$(call StartServer "{\"server_id\":$server_id}" | sed 's/[^0-9]//g')
call WaitForJob "{\"job_id\":$job_id,\"timeout_seconds\":10}" >/dev/null

cat >"$dir/json.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"job_id": $job_id}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "${auth#Authorization: }"
LUA
cat >"$dir/soap.lua" <<LUA
wrk.method = "POST"
wrk.body = [[<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://extility.flexiant.com" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/" SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><SOAP-ENV:Body><ns1:GetJob><job_id xsi:type="xsd:long">$job_id</job_id></ns1:GetJob></SOAP-ENV:Body></SOAP-ENV:Envelope>]]
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.headers["SOAPAction"] = "http://extility.flexiant.com#GetJob"
wrk.headers["Authorization"] = "${auth#Authorization: }"
LUA
# Check that both requests really work before measuring them.
wrk_check() { curl -sf -H "$auth" -H "Content-Type: $2" -X POST "$1" --data-binary "$3" | grep -q "$4"; }
wrk_check "$url/api/v1/GetJob" application/json "{\"job_id\": $job_id}" '"status":1'
wrk_check "$url/" text/xml "$(sed -n "s/^wrk.body = \[\[\(.*\)\]\]$/\1/p" "$dir/soap.lua")" '<status xsi:type="xsd:long">1</status>'

run() { # name, url, [script]
    local out
    out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency ${3:+-s "$3"} "$2")
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    printf '%-14s %12s req/s   p99 %8s  %s\n' "$1" "$rps" "$p99" "$errors"
    echo "$rps" >"$dir/$1.rps"
}
echo "GetJob benchmark: $connections connections, ${duration}s per run, $(nproc) cores"
run health "$url/health"
run json-GetJob "$url/api/v1/GetJob" "$dir/json.lua"
run soap-GetJob "$url/" "$dir/soap.lua"
ratio() { awk -v a="$(cat "$dir/$1.rps")" -v b="$(cat "$dir/health.rps")" 'BEGIN {printf "%.0f%%", 100 * a / b}'; }
echo "JSON GetJob: $(ratio json-GetJob) of /health (aim: 50% or more)"
echo "SOAP GetJob: $(ratio soap-GetJob) of /health (aim: 33% or more)"
