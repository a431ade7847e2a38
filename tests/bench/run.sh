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
#                    (default "ingest single req redis nats projection embed rules
#                    backtest"; "sweep" alone is the backtest's sweep part)
#   BENCH_TRANSPORTS transports for Tide (default "ipc tcp")
#   BENCH_NATS_PENDING  max JetStream async publishes in flight (default 10000)
#   BENCH_REDIS_CLIENTS redis-benchmark connections (default 50)
#   BENCH_PERF=1     after the measured runs, profile Tide with perf during
#                    one extra ingest run (sync, ipc, with and without the
#                    consumer), one projection rebuild and one velocity rule
#                    run, and print the top symbols
#   BENCH_PROJ_EVENTS   events in the projection benchmark's log (default 1000000)
#   BENCH_PROJ_KEYS     distinct keys among them (default 100000)
#   BENCH_PROJ_THREADS  build_threads of the projection runs (default 0: one per CPU)
#   BENCH_PROJ_QUERIES  sequential queries per latency run (default 20000)
#   BENCH_PROJ_INGEST   events pushed while querying (default 1000000; 0: skip)
#   BENCH_EMBED_INFLIGHT  embed: tide_publish calls kept in flight on the loop
#                    thread (default 1000)
#   BENCH_EMBED_THREADS   embed: producer thread counts for tide_publish_mt
#                    (default "1 4")
#   BENCH_RULE_EVENTS   rules: card transactions for the velocity rule (default 1000000)
#   BENCH_RULE_KEYS     rules: distinct cards among them (default 100000)
#   BENCH_RULE_DEVICES  rules: devices (and timers) of the absence rule
#                    (default: BENCH_RULE_KEYS)
#   BENCH_BACKTEST_EVENTS  backtest: card transactions in the NDJSON file
#                    (default 1000000)
#   BENCH_SWEEP_EVENTS  backtest: the card transactions of the sweep (a
#                    --sweep of 4 values against the 4 runs it replaces;
#                    default 500000; 0: no sweep)
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
SUITES=${BENCH_SUITES:-ingest single req redis nats projection embed rules backtest}
BT_EVENTS=${BENCH_BACKTEST_EVENTS:-1000000}
SWEEP_EVENTS=${BENCH_SWEEP_EVENTS:-500000}
PROJ_EVENTS=${BENCH_PROJ_EVENTS:-1000000}
PROJ_KEYS=${BENCH_PROJ_KEYS:-100000}
PROJ_THREADS=${BENCH_PROJ_THREADS:-0}
PROJ_QUERIES=${BENCH_PROJ_QUERIES:-20000}
PROJ_INGEST=${BENCH_PROJ_INGEST:-1000000}
EMBED_INFLIGHT=${BENCH_EMBED_INFLIGHT:-1000}
EMBED_THREADS=${BENCH_EMBED_THREADS:-1 4}
RULE_EVENTS=${BENCH_RULE_EVENTS:-1000000}
RULE_KEYS=${BENCH_RULE_KEYS:-100000}
RULE_DEVICES=${BENCH_RULE_DEVICES:-$RULE_KEYS}
TRANSPORTS=${BENCH_TRANSPORTS:-ipc tcp}
NATS_PENDING=${BENCH_NATS_PENDING:-10000}
REDIS_CLIENTS=${BENCH_REDIS_CLIENTS:-50}
CC=${CC:-cc}

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }
want() { case " $SUITES " in *" $1 "*) return 0 ;; esac; return 1; }

[ -x "$TIDE" ] || die "no tide binary at $TIDE (build it first, or set TIDE=)"
case $SWEEP_EVENTS$BT_EVENTS$EVENTS$RUNS$BATCH$REQS$REQS_SYNC$PROJ_EVENTS$PROJ_KEYS$PROJ_QUERIES$PROJ_INGEST$PROJ_THREADS$EMBED_INFLIGHT${EMBED_THREADS// /}$RULE_EVENTS$RULE_KEYS$RULE_DEVICES in *[!0-9]*) die "BENCH_* counts must be numbers" ;; esac
[ "$RUNS" -ge 1 ] || die "BENCH_RUNS must be at least 1"
[ "$RULE_EVENTS" -ge 1 ] && [ "$RULE_KEYS" -ge 1 ] && [ "$RULE_DEVICES" -ge 10 ] ||
	die "BENCH_RULE_EVENTS and BENCH_RULE_KEYS must be positive, BENCH_RULE_DEVICES at least 10"

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
	$(pkg-config --cflags --libs nanomsg lmdb) -lpthread || die "cannot build tidebench"

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
# consumer: none, lua (consumer.lua) or the name of another script in
# $work (velocity, absence: the rules part)
start_tide() { # transport durability consumer
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
	case $3 in
	none) ;;
	lua) script=(--script "$work/consumer.lua") ;;
	*) script=(--script "$work/$3.lua") ;;
	esac
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

