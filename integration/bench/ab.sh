#!/usr/bin/env bash
# ab.sh — sipdispatch against Kamailio 5.6 with the SIPp harness (run.sh), one table for all
# scenarios. `make bench-ab` runs it; outside `make test` (it needs sipp and kamailio, takes
# minutes, and fixed ports).
#
#   scenario        rate  hold  Kamailio config           sipdispatch config
#   stateless       1500  0     kamailio/stateless_rr.cfg sipdispatch/stateless_rr.yaml   (alg 4, Record-Route)
#   stateful        800   0     kamailio/stateful_load.cfg sipdispatch/stateful_load.yaml (alg 10 + failover,
#                                                                   default durable single node)
#   stateful-hold   400   2 s   the same stateful configs
#   stateful-hold-wt5 400 2 s   the same, sipdispatch with proxy.wt_timer: 5s (stateful_load_wt5.yaml)
#
# Usage: integration/bench/ab.sh             A/B: Kamailio, sipdispatch, ... ROUNDS pairs per scenario
#        MODE=step integration/bench/ab.sh   step mode per scenario and proxy: highest sustained rate,
#                                            and a PNG (gnuplot) of CPU per call and success rate
#                                            against the offered rate for both proxies
# Env:   SCENARIOS="stateless stateful stateful-hold"  CALLS=6000 (per A/B run)  ROUNDS=1
#        STEP_SECS=10  REFINE=1  STEP_RATES_STATELESS="1000 2000 3000 4000 6000"
#        STEP_RATES_STATEFUL="400 800 1200 1600 2400"  OUT=/tmp/sipdispatch-bench-ab/<time>
#        SD_BIN (default bin/sipdispatch)  and every run.sh knob.
# Every run.sh invocation holds /tmp/sipbench.lock: the harness uses fixed ports, one bench at a time.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=${MODE:-ab}
SCENARIOS=${SCENARIOS:-stateless stateful stateful-hold}
export CALLS=${CALLS:-6000} STEP_SECS=${STEP_SECS:-10} REFINE=${REFINE:-1}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-/tmp/sipdispatch-bench-ab/$(date +%Y%m%d-%H%M%S)-$MODE}
export SD_BIN=${SD_BIN:-$HERE/../../bin/sipdispatch}
export READY_URL=http://127.0.0.1:19060/readyz READY_LABEL=sipdispatch
for t in sipp kamailio flock curl python3; do
    command -v "$t" >/dev/null || { echo "ab.sh: $t is not installed (.ci/setup installs sipp and kamailio)" >&2; exit 2; }
done
[ -x "$SD_BIN" ] || { echo "ab.sh: no binary at $SD_BIN (make build)" >&2; exit 2; }
mkdir -p "$OUT"

# scenario NAME -> "RATE HOLD_MS KAMAILIO_CFG SIPDISPATCH_CFG"
scenario() {
    case $1 in
    stateless) echo "1500 0 stateless_rr.cfg stateless_rr.yaml" ;;
    stateful) echo "800 0 stateful_load.cfg stateful_load.yaml" ;;
    stateful-hold) echo "400 2000 stateful_load.cfg stateful_load.yaml" ;;
    stateful-hold-wt5) echo "400 2000 stateful_load.cfg stateful_load_wt5.yaml" ;;
    *) echo "ab.sh: unknown scenario $1" >&2; exit 2 ;;
    esac
}

for s in $SCENARIOS; do
    read -r rate hold kcfg scfg < <(scenario "$s")
    kam="$HERE/kamailio/kam.sh $kcfg"
    sd="$HERE/sipdispatch/sd.sh $scfg"
    if [ "$MODE" = step ]; then
        case $s in stateless) rates=${STEP_RATES_STATELESS:-1000 2000 3000 4000 6000} ;;
        *) rates=${STEP_RATES_STATEFUL:-400 800 1200 1600 2400} ;; esac
        for side in kamailio sipdispatch; do
            cmd=$kam; [ $side = sipdispatch ] && cmd=$sd
            # shellcheck disable=SC2086
            HOLD_MS=$hold PROXY_CMD=$cmd LABEL=$side OUT=$OUT/$s-$side \
                flock /tmp/sipbench.lock "$HERE/run.sh" step $rates || echo "ab.sh: step $s $side failed (see $OUT/$s-$side/run.log)" >&2
        done
    else
        HOLD_MS=$hold PROXY_A_CMD=$kam PROXY_B_CMD=$sd LABEL_A=kamailio LABEL_B=sipdispatch OUT=$OUT/$s \
            flock /tmp/sipbench.lock "$HERE/run.sh" ab "$rate" "$ROUNDS" || echo "ab.sh: scenario $s failed (see $OUT/$s/run.log)" >&2
    fi
done

python3 "$HERE/lib/summary.py" "$MODE" "$OUT" $SCENARIOS | tee "$OUT/summary.md"
if [ "$MODE" = step ]; then
    if command -v gnuplot >/dev/null; then
        for s in $SCENARIOS; do
            gnuplot -e "dir='$OUT'; s='$s'; out='$OUT/$s.png'" "$HERE/lib/plot.gp" && echo "plot: $OUT/$s.png"
        done
    else
        echo "ab.sh: gnuplot not installed (Debian gnuplot-nox): no plot" >&2
    fi
fi
