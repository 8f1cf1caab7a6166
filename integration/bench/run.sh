#!/usr/bin/env bash
# SIP dispatcher benchmark harness.
#   SIPp UAC (127.0.0.1:5070) -> PROXY UNDER TEST (127.0.0.1:5060) -> 3 SIPp UAS gateways (127.0.0.1:5081-5083)
#   Call flow: INVITE / 100 / 180 / 200 / ACK / [hold -d HOLD_MS] / BYE / 200, ACK+BYE loose-routed
#   through the proxy using the Record-Route set (scenarios/uac_rr.xml, scenarios/uas_rr.xml).
#
# Usage:
#   PROXY_CMD='cmd' ./run.sh once   RATE [CALLS]        one bounded run
#   PROXY_CMD='cmd' ./run.sh step   [RATE ...]          step up (default 500 1000 2000 4000 8000), STEP_SECS each,
#                                                        stop at first unsustained step, then bisect REFINE times;
#                                                        proxy AND gateways are restarted before every step
#   PROXY_CMD='cmd' ./run.sh repeat RATE [N]            N runs (default 3) at RATE, proxy restarted each run
#   PROXY_A_CMD='a' PROXY_B_CMD='b' ./run.sh ab RATE [ROUNDS]
#                                                        A,B,A,B,... (ROUNDS pairs, default 2), proxy restarted each run
# PROXY_CMD must start ONE foreground process (it may fork children) that listens on udp 127.0.0.1:5060
# and dispatches to 127.0.0.1:5081-5083. It is started as `bash -c "exec $PROXY_CMD"`; its CPU is the
# sum of utime+stime over that process and all its descendants (/proc/PID/stat).
#
# Env knobs: STEP_SECS=15 HOLD_MS=0 MAX_FAIL_PCT=0.1 MIN_RATE_FRAC=0.95 SETTLE=3 REFINE=2
#            PROXY_CPUS / LOAD_CPUS (taskset cpu lists, e.g. PROXY_CPUS=1 LOAD_CPUS=0; default: no pinning)
#            LABEL (name in results), OUT (output dir), RECV_TIMEOUT_MS=5000, GW_TIMEOUT=3600
#            RING_MS=20 (gateway delay between 180 and 200; 0 exposes 180/200 reordering by the proxy)
#            CALLS (calls per ab run; default RATE*STEP_SECS)
#            READY_URL (polled after the proxy binds 5060, until it answers 2xx), READY_LABEL (only for that label)
set -u -o pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=${1:-}; shift || true
STEP_SECS=${STEP_SECS:-15}
HOLD_MS=${HOLD_MS:-0}
MAX_FAIL_PCT=${MAX_FAIL_PCT:-0.1}
MIN_RATE_FRAC=${MIN_RATE_FRAC:-0.95}
SETTLE=${SETTLE:-3}
REFINE=${REFINE:-2}
RECV_TIMEOUT_MS=${RECV_TIMEOUT_MS:-5000}
GW_TIMEOUT=${GW_TIMEOUT:-3600}
RING_MS=${RING_MS:-20}
OUTROOT=$BENCH/out; [ -w "$BENCH" ] || OUTROOT=${TMPDIR:-/tmp}/sipbench   # shared/ is read-only for its users
OUT=${OUT:-$OUTROOT/$(date +%Y%m%d-%H%M%S)-${MODE:-x}-${LABEL:-proxy}}
CLK=$(getconf CLK_TCK)
PROXY_PFX=""; [ -n "${PROXY_CPUS:-}" ] && PROXY_PFX="taskset -c $PROXY_CPUS"
LOAD_PFX="";  [ -n "${LOAD_CPUS:-}" ]  && LOAD_PFX="taskset -c $LOAD_CPUS"

usage() { sed -n "2,27p" "$0"; exit 2; }
[ -n "$MODE" ] || usage

mkdir -p "$OUT/gw"
RESULTS=$OUT/results.tsv
ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)"

GW_PIDS=()
PROXY_PID=""

log() { echo "[$(date +%T)] $*" | tee -a "$OUT/run.log" >&2; }

