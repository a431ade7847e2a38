#!/usr/bin/env bash
# tests/bench/run.sh - Tide's benchmarks, with Redis Streams and NATS
# JetStream measured side by side in the same run.  See README.md here.
#
#   TIDE=/path/to/tide tests/bench/run.sh        (or: make bench)
#
# Environment (all optional):
#   TIDE             the tide binary (default: ./tide at the top of the tree)
#   BENCH_EVENTS     events per throughput run (default 1000000)
#   BENCH_RUNS       runs per figure; the table shows the median (default 3)
#   BENCH_BATCH      events per PUSH message, NDJSON (default 500)
#   BENCH_REQS       sequential REQ round trips per latency run (default 20000)
#   BENCH_REQS_SYNC  the same in sync durability (default 5000: each waits an fsync)
#   BENCH_SUITES     which parts to run
#                    (default "ingest single req redis nats projection embed")
#   BENCH_TRANSPORTS transports for Tide (default "ipc tcp")
#   BENCH_NATS_PENDING  max JetStream async publishes in flight (default 10000)
#   BENCH_REDIS_CLIENTS redis-benchmark connections (default 50)
#   BENCH_PERF=1     after the measured runs, profile Tide with perf during
#                    one extra ingest run (sync, ipc, with and without the
#                    consumer) and one projection rebuild, and print the top
#                    symbols
#   BENCH_PROJ_EVENTS   events in the projection benchmark's log (default 1000000)
#   BENCH_PROJ_KEYS     distinct keys among them (default 100000)
#   BENCH_PROJ_THREADS  build_threads of the projection runs (default 0: one per CPU)
#   BENCH_PROJ_QUERIES  sequential queries per latency run (default 20000)
#   BENCH_PROJ_INGEST   events pushed while querying (default 1000000; 0: skip)
#   BENCH_EMBED_INFLIGHT  embed: tide_publish calls kept in flight on the loop
#                    thread (default 1000)
#   BENCH_EMBED_THREADS   embed: producer thread counts for tide_publish_mt
#                    (default "1 4")
#   BENCH_TMPDIR     where data directories go (default /var/tmp: a real
#                    disk, so fsync costs what it costs; /tmp may be tmpfs)
#   BENCH_OUT        also write the markdown report to this file
#   BENCH_KEEP=1     keep the work directory (logs, data) at the end
#   BENCH_NO_INSTALL=1  never call apt-get; skip a peer that is missing
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
TIDE=${TIDE:-$top/tide}
EVENTS=${BENCH_EVENTS:-1000000}
RUNS=${BENCH_RUNS:-3}
BATCH=${BENCH_BATCH:-500}
REQS=${BENCH_REQS:-20000}
REQS_SYNC=${BENCH_REQS_SYNC:-5000}
SUITES=${BENCH_SUITES:-ingest single req redis nats projection embed}
PROJ_EVENTS=${BENCH_PROJ_EVENTS:-1000000}
PROJ_KEYS=${BENCH_PROJ_KEYS:-100000}
PROJ_THREADS=${BENCH_PROJ_THREADS:-0}
PROJ_QUERIES=${BENCH_PROJ_QUERIES:-20000}
PROJ_INGEST=${BENCH_PROJ_INGEST:-1000000}
EMBED_INFLIGHT=${BENCH_EMBED_INFLIGHT:-1000}
EMBED_THREADS=${BENCH_EMBED_THREADS:-1 4}
TRANSPORTS=${BENCH_TRANSPORTS:-ipc tcp}
NATS_PENDING=${BENCH_NATS_PENDING:-10000}
REDIS_CLIENTS=${BENCH_REDIS_CLIENTS:-50}
CC=${CC:-cc}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }
want() { case " $SUITES " in *" $1 "*) return 0 ;; esac; return 1; }

