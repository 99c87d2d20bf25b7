#!/usr/bin/env bash
# The soak test (issue 11): a mixed load from several customers on two nodes sharing one
# PostgreSQL database, while nodes are killed with SIGKILL and restarted and PostgreSQL is
# restarted, then the invariants: every job ended, no orphan volume file and no row naming a
# missing file, no half-made disk or server, no job run twice.
#
# It starts its own throwaway PostgreSQL cluster (initdb into a temporary directory, on a free
# port, as the `postgres` user: run it as root, or as `postgres`) and never touches another
# cluster. Two `extility serve --hypervisor none` nodes share one data dir (as nodes on shared
# storage do), a loopback HTTP server serves the images FetchDisk fetches (raw, gzip, a slow
# gzip, one with a wrong MD5, one missing), and each customer's threads call FetchDisk,
# CreateDisk, DeleteDisk, CreateServer, StartServer, StopServer, DestroyServer, List*, GetQuota,
# GetJob and WaitForJob over the JSON API. The driver is benches/soak.py (standard library).
#
#   benches/soak.sh                          # 3 minutes, 4 customers x 2 threads, debug build
#   SOAK_MINUTES=10 benches/soak.sh          # longer
#   SOAK_RELEASE=1 benches/soak.sh           # the release binary
#   SOAK_PG_MODES=fast,immediate benches/soak.sh   # PostgreSQL also crashes (-m immediate)
#   SOAK_SEED=42 SOAK_KEEP=1 benches/soak.sh # replay a run's faults; keep logs and data
#   SOAK_FAULTS=kill,pg,partition,fulldisk benches/soak.sh
#                                            # also cut node-a (in a network namespace of its
#                                            # own) from PostgreSQL, and fill the data directory
#                                            # (a loop-mounted file system of its own)
#   SOAK_FAULTS=kill,pg,fulldisk,osd benches/soak.sh
#                                            # volumes in Ceph RBD (a throwaway cluster), whose
#                                            # OSD is killed and restarted
#
# Other knobs: SOAK_CUSTOMERS (4), SOAK_THREADS (per customer, 2), SOAK_FAULT_EVERY (mean
# seconds between faults, 20), SOAK_STORAGE (files or rbd), SOAK_DISK_MB (2048, the data
# directory's file system with fulldisk). It prints calls per operation, errors by code, jobs by final
# status, the faults and how long each node took to serve again, and the invariants; it exits
# non-zero when an invariant fails or a node does not serve again (the work directory, with
# the nodes' and PostgreSQL's logs, is then kept).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$PWD/target}
if [ "${SOAK_RELEASE:-0}" = 1 ]; then
    echo "building extility (release)..." >&2
    cargo build --release --quiet
    bin=$target/release/extility
else
    echo "building extility (debug)..." >&2
    cargo build --quiet
    bin=$target/debug/extility
fi
exec python3 benches/soak.py --binary "$bin" "$@"