tree_pids() {   # pid + all descendants
    local c
    echo "$1"
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done
}
pss_kb() {      # summed proportional set size (kB) over the given pids: shared pages counted once
    local p t=0 v
    for p in "$@"; do v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null); t=$((t + ${v:-0})); done
    echo "$t"
}
cpu_ticks() {   # sum of utime+stime (clock ticks) over the given pids
    local p
    for p in "$@"; do [ -r "/proc/$p/stat" ] && sed 's/^.*) //' "/proc/$p/stat"; done 2>/dev/null \
        | awk '{t += $12 + $13} END {print t + 0}'
}
udp_errs() {    # InErrors RcvbufErrors from /proc/net/snmp
    awk '/^Udp:/ {n++; if (n == 2) print $4, $6}' /proc/net/snmp
}
# 127.0.0.1 only: tests on a shared machine use other 127.0.0.x addresses with the same ports
port_busy() { ss -Hlun "src 127.0.0.1:$1" 2>/dev/null | grep -q . ; }

cleanup() {
    stop_proxy
    local p
    for p in "${GW_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${GW_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    GW_PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

start_gateways() {
    local p
    for p in 5081 5082 5083; do
        if port_busy "$p"; then log "ERROR: udp port $p already in use"; exit 1; fi
        ( cd "$OUT/gw" && exec $LOAD_PFX sipp -sf "$BENCH/scenarios/uas_rr.xml" -i 127.0.0.1 -p "$p" -t u1 -d "$RING_MS" \
            -nostdin -buff_size 4194304 -timeout "${GW_TIMEOUT}s" -trace_err -error_file "uas$p.err" \
            -max_log_size 10000000 ) > "$OUT/gw/uas$p.log" 2>&1 &
        GW_PIDS+=($!)
    done
    for p in 5081 5082 5083; do
        for _ in $(seq 50); do port_busy "$p" && break; sleep 0.1; done
        port_busy "$p" || { log "ERROR: gateway on $p did not start (see $OUT/gw/uas$p.log)"; exit 1; }
    done
    log "gateways up: pids ${GW_PIDS[*]}"
}

start_proxy() {  # $1 = command, $2 = name
    local i
    for i in $(seq 50); do port_busy 5060 || break; sleep 0.1; done
    if port_busy 5060; then log "ERROR: udp 127.0.0.1:5060 busy before starting proxy"; return 1; fi
    $PROXY_PFX bash -c "exec $1" >> "$OUT/proxy-$2.log" 2>&1 &
    PROXY_PID=$!
    for i in $(seq 100); do port_busy 5060 && break; sleep 0.1; done
    if ! port_busy 5060; then log "ERROR: proxy '$2' did not bind 5060 (see $OUT/proxy-$2.log)"; stop_proxy; return 1; fi
    # a proxy with READY_URL (sipdispatch's /readyz) serves calls only once its sets are in
    if [ -n "${READY_URL:-}" ] && [ "$2" = "${READY_LABEL:-$2}" ]; then
        for i in $(seq 300); do curl -fsS -o /dev/null "$READY_URL" && break; sleep 0.1; done
    fi
    sleep 1
    log "proxy $2 up: pid $PROXY_PID ($(tree_pids $PROXY_PID | wc -l) processes)  cmd: $1"
}

stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    local pids i p
    pids=$(tree_pids "$PROXY_PID")
    kill -TERM "$PROXY_PID" 2>/dev/null
    for i in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    for p in $pids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    wait "$PROXY_PID" 2>/dev/null
    PROXY_PID=""
    for i in $(seq 50); do port_busy 5060 || break; sleep 0.1; done
}

