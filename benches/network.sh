#!/usr/bin/env bash
# What a packet and a change cost through the product's real nftables rules (issue 23), with
# 2 NICs (the two guests alone) and with 500 NICs on the node, in one run:
# - throughput (iperf3, TCP) and latency (ping) between two guests: network namespaces whose
#   veths are the node's taps (`extap1`, `extap2`) on the VLAN's bridge (`extbr7`, with
#   `nf_call_iptables` on as the product sets it), in a namespace holding the rules that
#   `extility network-rules --nics N` writes (the code a node runs, `network::sample`);
# - adding one port forward: the time the node takes to compute the change from the rules it
#   holds, and `nft -f` of the change (what the node runs), against writing the whole ruleset
#   (what every change did before issue 23); and AddPortForward through the API (which returns
#   once the forward is in the kernel) on a node (`extility serve --network bridge
#   --hypervisor none` in a namespace of its own) running N servers.
# Prints each figure and the ratio of 500 NICs to 2. A burst of 100 port forwards making at
# most 5 applies is a test (`network_changes::`), read from /metrics.
#
#   sudo benches/network.sh                       # builds the release binary
#   EXTILITY_BIN=target/debug/extility SECONDS_PER_RUN=3 sudo -E benches/network.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ADDS=${ADDS:-20}
LARGE=${LARGE:-500}
if [ -z "${EXTILITY_BIN:-}" ]; then
    cargo build --release --quiet --bin extility
    EXTILITY_BIN=$PWD/target/release/extility
fi
for tool in iperf3 nft ping; do
    command -v $tool >/dev/null || { echo "$tool is needed (apt-get install iperf3 nftables iputils-ping)"; exit 1; }
done

