#!/bin/bash
# cluster.sh - Tide's cluster mode, measured on one machine: three
# nats-server processes (JetStream, a cluster on loopback) and two Tide
# nodes sharing 8 partitions of an R3 stream.
#
#   ingest       `tide publish --batch 100` to one node, which publishes each
#                event to the stream (Nats-Msg-Id set) and answers after the
#                stream's acknowledgement: events/s until the last answer
#   end to end   from the first publish until both nodes have stored every
#                event of their partitions in their logs
#   JetStream    the peer: natsbench publishing the same events straight
#                to an R3 stream of the same cluster, with Nats-Msg-Id
#
# Each figure is the median of BENCH_RUNS runs (a fresh stream each), with
# the nodes' CPU per event beside it.  Needs nats-server and libnats-dev
# (installed if missing, as root) and a tree built with cluster mode.
#
#   tests/bench/cluster.sh            (from the top of a built tree)
#
# Environment:
#   BENCH_RUNS            runs per figure (default 3)
#   BENCH_CLUSTER_EVENTS  events per run (default 100000)
#   BENCH_TMPDIR          where the data go (default $TMPDIR or /tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
TIDE=${TIDE:-$top/tide}
RUNS=${BENCH_RUNS:-3}
N=${BENCH_CLUSTER_EVENTS:-100000}
work=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/tide-cluster-bench.XXXXXX")
pids=()
nodes=()
cleanup() {
	for p in "${nodes[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }
die() {
	say "cluster bench: $*"
	exit 1
}

[ -x "$TIDE" ] || die "no $TIDE: build the tree first"
grep -q '^#define TIDE_HAVE_NATS 1' "$top/config.h" 2>/dev/null ||
	die "$top was built without cluster mode (install libnats-dev, then configure again)"
for pkg in nats-server libnats-dev; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
	[ "$(id -u)" = 0 ] || die "$pkg is missing (apt-get install $pkg)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null ||
		die "cannot install $pkg"
done
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
${CC:-cc} -O2 -Wall -o "$work/natsbench" "$here/natsbench.c" $(pkg-config --cflags --libs libnats) ||
	die "natsbench did not build"

clk_tck=$(getconf CLK_TCK)
cpu_of() { awk -v hz="$clk_tck" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The NATS cluster: three servers, JetStream, routes to each other.
ports=() cports=()
for i in 0 1 2; do
	ports+=("$(free_port)")
	cports+=("$(free_port)")
done
urls="nats://127.0.0.1:${ports[0]},nats://127.0.0.1:${ports[1]},nats://127.0.0.1:${ports[2]}"
for i in 0 1 2; do
	routes=""
	for j in 0 1 2; do [ "$j" = "$i" ] || routes="$routes nats-route://127.0.0.1:${cports[$j]}"; done
	cat >"$work/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${ports[$i]}
jetstream { store_dir: "$work/js$i" }
cluster { name: bench, listen: 127.0.0.1:${cports[$i]}, routes: [$(echo $routes | sed 's/ /, /g')] }
EOF
	"$NATS_SERVER" -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
	pids+=($!)
done
# ready when a replicated stream can be made
for _ in $(seq 200); do
	"$work/natsbench" --url "nats://127.0.0.1:${ports[0]}" --events 1 --replicas 3 \
		--stream READY$RANDOM >/dev/null 2>&1 && break
	sleep 0.1
done

# N events of about 200 bytes over 1,000 subjects (keys).
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"specversion\":\"1.0\",\"id\":\"b%d\",\"source\":\"/bench\",\"type\":\"order.placed\",\"subject\":\"customer-%d\",\"time\":\"2026-01-01T00:00:00Z\",\"data\":{\"order\":%d,\"amount\":%d.5,\"sku\":\"SKU-%05d\"}}\n", i, i % 1000, i, i % 997, i % 5000 }' >"$work/events.ndjson"

stored() { # dir: events in that node's log
	"$TIDE" stat --json --data "$1" 2>/dev/null | sed -n 's/.*"events":\([0-9]*\).*/\1/p'
}

say "cluster bench: $N events per run, $RUNS runs; 3 nats-server, 2 Tide nodes, 8 partitions, R3"
for r in $(seq "$RUNS"); do
	# the peer: straight to JetStream
	out=$("$work/natsbench" --url "nats://127.0.0.1:${ports[$((r % 3))]}" --events "$N" \
		--replicas 3 --stream PEER$r --msgid 1 --run "p$r") || die "natsbench failed"
	echo "$out" | sed -n 's/.*rate=\([0-9]*\).*/\1/p' >>"$work/peer"

	# two nodes on a stream of their own
	nodes=()
	for k in 0 1; do
		"$TIDE" run -q --data "$work/r$r-$k" --cluster "$urls" --node "b$k" \
			--set cluster_stream="T$r" --set cluster_partitions=8 --set cluster_replicas=3 \
			--set cluster_lease=3s 2>"$work/node$r-$k.log" &
		nodes+=($!)
	done
	for _ in $(seq 300); do
		a=$("$TIDE" stat --data "$work/r$r-0" 2>/dev/null | grep -c ' here,' || true)
		b=$("$TIDE" stat --data "$work/r$r-1" 2>/dev/null | grep -c ' here,' || true)
		[ "$a" = 4 ] && [ "$b" = 4 ] && break
		sleep 0.1
	done
	[ "$a" = 4 ] && [ "$b" = 4 ] || die "the nodes did not share the partitions (see $work/node$r-*.log)"
	c0=$(cpu_of "${nodes[0]}")
	c1=$(cpu_of "${nodes[1]}")
	t0=$(date +%s.%N)
	"$TIDE" publish -q --data "$work/r$r-0" --batch 100 <"$work/events.ndjson" ||
		die "tide publish failed"
	t1=$(date +%s.%N)
	for _ in $(seq 6000); do
		s0=$(stored "$work/r$r-0")
		s1=$(stored "$work/r$r-1")
		[ $((${s0:-0} + ${s1:-0})) -ge "$N" ] && break
		sleep 0.02
	done
	t2=$(date +%s.%N)
	[ $((${s0:-0} + ${s1:-0})) -eq "$N" ] || die "the nodes stored $((${s0:-0} + ${s1:-0})) events, not $N"
	cpu=$(awk -v a="$(cpu_of "${nodes[0]}")" -v b="$(cpu_of "${nodes[1]}")" -v c="$c0" -v d="$c1" \
		-v n="$N" 'BEGIN { printf "%.1f", (a - c + b - d) * 1e6 / n }')
	awk -v a="$t0" -v b="$t1" -v n="$N" 'BEGIN { printf "%.0f\n", n / (b - a) }' >>"$work/ingest"
	awk -v a="$t0" -v c="$t2" -v n="$N" 'BEGIN { printf "%.0f\n", n / (c - a) }' >>"$work/e2e"
	echo "$cpu" >>"$work/cpu"
	say "  run $r: JetStream $(tail -1 "$work/peer")/s; through a node $(tail -1 "$work/ingest")/s," \
		"stored by the owners $(tail -1 "$work/e2e")/s; nodes' CPU $cpu µs per event"
	for p in "${nodes[@]}"; do kill "$p"; done
	wait "${nodes[@]}" 2>/dev/null || true
	nodes=()
done

echo "cluster mode, $N events of about 200 bytes, medians of $RUNS runs ($(nproc) cores):"
echo "  JetStream R3 straight (natsbench, Nats-Msg-Id):    $(median <"$work/peer") events/s"
echo "  through a Tide node, answered after the stream:     $(median <"$work/ingest") events/s"
echo "  until the owners have stored them all:              $(median <"$work/e2e") events/s"
echo "  the two nodes' CPU per event:                       $(median <"$work/cpu") µs"