# Bare nanomsg on the same transport, one event per message: the ceiling
# a one-event-per-message producer can reach (tidebench pushpull).
run_pushpull() { # transport run
	local out rate url
	if [ "$1" = ipc ]; then
		url="ipc://$work/pushpull.ipc"
	else
		url="tcp://127.0.0.1:$(free_port)"
	fi
	client "$work/bin/tidebench" pushpull --url "$url" --events "$EVENTS" --batch 1 \
		--run "n$2" || die "bare nanomsg run failed ($*)"
	out=$(<"$work/client.out")
	rate=$(field rate "$out")
	record "nanomsg/$1/1" "$rate" "$out"
	say "  bare nanomsg PUSH/PULL $1 1/msg run $2: $rate msgs/s  ($out)"
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

# The build's own cost, without the handlers' work: the same projection
# with handlers that do nothing (the states are still made by init, kept
# and written), with the key function and by subject.  What separates
# these from the runs above is the Lua the handlers run.
awk '/^  on = \{/ { print "  on = {"; print "    [\"account.deposited\"] = function(s, ev) end,";
	print "    [\"account.withdrew\"] = function(s, ev) end,"; print "    [\"order.placed\"] = function(s, ev) end,";
	print "  },"; skip = 1; next }
	skip && /^  },$/ { skip = 0; next } !skip' "$work/proj.lua" >"$work/proj_empty.lua"
sed '/^  key = function/d' "$work/proj_empty.lua" >"$work/proj_empty_subject.lua"

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

