#!/bin/bash
# http_curl_test.sh - the HTTP endpoint as a client that is not Tide's
# own sees it: curl posts events in the CloudEvents HTTP binding's three
# modes (structured, binary, batched) to a real `tide run`, reads them
# back with GET /events, and follows GET /events/stream with an SSE
# client that is killed mid-stream and reconnects with Last-Event-ID:
# every event arrives once, in order, across the break.
#
# Run by `make check` (TIDE_TOP_BUILDDIR names the build).
set -u

fail() {
	echo "http_curl_test: FAIL: $*" >&2
	[ -f "$work/run.log" ] && sed 's/^/  tide run: /' "$work/run.log" >&2
	exit 1
}

builddir=${TIDE_TOP_BUILDDIR:?run by make check}
tide=$builddir/tide
command -v curl >/dev/null || fail "curl is not installed (./setup.sh check installs it)"

work=$(mktemp -d "${TMPDIR:-/tmp}/tide-curl-XXXXXX") || fail "cannot make a temporary directory"
pid=
sse=
cleanup() {
	for p in $sse $pid; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$tide" run --data "$work/data" --http 127.0.0.1:0 --set max_event_size=65536 --set max_message_size=65536 \
	>"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	grep -q '^http=' "$work/data/endpoints" 2>/dev/null && break
	sleep 0.1
done
addr=$(sed -n 's/^http=//p' "$work/data/endpoints" 2>/dev/null)
[ -n "$addr" ] || fail "tide run wrote no http= line to its endpoints file"
base=http://$addr

# post ARGS...: the status and body of a POST /events, as "STATUS BODY"
post() {
	curl -sS --max-time 10 -o "$work/body" -w '%{http_code}' "$base/events" "$@" \
		>"$work/status" 2>"$work/curl.err" || fail "curl: $(cat "$work/curl.err")"
	echo "$(cat "$work/status") $(tr -d '\n' <"$work/body")"
}

expect() { # WHAT GOT WANT
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
}

# ---------------------------------------------------------------------------
# The three modes

got=$(post -H 'Content-Type: application/cloudevents+json; charset=utf-8' \
	-d '{"specversion":"1.0","id":"s1","source":"/curl","type":"shop.order","data":{"n":1}}')
expect "structured mode" "$got" '200 {"ok":true,"seq":1}'

got=$(post -H 'ce-specversion: 1.0' -H 'ce-id: b1' -H 'ce-source: /curl' \
	-H 'ce-type: shop.paid' -H 'ce-subject: order%2F7' -H 'Content-Type: application/json' \
	-d '{"n":2}')
expect "binary mode" "$got" '200 {"ok":true,"seq":2}'

got=$(post -H 'Content-Type: application/cloudevents-batch+json' \
	-d '[{"specversion":"1.0","id":"m1","source":"/curl","type":"shop.order"},
	     {"specversion":"1.0","id":"m2","source":"/curl","type":"shop.order"}]')
expect "batched mode" "$got" '200 [{"ok":true,"seq":3},{"ok":true,"seq":4}]'

got=$(post -H 'Content-Type: application/cloudevents+json' \
	-d '{"specversion":"1.0","id":"s1","source":"/curl","type":"shop.order","data":{"n":1}}')
expect "a duplicate" "$got" '200 {"ok":true,"duplicate":true,"seq":1}'

# refusals, each with its reason
got=$(post -H 'Content-Type: application/cloudevents+json' -d '{"specversion":"1.0","id":"x"}')
case $got in 400\ *source*) ;; *) fail "a missing attribute: got '$got'" ;; esac
got=$(post -H 'Content-Type: text/plain' -d 'hello')
case $got in 415\ *) ;; *) fail "no mode: got '$got'" ;; esac
head -c 70000 /dev/zero | tr '\0' 'x' >"$work/big"
got=$(post -H 'Content-Type: application/cloudevents+json' --data-binary "@$work/big")
case $got in 413\ *) ;; *) fail "over the size limit: got '${got:0:80}'" ;; esac

# read back: the binary event's attributes decoded, its data as sent
curl -sS --max-time 10 "$base/events?from=2&limit=1" >"$work/read" || fail "GET /events failed"
grep -q '"id":"b1"' "$work/read" && grep -q '"subject":"order/7"' "$work/read" &&
	grep -q '"data":{"n":2}' "$work/read" || fail "GET /events: $(cat "$work/read")"

# ---------------------------------------------------------------------------
# An SSE client killed mid-stream, and back with Last-Event-ID

# ids FILE: the "id:" lines of a stream, as "1 2 3"
ids() { sed -n 's/^id: //p' "$1" | tr '\n' ' ' | sed 's/ $//'; }

# wait_ids FILE N: until FILE holds N ids (10 s at most)
wait_ids() {
	for _ in $(seq 200); do
		[ "$(sed -n 's/^id: //p' "$1" | wc -l)" -ge "$2" ] && return 0
		sleep 0.05
	done
	fail "the stream got $(ids "$1") where $2 events were due"
}

curl -sSN --max-time 30 "$base/events/stream?from=1" >"$work/sse1" 2>/dev/null &
sse=$!
wait_ids "$work/sse1" 4
for i in 5 6; do
	post -H 'Content-Type: application/cloudevents+json' \
		-d "{\"specversion\":\"1.0\",\"id\":\"l$i\",\"source\":\"/curl\",\"type\":\"shop.order\"}" \
		>/dev/null
done
wait_ids "$work/sse1" 6
kill -KILL $sse
wait $sse 2>/dev/null
sse=
last=$(sed -n 's/^id: //p' "$work/sse1" | tail -1)
expect "the first connection" "$(ids "$work/sse1")" "1 2 3 4 5 6"

# events stored while no one listens
for i in 7 8 9; do
	post -H 'Content-Type: application/cloudevents+json' \
		-d "{\"specversion\":\"1.0\",\"id\":\"l$i\",\"source\":\"/curl\",\"type\":\"shop.order\"}" \
		>/dev/null
done
curl -sSN --max-time 30 -H "Last-Event-ID: $last" "$base/events/stream" >"$work/sse2" 2>/dev/null &
sse=$!
wait_ids "$work/sse2" 3
post -H 'Content-Type: application/cloudevents+json' \
	-d '{"specversion":"1.0","id":"l10","source":"/curl","type":"shop.order"}' >/dev/null
wait_ids "$work/sse2" 4
expect "after the reconnection" "$(ids "$work/sse2")" "7 8 9 10"
grep -q '^event: shop.order$' "$work/sse2" || fail "no event: line in $(head -c 300 "$work/sse2")"
kill -KILL $sse
wait $sse 2>/dev/null
sse=

kill -TERM $pid
wait $pid
rc=$?
pid=
[ $rc = 0 ] || fail "tide run ended with status $rc after SIGTERM"
echo "http_curl_test: ok (three modes, refusals, a stream killed and resumed)"