[ -x "$TIDE" ] || die "no tide binary at $TIDE (build it first, or set TIDE=)"
case $EVENTS$RUNS$BATCH$REQS$REQS_SYNC$PROJ_EVENTS$PROJ_KEYS$PROJ_QUERIES$PROJ_INGEST$PROJ_THREADS$EMBED_INFLIGHT${EMBED_THREADS// /} in *[!0-9]*) die "BENCH_* counts must be numbers" ;; esac
[ "$RUNS" -ge 1 ] || die "BENCH_RUNS must be at least 1"

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/tide-bench.XXXXXX")
pids=()
cleanup() {
	local p
	for p in ${pids[@]+"${pids[@]}"}; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in ${pids[@]+"${pids[@]}"}; do
		wait "$p" 2>/dev/null || true
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "bench: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/bin"

forget_pid() { # drop a pid from the cleanup list
	local p keep=()
	for p in ${pids[@]+"${pids[@]}"}; do [ "$p" = "$1" ] || keep+=("$p"); done
	pids=("${keep[@]+"${keep[@]}"}")
}

stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	forget_pid "$1"
}

# Run a client in the background and wait for it, so a signal is handled
# at once (the trap stops it with everything else) instead of after it.
# Its stdout goes to $work/client.out.
client() {
	local p rc=0
	"$@" >"$work/client.out" &
	p=$!
	pids+=("$p")
	wait "$p" || rc=$?
	forget_pid "$p"
	return $rc
}

# A free TCP port on 127.0.0.1: random, and nothing answers there.
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

wait_port() { # port seconds
	local end=$((SECONDS + $2))
	until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.05
	done
}

# ---- packages -------------------------------------------------------------

apt_updated=0
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
ensure_pkgs() { # pkg... ; returns non-zero when something is still missing
	local missing=() p
	command -v dpkg-query >/dev/null || return 1
	for p in "$@"; do installed "$p" || missing+=("$p"); done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "${BENCH_NO_INSTALL:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
		say "bench: missing ${missing[*]} and cannot install (BENCH_NO_INSTALL or not root)"
		return 1
	fi
	say "bench: installing ${missing[*]}"
	if [ $apt_updated = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 || return 1
}

# ---- build the load generators -------------------------------------------

pkg-config --exists nanomsg lmdb || ensure_pkgs libnanomsg-dev liblmdb-dev pkg-config ||
	die "tidebench needs nanomsg and lmdb development files"
# shellcheck disable=SC2046
"$CC" -O2 -Wall -o "$work/bin/tidebench" "$here/tidebench.c" \
	$(pkg-config --cflags --libs nanomsg lmdb) || die "cannot build tidebench"

# projbench links libtide from this tree (tide_log_query, tide_log_projections)
have_proj=0
if want projection; then
	# shellcheck disable=SC2046
	if [ -e "$top/.libs/libtide.so" ] && [ -e "$top/src/tide.h" ] &&
		"$CC" -O2 -Wall -o "$work/bin/projbench" "$here/projbench.c" -I "$top/src" \
			-L "$top/.libs" -ltide -Wl,-rpath,"$top/.libs" $(pkg-config --cflags --libs nanomsg); then
		have_proj=1
	else
		say "bench: SKIPPING projection: no libtide in $top/.libs (build the tree) or projbench failed to build"
	fi
fi

# embedbench links libtide from this tree too, and libevent and yajl
# (both dependencies of the tree: configure has found them)
have_embed=0
if want embed; then
	# shellcheck disable=SC2046
	if [ -e "$top/.libs/libtide.so" ] && [ -e "$top/src/tide.h" ] &&
		pkg-config --exists libevent yajl &&
		"$CC" -O2 -Wall -o "$work/bin/embedbench" "$here/embedbench.c" -I "$top/src" \
			-L "$top/.libs" -ltide -Wl,-rpath,"$top/.libs" \
			$(pkg-config --cflags --libs libevent yajl) -lpthread; then
		have_embed=1
	else
		say "bench: SKIPPING embed: no libtide in $top/.libs (build the tree), no libevent or yajl, or embedbench failed to build"
	fi
fi

have_redis=0 have_nats=0
if want redis; then
	if ensure_pkgs redis-server redis-tools; then
		have_redis=1
	else
		say "bench: SKIPPING Redis Streams: redis-server/redis-tools could not be installed"
	fi
fi
if want nats; then
	# shellcheck disable=SC2046
	if ensure_pkgs nats-server libnats-dev pkg-config && pkg-config --exists libnats &&
		"$CC" -O2 -Wall -o "$work/bin/natsbench" "$here/natsbench.c" \
			$(pkg-config --cflags --libs libnats); then
		have_nats=1
	else
		say "bench: SKIPPING NATS JetStream: nats-server/libnats-dev missing or natsbench failed to build"
	fi
fi

# ---- Tide -------------------------------------------------------------------

cat >"$work/consumer.lua" <<'EOF'
local tide = require "tide"
tide.on("order.placed", function(ev)
  local a, b = ev.data.total, ev.data.customer
end, { name = "bench", from = "beginning" })
EOF

seqno=0
tide_pid='' tide_data='' tide_pull='' tide_rep=''
start_tide() { # transport durability consumer(none|lua)
	local dir script=()
	seqno=$((seqno + 1))
	dir="$work/t$seqno"
	mkdir -p "$dir"
	tide_data="$dir/data"
	if [ "$1" = ipc ]; then
		tide_pull="ipc://$dir/pull.ipc" tide_rep="ipc://$dir/rep.ipc"
		local pub="ipc://$dir/pub.ipc"
	else
		tide_pull="tcp://127.0.0.1:$(free_port)" tide_rep="tcp://127.0.0.1:$(free_port)"
		local pub="tcp://127.0.0.1:$(free_port)"
	fi
	[ "$3" = lua ] && script=(--script "$work/consumer.lua")
	"$TIDE" run -q --data "$tide_data" --pull "$tide_pull" --rep "$tide_rep" --pub "$pub" \
		--durability "$2" "${script[@]+"${script[@]}"}" 2>"$dir/tide.log" &
	tide_pid=$!
	pids+=("$tide_pid")
	local end=$((SECONDS + 15))
	until [ -s "$tide_data/endpoints" ]; do
		if ! kill -0 "$tide_pid" 2>/dev/null || [ $SECONDS -ge $end ]; then
			cat "$dir/tide.log" >&2
			die "tide did not start ($1 $2 $3)"
		fi
		sleep 0.02
	done
}

stop_tide() {
	stop_pid "$tide_pid"
	rm -rf "$(dirname "$tide_data")"
}

# Check what the engine reports after a throughput run: every event is in
# the log, and the consumer (if any) has handled every one.
verify_tide() { # consumer
	local st
	st=$("$TIDE" stat --json --data "$tide_data")
	case $st in *"\"events\":$EVENTS,"*) ;; *) die "tide stat disagrees: $st" ;; esac
	if [ "$1" = lua ]; then
		case $st in *"\"checkpoint\":$EVENTS,"*) ;; *) die "consumer did not finish: $st" ;; esac
	fi
}

# CPU seconds (user + system) a process has used so far: the server's own
# cost per event, which the shared machine's noise disturbs less than time.
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
proc_cpu() {
	awk -v hz="$clk_tck" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
per_event_us() { # cpu_s events
	awk -v c="$1" -v n="$2" 'BEGIN { printf "%.2f", c * 1e6 / n }'
}

raw="$work/raw.txt"
: >"$raw"
record() { # key value rest-of-line
	printf '%s %s %s\n' "$1" "$2" "$3" >>"$raw"
}
field() { # name line
	local x
	for x in $2; do
		case $x in "$1="*) echo "${x#*=}"; return 0 ;; esac
	done
	return 1
}