# The build at start only, of a variant of the projection (proj_NAME.lua).
run_proj_variant() { # name run
	local out
	start_proj_tide sync "$work/proj_$1.lua"
	client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$PROJ_EVENTS" \
		--t0 "$proj_t0" --pid "$tide_pid" --timeout 900 || proj_fail "build $*"
	out=$(<"$work/client.out")
	record "proj/build/$1" "$(field rate "$out")" "$out"
	say "  projection build $1 run $2: $(field rate "$out") events/s  ($out)"
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

# PROJ_INGEST more events pushed (no queries) onto a copy of the log:
# with the projection live (the clock stops when it is live at the end
# again), then without any script (when the log holds them): the cost of
# keeping a projection at PROJ_KEYS keys live, in the same round.
run_proj_live() { # run
	local out cpu0 t0 total=$((PROJ_EVENTS + PROJ_INGEST))
	start_proj_tide sync
	client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$PROJ_EVENTS" \
		--t0 "$proj_t0" --pid "$tide_pid" --timeout 900 || proj_fail "live: build $*"
	cpu0=$(proc_cpu "$tide_pid")
	t0=$EPOCHREALTIME
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$PROJ_INGEST" \
		--expect "$total" --batch "$BATCH" --kind account --keys "$PROJ_KEYS" --run "pl$1" \
		--timeout 600 || proj_fail "live: push $*"
	client "$work/bin/projbench" wait --data "$tide_data" --name accounts --seq "$total" \
		--from "$PROJ_EVENTS" --t0 "$t0" --pid "$tide_pid" --cpu0 "$cpu0" --timeout 900 ||
		proj_fail "live: catching up $*"
	out=$(<"$work/client.out")
	stop_tide
	record "proj/live" "$(field rate "$out")" "$out"
	say "  ingest with the live projection, no queries, run $1: $(field rate "$out") events/s  ($out)"
	: >"$work/none.lua"
	start_proj_tide sync "$work/none.lua"
	sleep 0.3
	cpu0=$(proc_cpu "$tide_pid")
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$PROJ_INGEST" \
		--expect "$total" --batch "$BATCH" --kind account --keys "$PROJ_KEYS" --run "pb$1" \
		--timeout 600 || proj_fail "live bare: push $*"
	out="$(<"$work/client.out") server_cpu_s=$(cpu_since "$cpu0" "$tide_pid")"
	out+=" server_cpu_us_per_event=$(per_event_us "$(cpu_since "$cpu0" "$tide_pid")" "$PROJ_INGEST")"
	stop_tide
	record "proj/live/bare" "$(field rate "$out")" "$out"
	say "  the same ingest without scripts run $1: $(field rate "$out") events/s  ($out)"
}

# ---- backtest -------------------------------------------------------------------

# BT_EVENTS card transactions (100,000 cards, one every 2 s of event time,
# 1 % labelled frauds) as NDJSON, through `tide backtest` with a one-line
# rule (an amount over a threshold), with and without scoring, and with no
# script at all: from the command's start to its end.
cat >"$work/bt_simple.lua" <<'EOF'
local tide = require "tide"
tide.on("card.transaction", function(ev)
  if ev.data.amount > 450 then
    tide.emit{ type = "fraud.alert", subject = ev.subject, data = { rule = "amount", amount = ev.data.amount } }
  end
end, { name = "amount" })
EOF
# A sweep of the threshold (--sweep amount.limit=300,400,450,490) in one
# pass, scored against the labels, against the 4 runs it replaces (--set
# each, one after the other): whole commands, on SWEEP_EVENTS
# transactions (a run of each takes 4 to 5 times a plain run's time).  The
# sweep runs its variants a thread per CPU (the default) and one after
# the other (--threads 1).
cat >"$work/bt_param.lua" <<'EOF'
local tide = require "tide"
local LIMIT = tide.param("amount.limit", 450)
tide.on("card.transaction", function(ev)
  if ev.data.amount > LIMIT then
    tide.emit{ type = "fraud.alert", subject = ev.subject, data = { rule = "amount", amount = ev.data.amount } }
  end
end, { name = "amount" })
EOF
SWEEP_VALUES="300,400,450,490"
make_bt_input() { # [events file]: BT_EVENTS into bt.ndjson by default
	local n=${1:-$BT_EVENTS} f=${2:-$work/bt.ndjson}
	[ -s "$f" ] && return 0
	awk -v n="$n" 'BEGIN { srand(5); for (i = 0; i < n; i++) { s = 2 * i;
		printf "{\"specversion\":\"1.0\",\"id\":\"t%d\",\"source\":\"/gen\",\"type\":\"card.transaction\",\"subject\":\"c%d\",\"time\":\"%s\",\"data\":{\"amount\":%.2f,\"is_fraud\":%s}}\n",
			i, int(rand() * 100000), strftime("%Y-%m-%dT%H:%M:%SZ", 1767225600 + s, 1),
			1 + rand() * 499, rand() < 0.01 ? "true" : "false" } }' >"$f"
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
run_sweep() { # run
	local t0 v one two sets args=(-q -s "$work/bt_param.lua" --label data.is_fraud --alerts fraud.alert)
	make_bt_input "$SWEEP_EVENTS" "$work/bt_sweep.ndjson"
	t0=$EPOCHREALTIME
	"$TIDE" backtest "${args[@]}" --sweep "amount.limit=$SWEEP_VALUES" "$work/bt_sweep.ndjson" \
		>"$work/bt_sweep.out" || die "backtest --sweep failed"
	two=$(since "$t0")
	[ "$(grep -c '^  amount.limit=' "$work/bt_sweep.out")" = 4 ] ||
		die "the sweep did not report 4 variants: $(<"$work/bt_sweep.out")"
	t0=$EPOCHREALTIME
	"$TIDE" backtest "${args[@]}" --threads 1 --sweep "amount.limit=$SWEEP_VALUES" \
		"$work/bt_sweep.ndjson" >"$work/bt_sweep1.out" || die "backtest --sweep --threads 1 failed"
	one=$(since "$t0")
	cmp -s "$work/bt_sweep.out" "$work/bt_sweep1.out" ||
		die "the sweep's tables differ with --threads 1"
	t0=$EPOCHREALTIME
	for v in ${SWEEP_VALUES//,/ }; do
		"$TIDE" backtest "${args[@]}" --set "amount.limit=$v" "$work/bt_sweep.ndjson" ||
			die "backtest --set amount.limit=$v failed"
	done
	sets=$(since "$t0")
	record backtest/sweep "$two" "events=$SWEEP_EVENTS variants=4 elapsed_s=$two"
	record backtest/sweep1 "$one" "events=$SWEEP_EVENTS variants=4 threads=1 elapsed_s=$one"
	record backtest/sets "$sets" "events=$SWEEP_EVENTS runs=4 elapsed_s=$sets"
	say "  backtest sweep of 4 run $1: $two s (--threads 1: $one s); the 4 runs with --set: $sets s"
}
run_backtest() { # run
	local kind t0 t1 out rate script args
	if [ "$SWEEP_EVENTS" -gt 0 ] && { want backtest || want sweep; }; then run_sweep "$1"; fi
	want backtest || return 0
	make_bt_input
	: >"$work/bt_none.lua"
	for kind in simple labels none; do
		script="$work/bt_simple.lua" args=()
		[ $kind = none ] && script="$work/bt_none.lua"
		[ $kind = labels ] && args=(--label data.is_fraud --alerts fraud.alert)
		t0=$EPOCHREALTIME
		"$TIDE" backtest -q -s "$script" "${args[@]+"${args[@]}"}" "$work/bt.ndjson" >/dev/null ||
			die "backtest $kind failed"
		t1=$EPOCHREALTIME
		rate=$(awk -v n="$BT_EVENTS" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
		out="events=$BT_EVENTS elapsed_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') rate=$rate"
		record "backtest/$kind" "$rate" "$out"
		say "  backtest $kind run $1: $rate events/s  ($out)"
	done
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

# ---- rules ------------------------------------------------------------------

# The velocity rule: per card, two sliding windows over the amounts (the
# last hour, the last day); an alert when a card makes more than five
# transactions in an hour or spends more than 5000 in a day.
cat >"$work/velocity.lua" <<'EOF'
local tide = require "tide"
tide.on("card.transaction", function(ev, st, card)
  local n1h, sum24h = tide.window("h1", "count"), tide.window("d1", "sum")
  if n1h > 5 or sum24h > 5000 then
    tide.emit{ type = "fraud.alert", subject = card, data = { rule = "velocity", n1h = n1h, sum24h = sum24h } }
  end
end, { name = "velocity", key = "subject", from = "beginning", ttl = "30d",
       windows = { h1 = { sliding = "1h", value = "data.amount", aggregates = { "count", "sum" } },
                   d1 = { sliding = "24h", value = "data.amount", aggregates = { "count", "sum" } } } })
EOF

# The absence rule: every reading (re)sets its device's timer; a device
# without a reading for 15 minutes of event time gets a sensor.silent.
cat >"$work/absence.lua" <<'EOF'
local tide = require "tide"
tide.on("sensor.reading", function(ev, st, dev)
  tide.timer.after("silent", "15m")
end, { name = "absence", key = "subject", from = "beginning",
       timers = { silent = function(key, data, st)
         tide.emit{ type = "sensor.silent", subject = key }
       end } })
EOF

# The readings of phase B: this many, from as many devices, an hour after
# phase A (which spans its first 10 minutes): every timer is due by then.
rule_wake=10

json_num() { # name json: the first "name":number in json
	grep -o "\"$1\":[0-9]*" <<<"$2" | head -1 | cut -d: -f2
}
proc_mem_kb() { # field pid: a line of /proc/PID/status, in kB
	awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status" 2>/dev/null || echo 0
}
cpu_since() { # cpu_s_before pid: CPU seconds the process used since then
	awk -v a="$1" -v b="$(proc_cpu "$2")" 'BEGIN { printf "%.2f", b - a }'
}
rules_fail() { cat "$(dirname "$tide_data")/tide.log" >&2; die "rules run failed: $*"; }
# The count of events of one type in the log (read after the clock stopped).
count_type() { # type
	"$TIDE" log --data "$tide_data" --type "$1" | grep -c "\"type\":\"$1\"" || true
}

# RULE_EVENTS card transactions over ipc in sync, BATCH per message: with
# the velocity rule, until its checkpoint is at the end of the log (its
# alerts included), or bare (no script), until the log holds them all.
run_velocity() { # velocity|none run
	local out st cpu0 cpu ev last alerts=0 key=rules/velocity/bare cons=()
	start_tide ipc sync "$1"
	if [ "$1" = velocity ]; then
		key=rules/velocity
		# the alerts go into the log too: count only the transactions
		cons=(--consumer velocity --own)
	fi
	sleep 0.3
	cpu0=$(proc_cpu "$tide_pid")
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$RULE_EVENTS" \
		--batch "$BATCH" --kind card --keys "$RULE_KEYS" --run "v$2" --timeout 900 \
		"${cons[@]+"${cons[@]}"}" || rules_fail "velocity $*"
	out=$(<"$work/client.out")
	cpu=$(cpu_since "$cpu0" "$tide_pid")
	st=$("$TIDE" stat --json --data "$tide_data")
	ev=$(json_num events "$st") last=$(json_num last_seq "$st")
	if [ "$1" = velocity ]; then
		[ "$(json_num checkpoint "$st")" = "$last" ] || die "velocity rule did not finish: $st"
		alerts=$((ev - RULE_EVENTS))
		[ "$(count_type fraud.alert)" = "$alerts" ] ||
			die "the log holds $ev events, not $RULE_EVENTS transactions and $alerts alerts"
	else
		[ "$ev" = "$RULE_EVENTS" ] || die "tide stat disagrees: $st"
	fi
	out+=" server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$RULE_EVENTS")"
	out+=" alerts=$alerts log_events=$ev stat_size=$(json_num size "$st")"
	out+=" $("$work/bin/tidebench" pages --data "$tide_data")"
	stop_tide
	record "$key" "$(field rate "$out")" "$out"
	say "  rules: velocity $1 run $2: $(field rate "$out") events/s  ($out)"
}

# The absence rule over RULE_DEVICES devices: phase A, one reading per
# device (a timer each); phase B, rule_wake readings an hour later, which
# move the rule's clock past every deadline: all the timers fire.
run_absence() { # run
	local out st rss0 anon0 rss1 anon1 cpu0 cpu1 cpu n=$RULE_DEVICES
	local total=$((2 * RULE_DEVICES + rule_wake)) fired silent ts us
	start_tide ipc sync absence
	sleep 0.3
	# the engine with its script, before any event
	rss0=$(proc_mem_kb VmRSS "$tide_pid") anon0=$(proc_mem_kb RssAnon "$tide_pid")
	cpu0=$(proc_cpu "$tide_pid")
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$n" \
		--batch "$BATCH" --kind sensor --keys "$n" --run "a$1" --consumer absence \
		--timeout 900 || rules_fail "absence phase A $*"
	out=$(<"$work/client.out")
	cpu=$(cpu_since "$cpu0" "$tide_pid")
	rss1=$(proc_mem_kb VmRSS "$tide_pid") anon1=$(proc_mem_kb RssAnon "$tide_pid")
	st=$("$TIDE" stat --json --data "$tide_data")
	case $st in *"\"events\":$n,"*"\"checkpoint\":$n,"*"\"timers\":$n,"*) ;;
	*) die "absence phase A: expected $n events, all handled, and $n timers: $st" ;;
	esac
	out+=" server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$n") timers=$n"
	out+=" rss0_kb=$rss0 rss1_kb=$rss1 anon0_kb=$anon0 anon1_kb=$anon1"
	out+=" rss_per_key_bytes=$(((rss1 - rss0) * 1024 / n)) anon_per_key_bytes=$(((anon1 - anon0) * 1024 / n))"
	out+=" stat_size=$(json_num size "$st") $("$work/bin/tidebench" pages --data "$tide_data")"
	record rules/absence/load "$(field rate "$out")" "$out"
	say "  rules: absence phase A run $1: $(field rate "$out") events/s  ($out)"
	# phase B: from the first send until every sensor.silent is in the log
	# and the rule's checkpoint is at its end
	cpu1=$(proc_cpu "$tide_pid")
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$rule_wake" \
		--batch "$BATCH" --kind sensor --keys "$n" --start 3600000 --span 1000 --run "b$1" \
		--consumer absence --expect "$total" --timeout 900 || rules_fail "absence phase B $*"
	out=$(<"$work/client.out")
	cpu=$(cpu_since "$cpu1" "$tide_pid")
	st=$("$TIDE" stat --json --data "$tide_data")
	fired=$(json_num fired "$st")
	silent=$(count_type sensor.silent)
	[ "$(json_num events "$st")" = "$total" ] && [ "$fired" = "$n" ] && [ "$silent" = "$n" ] &&
		[ "$(json_num checkpoint "$st")" = "$total" ] ||
		die "absence phase B: expected $n timers fired, $n sensor.silent, $total events: $st (sensor.silent: $silent)"
	ts=$(field total_s "$out")
	us=$(awk -v t="$ts" -v n="$n" 'BEGIN { printf "%.2f", t * 1e6 / n }')
	out="fired=$fired silent_events=$silent timers_left=$(json_num timers "$st") total_s=$ts"
	out+=" timers_per_s=$(awk -v t="$ts" -v n="$n" 'BEGIN { printf "%.0f", n / t }') us_per_timer=$us"
	out+=" server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$n")"
	out+=" rss_kb=$(proc_mem_kb VmRSS "$tide_pid")"
	stop_tide
	record rules/absence/fire "$us" "$out"
	say "  rules: absence phase B run $1: $n timers fired, $us µs per timer  ($out)"
}