tag=$$
host=extb-host-$tag g1=extb-g1-$tag g2=extb-g2-$tag node=extb-node-$tag
dir=$(mktemp -d)
chmod 755 "$dir" # dnsmasq reads its files as nobody
cleanup() {
    for ns in $host $g1 $g2 $node; do
        ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del $ns 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
[ -n "${BENCH_KEEP:-}" ] && trap - EXIT

in_host() { ip netns exec $host "$@"; }
ip netns add $host
ip netns add $g1
ip netns add $g2
in_host ip link set lo up
in_host ip link add extbr7 type bridge
in_host ip link set extbr7 type bridge nf_call_iptables 1
in_host ip addr add 10.64.0.1/16 dev extbr7
in_host ip link set extbr7 up
# The guests of NICs 1 and 2 of `network::sample`: their MACs and addresses.
i=1
for g in $g1 $g2; do
    ip link add extap$i netns $host type veth peer name eth0 netns $g
    in_host ip link set extap$i master extbr7 up
    ip netns exec $g ip link set eth0 address 52:54:00:00:00:0$i
    ip netns exec $g ip addr add 10.64.0.$((i + 2))/16 dev eth0
    ip netns exec $g ip link set eth0 up
    ip netns exec $g ip link set lo up
    i=$((i + 1))
done

ms() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e6 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# One run of iperf3 (bits per second) and the mean round trip of 2,000 pings (microseconds),
# through the rules loaded now.
one_run() {
    ip netns exec $g2 iperf3 -s -D -1 >/dev/null 2>&1
    until ip netns exec $g2 ss -Hltn | grep -q ':5201 '; do sleep 0.05; done
    bps=$(ip netns exec $g1 iperf3 -c 10.64.0.4 -t "$SECONDS_PER_RUN" -J |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    rtt=$(ip netns exec $g1 ping -q -c 2000 -i 0.001 10.64.0.4 |
        awk -F'/' '/^rtt/ { printf "%.1f", $5 * 1000 }')
}

# The median time of `nft -f` of the change adding a forward (taken out again between runs),
# and of writing the whole ruleset.
change_times() {
    local n=$1 add del t0 t1
    "$EXTILITY_BIN" network-rules --nics "$n" --forwards 10 --add-forward \
        >"$dir/add.nft" 2>"$dir/computed"
    computed_us=$(awk '{ print $3 }' "$dir/computed")
    echo "delete element inet extility forwards { 20010 }" >"$dir/del.nft"
    for _ in $(seq "$ADDS"); do
        t0=$(date +%s%N); in_host nft -f "$dir/add.nft"; t1=$(date +%s%N)
        echo $((t1 - t0)) >>"$dir/add-$n"
        in_host nft -f "$dir/del.nft"
        t0=$(date +%s%N); in_host nft -f "$dir/rules-$n.nft"; t1=$(date +%s%N)
        echo $((t1 - t0)) >>"$dir/full-$n"
    done
    add_ms=$(ms "$(median <"$dir/add-$n")")
    full_ms=$(ms "$(median <"$dir/full-$n")")
}

# The median time of AddPortForward over the API (then RemovePortForward, not timed) on a
# node running N servers.
api_times() {
    local n=$1 data=$dir/data-$n customer vdc vlan i id job ids=() jobs=() pid t
    ip netns add $node
    ip netns exec $node ip link set lo up
    customer=$("$EXTILITY_BIN" customer add --email bench@example.com \
        --password bench-password --data-dir "$data")
    vdc=$(echo "$customer" | sed -n 's/^vdc_id=//p')
    EXTILITY_QUOTA_SERVERS=unlimited EXTILITY_QUOTA_RUNNING_VCPUS=unlimited \
        EXTILITY_QUOTA_RUNNING_MEMORY=unlimited EXTILITY_QUOTA_STORAGE_BYTES=unlimited \
        EXTILITY_QUOTA_VLANS=unlimited \
        RUST_LOG=warn ip netns exec $node "$EXTILITY_BIN" serve --data-dir "$data" \
        --listen 127.0.0.1:0 --network bridge --hypervisor none --max-calls-in-flight 0 \
        --network-run-dir "$dir/run-$n" >"$dir/serve-$n.out" 2>"$dir/serve-$n.log" &
    pid=$!
    until grep -q "listening on" "$dir/serve-$n.out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/serve-$n.log" >&2; exit 1; }
        sleep 0.1
    done
    api=$(sed -n 's/^extility listening on //p' "$dir/serve-$n.out")
    call() {
        ip netns exec $node curl -sf -u bench@example.com:bench-password \
            -H 'content-type: application/json' -d "$2" "$api/api/v1/$1"
    }
    # A VLAN's /24 holds about 250 servers: 125 on each.
    local vlans=()
    for i in $(seq $(((n + 124) / 125))); do
        vlans+=("$(call CreateVLAN "{\"vdc_id\": $vdc, \"vlan_name\": \"bench$i\"}" | jq .vlan_id)")
    done
    for i in $(seq "$n"); do
        vlan=${vlans[$((i % ${#vlans[@]}))]}
        id=$(call CreateServer "{\"vdc_id\": $vdc, \"vlan_id\": $vlan, \"server_name\": \"s$i\",
            \"image_id\": 66, \"server_productoffer_id\": 17, \"disk_productoffer_ids\": [31]}" |
            jq .server_id)
        ids+=("$id")
        jobs+=("$(call StartServer "{\"server_id\": $id}" | jq .job_id)")
    done
    for job in "${jobs[@]}"; do
        until [ "$(call WaitForJob "{\"job_id\": $job, \"timeout_seconds\": 60}" | jq .status)" = 1 ]; do :; done
    done
    for i in $(seq "$ADDS"); do
        t=$(ip netns exec $node curl -sf -o "$dir/forward" -w '%{time_total}' \
            -u bench@example.com:bench-password -H 'content-type: application/json' \
            -d "{\"server_id\": ${ids[0]}, \"guest_port\": $((1000 + i))}" "$api/api/v1/AddPortForward")
        awk -v t="$t" 'BEGIN { printf "%.0f\n", t * 1e9 }' >>"$dir/api-$n"
        call RemovePortForward "{\"port_forward_id\": $(jq .port_forward_id "$dir/forward")}" >/dev/null
    done
    api_ms=$(ms "$(median <"$dir/api-$n")")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    ip netns pids $node | xargs -r kill 2>/dev/null || true
    ip netns del $node
}

declare -A gbps_of rtt_of add_of full_of computed_of api_of chains_of
for n in 2 $LARGE; do
    "$EXTILITY_BIN" network-rules --nics "$n" --forwards 10 >"$dir/rules-$n.nft"
    in_host nft -f "$dir/rules-$n.nft"
    chains_of[$n]=$(in_host nft list ruleset | grep -c '^\s*chain ')
    gbps_of[$n]=0 rtt_of[$n]=1000000
done
# The two rulesets in turn, RUNS times: the best of each (the machine's load moves both alike).
for _ in $(seq "$RUNS"); do
    for n in 2 $LARGE; do
        in_host nft -f "$dir/rules-$n.nft"
        one_run
        gbps_of[$n]=$(awk -v a="${gbps_of[$n]}" -v b="$bps" 'BEGIN { printf "%.2f", (b / 1e9 > a) ? b / 1e9 : a }')
        rtt_of[$n]=$(awk -v a="${rtt_of[$n]}" -v b="$rtt" 'BEGIN { print (b < a) ? b : a }')
    done
done
for n in 2 $LARGE; do
    in_host nft -f "$dir/rules-$n.nft"
    change_times "$n"
    api_times "$n"
    add_of[$n]=$add_ms full_of[$n]=$full_ms computed_of[$n]=$computed_us api_of[$n]=$api_ms
    echo "$n NICs (${chains_of[$n]} chains): ${gbps_of[$n]} Gbit/s, rtt ${rtt_of[$n]} us; add a forward: ${computed_us} us to compute, nft -f ${add_ms} ms (whole ruleset: ${full_ms} ms); AddPortForward over the API ${api_ms} ms"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "throughput, $LARGE NICs / 2: $(ratio "${gbps_of[$LARGE]}" "${gbps_of[2]}") (target >= 0.90)"
echo "latency,    $LARGE NICs / 2: $(ratio "${rtt_of[$LARGE]}" "${rtt_of[2]}")"
add1=$(awk -v a="${add_of[2]}" -v c="${computed_of[2]}" 'BEGIN { print a + c / 1000 }')
addL=$(awk -v a="${add_of[$LARGE]}" -v c="${computed_of[$LARGE]}" 'BEGIN { print a + c / 1000 }')
echo "add a port forward (compute + nft -f), $LARGE NICs / 2: $(ratio "$addL" "$add1") ($addL ms; target <= 2 and < 50 ms)"
echo "AddPortForward over the API, $LARGE NICs / 2: $(ratio "${api_of[$LARGE]}" "${api_of[2]}") (${api_of[$LARGE]} ms)"
echo "whole ruleset instead, $LARGE NICs / 2: $(ratio "${full_of[$LARGE]}" "${full_of[2]}") (${full_of[$LARGE]} ms)"
