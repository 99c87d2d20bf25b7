#!/usr/bin/env bash
# ListImages over deep lineages (issue 23): a customer with 1,000 images, 936 of them made from
# the tip of a 64-deep chain of images (image from image from image ...) and the 64 of the
# chain, so that every listed image has a lineage up to 64 deep to walk (ListImages shows each
# image's inherited offer, found on its lineage). Prints, on SQLite and on PostgreSQL, the SQL
# statements one ListImages call runs (the statements sqlx logs inside that request's span) and
# its p50 and p99 latency over JSON. The issue's aim: at most 10 statements, whatever the depth
# (before the lineage became one recursive query, one query per level: ~64,000).
#
#   benches/lineage.sh [requests per measure, default 100]
#
# Needs sqlite3, psql, curl and python3, and PostgreSQL at EXTILITY_BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/test, trust authentication), where it makes a database of
# its own and drops it at the end. BIN=path/to/extility skips building the release binary (the
# statement count is the same in a debug build; the times are not).
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-100}
admin_url=${EXTILITY_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
for tool in sqlite3 psql curl python3; do
    command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-target}/release/extility
fi
bin=$BIN
dir=$(mktemp -d)
pg_db=extility_bench_lineage_$$
pg_url="${admin_url%/*}/$pg_db"
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

# The chain: image k+1 made from image k, 64 deep; then 936 images made from its tip. Ids
# follow the order made (a source is always older), as the server makes them, above the demo
# catalogue's. The same SQL on both engines.
fill_sql="
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO images (id, uuid, customer_id, name, size, created, source_image_id)
SELECT 1000 + i, 'lineage-' || CAST(i AS TEXT),
       (SELECT id FROM customers WHERE email = 'bench@example.com'),
       'image ' || CAST(i AS TEXT), 1073741824, 1700000000000 + i,
       CASE WHEN i = 1 THEN NULL WHEN i <= 64 THEN 1000 + i - 1 ELSE 1064 END
FROM n;
ANALYZE;"

source benches/lib/server.sh
SERVER_LOG=warn,extility::api=debug,sqlx::query=debug SERVER_FLAGS="--log-format text"

measure() { # engine name
    local token
    token=$(bench_token)
    URL=$url TOKEN=$token REQUESTS=$requests ENGINE=$1 LOG="$dir/err" python3 - <<'PY'
import http.client, json, os, time, urllib.parse

url = urllib.parse.urlparse(os.environ["URL"])
conn = http.client.HTTPConnection(url.hostname, url.port)
headers = {"Authorization": "Bearer " + os.environ["TOKEN"], "Content-Type": "application/json"}
log = os.environ["LOG"]


def call():
    conn.request("POST", "/api/v1/ListImages", "{}", headers)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return body


def statements():
    """The statements logged so far inside ListImages requests' spans."""
    with open(log, errors="replace") as f:
        return sum(1 for line in f if "path=/api/v1/ListImages" in line and "sqlx::query" in line)


before = statements()
images = json.loads(call())
# The log is written as the request runs: wait until it has stopped growing.
count, stable = -1, 0
while stable < 5:
    time.sleep(0.1)
    now = statements() - before
    stable = stable + 1 if now == count else 0
    count = now
# A call without paging arguments gets the first page, 1,000 images: the demo catalogue's
# blank image and 999 of the customer's.
deep = sum(1 for i in images if i["source_image_id"] is not None)
assert len(images) == 1000 and deep == 998, (len(images), deep)
for _ in range(5):
    call()
times = []
for _ in range(int(os.environ["REQUESTS"])):
    t = time.perf_counter()
    call()
    times.append((time.perf_counter() - t) * 1000)
times.sort()
p50 = times[len(times) // 2]
p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
print(f"{os.environ['ENGINE']:<10} ListImages of {len(images)} images: {count} SQL statements, "
      f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
PY
}

echo "ListImages over 1,000 images of lineages up to 64 deep, $requests requests per line, $(nproc) cores"

$bin customer add --email bench@example.com --password bench-password --data-dir "$dir/data" >/dev/null
sqlite3 "$dir/data/extility.db" "$fill_sql"
start_server "sqlite://$dir/data/extility.db"
measure sqlite
stop_server

rm -rf "$dir/data"
psql -q "$admin_url" -c "CREATE DATABASE $pg_db" >/dev/null
$bin customer add --email bench@example.com --password bench-password --data-dir "$dir/data" \
    --database-url "$pg_url" >/dev/null
psql -q "$pg_url" -c "$fill_sql" >/dev/null
start_server "$pg_url"
measure postgres
stop_server
echo "aim: at most 10 statements"