# Phase A's readings without a script: what the log and the engine take
# for the events alone.
run_absence_bare() { # run
	local out st rss0 rss1 anon0 anon1 cpu0 cpu n=$RULE_DEVICES
	start_tide ipc sync none
	sleep 0.3
	rss0=$(proc_mem_kb VmRSS "$tide_pid") anon0=$(proc_mem_kb RssAnon "$tide_pid")
	cpu0=$(proc_cpu "$tide_pid")
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$n" \
		--batch "$BATCH" --kind sensor --keys "$n" --run "a$1" --timeout 900 ||
		rules_fail "absence bare $*"
	out=$(<"$work/client.out")
	cpu=$(cpu_since "$cpu0" "$tide_pid")
	rss1=$(proc_mem_kb VmRSS "$tide_pid") anon1=$(proc_mem_kb RssAnon "$tide_pid")
	st=$("$TIDE" stat --json --data "$tide_data")
	[ "$(json_num events "$st")" = "$n" ] || die "tide stat disagrees: $st"
	out+=" server_cpu_s=$cpu server_cpu_us_per_event=$(per_event_us "$cpu" "$n")"
	out+=" rss0_kb=$rss0 rss1_kb=$rss1 anon0_kb=$anon0 anon1_kb=$anon1"
	out+=" rss_per_key_bytes=$(((rss1 - rss0) * 1024 / n)) anon_per_key_bytes=$(((anon1 - anon0) * 1024 / n))"
	out+=" stat_size=$(json_num size "$st") $("$work/bin/tidebench" pages --data "$tide_data")"
	stop_tide
	record rules/absence/bare "$(field rate "$out")" "$out"
	say "  rules: absence bare ingest run $1: $(field rate "$out") events/s  ($out)"
}

