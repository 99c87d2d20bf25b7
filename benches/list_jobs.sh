#!/usr/bin/env bash
# ListJobs with a big account (issue 13): p50 and p99 latency of ListJobs over JSON, one
# request at a time, for a customer with 100,000 jobs, on SQLite and on PostgreSQL. Measured:
# the first page as a call without paging arguments gets it (the newest 1,000 jobs), the first
# page of 50 a panel asks for, the same filtered by status and by type, and a page of 50 deep
# in the list (below the middle job). The issue's aim: p99 under 20 ms.
#
#   benches/list_jobs.sh [jobs, default 100000] [requests per measure, default 300]
#
# Needs sqlite3, psql (Debian packages sqlite3, postgresql-client), curl and python3, and
# PostgreSQL at EXTILITY_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test,
# trust authentication), where it makes a database of its own and drops it at the end. Calls
# carry an authentication token (one SHA-256 and one indexed lookup each, as scripts send),
# so no password check is measured. Builds the release binary (in $CARGO_TARGET_DIR if set).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-100000}
requests=${2:-300}
admin_url=${EXTILITY_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
for tool in sqlite3 psql curl python3; do
    command -v $tool >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/extility
dir=$(mktemp -d)
pg_db=extility_bench_list_jobs_$$
pg_url="${admin_url%/*}/$pg_db"
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Fills the customer's account with $jobs finished jobs of every kind, one in ten failed, as
# a year of a busy account leaves them, interleaved with as many jobs of another customer (so
# that the planner sees a database of several accounts, and the account's ids are not one
# run). The same SQL on both engines.
fill_sql="
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2 * $jobs)
INSERT INTO jobs (uuid, customer_id, job_type, name, status, item_type, item_id, params,
                  phase, progress, bytes_done, bytes_total, error_code, error_message,
                  attempts, lane, created, started, finished)
SELECT 'bench-' || CAST(i AS TEXT),
       (SELECT id FROM customers
        WHERE email = CASE i % 2 WHEN 1 THEN 'bench@example.com' ELSE 'other@example.com' END),
       CASE i % 5 WHEN 0 THEN 'FetchDisk' WHEN 1 THEN 'CreateImage' WHEN 2 THEN 'StartServer'
                  WHEN 3 THEN 'StopServer' ELSE 'DestroyServer' END,
       'Fetch disk \"disk ' || CAST(i AS TEXT) || '\" from http://images.example.com/debian-12.qcow2',
       CASE WHEN i % 20 = 7 THEN 3 ELSE 1 END, 'disk', i,
       '{\"name\":\"disk\",\"disk_size\":21474836480}', 'done', 100, 1073741824, 1073741824,
       CASE WHEN i % 20 = 7 THEN 'FETCH_FAILED' END,
       CASE WHEN i % 20 = 7 THEN 'the source answered 404 Not Found' END,
       1, 'long', 1700000000000 + CAST(i AS BIGINT) * 60000,
       1700000000000 + CAST(i AS BIGINT) * 60000 + 1000,
       1700000000000 + CAST(i AS BIGINT) * 60000 + 30000
FROM n;
ANALYZE;"

source benches/lib/server.sh

measure() { # engine name
    local token
    token=$(bench_token)
    URL=$url TOKEN=$token REQUESTS=$requests ENGINE=$1 python3 - <<'PY'
import http.client, json, os, time, urllib.parse

url = urllib.parse.urlparse(os.environ["URL"])
conn = http.client.HTTPConnection(url.hostname, url.port)
headers = {"Authorization": "Bearer " + os.environ["TOKEN"], "Content-Type": "application/json"}
requests = int(os.environ["REQUESTS"])


def call(args):
    """The answer's bytes (the time measured is the server's and the transfer's, not the
    client's parsing)."""
    conn.request("POST", "/api/v1/ListJobs", json.dumps(args), headers)
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, body
    return body


newest = json.loads(call({"page_size": 1}))[0]["job_id"]
middle = newest // 2
cases = [
    ("first page (1,000)", {}, 1000),
    ("first page of 50", {"page_size": 50}, 50),
    ("50, status 3", {"page_size": 50, "status": 3}, 50),
    ("50, CreateImage", {"page_size": 50, "job_type": "CreateImage"}, 50),
    ("50 below the middle", {"page_size": 50, "before_id": middle}, 50),
]
for name, args, expected in cases:
    assert len(json.loads(call(args))) == expected, name
    for _ in range(10):  # warm up
        call(args)
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        call(args)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{os.environ['ENGINE']:<10} {name:<22} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
PY
}

plans() { # engine: the plans of the page queries (as src/jobs/queue.rs writes them), to see
    # the indexes in use. (Where the account holds half the jobs, PostgreSQL may rightly walk
    # the primary key backwards instead: it meets the account's newest jobs as soon.)
    local sql="SELECT * FROM jobs WHERE customer_id = 1 AND id < 9223372036854775807" # bench@
    for where in "" " AND status = 3" " AND job_type = 'CreateImage'"; do
        local query="$sql$where ORDER BY id DESC LIMIT 50"
        if [ "$1" = sqlite ]; then
            sqlite3 "$dir/data/extility.db" "EXPLAIN QUERY PLAN $query" | sed -n 's/^.*--/  sqlite plan: /p'
        else
            psql -qAt "$pg_url" -c "EXPLAIN $query" | sed -n 's/^ *->  /  postgres plan: /p'
        fi
    done
}

echo "ListJobs benchmark: $jobs jobs in the account (and $jobs of another), $requests requests per line, one at a time, $(nproc) cores"

# SQLite: the default database in the data directory.
for who in bench other; do
    $bin customer add --email $who@example.com --password $who-password --data-dir "$dir/data" >/dev/null
done
sqlite3 "$dir/data/extility.db" "$fill_sql"
start_server "sqlite://$dir/data/extility.db"
measure sqlite
plans sqlite
stop_server

# PostgreSQL: a database of our own.
rm -rf "$dir/data"
psql -q "$admin_url" -c "CREATE DATABASE $pg_db" >/dev/null
for who in bench other; do
    $bin customer add --email $who@example.com --password $who-password --data-dir "$dir/data" \
        --database-url "$pg_url" >/dev/null
done
psql -q "$pg_url" -c "$fill_sql" >/dev/null
start_server "$pg_url"
measure postgres
plans postgres
stop_server
echo "aim: p99 under 20 ms"
