#!/bin/sh
# The order saga (saga.lua) over a bundled day of orders and the services'
# answers: one confirmed, one cancelled after its payment failed (its
# items released), one cancelled because the payment service never
# answered, one cancelled for want of stock, one more confirmed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tide=${TIDE:-$top/tide}
work=$(mktemp -d "${TMPDIR:-/tmp}/tide-saga-XXXXXX")
data=$work/data
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
"$tide" run --data "$data" --script "$here/saga.lua" 2>>"$work/tide.log" &
pid=$!
i=0
until [ -f "$data/endpoints" ]; do
	i=$((i + 1))
	[ $i -le 100 ] || { echo "tide run did not start" >&2; cat "$work/tide.log" >&2; exit 1; }
	sleep 0.1
done
echo "== publishing the orders and the services' answers"
"$tide" publish --wait --data "$data" <"$here/events.ndjson"
echo "== what the saga did, in order"
"$tide" log --data "$data" | grep '"source":"/tide/order.saga"' |
	sed 's/.*"type":"\([^"]*\)","subject":"\([^"]*\)","time":"\([^"]*\)".*"data":\(.*\)}$/\3  \2  \1  \4/'
