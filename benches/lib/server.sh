# Sourced by the benches that measure one server over JSON (list_jobs.sh, lineage.sh).
# They set `bin` (the extility binary) and `dir` (a scratch folder); `server` is the running
# server's pid, `url` its address. SERVER_LOG is its RUST_LOG (default warn), SERVER_FLAGS
# flags before `serve` (e.g. `--log-format text`).

# Starts the server on the database URL $1, with no hypervisor and user-mode networking, and
# waits until it listens.
start_server() {
    # shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
    RUST_LOG=${SERVER_LOG:-warn} "$bin" ${SERVER_FLAGS:-} serve --data-dir "$dir/data" \
        --listen 127.0.0.1:0 --hypervisor none --network user --database-url "$1" \
        >"$dir/out" 2>"$dir/err" &
    server=$!
    until grep -q "listening on" "$dir/out" 2>/dev/null; do
        kill -0 "$server" 2>/dev/null || { cat "$dir/err"; exit 1; }
        sleep 0.1
    done
    url=$(sed -n 's/.*listening on //p' "$dir/out")
}

stop_server() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
}

# A bearer token of the bench's customer (bench@example.com), on the server at $url.
bench_token() {
    curl -sS --fail-with-body -u bench@example.com:bench-password \
        -H "Content-Type: application/json" -X POST "$url/api/v1/GetAuthenticationToken" \
        -d '{"expiry_seconds": 3600}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
