#!/bin/sh
# packs.sh - run a rule pack over a bundled event file: start `tide run`
# with every script of rules/PACK, publish EVENTS and wait until the rules
# have handled them (tide publish --wait), print the alerts they raised,
# then stop.  Used by examples/fraud/run.sh and examples/iot/run.sh.
#
#   examples/packs.sh PACK EVENTS ALERT_TYPE
set -eu
pack=$1 events=$2 alerts=$3
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
tide=${TIDE:-$top/tide}
work=$(mktemp -d "${TMPDIR:-/tmp}/tide-$pack-XXXXXX")
data=$work/data
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

set --
for r in "$top/rules/$pack"/*.lua; do set -- "$@" --script "$r"; done
echo "== tide run with the $pack pack: $(ls "$top/rules/$pack"/*.lua | sed 's|.*/||' | tr '\n' ' ')"
"$tide" run --data "$data" "$@" 2>>"$work/tide.log" &
pid=$!
i=0
until [ -f "$data/endpoints" ]; do
	i=$((i + 1))
	[ $i -le 100 ] || { echo "tide run did not start" >&2; cat "$work/tide.log" >&2; exit 1; }
	kill -0 "$pid" 2>/dev/null || { echo "tide run exited" >&2; cat "$work/tide.log" >&2; exit 1; }
	sleep 0.1
done
echo "== publishing $(wc -l <"$events") events from $(basename "$events"), until the rules have handled them"
"$tide" publish --wait --data "$data" <"$events"
echo "== $alerts raised"
"$tide" log --data "$data" --type "$alerts" |
	sed 's/.*"subject":"\([^"]*\)","time":"\([^"]*\)".*"data":\(.*\)}$/\2  \1  \3/'
echo "== $("$tide" log --data "$data" --type "$alerts" | wc -l) alerts"
