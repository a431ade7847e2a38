#!/bin/sh
# Run the rules example: start `tide run` with rules.lua, publish the first
# half of events.ndjson, kill the engine with SIGKILL in the middle of open
# windows and timers, start it again, publish the rest, then show the
# alerts, and check that `tide replay` of the log emits exactly the same.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tide=${TIDE:-$top/tide}
work=$(mktemp -d "${TMPDIR:-/tmp}/tide-rules-XXXXXX")
data=$work/data
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

start() {
	"$tide" run --data "$data" --script "$here/rules.lua" 2>>"$work/tide.log" &
	pid=$!
	i=0
	until [ -f "$data/endpoints" ]; do
		i=$((i + 1))
		[ $i -le 100 ] || { echo "tide run did not start" >&2; cat "$work/tide.log" >&2; exit 1; }
		kill -0 "$pid" 2>/dev/null || { echo "tide run exited" >&2; cat "$work/tide.log" >&2; exit 1; }
		sleep 0.1
	done
}

# until every consumer's checkpoint has reached the end of the log
settle() {
	i=0
	while :; do
		lag=$("$tide" stat --json --data "$data" | tr ',' '\n' | sed -n 's/.*"lag":\([0-9]*\).*/\1/p' | sort -n | tail -1)
		[ "${lag:-1}" = 0 ] && break
		i=$((i + 1))
		[ $i -le 200 ] || { echo "rules did not catch up" >&2; exit 1; }
		sleep 0.1
	done
}

total=$(wc -l <"$here/events.ndjson")
half=$((total / 2))
echo "== starting tide (data in $data)"
start
echo "== publishing $half of $total events"
head -n "$half" "$here/events.ndjson" | "$tide" publish -q --data "$data"
settle
echo "== kill -9, with windows open and timers waiting; starting again"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
rm -f "$data/endpoints"
start
echo "== publishing the other $((total - half))"
tail -n "+$((half + 1))" "$here/events.ndjson" | "$tide" publish -q --data "$data"
settle
echo "== alerts"
"$tide" log --data "$data" --type 'fraud.*' | sed 's/.*"subject":\("[^"]*"\).*"data":\(.*\)}$/\1 \2/'
"$tide" log --data "$data" --type 'sensor.*' | grep -v '"sensor.reading"' | sed 's/.*"type":"\([^"]*\)".*"subject":\("[^"]*"\).*"data":\(.*\)}$/\1 \2 \3/'
echo "== rules"
"$tide" stat --data "$data" | sed -n '/^consumers/,/^projections/p' | grep -v '^projections'
kill "$pid"
wait "$pid"
pid=
live=$("$tide" log --data "$data" | grep -c '"source":"/tide/')
replayed=$("$tide" replay -q --data "$data" --script "$here/rules.lua" | grep -c '^{"emit"')
echo "== $live events emitted live, $replayed by tide replay of the log"
[ "$live" = "$replayed" ] || { echo "replay disagrees" >&2; exit 1; }
