#!/bin/bash
# http.sh - Tide's HTTP front door, measured: CloudEvents posted over HTTP
# with keep-alive (one event per request, and batches), from wrk (a Debian
# package, installed if missing), and an event stream (SSE) fanned out to
# many subscribers.  Each figure is the median of BENCH_RUNS runs, each on
# a fresh engine in `sync`, with the engine's CPU per event beside it.
#
#   tests/bench/http.sh               (from the top of a built tree)
#
# Environment:
#   BENCH_RUNS           runs per figure (default 3)
#   BENCH_HTTP_SECONDS   seconds of each wrk run (default 10)
#   BENCH_HTTP_CONNS     wrk connections (default 16), on 2 threads
#   BENCH_HTTP_BATCH     events per batch request (default 100)
#   BENCH_SSE_SUBS       stream subscribers (default 100)
#   BENCH_SSE_EVENTS     events they all receive (default 20000)
#   BENCH_TMPDIR         where the data go (default $TMPDIR or /tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
TIDE=${TIDE:-$top/tide}
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_HTTP_SECONDS:-10}
CONNS=${BENCH_HTTP_CONNS:-16}
BATCH=${BENCH_HTTP_BATCH:-100}
SUBS=${BENCH_SSE_SUBS:-100}
SSE_EVENTS=${BENCH_SSE_EVENTS:-20000}
work=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/tide-http-bench.XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }
die() {
	say "http bench: $*"
	exit 1
}

[ -x "$TIDE" ] || die "no $TIDE: build the tree first"
if ! command -v wrk >/dev/null; then
	[ "$(id -u)" = 0 ] || die "wrk is missing (apt-get install wrk)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
		die "cannot install wrk"
fi
command -v python3 >/dev/null || die "python3 is needed for the stream subscribers"

