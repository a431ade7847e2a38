#!/bin/sh
# nab_scores.sh - a detector backtested on the Numenta Anomaly Benchmark
# (../shared/testdata/iot/NAB): every series as sensor.reading events (the
# subject names the series as NAB's windows file does), merged in time
# order, scored with NAB's rules against its windows.  Default detector:
# rules/iot/detector.lua; extra arguments go to tide backtest (--set ...,
# --nab-profile ..., -s other.lua replaces the detector).  NAB_CATEGORIES
# (directories of NAB's data/, space-separated; default all seven) picks
# the series.
#
#   tests/data/nab_scores.sh [--set detector.margin=0.05 ...]
#   NAB_CATEGORIES="artificialWithAnomaly realAWSCloudwatch" tests/data/nab_scores.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tide=${TIDE:-$top/tide}
nab=${TIDE_TESTDATA:-$top/../shared/testdata}/iot/NAB
[ -d "$nab/data" ] || { echo "nab_scores: $nab not found; skipped" >&2; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cats=${NAB_CATEGORIES:-}
if [ -z "$cats" ]; then
	for d in "$nab"/data/*/; do d=${d%/}; cats="$cats ${d##*/}"; done
fi
for c in $cats; do
	[ -d "$nab/data/$c" ] || { echo "nab_scores: no $nab/data/$c" >&2; exit 2; }
done
for c in $cats; do
	for f in "$nab/data/$c"/*.csv; do
		awk -v series="${f#"$nab"/data/}" -f "$here/nab2ndjson.awk" "$f"
	done
done | sed 's/.*"time":"\([^"]*\)".*/\1	&/' | sort -s -t '	' -k1,1 | cut -f2- >"$tmp/nab.ndjson"
script="-s $top/rules/iot/detector.lua"
case " $* " in *" -s "*) script= ;; esac
# shellcheck disable=SC2086
"$tide" backtest $script "$@" --nab "$nab/labels/combined_windows.json" --alerts sensor.anomaly \
	"$tmp/nab.ndjson"