run_rules() { # run
	run_velocity velocity "$1"
	run_velocity none "$1"
	run_absence "$1"
	run_absence_bare "$1"
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

# One velocity rule run (ipc, sync), profiled like the ingest runs.
run_perf_velocity() {
	local pp out
	start_tide ipc sync velocity
	perf record -e cpu-clock -g -p "$tide_pid" -o "$work/perf.data" >/dev/null 2>&1 &
	pp=$!
	pids+=("$pp")
	sleep 0.5
	client "$work/bin/tidebench" push --url "$tide_pull" --data "$tide_data" --events "$RULE_EVENTS" \
		--batch "$BATCH" --kind card --keys "$RULE_KEYS" --run pv --consumer velocity --own \
		--timeout 900 || rules_fail "profiled velocity run"
	out=$(<"$work/client.out")
	kill -INT "$pp"
	wait "$pp" || true
	forget_pid "$pp"
	stop_tide
	{
		echo "### perf: velocity rule, ipc, sync ($out)"
		echo
		echo "Self time by library:"
		echo
		echo '```'
		{ perf report -i "$work/perf.data" --stdio --no-children --sort dso 2>/dev/null ||
			true; } | awk '/^ +[0-9.]+%/ && n++ < 8 { printf "%8s  %s\n", $1, $2 }'
		echo '```'
		echo
		echo "Self time by function:"
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
if want rules; then
	say "bench: rules: $RULE_EVENTS card transactions on $RULE_KEYS cards, $RULE_DEVICES devices"
fi
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
			run_pushpull "$t" "$r"
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
		for v in subject empty empty_subject; do run_proj_variant "$v" "$r"; done
		[ "$PROJ_INGEST" -gt 0 ] && run_proj_live "$r"
	fi
	if [ $have_embed = 1 ]; then run_embed "$r"; fi
	if want rules; then run_rules "$r"; fi
	if want backtest || want sweep; then run_backtest "$r"; fi
done

if [ "${BENCH_PERF:-0}" = 1 ]; then
	if command -v perf >/dev/null || ensure_pkgs linux-perf; then
		say "bench: profiling (not part of the figures)"
		if want ingest || want single || want req || { [ $have_proj = 0 ] && ! want rules; }; then
			run_perf none
			run_perf lua
		fi
		if [ $have_proj = 1 ]; then run_perf_projection; fi
		if want rules; then run_perf_velocity; fi
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
	awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n < 0 ? -n : n); o = "";
		while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
		print (n < 0 && s o != "0" ? "-" : "") s o }'
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
avg=$(grep -v '^proj/\|^embed/\|^rules/' "$raw" | grep -o 'avg_event_bytes=[0-9]*' | head -1 | cut -d= -f2 || true)
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }

