#!/usr/bin/env bash
# A throwaway Ceph cluster for the tests and benchmarks: one monitor and one OSD (memstore, so
# the data lives in the OSD's memory) bound to 127.0.0.1 on free ports, auth none, pool size 1,
# from Debian's packages (ceph-mon, ceph-osd, ceph-common; 16.2). The test suite starts it
# (tests/it/support/ceph.rs), and so does benches/rbd.sh.
#
#   scripts/ceph-test-cluster.sh DIR [--cephx] [--bluestore]
#
# With --cephx the cluster authenticates with cephx: DIR/admin.keyring holds client.admin's key
# (every cap), which ceph.conf names, so clients given only `--conf` act as admin; other users
# are made with `ceph auth get-or-create`.
#
# With --bluestore the OSD keeps its data in BlueStore on a sparse file (DIR/osd/osd.0/block,
# 4 GiB at most) instead of its memory, so that it survives a restart: SIGUSR1 to the script
# kills the OSD (-9, as a crash) and starts it again, and the script goes on. (A memstore OSD
# would come back empty, so without --bluestore SIGUSR1 only kills the OSD and the cluster.)
#
# DIR (made if absent; it must not hold a cluster already) receives ceph.conf, the monitor's
# store, the run directory (admin sockets) and the logs (log/). Once the OSD is up the script
# prints one line on stdout, `ready DIR/ceph.conf` (DIR made absolute), and then waits: the
# cluster lives as long as the script. Clients use it with `--conf DIR/ceph.conf` (no keyring).
#
# Both daemons run in the foreground as the script's children under `setpriv --pdeathsig
# KILL`, so they die when the script dies, however it dies (even by SIGKILL); on TERM, INT or
# a normal exit the script kills them itself. If a daemon ends on its own the script exits with
# status 1. While anything of the cluster runs, DIR/lock is locked (flock; the daemons inherit
# the descriptor): a lock that can be taken means DIR is left over from a dead cluster.
#
# Every Ceph command is run under `timeout`: a client that cannot reach its monitor otherwise
# retries for 5 minutes.
set -euo pipefail

dir=${1:?usage: scripts/ceph-test-cluster.sh DIR [--cephx] [--bluestore]}
auth=none
store=memstore
for option in "${@:2}"; do
    case $option in
    --cephx) auth=cephx ;;
    --bluestore) store=bluestore ;;
    *) echo "unknown option $option" >&2; exit 2 ;;
    esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf
if [ -e "$conf" ] || [ -e "$dir/mon" ]; then
    echo "$dir holds a cluster already; give an empty or new directory" >&2
    exit 2
fi

# The daemons started so far; killed (and reaped) however the script ends.
pids=()
stop() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

fail() {
    echo "ceph-test-cluster: $*" >&2
    for log in "$dir"/log/*; do
        [ -s "$log" ] && { echo "--- last lines of $log:" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}

# Held (by the daemons too, which inherit descriptor 9) while the cluster runs.
exec 9>>"$dir/lock"
flock -n 9 || { echo "$dir is in use by another cluster" >&2; exit 2; }

mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd/osd.0"

# Two free ports for the monitor (messenger v2 and v1): bound at once so they differ, then
# released for the monitor to take. (The OSD finds its own ports in 6800-7300.)
read -r v2 v1 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
fsid=$(cat /proc/sys/kernel/random/uuid)

# Clients get no admin socket and no log file (`log file = /dev/null` sends their log nowhere).
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
keyring = $dir/admin.keyring
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
mon data = $dir/mon/\$name
osd data = $dir/osd/\$name
osd objectstore = $store
memstore device bytes = 8589934592
bluestore block size = 4294967296
bluestore cache size = 67108864
osd memory target = 536870912
[mon]
keyring = $dir/mon/\$name/keyring
[osd]
keyring = $dir/osd/\$name/keyring
[mon.a]
public addrv = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
[client]
admin socket =
log file = /dev/null
EOF

# `ceph ARGS...`, failing after a minute rather than Ceph's five.
ceph_cmd() { timeout 60 ceph --conf "$conf" "$@"; }

# `daemon NAME PROGRAM ARGS...`: PROGRAM in the foreground, killed when this script dies; its
# own output goes to log/NAME.out (its log proper to log/NAME.log).
daemon() {
    local name=$1
    shift
    setpriv --pdeathsig KILL "$@" --conf "$conf" -f </dev/null >"$dir/log/$name.out" 2>&1 &
    pids+=($!)
}

# With cephx: the monitor's key and client.admin's (every cap), which the monitor's store
# starts with; the OSD makes its own key below.
mon_keyring=()
if [ "$auth" = cephx ]; then
    ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
    mon_keyring=(--keyring "$dir/mon.keyring")
fi
timeout 60 ceph-mon --conf "$conf" --mkfs -i a "${mon_keyring[@]}" >"$dir/log/mon.a.mkfs" 2>&1 ||
    fail "ceph-mon --mkfs failed (Debian package ceph-mon)"
daemon mon.a ceph-mon -i a

ceph_cmd osd create >/dev/null || fail "ceph osd create failed: the monitor did not answer"
ceph_cmd osd crush add osd.0 1 root=default "host=$(hostname)" >/dev/null 2>&1 ||
    fail "ceph osd crush add failed"
if [ "$auth" = cephx ]; then
    ceph_cmd auth get-or-create osd.0 osd 'allow *' mon 'allow profile osd' \
        -o "$dir/osd/osd.0/keyring" >/dev/null 2>&1 || fail "ceph auth get-or-create osd.0 failed"
fi
timeout 60 ceph-osd --conf "$conf" --mkfs -i 0 >"$dir/log/osd.0.mkfs" 2>&1 ||
    fail "ceph-osd --mkfs failed (Debian package ceph-osd)"
daemon osd.0 ceph-osd -i 0
osd_pid=$!

deadline=$((SECONDS + 120))
until ceph_cmd osd stat 2>/dev/null | grep -q '1 up'; do
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || fail "a daemon exited while the cluster started"
    done
    [ "$SECONDS" -lt "$deadline" ] || fail "the OSD did not come up within 120 s"
    sleep 0.2
done

echo "ready $conf"

restart=0
trap 'restart=1' USR1
# Until killed. `wait -n` also returns when a trapped signal arrives (TERM and INT then exit;
# USR1 restarts the OSD).
while true; do
    wait -n "${pids[@]}" || true
    if [ "$restart" = 1 ]; then
        restart=0
        kill -KILL "$osd_pid" 2>/dev/null || true
        wait "$osd_pid" 2>/dev/null || true
        [ "$store" = bluestore ] || fail "the OSD was killed: its memstore data is gone"
        pids=("${pids[0]}")
        daemon osd.0 ceph-osd -i 0
        osd_pid=$!
        echo "osd.0 restarted" >>"$dir/log/restarts"
        continue
    fi
    fail "a daemon exited; the cluster is gone"
done
