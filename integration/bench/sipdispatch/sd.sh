#!/usr/bin/env bash
# Start sipdispatch in the foreground with a benchmark config, on an empty data dir (so every run
# starts from the same raft state, as Kamailio starts from an empty call-load table).
# usage: sd.sh <cfg file name in this dir | path> [extra serve args]
# env: SD_BIN (default: bin/sipdispatch of this checkout), SD_WORK (data dir parent, default /tmp/sdbench)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cfg=$1; shift
[ -f "$cfg" ] || cfg="$here/$cfg"
bin=${SD_BIN:-$here/../../../bin/sipdispatch}
wd=${SD_WORK:-/tmp/sdbench}
rm -rf "$wd"; mkdir -p "$wd"
# the configs name the list file as @BENCH@/kamailio/dispatcher.list and the data dir as @WORK@/data
sed -e "s#@BENCH@#$here/..#g" -e "s#@WORK@#$wd#g" "$cfg" > "$wd/sipdispatch.yaml"
exec "$bin" serve -config "$wd/sipdispatch.yaml" "$@"