clk_tck=$(getconf CLK_TCK)
cpu_of() { awk -v hz="$clk_tck" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

start() { # run
	rm -rf "$work/d"
	"$TIDE" run -q --data "$work/d" --durability sync --http 127.0.0.1:0 2>"$work/tide.log" &
	pid=$!
	for _ in $(seq 300); do
		grep -q '^http=' "$work/d/endpoints" 2>/dev/null && break
		sleep 0.02
	done
	addr=$(sed -n 's/^http=//p' "$work/d/endpoints")
	[ -n "$addr" ] || die "tide did not start: $(cat "$work/tide.log")"
}
stop() {
	kill "$pid" && wait "$pid" || true
	pid=
}
last_seq() { "$TIDE" stat --json --data "$work/d" | sed 's/.*"last_seq":\([0-9]*\).*/\1/'; }

# wrk's requests: one event, or a batch, each with ids of its own
cat >"$work/post.lua" <<'EOF'
local batch = tonumber(os.getenv("BATCH") or "1")
local counter, threads = 0, 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local function event(i)
  return string.format('{"specversion":"1.0","id":"w%d-%d","source":"/bench/shop","type":"order.placed",'
    .. '"subject":"order-%d","data":{"customer":"cust-01234","total":512.34,"items":3,"currency":"EUR","channel":"web"}}',
    tid, i, i % 1000)
end
function request()
  local body
  if batch == 1 then
    counter = counter + 1
    body = event(counter)
  else
    local t = {}
    for k = 1, batch do counter = counter + 1; t[k] = event(counter) end
    body = "[" .. table.concat(t, ",") .. "]"
  end
  return wrk.format("POST", "/events", {
    ["Content-Type"] = batch == 1 and "application/cloudevents+json" or "application/cloudevents-batch+json" }, body)
end
local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  io.write(string.format("wrk requests=%d errors=%d p50_us=%d p99_us=%d\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
EOF

post_run() { # batch
	local c0 c1 before after out
	start
	before=$(last_seq)
	c0=$(cpu_of "$pid")
	out=$(BATCH=$1 wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$work/post.lua" "http://$addr/" 2>&1) ||
		die "wrk failed: $out"
	c1=$(cpu_of "$pid")
	after=$(last_seq)
	stop
	echo "$out" | grep -q "errors=0" || die "wrk saw errors: $out"
	awk -v n="$((after - before))" -v s="$SECS" -v c0="$c0" -v c1="$c1" \
		-v w="$(echo "$out" | grep '^wrk ')" \
		'BEGIN { printf "%d %.2f %s\n", n / s, (c1 - c0) * 1e6 / n, w }'
}

# the subscribers: SUBS streams, until each has seen N events; prints the
# seconds from the first event's commit to the last one's delivery
cat >"$work/subs.py" <<'EOF'
import selectors, socket, sys, time
host, port, subs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sel = selectors.DefaultSelector()
seen = {}
for k in range(subs):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    seen[s] = [0, b""]
print("ready", flush=True)
first = None
done = 0
while done < subs:
    for key, _ in sel.select(timeout=60):
        s = key.fileobj
        data = s.recv(1 << 16)
        if not data:
            sys.exit("a stream ended early")
        if first is None and b"\nid: " in data:
            first = time.monotonic()
        st = seen[s]
        buf = st[1] + data
        st[0] += buf.count(b"\nid: ")
        st[1] = buf[-8:]
        if st[0] >= n:
            sel.unregister(s)
            done += 1
print("%.3f" % (time.monotonic() - first), flush=True)
EOF

sse_run() {
	local host port c0 c1 secs
	start
	host=${addr%:*} port=${addr##*:}
	coproc SUBS_P { python3 "$work/subs.py" "$host" "$port" "$SUBS" "$SSE_EVENTS"; }
	read -r line <&"${SUBS_P[0]}"
	[ "$line" = ready ] || die "subscribers: $line"
	sleep 0.5
	awk -v n="$SSE_EVENTS" 'BEGIN { for (i = 1; i <= n; i++)
		printf "{\"specversion\":\"1.0\",\"id\":\"s%d\",\"source\":\"/bench\",\"type\":\"order.placed\",\"data\":{\"n\":%d}}\n", i, i }' \
		>"$work/sse.ndjson"
	c0=$(cpu_of "$pid")
	"$TIDE" publish -q --data "$work/d" <"$work/sse.ndjson" || die "publish failed"
	read -r secs <&"${SUBS_P[0]}" || die "subscribers failed"
	c1=$(cpu_of "$pid")
	stop
	awk -v s="$secs" -v n="$SSE_EVENTS" -v k="$SUBS" -v c0="$c0" -v c1="$c1" \
		'BEGIN { printf "%d %.2f %s\n", n * k / s, (c1 - c0) * 1e6 / (n * k), s }'
}

say "http bench: $RUNS runs; wrk ${SECS}s, $CONNS connections; batches of $BATCH; $SUBS streams x $SSE_EVENTS events"
declare -A rate cpu
for kind in single batch sse; do
	: >"$work/$kind.rates"
	: >"$work/$kind.cpu"
	for r in $(seq "$RUNS"); do
		case $kind in
		single) line=$(post_run 1) ;;
		batch) line=$(post_run "$BATCH") ;;
		sse) line=$(sse_run) ;;
		esac
		say "  $kind run $r: $line"
		echo "$line" | awk '{ print $1 }' >>"$work/$kind.rates"
		echo "$line" | awk '{ print $2 }' >>"$work/$kind.cpu"
	done
	rate[$kind]=$(median <"$work/$kind.rates")
	cpu[$kind]=$(median <"$work/$kind.cpu")
done
echo "| HTTP, sync, median of $RUNS | events/s | engine CPU µs/event | runs |"
echo "| --- | --- | --- | --- |"
echo "| POST /events, one event per request, keep-alive, $CONNS connections | **${rate[single]}** | ${cpu[single]} | $(paste -sd, "$work/single.rates") |"
echo "| POST /events, batches of $BATCH, keep-alive, $CONNS connections | **${rate[batch]}** | ${cpu[batch]} | $(paste -sd, "$work/batch.rates") |"
echo "| GET /events/stream to $SUBS subscribers, $SSE_EVENTS events each (deliveries/s) | **${rate[sse]}** | ${cpu[sse]} per delivery | $(paste -sd, "$work/sse.rates") |"
