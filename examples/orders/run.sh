#!/bin/sh
# Run the order-flow example end to end: start `tide run` on a fresh data
# directory, publish the orders in events.ndjson, wait until every consumer
# has handled everything, show what the handlers emitted, and stop.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tide=${TIDE:-$top/tide}
work=$(mktemp -d "${TMPDIR:-/tmp}/tide-example-XXXXXX")
data=$work/data
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== starting tide (data in $data)"
"$tide" run --config "$here/tide.lua" --data "$data" &
pid=$!
i=0
until [ -f "$data/endpoints" ]; do
	i=$((i + 1))
	[ $i -le 100 ] || { echo "tide run did not start" >&2; exit 1; }
	kill -0 "$pid" 2>/dev/null || { echo "tide run exited" >&2; exit 1; }
	sleep 0.1
done

echo "== publishing $(wc -l < "$here/events.ndjson") orders"
"$tide" publish --data "$data" < "$here/events.ndjson"

# Wait until every consumer's checkpoint has reached the end of the log.
i=0
while :; do
	lag=$("$tide" stat --json --data "$data" | tr ',' '\n' | sed -n 's/.*"lag":\([0-9]*\).*/\1/p' | sort -n | tail -1)
	[ "${lag:-1}" = 0 ] && break
	i=$((i + 1))
	[ $i -le 100 ] || { echo "consumers did not catch up" >&2; exit 1; }
	sleep 0.1
done

echo "== fraud alerts in the log"
"$tide" log --data "$data" --type 'fraud.*'
echo "== cancelled orders"
"$tide" log --data "$data" --type order.cancelled
echo "== the story of order-0005, from its stream"
"$tide" log --data "$data" --subject order-0005 | cut -c1-160
echo "== projection order_status: every order's state"
"$tide" query order_status --data "$data"
echo "== projection customers: one key"
"$tide" query customers "$(sed -n '1s/.*"customer":"\([^"]*\)".*/\1/p' "$here/events.ndjson")" --data "$data"
echo "== log, consumers and projections"
"$tide" stat --data "$data"
kill "$pid"
wait "$pid"
pid=
