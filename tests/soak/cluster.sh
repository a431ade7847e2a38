#!/bin/sh
# tests/soak/cluster.sh - the cluster suite (tests/test_cluster.c), longer:
# three Tide nodes on a three-server NATS JetStream cluster, one node
# killed with SIGKILL in the middle of publishing and started again, many
# times per run, several runs with different seeds.  After every kill and
# every restart, each acknowledged event must be in the log of its
# partition's owner exactly once, and each key's counts (and the alerts a
# rule emitted to other partitions), asked of any node, must be the
# model's.  The default, 5 runs of 20 cycles, is 100 kills.
#
# usage: tests/soak/cluster.sh [-r RUNS] [-c CYCLES] [-s SEED] [-b BUILDDIR] [-k]
#   -r RUNS      runs, each with its own seed (default 5)
#   -c CYCLES    kill/restart cycles per run (default 20; make check runs 1)
#   -s SEED      seed of the first run; run i uses SEED + i (default: random)
#   -b BUILDDIR  a configured build tree with cluster mode (default: the
#                tree holding this script); `make tide tests/check_main`
#                is run there first
#   -k           keep going after a failure
#
# Each run is `CK_RUN_SUITE=cluster TIDE_CLUSTER_SEED=S
# TIDE_CLUSTER_CYCLES=C tests/check_main`; its output goes to
# $TMPDIR/tide-soak-cluster-*/run-S.log.  Needs nats-server (Debian's
# package; ./setup.sh check installs it).
# Exit status: 0 if every run passed, 1 if one failed, 2 on a usage error.
set -u

runs=5 cycles=20 seed='' keep=0
build=$(cd "$(dirname "$0")/../.." && pwd)

while getopts r:c:s:b:k opt; do
	case $opt in
	r) runs=$OPTARG ;;
	c) cycles=$OPTARG ;;
	s) seed=$OPTARG ;;
	b) build=$(cd "$OPTARG" && pwd) || exit 2 ;;
	k) keep=1 ;;
	*)
		sed -n '12,19p' "$0" >&2
		exit 2
		;;
	esac
done
case "$runs$cycles" in *[!0-9]*)
	echo "cluster.sh: -r and -c take numbers" >&2
	exit 2
	;;
esac
[ -n "$seed" ] || seed=$(od -An -N3 -tu4 /dev/urandom | tr -d ' ')
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || {
	echo "cluster.sh: nats-server is not installed (apt-get install nats-server)" >&2
	exit 2
}
grep -q '^#define TIDE_HAVE_NATS 1' "$build/config.h" 2>/dev/null || {
	echo "cluster.sh: $build was configured without cluster mode (no libnats-dev)" >&2
	exit 2
}
make -C "$build" --no-print-directory -s tide tests/check_main || exit 1

out=$(mktemp -d "${TMPDIR:-/tmp}/tide-soak-cluster-XXXXXX") || exit 1
echo "cluster.sh: $runs runs of $cycles cycles from seed $seed; logs in $out"
start=$(date +%s)
passed=0 failed=0 events=0
i=0
while [ "$i" -lt "$runs" ]; do
	s=$((seed + i))
	log=$out/run-$s.log
	if CK_RUN_SUITE=cluster CK_TIMEOUT_MULTIPLIER=$((cycles / 2 + 1)) \
		TIDE_CLUSTER_SEED=$s TIDE_CLUSTER_CYCLES=$cycles \
		"$build/tests/check_main" >"$log" 2>&1; then
		passed=$((passed + 1))
		n=$(sed -n 's/^cluster: \([0-9]*\) events acknowledged by 3 nodes.*/\1/p' "$log")
		events=$((events + ${n:-0}))
		echo "cluster.sh: seed $s passed ($cycles kills, ${n:-?} events)"
	else
		failed=$((failed + 1))
		echo "cluster.sh: seed $s FAILED:" >&2
		grep -E '^tests/.*:(F|E):' "$log" >&2
		echo "  replay: TIDE_CLUSTER_SEED=$s TIDE_CLUSTER_CYCLES=$cycles CK_RUN_SUITE=cluster tests/check_main" >&2
		[ "$keep" = 1 ] || break
	fi
	i=$((i + 1))
done
echo "cluster.sh: $passed runs passed, $failed failed: $((passed * cycles)) kills and restarts," \
	"$events events acknowledged, $(($(date +%s) - start)) s"
[ "$failed" = 0 ]