run_push() { # transport durability consumer batch run
	local out rate
	start_tide "$1" "$2" "$3"
	local cons=()
	[ "$3" = lua ] && cons=(--consumer bench)
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$EVENTS" \
		--batch "$4" --run "r$5" --timeout 600 "${cons[@]+"${cons[@]}"}" ||
		{ cat "$(dirname "$tide_data")/tide.log" >&2; die "push run failed ($*)"; }
	out=$(<"$work/client.out")
	local cpu
	cpu=$(proc_cpu "$tide_pid")
	out+=" server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$EVENTS")"
	verify_tide "$3"
	stop_tide
	rate=$(field rate "$out")
	record "push/$1/$2/$3/$4" "$rate" "$out"
	say "  tide push $1 $2 consumer=$3 batch=$4 run $5: $rate events/s  ($out)"
}

run_req() { # transport durability run
	local out n=$REQS
	[ "$2" = sync ] && n=$REQS_SYNC
	start_tide "$1" "$2" none
	client "$work/bin/tidebench" req --url "$tide_rep" --requests "$n" --run "q$3" ||
		{ cat "$(dirname "$tide_data")/tide.log" >&2; die "req run failed ($*)"; }
	out=$(<"$work/client.out")
	stop_tide
	record "req/$1/$2" "$(field median_us "$out")" "$out"
	say "  tide req $1 $2 run $3: $out"
}

# ---- peers ------------------------------------------------------------------

# The payload: one of the benchmark's events (benchev.h), about 200 bytes.
payload='{"specversion":"1.0","id":"bench-redis-1","source":"/bench/shop","type":"order.placed","subject":"order-0042","data":{"customer":"cust-01234","total":512.34,"items":3,"currency":"EUR","channel":"web"}}'

run_redis() { # run
	local dir port pid out rate
	seqno=$((seqno + 1))
	dir="$work/redis$seqno"
	mkdir -p "$dir"
	port=$(free_port)
	redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes \
		--appendfsync always --save '' --daemonize no --logfile "$dir/redis.log" &
	pid=$!
	pids+=("$pid")
	wait_port "$port" 15 || die "redis-server did not start (see $dir/redis.log)"
	client redis-benchmark -h 127.0.0.1 -p "$port" -c "$REDIS_CLIENTS" -n "$EVENTS" -P 100 --csv \
		XADD bench '*' ev "$payload" || die "redis-benchmark failed"
	out=$(tail -1 "$work/client.out")
	# the last CSV fields are rps, avg, min, p50, p95, p99, max (the command
	# itself contains commas, so count from the end)
	rate=$(awk -F, '{ gsub(/"/, "", $(NF-6)); printf "%.0f", $(NF-6) }' <<<"$out")
	local len
	len=$(redis-cli -h 127.0.0.1 -p "$port" XLEN bench)
	local cpu
	cpu=$(proc_cpu "$pid")
	redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
	stop_pid "$pid"
	rm -rf "$dir"
	[ "$len" = "$EVENTS" ] || die "redis stream holds $len entries, expected $EVENTS"
	record "redis" "$rate" "xlen=$len clients=$REDIS_CLIENTS pipeline=100 rate=$rate server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$EVENTS")"
	say "  redis XADD run $1: $rate events/s"
}

run_nats() { # run
	local dir port pid out rate
	seqno=$((seqno + 1))
	dir="$work/nats$seqno"
	mkdir -p "$dir"
	port=$(free_port)
	nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/js" -l "$dir/nats.log" &
	pid=$!
	pids+=("$pid")
	wait_port "$port" 15 || die "nats-server did not start (see $dir/nats.log)"
	client "$work/bin/natsbench" --url "nats://127.0.0.1:$port" --events "$EVENTS" \
		--pending "$NATS_PENDING" --run "n$1" || die "natsbench failed"
	out=$(<"$work/client.out")
	local cpu
	cpu=$(proc_cpu "$pid")
	out+=" server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$EVENTS")"
	stop_pid "$pid"
	rm -rf "$dir"
	rate=$(field rate "$out")
	record "nats" "$rate" "$out"
	say "  nats js_PublishAsync run $1: $rate msgs/s  ($out)"
}

# ---- projection ---------------------------------------------------------------

# The projection: account state per key (data.account), folded from
# deposits, withdrawals and orders.  Realistic rather than empty: a key
# function, an init, and handlers that read ev.data and update a few
# counts, sums and last-seen values.
cat >"$work/proj.lua" <<'EOF'
local tide = require "tide"
tide.projection("accounts", {
  version = 1,
  key = function(ev) return ev.data.account end,
  init = function(key)
    return { balance = 0, deposits = 0, withdrawals = 0, orders = 0, spent = 0 }
  end,
  on = {
    ["account.deposited"] = function(s, ev)
      local d = ev.data
      s.balance = s.balance + d.amount
      s.deposits = s.deposits + 1
      s.last_seq = ev.seq
      s.last_channel = d.channel
    end,
    ["account.withdrew"] = function(s, ev)
      local d = ev.data
      s.balance = s.balance - d.amount
      s.withdrawals = s.withdrawals + 1
      s.last_seq = ev.seq
      s.last_channel = d.channel
    end,
    ["order.placed"] = function(s, ev)
      local d = ev.data
      s.orders = s.orders + 1
      s.spent = s.spent + d.amount
      s.last_seq = ev.seq
      s.last_order = d.ref
    end,
  },
})
EOF

