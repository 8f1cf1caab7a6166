#!/usr/bin/env bash
# bench-cluster.sh — stateful alg-10 calls through one sipdispatch node alone (A) and through one
# node of a three-node cluster (B), A,B,A,B on fresh proxy processes with the SIPp harness
# (integration/bench/run.sh, see its README). `make bench-cluster` runs it from the repository root.
#
#   SIPp UAC -> 127.0.0.1:5060 -> 3 SIPp gateways 127.0.0.1:5081-5083
#   A: sipdispatch alone (no cluster).  B: cluster node n1 on 127.0.0.1; n2 and n3 run for the
#   whole benchmark on 127.0.0.2 and 127.0.0.3 (SIP on port 15060, never 5060, which run.sh watches).
#   Every call's load entry is committed through raft (load_replication sync) before its INVITE
#   leaves n1, and removed again at its BYE.
#
# Usage: docs/examples/bench-cluster.sh [RATE [ROUNDS]]    A/B (default 1000 calls/s, 2 rounds)
#        MODE=step docs/examples/bench-cluster.sh [RATE ...] the cluster node only, run.sh's step
#                                                          mode: the highest rate with < 0.1 % failed
#        MODE=step-single ... [RATE ...]                   the same for the node alone
#        (the cluster keeps its replicated destination states from step to step: after a step that
#        failed by overload, the next ones measure gateways marked inactive, so probe the rates
#        above it one per invocation with REFINE=0, each on a fresh cluster)
# Env:   BENCH=integration/bench  BIN=bin/sipdispatch  WORK=/tmp/sipdispatch-bench-cluster
#        STEP_SECS=10 (seconds of calls per run) and every other run.sh knob.
# run.sh measures the CPU of the proxy process (n1) only; this script adds the CPU that n2 and n3
# spent during the whole A/B (printed at the end), so the cluster's total cost per call is known.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=${MODE:-ab}
RATE=${1:-1000}
ROUNDS=${2:-2}
BENCH=${BENCH:-$ROOT/integration/bench}
BIN=${BIN:-$ROOT/bin/sipdispatch}
WORK=${WORK:-/tmp/sipdispatch-bench-cluster}
export STEP_SECS=${STEP_SECS:-10}
LIST=$BENCH/kamailio/dispatcher.list
[ -x "$BENCH/run.sh" ] || { echo "no SIPp harness at $BENCH (set BENCH)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no binary at $BIN (make build)" >&2; exit 2; }

rm -rf "$WORK"; mkdir -p "$WORK"

# node NAME IP SIPPORT CLUSTER(yes|no) -> writes $WORK/NAME.yaml
node() {
    local name=$1 ip=$2 port=$3 cluster=$4
    cat > "$WORK/$name.yaml" <<YAML
node: {name: $name, data_dir: $WORK/$name-data}
listen: [udp:$ip:$port]
proxy: {mode: stateful, record_route: true}
api: {listen: "$ip:19060"}
log: {level: warn}
dispatcher:
  list_file: $LIST
  flags: 2
  ds_hash_size: 14
routes:
  - name: all
    dispatch: {set: 1, alg: 10, failover: {on: ["408", "5xx"], mark: ip}}
YAML
    if [ "$cluster" = yes ]; then
        local join="[]"; [ "$name" != n2 ] && join="[127.0.0.2:17946]"
        cat >> "$WORK/$name.yaml" <<YAML
cluster:
  enabled: true
  gossip: {bind: "$ip:17946", join: $join}
  raft: {bind: "$ip:17947", bootstrap_expect: 3}
YAML
    fi
}
node single 127.0.0.1 5060 no
node n1 127.0.0.1 5060 yes
node n2 127.0.0.2 15060 yes
node n3 127.0.0.3 15060 yes

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

ready() { curl -fsS -o /dev/null "http://$1:19060/readyz" 2>/dev/null; }
wait_ready() {  # IP...
    local ip i
    for ip in "$@"; do
        for i in $(seq 300); do ready "$ip" && break; sleep 0.1; done
        ready "$ip" || { echo "node on $ip not ready (logs in $WORK)" >&2; exit 1; }
    done
}
ticks() {  # utime+stime of the given pids, clock ticks
    local p; for p in "$@"; do sed 's/^.*) //' "/proc/$p/stat"; done | awk '{t += $12 + $13} END {print t + 0}'
}

# Form the cluster once with n1, then stop n1 (SIGTERM keeps it a voter): run.sh starts it again
# for each B run, on its data dir, and it rejoins as a follower of n2 or n3.
for n in n2 n3 n1; do
    "$BIN" serve -config "$WORK/$n.yaml" > "$WORK/$n.log" 2>&1 &
    PIDS+=($!)
done
wait_ready 127.0.0.1 127.0.0.2 127.0.0.3
N1=${PIDS[2]}; kill -TERM "$N1"; wait "$N1" || true; PIDS=("${PIDS[@]:0:2}")
wait_ready 127.0.0.2 127.0.0.3
echo "cluster formed: n2, n3 running; n1 stopped until run.sh starts it"

# A restarted cluster node binds 5060 before it has rejoined: run.sh waits for its /readyz.
export READY_URL=http://127.0.0.1:19060/readyz

# The node alone starts each run on an empty data dir, as a fresh Kamailio would: a standalone node
# keeps destination states across restarts, and one overloaded step (408s marking every gateway
# inactive, with probing off) would otherwise fail every step after it.
cat > "$WORK/single.sh" <<SH
#!/bin/sh
rm -rf "$WORK/single-data"
exec "$BIN" serve -config "$WORK/single.yaml"
SH
chmod +x "$WORK/single.sh"

t0=$(ticks "${PIDS[@]}")
if [ "$MODE" = step ]; then
    PROXY_CMD="$BIN serve -config $WORK/n1.yaml" LABEL=cluster-n1 OUT=$WORK/out flock /tmp/sipbench.lock "$BENCH/run.sh" step "$@"
elif [ "$MODE" = step-single ]; then
    PROXY_CMD="$WORK/single.sh" LABEL=single OUT=$WORK/out flock /tmp/sipbench.lock "$BENCH/run.sh" step "$@"
else
    PROXY_A_CMD="$WORK/single.sh" PROXY_B_CMD="$BIN serve -config $WORK/n1.yaml" \
        LABEL_A=single LABEL_B=cluster-n1 OUT=$WORK/out flock /tmp/sipbench.lock "$BENCH/run.sh" ab "$RATE" "$ROUNDS"
fi
t1=$(ticks "${PIDS[@]}")
echo "n2+n3 CPU during the whole run: $(( (t1 - t0) * 1000 / $(getconf CLK_TCK) )) ms" | tee -a "$WORK/out/run.log"