med_of() { # key -> median or empty
	local v
	mapfile -t v < <(values "$1")
	[ ${#v[@]} -gt 0 ] && median "${v[@]}"
}
med_of1() { # key -> median, one decimal, or empty
	local v
	mapfile -t v < <(values "$1")
	[ ${#v[@]} -gt 0 ] && median1 "${v[@]}"
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
	local t m r b x lines
	r=$(med_of redis || true)
	for t in $TRANSPORTS; do
		m=$(med_of "push/$t/sync/none/$BATCH" || true)
		if [ -n "$m" ]; then
			echo "- $t: sync ingest ≥ 600,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 600000)"
			[ -n "$r" ] && echo "- $t: sync ingest ahead of Redis Streams: $(fmt "$m") vs $(fmt "$r") — $(verdict "$m" ">=" "$r")"
		fi
		b=$(med_of "push/$t/sync/none/$BATCH" || true)
		if [ -n "$b" ] && [ -n "$r" ]; then
			x=$(awk -v a="$b" -v c="$r" 'BEGIN { printf "%.2f", a / c }')
			echo "- $t: sync ingest, ${BATCH}/msg, ≥ 2× Redis Streams: ${x}× — $(verdict "$x" ">=" 2)"
		fi
		m=$(med_of "push/$t/sync/lua/$BATCH" || true)
		[ -n "$m" ] && echo "- $t: with the Lua consumer (sync) ≥ 400,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 400000)"
		if [ -n "$m" ] && [ -n "$b" ]; then
			x=$(awk -v a="$m" -v c="$b" 'BEGIN { printf "%.1f", 100 * a / c }')
			echo "- $t: with the Lua consumer (sync) ≥ 80 % of bare ingest: $x % — $(verdict "$x" ">=" 80)"
		fi
		m=$(med_of "push/$t/sync/none/1" || true)
		b=$(med_of "nanomsg/$t/1" || true)
		if [ -n "$m" ] && [ -n "$b" ]; then
			x=$(awk -v a="$m" -v c="$b" 'BEGIN { printf "%.1f", 100 * a / c }')
			echo "- $t: one event per message (sync) ≥ 50 % of bare nanomsg PUSH/PULL: $x % ($(fmt "$m") vs $(fmt "$b")) — $(verdict "$x" ">=" 50)"
		fi
		m=$(med_of "push/$t/relaxed/lua/$BATCH" || true)
		[ -n "$m" ] && echo "- $t: with the Lua consumer (relaxed) ≥ 400,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 400000)"
		lines=$(awk -v k="req/$t/relaxed" '$1 == k' "$raw")
		if [ -n "$lines" ]; then
			m=$(median $(grep -o 'median_us=[0-9.]*' <<<"$lines" | cut -d= -f2))
			echo "- $t: REQ round trip (relaxed) < 250 µs median: $m µs — $(verdict "$m" "<" 250)"
		fi
	done
	m=$(med_of rules/velocity || true)
	if [ -n "$m" ]; then
		echo "- velocity rule ≥ 250,000 events/s (ipc, sync): $(fmt "$m") — $(verdict "$m" ">=" 250000)"
		r=$(med_of rules/velocity/bare || true)
		if [ -n "$r" ]; then
			r=$(awk -v a="$m" -v b="$r" 'BEGIN { printf "%.1f", 100 * a / b }')
			echo "- velocity rule ≥ 50 % of bare ingest of the same events: $r % — $(verdict "$r" ">=" 50)"
		fi
	fi
	m=$(med_of proj/live || true)
	r=$(med_of proj/live/bare || true)
	if [ -n "$m" ] && [ -n "$r" ]; then
		r=$(awk -v a="$m" -v b="$r" 'BEGIN { printf "%.1f", 100 * a / b }')
		echo "- ingest with a live projection at $(fmt "$PROJ_KEYS") keys ≥ 50 % of bare ingest: $r % — $(verdict "$r" ">=" 50)"
	fi
	m=$(med_of backtest/simple || true)
	[ -n "$m" ] && echo "- backtest of a simple rule ≥ 300,000 events/s: $(fmt "$m") — $(verdict "$m" ">=" 300000)"
	local what
	for what in build/sync build/relaxed build/subject rebuild; do
		m=$(med_of "proj/$what" || true)
		[ -n "$m" ] && echo "- projection rebuild ≥ 500,000 events/s ($what): $(fmt "$m") — $(verdict "$m" ">=" 500000)"
		[ -n "$m" ] && echo "- projection build ≥ 1,000,000 events/s ($what): $(fmt "$m") — $(verdict "$m" ">=" 1000000)"
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
	if [ -n "$(values rules/velocity)$(values rules/absence/load)" ]; then
		echo "Rules: $(fmt "$RULE_EVENTS") card transactions of $(medf rules/velocity/bare avg_event_bytes) bytes on $(fmt "$RULE_KEYS") cards (velocity);" \
			"$(fmt "$RULE_DEVICES") sensor readings of $(medf rules/absence/bare avg_event_bytes) bytes, one per device (absence)."
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
	rules_notes
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
		row "Bare nanomsg PUSH/PULL $t, 1/msg (the receiver only counts)" "nanomsg/$t/1" "msgs/s"
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
	row "The same build with handlers that do nothing, key function" proj/build/empty "events/s"
	row "The same build with handlers that do nothing, keyed by subject" proj/build/empty_subject "events/s"
	row "Projection forced rebuild on a running engine, sync (whole log)" proj/rebuild "events/s"
	row "Ingest $(fmt "$PROJ_INGEST") more (ipc, sync, ${BATCH}/msg) until the projection is live, while querying" proj/ingest "events/s"
	row "The same ingest until the projection is live, no queries" proj/live "events/s"
	row "The same ingest onto the same log without scripts (bare)" proj/live/bare "events/s"
	q_row "Projection query, REP ipc ($PROJ_QUERIES sequential, random keys)" proj/query/rep
	q_row "Projection query, tide_log_query in another process" proj/query/direct
	q_row "Projection query, REP ipc, during that ingest (until the push is done)" proj/query/ingest
	rule_rows
	local bt
	bt=$(fmt "$BT_EVENTS")
	row "tide backtest, a one-line rule, $bt card transactions from NDJSON (whole command)" backtest/simple "events/s"
	row "The same with scoring against labels (--label)" backtest/labels "events/s"
	row "The same file with no script" backtest/none "events/s"
	local sw=$(fmt "$SWEEP_EVENTS")
	srow "tide backtest --sweep of 4 thresholds in one pass, with --label, $sw transactions (whole command, a thread per CPU)" backtest/sweep
	srow "The same sweep, its variants one after the other (--threads 1)" backtest/sweep1
	srow "The 4 runs it replaces, one --set each, one after the other" backtest/sets
	sweep_ratio "The sweep against the 4 runs (medians)" backtest/sweep
	sweep_ratio "The sweep with --threads 1 against the 4 runs" backtest/sweep1
}
srow() { # label key: wall seconds, one decimal, every run listed
	local v all='' x
	mapfile -t v < <(values "$2")
	[ ${#v[@]} -gt 0 ] || return 0
	for x in "${v[@]}"; do all+="${all:+, }$x"; done
	printf '| %s | **%s s** | - | %s |\n' "$1" "$(median1 "${v[@]}")" "$all"
}
sweep_ratio() { # label key: its median's share of the 4 runs' time
	local a b
	a=$(med_of1 "$2" || true) b=$(med_of1 backtest/sets || true)
	[ -n "$a" ] && [ -n "$b" ] || return 0
	printf '| %s | **%s %%** of their time (%sx as fast) | - | - |\n' "$1" \
		"$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.0f", 100 * a / b }')" \
		"$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')"
}

# ---- the rules rows and notes -------------------------------------------------

urow() { # label key unit: like row, one decimal (µs per timer, not a rate)
	local v all='' x cpu
	mapfile -t v < <(values "$2")
	[ ${#v[@]} -gt 0 ] || return 0
	for x in "${v[@]}"; do all+="${all:+, }$x"; done
	cpu=$(fmedian "$2" server_cpu_us_per_event)
	printf '| %s | **%s** %s | %s | %s |\n' "$1" "$(median1 "${v[@]}")" "$3" "$cpu" "$all"
}
frow() { # label key field unit: the median of a field, every run listed
	local v all='' x
	mapfile -t v < <(fvalues "$2" "$3")
	[ ${#v[@]} -gt 0 ] || return 0
	for x in "${v[@]}"; do all+="${all:+, }$(fmt "$x")"; done
	printf '| %s | **%s** %s | - | %s |\n' "$1" "$(fmt "$(median "${v[@]}")")" "$4" "$all"
}
# Per key: (field of key a - field of key b) / n, run by run (the runs of
# both go round robin, so run i of one pairs with run i of the other).
per_key_diff() { # key_a key_b field n
	paste -d' ' <(fvalues "$1" "$3") <(fvalues "$2" "$3") |
		awk -v n="$4" 'NF == 2 { printf "%.0f\n", ($1 - $2) / n }'
}
ratio_runs() { # rule rates / bare rates, run by run, in percent
	paste -d' ' <(values rules/velocity) <(values rules/velocity/bare) |
		awk 'NF == 2 && $2 > 0 { printf "%.1f\n", 100 * $1 / $2 }'
}
medf() { # key field: the median of a field, formatted
	local v
	mapfile -t v < <(fvalues "$1" "$2")
	fmt "$(median ${v[@]+"${v[@]}"})"
}
rule_rows() {
	local ev k d
	ev=$(fmt "$RULE_EVENTS") k=$(fmt "$RULE_KEYS") d=$(fmt "$RULE_DEVICES")
	row "Velocity rule (two sliding windows per card), $ev card transactions on $k cards, ipc, sync, ${BATCH}/msg" \
		rules/velocity "events/s"
	row "Bare ingest of the same card transactions (no script)" rules/velocity/bare "events/s"
	row "Absence rule, phase A: one reading per device, $d devices (a timer each), until handled" \
		rules/absence/load "events/s"
	row "Bare ingest of the same readings (no script)" rules/absence/bare "events/s"
	urow "Absence rule, phase B: $d timers fire ($rule_wake readings 1 h later, until $d sensor.silent are in the log)" \
		rules/absence/fire "µs/timer"
	diff_row "Absence rule, LMDB pages in use after phase A minus bare ingest, per device" \
		bytes_live "$RULE_DEVICES"
	frow "Absence rule, engine RSS after phase A minus before any event, per device" \
		rules/absence/load rss_per_key_bytes "bytes/key"
	diff_row "Absence rule, that RSS growth minus a bare engine's over the same readings, per device" \
		rss_per_key_bytes 1
}
diff_row() { # label field divisor: (rule - bare) / divisor, run by run
	local v all='' x
	mapfile -t v < <(per_key_diff rules/absence/load rules/absence/bare "$2" "$3")
	[ ${#v[@]} -gt 0 ] || return 0
	for x in "${v[@]}"; do all+="${all:+, }$(fmt "$x")"; done
	printf '| %s | **%s** bytes/key | - | %s |\n' "$1" "$(fmt "$(median "${v[@]}")")" "$all"
}
rules_notes() {
	[ -n "$(values rules/velocity)$(values rules/absence/load)" ] || return 0
	local r b m
	echo
	echo "Rules: end to end over ipc in \`sync\`, ${BATCH} events per PUSH message, each run on a fresh engine;"
	echo "the rule and the bare ingest of the same events go one after the other in every round."
	if [ -n "$(values rules/velocity)" ]; then
		r=$(med_of rules/velocity) b=$(med_of rules/velocity/bare || true)
		echo "Velocity: \`velocity.lua\` (README.md); the clock stops when the rule's checkpoint is at the"
		echo "log's last seq and the log holds every transaction (the alerts are appended too)."
		echo "Alerts: $(fvalues rules/velocity alerts | sort -u | while read -r x; do fmt "$x"; done |
			paste -sd/ | sed 's|/| / |g') per run of $(fmt "$RULE_EVENTS") (the same events every run)."
		if [ -n "$b" ]; then
			m=$(awk -v a="$r" -v b="$b" 'BEGIN { printf "%.1f", 100 * a / b }')
			echo "The rule runs at **$m %** of bare ingest (median over median; round by round:"
			echo "$(ratio_runs | paste -sd, | sed 's/,/ %, /g') %); the engine's CPU per transaction"
			echo "$(fmedian rules/velocity server_cpu_us_per_event) µs with the rule, $(fmedian rules/velocity/bare server_cpu_us_per_event) µs bare."
		fi
	fi
	if [ -n "$(values rules/absence/load)" ]; then
		local rl bl
		rl=$(fmedian rules/absence/load bytes_live) bl=$(fmedian rules/absence/bare bytes_live)
		echo "Absence: \`absence.lua\` (README.md). After phase A \`tide stat\` shows $(fmt "$RULE_DEVICES") timers"
		echo "(checked). Phase B: $(medf rules/absence/fire timers_per_s) timers/s; its CPU column is the engine's CPU per"
		echo "timer fired (checked: \`fired\` in \`tide stat\` and the sensor.silent events in the log); the engine's"
		echo "VmRSS after it: $(medf rules/absence/fire rss_kb) kB."
		echo "Memory: the engine's VmRSS with the script before any event $(medf rules/absence/load rss0_kb) kB, after"
		echo "phase A $(medf rules/absence/load rss1_kb) kB: $(medf rules/absence/load rss_per_key_bytes) bytes per device, of which"
		echo "anonymous memory (heap: Lua, the rule's keys and timers) $(medf rules/absence/load anon_per_key_bytes) bytes."
		echo "A bare engine grows by $(medf rules/absence/bare rss_per_key_bytes) bytes per event over the same readings"
		echo "(anonymous: $(medf rules/absence/bare anon_per_key_bytes)). LMDB after phase A: $(fmt "$rl") bytes in B-tree pages"
		echo "vs $(fmt "$bl") bare; $(medf rules/absence/load stat_size) vs $(medf rules/absence/bare stat_size) by"
		echo "\`tide stat\` (the used part of data.mdb, free pages included)."
	fi
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