# The same projection keyed by the default key, the event's subject
# ("account-N", one stream per account): the key is read in C.
sed '/^  key = function/d' "$work/proj.lua" >"$work/proj_subject.lua"

# Build the log once per benchmark: a fresh engine without scripts
# (relaxed), PROJ_EVENTS account events pushed over ipc, then SIGTERM.
# Every measurement starts from a copy of it.
projlog="$work/projlog"
build_proj_log() {
	local out
	say "bench: building the projection log ($PROJ_EVENTS events over $PROJ_KEYS keys)"
	start_tide ipc relaxed none
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$PROJ_EVENTS" \
		--batch "$BATCH" --kind account --keys "$PROJ_KEYS" --run plog --timeout 600 ||
		{ cat "$(dirname "$tide_data")/tide.log" >&2; die "building the projection log failed"; }
	out=$(<"$work/client.out")
	verify_events "$PROJ_EVENTS"
	stop_pid "$tide_pid"
	mv "$tide_data" "$projlog"
	rm -f "$projlog/endpoints"
	rm -rf "$(dirname "$tide_data")"
	record "proj/log" "$(field rate "$out")" "log_event_bytes=$(field avg_event_bytes "$out") $out size=$(du -sh "$projlog" | cut -f1)"
	say "  projection log: $out"
}

verify_events() { # n
	local st
	st=$("$TIDE" stat --json --data "$tide_data")
	case $st in *"\"events\":$1,"*) ;; *) die "tide stat disagrees: $st" ;; esac
}

# Start `tide run` with the projection on a copy of the log; proj_t0 is
# the wall clock just before the start.
proj_t0=''
start_proj_tide() { # durability [script]
	local dir
	seqno=$((seqno + 1))
	dir="$work/t$seqno"
	mkdir -p "$dir"
	tide_data="$dir/data"
	cp -a "$projlog" "$tide_data"
	tide_pull="ipc://$dir/pull.ipc" tide_rep="ipc://$dir/rep.ipc"
	# write the copy out first, so the build does not pay for its writeback
	sync "$tide_data/data.mdb" 2>/dev/null || sync
	proj_t0=$EPOCHREALTIME
	"$TIDE" run -q --data "$tide_data" --pull "$tide_pull" --rep "$tide_rep" --pub "ipc://$dir/pub.ipc" \
		--durability "$1" --script "${2:-$work/proj.lua}" --set build_threads="$PROJ_THREADS" \
		2>"$dir/tide.log" &
	tide_pid=$!
	pids+=("$tide_pid")
}

proj_fail() { cat "$(dirname "$tide_data")/tide.log" >&2; die "projection run failed: $*"; }

# The build at start only, of the projection keyed by subject.
run_proj_subject() { # run
	local out
	start_proj_tide sync "$work/proj_subject.lua"
	client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$PROJ_EVENTS" \
		--t0 "$proj_t0" --pid "$tide_pid" --timeout 900 || proj_fail "build by subject $*"
	out=$(<"$work/client.out")
	record "proj/build/subject" "$(field rate "$out")" "$out"
	say "  projection build by subject run $1: $(field rate "$out") events/s  ($out)"
	stop_tide
}

run_proj() { # durability run
	local out q=()
	start_proj_tide "$1"
	# 1. the build: from the daemon's start until the projection is live
	client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$PROJ_EVENTS" \
		--t0 "$proj_t0" --pid "$tide_pid" --timeout 900 || proj_fail "build $*"
	out=$(<"$work/client.out")
	record "proj/build/$1" "$(field rate "$out")" "$out"
	say "  projection build $1 run $2: $(field rate "$out") events/s  ($out)"
	if [ "$1" != sync ]; then
		stop_tide
		return 0
	fi
	# 2. queries for random keys: REP on the engine, then tide_log_query
	q=(--name accounts --keys "$PROJ_KEYS" --requests "$PROJ_QUERIES")
	client "$work/bin/projbench" query --url "$tide_rep" "${q[@]}" --seed "$2" || proj_fail "query $*"
	out=$(<"$work/client.out")
	record "proj/query/rep" "$(field median_us "$out")" "$out"
	say "  projection query REP run $2: $out"
	client "$work/bin/projbench" direct --data "$tide_data" "${q[@]}" --seed "$2" || proj_fail "direct $*"
	out=$(<"$work/client.out")
	record "proj/query/direct" "$(field median_us "$out")" "$out"
	say "  projection query direct run $2: $out"
	# 3. the same REP queries while PROJ_INGEST more events are pushed, then
	# the time until the projection is live at the end of the log again
	if [ "$PROJ_INGEST" -gt 0 ]; then
		local pp cpu0 t0 busy=1 total=$((PROJ_EVENTS + PROJ_INGEST))
		cpu0=$(proc_cpu "$tide_pid")
		t0=$EPOCHREALTIME
		"$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$PROJ_INGEST" \
			--expect "$total" --batch "$BATCH" --kind account --keys "$PROJ_KEYS" --run "pi$2" \
			--timeout 600 >"$work/push.out" &
		pp=$!
		pids+=("$pp")
		sleep 0.3 # let the push start
		# no warm-up; stop when the push is done; a reply may take long
		client "$work/bin/projbench" query --url "$tide_rep" "${q[@]}" --seed "$((1000 + $2))" \
			--warmup 0 --while-pid "$pp" --timeout 300 || proj_fail "query under ingest $*"
		out=$(<"$work/client.out")
		kill -0 "$pp" 2>/dev/null || busy=0
		record "proj/query/ingest" "$(field median_us "$out")" "$out push_still_running=$busy"
		say "  projection query REP under ingest run $2: $out (push still running at the end: $busy)"
		wait "$pp" || proj_fail "push under queries $*"
		forget_pid "$pp"
		client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$total" \
			--from "$PROJ_EVENTS" --t0 "$t0" --pid "$tide_pid" --cpu0 "$cpu0" --timeout 900 ||
			proj_fail "live after ingest $*"
		out=$(<"$work/client.out")
		record "proj/ingest" "$(field rate "$out")" "$out push: $(<"$work/push.out")"
		say "  ingest with the live projection run $2: $(field rate "$out") events/s  ($out)"
	fi
	# 4. a forced rebuild on the running engine (of everything in the log)
	client "$work/bin/projbench" rebuild --url "$tide_rep" --data "$tide_data" --name accounts \
		--pid "$tide_pid" --timeout 900 || proj_fail "forced rebuild $*"
	out=$(<"$work/client.out")
	record "proj/rebuild" "$(field rate "$out")" "$out"
	say "  projection forced rebuild run $2: $(field rate "$out") events/s  ($out)"
	stop_tide
}

