#!/bin/sh
# tests/soak/crash.sh - the crash suite (tests/test_crash.c), longer: many
# SIGKILL/restart cycles per run, several runs with different seeds; each
# cycle publishes with acknowledgements to a daemon running a consumer and
# two projections, reloads its scripts now and then, and kills it.  The
# default, 5 runs of 200 cycles, is 1,000 cycles.
#
# usage: tests/soak/crash.sh [-r RUNS] [-c CYCLES] [-s SEED] [-t SECONDS] [-b BUILDDIR] [-k]
#   -r RUNS      runs, each with its own seed (default 5)
#   -c CYCLES    kill/restart cycles per run (default 200; make check runs 20)
#   -s SEED      seed of the first run; run i uses SEED + i (default: random)
#   -t SECONDS   keep starting runs until this much time has passed
#                (instead of -r)
#   -b BUILDDIR  a configured build tree (default: the tree holding this
#                script); `make tide tests/check_main` is run there first
#   -k           keep going after a failure
#
# Each run is `CK_RUN_SUITE=crash TIDE_CRASH_SEED=S TIDE_CRASH_CYCLES=C
# tests/check_main`; its output goes to $TMPDIR/tide-soak-*/run-S.log.  A
# failure prints the seed, the failing check and where the test kept the
# evidence (a copy of the data directory, the daemon's log and the
# producers' inputs and acknowledgements, in $TMPDIR/tide-kept-crash-*).
# Replay one with: TIDE_CRASH_SEED=S TIDE_CRASH_CYCLES=C TIDE_CRASH_VERBOSE=1 \
#   CK_RUN_SUITE=crash tests/check_main
# The last line adds up the runs that passed: cycles, kills, reloads,
# rebuilds, events stored and the time taken.
# Exit status: 0 if every run passed, 1 if one failed, 2 on a usage error.
set -u

runs=5 cycles=200 seed='' seconds='' keep=0
build=$(cd "$(dirname "$0")/../.." && pwd)

while getopts r:c:s:t:b:k opt; do
	case $opt in
	r) runs=$OPTARG ;;
	c) cycles=$OPTARG ;;
	s) seed=$OPTARG ;;
	t) seconds=$OPTARG ;;
	b) build=$(cd "$OPTARG" && pwd) || exit 2 ;;
	k) keep=1 ;;
	*) sed -n '7,16p' "$0" >&2; exit 2 ;;
	esac
done
case "$runs$cycles$seed${seconds:-}" in
*[!0-9]*) echo "crash.sh: -r, -c, -s and -t take numbers" >&2; exit 2 ;;
esac
if [ -z "$seed" ]; then
	seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
fi

make -s -C "$build" tide tests/check_main >/dev/null || {
	echo "crash.sh: cannot build in $build (configure it first)" >&2
	exit 2
}

out=$(mktemp -d "${TMPDIR:-/tmp}/tide-soak-XXXXXX")
start=$(date +%s)
i=0 passed=0 failed=0 failures=
cycles_sum=0 kills=0 hup_kills=0 reloads=0 changed=0 rebuilds=0 events=0

# The number before $1 in a run's summary line ($2), or 0.
count() {
	n=$(printf ' %s\n' "$2" | sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1.*/\1/p")
	echo "${n:-0}"
}
echo "crash soak: $cycles cycles a run, first seed $seed, logs in $out"
while :; do
	if [ -n "${seconds:-}" ]; then
		[ $(($(date +%s) - start)) -lt "$seconds" ] || break
	else
		[ "$i" -lt "$runs" ] || break
	fi
	s=$((seed + i))
	i=$((i + 1))
	log="$out/run-$s.log"
	t0=$(date +%s)
	# a line per cycle in the run's log, to read after a failure
	if CK_RUN_SUITE=crash TIDE_CRASH_SEED=$s TIDE_CRASH_CYCLES=$cycles \
		TIDE_CRASH_VERBOSE=${TIDE_CRASH_VERBOSE:-1} \
		"$build/tests/check_main" >"$log" 2>&1; then
		passed=$((passed + 1))
		sum=$(grep '^crash: seed [0-9]*: ' "$log" | sed 's/^crash: seed [0-9]*: //')
		echo "run $i: seed $s passed in $(($(date +%s) - t0)) s: $sum"
		cycles_sum=$((cycles_sum + $(count 'cycles,' "$sum")))
		kills=$((kills + $(count 'kills (' "$sum")))
		hup_kills=$((hup_kills + $(count 'right after a SIGHUP' "$sum")))
		reloads=$((reloads + $(count 'reloads (' "$sum")))
		changed=$((changed + $(count 'with a changed script' "$sum")))
		rebuilds=$((rebuilds + $(count 'rebuilds,' "$sum")))
		events=$((events + $(count 'events,' "$sum")))
	else
		failed=$((failed + 1))
		failures="$failures $s"
		echo "run $i: seed $s FAILED after $(($(date +%s) - t0)) s (log: $log)"
		grep -E 'seed [0-9]+, cycle|:[EF]:' "$log" | sed 's/^/    /'
		[ "$keep" = 1 ] || break
	fi
done
echo "crash soak: $passed passed, $failed failed${failures:+ (seeds:$failures)}," \
	"$(($(date +%s) - start)) s"
echo "crash soak: $cycles_sum cycles, $kills kills ($hup_kills right after a SIGHUP)," \
	"$reloads reloads ($changed with a" \
	"changed script), $rebuilds rebuilds, $events events in the runs that passed;" \
	"seeds $seed..$((seed + i - 1)), $(($(date +%s) - start)) s"
[ "$failed" -eq 0 ]