# load_run RATE CALLS TAG LABEL  -> appends one line to results.tsv, echoes verdict (OK|FAIL)
load_run() {
    local rate=$1 calls=$2 tag=$3 label=$4
    local d="$OUT/$tag"; mkdir -p "$d"
    local exp_s=$(( (calls + rate - 1) / rate ))
    local tmo=$(( exp_s + HOLD_MS / 1000 + 30 ))
    local limit=$(( rate * (HOLD_MS / 1000 + 6) ))
    local ppids p0 p1 g0 g1 u0 u1 t0 t1 rc
    ppids=$(tree_pids "$PROXY_PID")
    p0=$(cpu_ticks $ppids); g0=$(cpu_ticks "${GW_PIDS[@]}"); u0=$(udp_errs)
    t0=$(date +%s.%N)
    # peak memory of the proxy's process tree, sampled every second while the calls run
    ( peak=0; while :; do m=$(pss_kb $(tree_pids "$PROXY_PID")); [ "$m" -gt "$peak" ] && { peak=$m; echo "$peak" > "$d/peak_pss_kb"; }; sleep 1; done ) &
    local sampler=$!
    ( cd "$d" && exec timeout -k 5 $((tmo + 10)) /usr/bin/time -f "%U %S %e" -o uac.time \
        $LOAD_PFX sipp 127.0.0.1:5060 -sf "$BENCH/scenarios/uac_rr.xml" -i 127.0.0.1 -p 5070 -t u1 \
        -r "$rate" -rp 1000 -m "$calls" -l "$limit" -d "$HOLD_MS" -recv_timeout "$RECV_TIMEOUT_MS" \
        -timeout "${tmo}s" -nostdin -buff_size 4194304 -trace_stat -stf stat.csv -fd 1 -trace_screen \
        -trace_err -error_file uac.err -max_log_size 10000000 ) > "$d/uac.log" 2>&1
    rc=$?
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    local peak_kb; peak_kb=$(cat "$d/peak_pss_kb" 2>/dev/null || echo 0)
    t1=$(date +%s.%N)
    ppids="$ppids $(tree_pids "$PROXY_PID")"
    p1=$(cpu_ticks $(echo $ppids | tr ' ' '\n' | sort -u)); g1=$(cpu_ticks "${GW_PIDS[@]}"); u1=$(udp_errs)
    # the union trick above double counts nothing: sort -u dedups pids; (p1 from surviving pids only)
    if [ ! -s "$d/stat.csv" ]; then log "ERROR: no sipp stats (rc=$rc), see $d/uac.log"; echo FAIL; return; fi
    local kv; kv=$(python3 "$BENCH/lib/parse_stat.py" "$d/stat.csv") || { echo FAIL; return; }
    local elapsed_s attempted success failed retrans timeouts maxudpretrans unexpected sipp_callrate rt1_avg_ms rt1_p50 rt1_p99 rt2_p50 rt2_p99
    eval "$kv"
    local uac_u uac_s uac_e; read -r uac_u uac_s uac_e < <(tail -n 1 "$d/uac.time" 2>/dev/null) || { uac_u=0; uac_s=0; uac_e=0; }
    # python does the arithmetic (bash has no floats)
    local line
    line=$(python3 - "$label" "$rate" "$calls" "$attempted" "$success" "$failed" "$elapsed_s" "$HOLD_MS" \
        "$p0" "$p1" "$g0" "$g1" "$CLK" "$uac_u" "$uac_s" "$retrans" "$rt1_p50" "$rt1_p99" "$rt2_p50" "$rt2_p99" \
        "$u0" "$u1" "$MAX_FAIL_PCT" "$MIN_RATE_FRAC" "$rc" "$peak_kb" <<'PY'
import sys
(label, rate, calls, att, succ, fail, el, hold, p0, p1, g0, g1, clk, uu, us, retr,
 r1a, r1b, r2a, r2b, u0, u1, maxf, minfrac, rc, peak_kb) = sys.argv[1:]
rate, calls, att, succ, fail = int(rate), int(calls), int(att), int(succ), int(fail)
el, hold, clk = float(el), float(hold) / 1000, float(clk)
gen_s = max(el - hold, 1e-3)
ach = succ / gen_s
pcpu = (int(p1) - int(p0)) / clk
gcpu = (int(g1) - int(g0)) / clk
ucpu = float(uu) + float(us)
fpct = 100.0 * (calls - succ) / calls if calls else 100.0   # unplaced calls count as failures
ie0, rb0 = map(int, u0.split()); ie1, rb1 = map(int, u1.split())
ok = fpct < float(maxf) and ach >= float(minfrac) * rate and succ > 0
us_call = pcpu * 1e6 / succ if succ else float("nan")
print("\t".join(str(x) for x in [
    label, rate, calls, att, succ, fail, "%.3f" % fpct, "%.1f" % el, "%.0f" % ach,
    "%.2f" % pcpu, "%.2f" % (pcpu / el), "%.1f" % us_call, "%.2f" % (ucpu / el), "%.2f" % (gcpu / el),
    retr, r1a, r1b, r2a, r2b, ie1 - ie0, rb1 - rb0, rc, int(peak_kb) // 1024, "OK" if ok else "FAIL"]))
PY
)
    [ -s "$RESULTS" ] || printf 'label\trate\tcalls\tattempted\tsuccess\tfailed\tfail_pct\telapsed_s\tachieved_cps\tproxy_cpu_s\tproxy_cores\tproxy_cpu_us_per_call\tuac_cores\tgw_cores\tretrans\trt1_p50_ms\trt1_p99_ms\trt2_p50_ms\trt2_p99_ms\tudp_inerr\tudp_rcvbuf_err\tsipp_rc\tproxy_peak_pss_mb\tverdict\n' > "$RESULTS"
    echo "$line" >> "$RESULTS"
    log "RESULT $line"
    echo "${line##*$'\t'}"
}

smoke() {  # 200 calls at 100 cps must all succeed (the achieved rate is not judged: a hold skews it)
    local v; v=$(MIN_RATE_FRAC=0 load_run 100 200 "smoke-$1" "$1-smoke")
    if [ "$v" != OK ]; then log "ERROR: smoke test failed for '$1' - calls do not complete through the proxy"; return 1; fi
    sleep "$SETTLE"
}

show() { log "results: $RESULTS"; column -t -s $'\t' "$RESULTS" | tee -a "$OUT/run.log"; }

case "$MODE" in
once)
    rate=${1:?rate}; calls=${2:-$(( rate * STEP_SECS ))}; label=${LABEL:-proxy}
    start_gateways; start_proxy "${PROXY_CMD:?set PROXY_CMD}" "$label" || exit 1
    load_run "$rate" "$calls" "once-$rate" "$label" >/dev/null
    show ;;
step)
    label=${LABEL:-proxy}
    rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(500 1000 2000 4000 8000)
    start_gateways; start_proxy "${PROXY_CMD:?set PROXY_CMD}" "$label" || exit 1
    smoke "$label" || exit 1
    best=0; bad=0
    fresh() {  # fresh proxy + gateways per step, so an overloaded step cannot poison the next one
        stop_proxy; local p; for p in "${GW_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
        GW_PIDS=(); sleep 1; start_gateways; start_proxy "$PROXY_CMD" "$label" || exit 1
    }
    for r in "${rates[@]}"; do
        fresh
        v=$(load_run "$r" $(( r * STEP_SECS )) "step-$r" "$label"); sleep "$SETTLE"
        if [ "$v" = OK ]; then best=$r; else bad=$r; break; fi
    done
    i=0
    while [ "$bad" -gt 0 ] && [ "$i" -lt "$REFINE" ]; do
        mid=$(( (best + bad) / 2 / 100 * 100 )); [ "$mid" -le "$best" ] && break
        fresh
        v=$(load_run "$mid" $(( mid * STEP_SECS )) "step-$mid" "$label"); sleep "$SETTLE"
        if [ "$v" = OK ]; then best=$mid; else bad=$mid; fi
        i=$((i + 1))
    done
    show
    log "MAX SUSTAINED ($label): $best cps (first unsustained: $([ "$bad" -gt 0 ] && echo "$bad" || echo "none of the rates tried"))"
    echo "$label max_sustained_cps=$best" > "$OUT/summary.txt" ;;
repeat)
    rate=${1:?rate}; n=${2:-3}; label=${LABEL:-proxy}
    start_gateways
    for i in $(seq "$n"); do
        start_proxy "${PROXY_CMD:?set PROXY_CMD}" "$label" || exit 1
        [ "$i" = 1 ] && { smoke "$label" || exit 1; }
        load_run "$rate" $(( rate * STEP_SECS )) "rep$i-$rate" "$label" >/dev/null
        stop_proxy; sleep "$SETTLE"
    done
    show ;;