# ---- embedding ----------------------------------------------------------------

# The log the reads walk: EVENTS card transactions, written once by an
# engine in this process (relaxed), then only read.
embedlog="$work/embedlog"
build_embed_log() {
	say "bench: building the embedding log ($EVENTS card transactions)"
	client "$work/bin/embedbench" write --data "$embedlog" --events "$EVENTS" ||
		die "building the embedding log failed"
	record "embed/log" "$(field rate "$(<"$work/client.out")")" "$(<"$work/client.out")"
	say "  embedding log: $(<"$work/client.out")"
}

# Five walks of that log: the cursor alone, tide_event_value, tide_event_json,
# tide_event_json + yajl, tide_event_data + yajl (ns per event each).
run_embed_read() { # run
	local out
	client "$work/bin/embedbench" read --data "$embedlog" || die "embed read run $1 failed"
	out=$(<"$work/client.out")
	record "embed/read" "$(field ratio "$out")" "$out"
	say "  embed read run $1: $out"
}

# EVENTS events published from C into a new log, one per call.
run_embed_pub() { # loop|mt threads durability consumer(none|c) run
	local out dir key cons=()
	seqno=$((seqno + 1))
	dir="$work/e$seqno"
	mkdir -p "$dir"
	[ "$4" = c ] && cons=(--consumer)
	client "$work/bin/embedbench" publish --data "$dir/data" --events "$EVENTS" --durability "$3" \
		--mode "$1" --threads "$2" --inflight "$EMBED_INFLIGHT" "${cons[@]+"${cons[@]}"}" ||
		die "embed publish run failed ($*)"
	out=$(<"$work/client.out")
	rm -rf "$dir"
	key="embed/pub/$1"
	[ "$1" = mt ] && key+="$2"
	key+="/$3/$4"
	record "$key" "$(field rate "$out")" "$out"
	say "  embed publish $1 threads=$2 $3 consumer=$4 run $5: $(field rate "$out") events/s  ($out)"
}

run_embed() { # run
	local d c t
	run_embed_read "$1"
	for d in relaxed sync; do
		for c in none c; do
			run_embed_pub loop 1 "$d" "$c" "$1"
			for t in $EMBED_THREADS; do run_embed_pub mt "$t" "$d" "$c" "$1"; done
		done
	done
}

# ---- perf -------------------------------------------------------------------

perf_report="$work/perf.txt"
run_perf() { # consumer
	local pp out
	start_tide ipc sync "$1"
	perf record -e cpu-clock -g -p "$tide_pid" -o "$work/perf.data" >/dev/null 2>&1 &
	pp=$!
	pids+=("$pp")
	sleep 0.5
	local cons=()
	[ "$1" = lua ] && cons=(--consumer bench)
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$EVENTS" \
		--batch "$BATCH" --run "p$1" "${cons[@]+"${cons[@]}"}" || die "profiled run failed"
	out=$(<"$work/client.out")
	kill -INT "$pp"
	wait "$pp" || true
	forget_pid "$pp"
	stop_tide
	{
		echo "### perf: ipc, sync, consumer=$1 ($out)"
		echo
		echo '```'
		{ perf report -i "$work/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null ||
			true; } | awk '/^ +[0-9.]+%/ && n++ < 40 { printf "%8s  %-22s %s %s\n", $1, $2, $3, $4 }'
		echo '```'
		echo
	} >>"$perf_report"
}

# A forced rebuild on a running engine (sync), profiled.  DWARF call
# graphs at a low rate, so that time in liblmdb and liblua (no frame
# pointers, no symbols) is still charged to Tide's callers.
run_perf_projection() {
	local pp out
	start_proj_tide sync
	client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$PROJ_EVENTS" \
		--t0 "$proj_t0" --pid "$tide_pid" --timeout 900 || proj_fail "profiled build"
	perf record -e cpu-clock -F 250 --call-graph dwarf,16384 -p "$tide_pid" \
		-o "$work/perf.data" >/dev/null 2>&1 &
	pp=$!
	pids+=("$pp")
	sleep 0.5
	client "$work/bin/projbench" rebuild --url "$tide_rep" --data "$tide_data" --name accounts \
		--pid "$tide_pid" --timeout 900 || proj_fail "profiled rebuild"
	out=$(<"$work/client.out")
	kill -INT "$pp"
	wait "$pp" || true
	forget_pid "$pp"
	stop_tide
	{
		echo "### perf: projection rebuild on a running engine, sync ($out)"
		echo
		echo "Self time by library:"
		echo
		echo '```'
		{ perf report -i "$work/perf.data" --stdio --no-children --sort dso 2>/dev/null ||
			true; } | awk '/^ +[0-9.]+%/ && n++ < 8 { printf "%8s  %s\n", $1, $2 }'
		echo '```'
		echo
		echo "Time including callees (first column) and self, by function (user space):"
		echo
		echo '```'
		{ perf report -i "$work/perf.data" --stdio --children --sort symbol 2>/dev/null ||
			true; } | awk '/^ +[0-9.]+%/ && $4 !~ /^0x/ && $3 != "[k]" && n++ < 45 {
				printf "%8s %8s  %s\n", $1, $2, $4 }'
		echo '```'
		echo
	} >>"$perf_report"
}

