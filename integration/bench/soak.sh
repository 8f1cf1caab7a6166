#!/usr/bin/env bash
# soak.sh — memory over a long steady load: `make soak`, outside `make test` (it needs sipp, holds
# the bench lock for DURATION and uses fixed ports).
#
# sipdispatch takes the stateful-hold scenario of ab.sh — stateful alg 10 with failover on the
# default durable single node (sipdispatch/stateful_load.yaml), RATE calls/s held HOLD_MS — for
# DURATION, as one `run.sh once` run (bounded: RATE × DURATION calls and run.sh's timeout), while
# lib/soak.py samples the proxy every SAMPLE_S seconds: PSS and RSS summed over its process tree,
# its CPU, SIPp's calls and, from sipdispatch's /metrics, the Go heap. With KAMAILIO=1 Kamailio 5.6
# (kamailio/stateful_load.cfg) runs the same way afterwards, for reference (twice the time).
# Then lib/soak.py prints memory at the start, middle and end and the verdict — flat when the
# mean of the last third is at most FLAT_PCT % above the middle third's, for PSS and the Go heap —
# with failed calls and CPU µs per call, and exits 1 when memory grows or calls failed. It writes
# OUT/sipdispatch/memory.tsv (and OUT/kamailio/), and OUT/memory.png if gnuplot is installed.
#
# Env: DURATION=30m (s, m or h)  RATE=400  HOLD_MS=2000  SAMPLE_S=5  FLAT_PCT=5  KAMAILIO=0
#      SD_CONFIG=stateful_load.yaml (e.g. stateful_load_wt5.yaml)  SD_BIN (default bin/sipdispatch)
#      OUT=/tmp/sipdispatch-soak/<time>  and every run.sh knob.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DURATION=${DURATION:-30m} RATE=${RATE:-400} SAMPLE_S=${SAMPLE_S:-5} FLAT_PCT=${FLAT_PCT:-5}
export HOLD_MS=${HOLD_MS:-2000}
SD_CONFIG=${SD_CONFIG:-stateful_load.yaml}
OUT=${OUT:-/tmp/sipdispatch-soak/$(date +%Y%m%d-%H%M%S)}
export SD_BIN=${SD_BIN:-$HERE/../../bin/sipdispatch}
for t in sipp flock curl python3; do
    command -v "$t" >/dev/null || { echo "soak.sh: $t is not installed (.ci/setup installs sipp)" >&2; exit 2; }
done
[ "${KAMAILIO:-0}" = 1 ] && ! command -v kamailio >/dev/null && { echo "soak.sh: kamailio is not installed" >&2; exit 2; }
[ -x "$SD_BIN" ] || { echo "soak.sh: no binary at $SD_BIN (make build)" >&2; exit 2; }
case $DURATION in
*h) secs=$(( ${DURATION%h} * 3600 )) ;; *m) secs=$(( ${DURATION%m} * 60 )) ;; *s) secs=${DURATION%s} ;; *) secs=$DURATION ;;
esac
calls=$(( RATE * secs ))
mkdir -p "$OUT"

# soak LABEL CMD [METRICS_URL]: one bounded run.sh run under the bench lock, sampled meanwhile
soak() {
    local label=$1 cmd=$2 url=${3:-} sampler rc=0
    mkdir -p "$OUT/$label"
    python3 "$HERE/lib/soak.py" sample "$OUT/$label" "$SAMPLE_S" "$url" &
    sampler=$!
    echo "soak.sh: $label, $calls calls at $RATE/s held ${HOLD_MS} ms ($DURATION), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    PROXY_CMD=$cmd LABEL=$label OUT=$OUT/$label flock /tmp/sipbench.lock "$HERE/run.sh" once "$RATE" "$calls" || rc=$?
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    echo "soak.sh: $label done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    return $rc
}

READY_URL=http://127.0.0.1:19060/readyz READY_LABEL=sipdispatch \
    soak sipdispatch "$HERE/sipdispatch/sd.sh $SD_CONFIG" http://127.0.0.1:19060/metrics || true
dirs=("$OUT/sipdispatch")
if [ "${KAMAILIO:-0}" = 1 ]; then
    soak kamailio "$HERE/kamailio/kam.sh stateful_load.cfg" || true
    dirs+=("$OUT/kamailio")
fi

rc=0
python3 "$HERE/lib/soak.py" verdict "$FLAT_PCT" "${dirs[@]}" | tee "$OUT/verdict.txt" || rc=$?
if command -v gnuplot >/dev/null; then
    gnuplot -e "dir='$OUT'; out='$OUT/memory.png'; title='$SD_CONFIG, $RATE calls/s, ${HOLD_MS} ms hold, $DURATION'" \
        "$HERE/lib/soak.gp" && echo "plot: $OUT/memory.png"
else
    echo "soak.sh: gnuplot not installed (Debian gnuplot-nox): no plot" >&2
fi
echo "samples: ${dirs[*]/%//memory.tsv}"
exit $rc