ab)
    rate=${1:?rate}; rounds=${2:-2}
    start_gateways
    for i in $(seq "$rounds"); do
        for side in A B; do
            if [ $side = A ]; then cmd=${PROXY_A_CMD:?}; lab=${LABEL_A:-A}; else cmd=${PROXY_B_CMD:?}; lab=${LABEL_B:-B}; fi
            start_proxy "$cmd" "$lab" || exit 1
            [ "$i" = 1 ] && { smoke "$lab" || exit 1; }
            load_run "$rate" "${CALLS:-$(( rate * STEP_SECS ))}" "ab$i-$side-$rate" "$lab" >/dev/null
            stop_proxy; sleep "$SETTLE"
        done
    done
    show
    python3 - "$RESULTS" "${LABEL_A:-A}" "${LABEL_B:-B}" <<'PY' | tee -a "$OUT/run.log"
import csv, sys, statistics as st
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if not r["label"].endswith("-smoke")]
for lab in sys.argv[2:]:
    v = [float(r["proxy_cpu_us_per_call"]) for r in rows if r["label"] == lab]
    print(lab, "cpu_us_per_call runs:", v, "median: %.1f" % st.median(v) if v else "")
a = [float(r["proxy_cpu_us_per_call"]) for r in rows if r["label"] == sys.argv[2]]
b = [float(r["proxy_cpu_us_per_call"]) for r in rows if r["label"] == sys.argv[3]]
if a and b:
    print("ratio B/A (median cpu-us per call): %.3f" % (st.median(b) / st.median(a)))
PY
    ;;
*) usage ;;
esac