# ---- the runs ---------------------------------------------------------------

say "bench: $EVENTS events, $RUNS runs, batch $BATCH, work dir $work"
if [ $have_proj = 1 ]; then build_proj_log; fi
if [ $have_embed = 1 ]; then build_embed_log; fi
# Round robin: every configuration once per round, so noise from other
# load on the machine spreads over all of them rather than one.
for r in $(seq 1 "$RUNS"); do
	say "round $r of $RUNS"
	if want ingest; then
		for t in $TRANSPORTS; do
			for d in sync relaxed; do
				for c in none lua; do run_push "$t" "$d" "$c" "$BATCH" "$r"; done
			done
		done
	fi
	if want single; then
		for t in $TRANSPORTS; do
			for d in sync relaxed; do run_push "$t" "$d" none 1 "$r"; done
		done
	fi
	if want req; then
		for t in $TRANSPORTS; do
			for d in relaxed sync; do run_req "$t" "$d" "$r"; done
		done
	fi
	if [ $have_redis = 1 ]; then run_redis "$r"; fi
	if [ $have_nats = 1 ]; then run_nats "$r"; fi
	if [ $have_proj = 1 ]; then
		run_proj sync "$r"
		run_proj relaxed "$r"
		run_proj_subject "$r"
	fi
	if [ $have_embed = 1 ]; then run_embed "$r"; fi
done

if [ "${BENCH_PERF:-0}" = 1 ]; then
	if command -v perf >/dev/null || ensure_pkgs linux-perf; then
		say "bench: profiling (not part of the figures)"
		if want ingest || want single || want req || [ $have_proj = 0 ]; then
			run_perf none
			run_perf lua
		fi
		if [ $have_proj = 1 ]; then run_perf_projection; fi
	else
		say "bench: no perf; skipping the profile"
	fi
fi

# ---- the report ---------------------------------------------------------------

median() { # values... (numeric)
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "-"; exit }
		if (NR % 2) printf "%.0f", v[(NR + 1) / 2]
		else printf "%.0f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
values() { awk -v k="$1" '$1 == k { print $2 }' "$raw"; }
fmt() { # thousands separators
	awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); o = "";
		while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
		print s o }'
}
row() { # label key unit [cpu-field]
	local v m cf=${4:-server_cpu_us_per_event}
	mapfile -t v < <(values "$2")
	[ ${#v[@]} -gt 0 ] || return 0
	m=$(median "${v[@]}")
	local all='' x cpu
	for x in "${v[@]}"; do all+="${all:+, }$(fmt "$x")"; done
	cpu=$(awk -v k="$2" '$1 == k' "$raw" | grep -o " $cf=[0-9.]*" | cut -d= -f2 |
		sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	printf '| %s | **%s** %s | %s | %s |\n' "$1" "$(fmt "$m")" "$3" "${cpu:--}" "$all"
}
req_row() { # label key
	local lines med p99 mean
	lines=$(awk -v k="$2" '$1 == k' "$raw")
	[ -n "$lines" ] || return 0
	med=$(median $(grep -o 'median_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	p99=$(median $(grep -o 'p99_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	mean=$(median $(grep -o 'mean_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	local all
	all=$(grep -o 'median_us=[0-9.]*' <<<"$lines" | cut -d= -f2 | paste -sd, | sed 's/,/, /g')
	printf '| %s | **%s µs** median, %s µs p99 (mean %s µs) | - | medians: %s |\n' \
		"$1" "$med" "$p99" "$mean" "$all"
}

q_row() { # label key: median, p99, p99.9 (each the median over the runs)
	local lines med p99 p999 max all
	lines=$(awk -v k="$2" '$1 == k' "$raw")
	[ -n "$lines" ] || return 0
	max=$(median1 $(grep -o ' max_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	med=$(median1 $(grep -o ' median_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	p99=$(median1 $(grep -o ' p99_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	p999=$(median1 $(grep -o ' p999_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
	all=$(grep -o ' median_us=[0-9.]*' <<<"$lines" | cut -d= -f2 | paste -sd, | sed 's/,/, /g')
	printf '| %s | **%s µs** median, %s µs p99, %s µs p99.9, max %s µs | - | medians: %s |\n' \
		"$1" "$med" "$p99" "$p999" "$max" "$all"
}
median1() { # like median, one decimal (queries take a few µs)
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "-"; exit }
		if (NR % 2) printf "%.1f", v[(NR + 1) / 2]
		else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
ram=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$work" | awk 'NR == 2 { print $2 }')
avg=$(grep -v '^proj/\|^embed/' "$raw" | grep -o 'avg_event_bytes=[0-9]*' | head -1 | cut -d= -f2 || true)
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }

med_of() { # key -> median or empty
	local v
	mapfile -t v < <(values "$1")
	[ ${#v[@]} -gt 0 ] && median "${v[@]}"
}
verdict() { # value op target -> met / NOT met
	awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
		ok = (op == ">=") ? (v >= t) : (v < t); print ok ? "met" : "NOT met" }'
}
# The project's targets, checked against this run's medians (no fudging:
# a target is met or not by the number above).
targets() {
	local l
	l=$(target_lines)
	[ -n "$l" ] || return 0
	echo
	echo "Targets (this run's medians):"
	echo
	echo "$l"
}
target_lines() {
	local t m r lines
	r=$(med_of redis || true)
	for t in $TRANSPORTS; do
		m=$(med_of "push/$t/sync/none/$BATCH" || true)
		if [ -n "$m" ]; then
			echo "- $t: sync ingest ≥ 600,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 600000)"
			[ -n "$r" ] && echo "- $t: sync ingest ahead of Redis Streams: $(fmt "$m") vs $(fmt "$r") — $(verdict "$m" ">=" "$r")"
		fi
		m=$(med_of "push/$t/sync/lua/$BATCH" || true)
		[ -n "$m" ] && echo "- $t: with the Lua consumer (sync) ≥ 400,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 400000)"
		m=$(med_of "push/$t/relaxed/lua/$BATCH" || true)
		[ -n "$m" ] && echo "- $t: with the Lua consumer (relaxed) ≥ 400,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 400000)"
		lines=$(awk -v k="req/$t/relaxed" '$1 == k' "$raw")
		if [ -n "$lines" ]; then
			m=$(median $(grep -o 'median_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
			echo "- $t: REQ round trip (relaxed) < 250 µs median: $m µs — $(verdict "$m" "<" 250)"
		fi
	done
	local what
	for what in build/sync build/relaxed build/subject rebuild; do
		m=$(med_of "proj/$what" || true)
		[ -n "$m" ] && echo "- projection rebuild ≥ 500,000 events/s ($what): $(fmt "$m") — $(verdict "$m" ">=" 500000)"
	done
	for what in rep direct ingest; do
		lines=$(awk -v k="proj/query/$what" '$1 == k' "$raw")
		if [ -n "$lines" ]; then
			m=$(median1 $(grep -o ' median_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
			echo "- projection query median < 1 ms ($what): $m µs — $(verdict "$m" "<" 1000)"
		fi
	done
	return 0
}

report() {
	echo "## Tide benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: ${cpu:-?}, $(nproc) cores, $ram RAM, Linux $(uname -r), data on $fs ($work)."
	echo "Tide $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?'), nanomsg $(ver libnanomsg-dev), LMDB $(ver liblmdb-dev);" \
		"redis-server $(ver redis-server); nats-server $(ver nats-server), libnats $(ver libnats-dev)."
	if [ -n "$avg" ]; then
		echo "$EVENTS events of $avg bytes per throughput run; each figure is the median of $RUNS runs (all runs listed)."
	else
		echo "Each figure is the median of $RUNS runs (all runs listed)."
	fi
	if [ -n "$(values proj/log)" ]; then
		echo "Projection: a log of $PROJ_EVENTS account events ($(grep -o 'log_event_bytes=[0-9]*' "$raw" | head -1 | cut -d= -f2) bytes each, $PROJ_KEYS keys), copied for each run; projection \`accounts\` (\`proj.lua\`, see README.md); build_threads=$PROJ_THREADS ($([ "$PROJ_THREADS" = 0 ] && echo "one per CPU: $(nproc)" || echo set))."
	fi
	local rows
	rows=$(server_rows)
	if [ -n "$rows" ]; then
		echo
		echo "| benchmark | median | server CPU µs/event | runs |"
		echo "| --- | --- | --- | --- |"
		echo "$rows"
		echo
		if [ -n "$avg" ]; then
			echo "Throughput is end to end: from the first send until the log holds every event"
			echo "(and, with the consumer, until its checkpoint reaches the last one)."
		fi
		echo "Server CPU µs/event: user + system CPU of the server process alone (tide run,"
		echo "redis-server, nats-server) over the run divided by the events (median of the runs):"
		echo "what one event costs the server, less disturbed by a shared machine than the rate."
		if [ -n "$(values proj/log)" ]; then
			echo "Projection builds: from the start of \`tide run\` (or the rebuild request) until"
			echo "the projection is live at the last seq; CPU µs/event is the engine's over the same time."
			echo "The ingest row: from the first send of the extra events until the projection is live"
			echo "at the new end of the log. Queries: round trips, each run's median, p99, p99.9 and max,"
			echo "then the median of those over the runs; under ingest they stop when the push is done."
		fi
	fi
	embed_report
	targets
	if [ -s "$perf_report" ]; then
		echo
		cat "$perf_report"
	fi
	echo
	echo "<details><summary>raw results</summary>"
	echo
	echo '```'
	cat "$raw"
	echo '```'
	echo "</details>"
}

# The rows of the servers' table (ingest, peers, REQ, projections): the
# ones measured in this run.
server_rows() {
	local t d c
	for t in $TRANSPORTS; do
		for d in sync relaxed; do
			for c in none lua; do
				local label="Tide PUSH $t, $d, ${BATCH}/msg"
				[ "$c" = lua ] && label+=", + Lua consumer" || label+=", no consumer"
				row "$label" "push/$t/$d/$c/$BATCH" "events/s"
			done
		done
	done
	for t in $TRANSPORTS; do
		for d in sync relaxed; do
			row "Tide PUSH $t, $d, 1/msg, no consumer" "push/$t/$d/none/1" "events/s"
		done
	done
	row "Redis Streams XADD (appendfsync always, $REDIS_CLIENTS clients, pipeline 100)" redis "events/s"
	row "NATS JetStream js_PublishAsync (file store, $NATS_PENDING in flight)" nats "msgs/s"
	for t in $TRANSPORTS; do
		req_row "Tide REQ round trip $t, relaxed ($REQS sequential)" "req/$t/relaxed"
		req_row "Tide REQ round trip $t, sync ($REQS_SYNC sequential)" "req/$t/sync"
	done
	local pe pk
	pe=$(fmt "$PROJ_EVENTS") pk=$(fmt "$PROJ_KEYS")
	row "Projection build at start, $pe events / $pk keys, sync" proj/build/sync "events/s"
	row "Projection build at start, $pe events / $pk keys, relaxed" proj/build/relaxed "events/s"
	row "Projection build at start, $pe events / $pk keys, sync, keyed by subject (no key function)" proj/build/subject "events/s"
	row "Projection forced rebuild on a running engine, sync (whole log)" proj/rebuild "events/s"
	row "Ingest $(fmt "$PROJ_INGEST") more (ipc, sync, ${BATCH}/msg) until the projection is live, while querying" proj/ingest "events/s"
	q_row "Projection query, REP ipc ($PROJ_QUERIES sequential, random keys)" proj/query/rep
	q_row "Projection query, tide_log_query in another process" proj/query/direct
	q_row "Projection query, REP ipc, during that ingest (until the push is done)" proj/query/ingest
}

# ---- the embedding table ------------------------------------------------------

fvalues() { # key field: that field of every line of key
	awk -v k="$1" '$1 == k' "$raw" | grep -o " $2=[0-9.]*" | cut -d= -f2
}
fmedian() { # key field: the median of that field (one decimal)
	local v
	mapfile -t v < <(fvalues "$1" "$2")
	median1 ${v[@]+"${v[@]}"}
}
read_row() { # label field: ns per event of one walk of the read runs
	local v all='' x
	mapfile -t v < <(fvalues embed/read "$2")
	[ ${#v[@]} -gt 0 ] || return 0
	for x in "${v[@]}"; do all+="${all:+, }$x"; done
	printf '| %s | **%s ns**/event | - | %s |\n' "$1" "$(fmedian embed/read "$2")" "$all"
}
embed_report() {
	[ -n "$(values embed/log)" ] || return 0
	local ev lg d c t cl label walk value yajl data
	ev=$(fmt "$EVENTS")
	lg=$(awk '$1 == "embed/log"' "$raw" | head -1)
	echo
	echo "### Embedding: libtide in the program (\`embedbench\`)"
	echo
	echo "libevent $(ver libevent-dev), yajl $(ver libyajl-dev). Reads: a log of $ev card transactions"
	echo "($(field avg_event_bytes "$lg") bytes of JSON as published, written once by an engine in \`relaxed\`),"
	echo "walked with a \`tide_log\` cursor in one thread, every page in the cache (one untimed walk first)."
	echo "Publishing: $ev events into a new log per run, one event per call; until every completion has arrived."
	echo
	echo "| embedding benchmark | median | process CPU µs/event | runs |"
	echo "| --- | --- | --- | --- |"
	read_row "Read: cursor walk alone (baseline)" walk_ns
	read_row "Read: walk + \`tide_event_value\` of data.merchant.country and data.amount" value_ns
	read_row "Read: walk + \`tide_event_json\` alone (encoding the text)" json_ns
	read_row "Read: walk + \`tide_event_json\` + \`yajl_tree_parse\` + \`yajl_tree_get\` of both fields" yajl_ns
	read_row "Read: walk + \`tide_event_data\` (data only) + yajl tree, both fields" data_ns
	for d in relaxed sync; do
		for c in none c; do
			cl=''
			[ "$c" = c ] && cl=", + C consumer (tide_event_value of one field)"
			row "Publish $d: \`tide_publish\` on the loop thread, $EMBED_INFLIGHT in flight$cl" \
				"embed/pub/loop/$d/$c" "events/s" proc_cpu_us_per_event
			for t in $EMBED_THREADS; do
				label="Publish $d: \`tide_publish_mt\` from $t producer thread"
				[ "$t" = 1 ] || label+=s
				row "$label, engine on its own thread$cl" "embed/pub/mt$t/$d/$c" "events/s" \
					proc_cpu_us_per_event
			done
		done
	done
	echo
	walk=$(fmedian embed/read walk_ns)
	value=$(fmedian embed/read value_ns)
	yajl=$(fmedian embed/read yajl_ns)
	data=$(fmedian embed/read data_ns)
	echo "Reading two fields: \`tide_event_json\` + yajl takes **$(fmedian embed/read ratio)×**"
	echo "the time of \`tide_event_value\` per event, the walk included ($yajl vs $value ns; runs:"
	echo "$(fvalues embed/read ratio | paste -sd, | sed 's/,/, /g')×); beyond the walk ($walk ns) alone,"
	echo "**$(fmedian embed/read ratio_extra)×** (+$(fmedian embed/read yajl_extra_ns) vs"
	echo "+$(fmedian embed/read value_extra_ns) ns). Parsing only the data (\`tide_event_data\` + yajl): $data ns."
	echo "Every walk checks that it found the same values (the count of \"FR\" and the sum of the amounts)."
	echo "Process CPU µs/event: user + system CPU of the whole benchmark process (engine, loop and"
	echo "producer threads; getrusage) from the first publish until the last completion, divided by"
	echo "the events (median of the runs). Producers that meet \`TIDE_EFULL\` (the queue is full)"
	echo "sleep 50 µs and try again (counted as efull_retries in the raw results)."
}

report | tee "${BENCH_OUT:-/dev/null}"
