#!/bin/sh
# setup.sh - install the Debian packages Tide needs (only those missing),
# build it, then:
#   ./setup.sh          run the order-flow example (examples/orders)
#   ./setup.sh check    run the test suite (make check)
#   ./setup.sh asan     run the test suite under ASan + UBSan (build-asan/)
#   ./setup.sh tsan     run the tests that use threads under ThreadSanitizer
#                       (build-tsan/)
#   ./setup.sh fuzz [SECONDS]
#                       build the libFuzzer targets with clang (build-fuzz/)
#                       and run each for SECONDS (default 60), one per core
set -eu
cd "$(dirname "$0")"

PACKAGES="build-essential autoconf automake libtool pkg-config \
liblua5.4-dev libevent-dev libnanomsg-dev nanomsg-utils liblmdb-dev libyajl-dev libsodium-dev check \
libnats-dev"
# libFuzzer comes with clang's runtime libraries, only needed to fuzz;
# the tests check GET /metrics with Prometheus's own promtool, the manual
# pages with groff, the systemd unit with systemd-analyze, the live
# page in a headless Chromium, the HTTP endpoint with curl, and cluster
# mode against a real nats-server.
if [ "${1:-}" = fuzz ]; then PACKAGES="$PACKAGES clang libclang-rt-14-dev"; fi
case "${1:-}" in check | asan) PACKAGES="$PACKAGES prometheus groff-base systemd chromium curl nats-server" ;; esac

missing=
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "setup: installing$missing"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

jobs=$(nproc 2>/dev/null || echo 2)
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --quiet
make -j"$jobs" --no-print-directory

# A separate, clean copy of the sources in DIR/src (the tree itself is
# configured for the normal build), configured with the options that
# follow; the shell is left in DIR/src.
fresh_copy() {
	dir=$1
	shift
	rm -rf "$dir"
	mkdir -p "$dir"
	make --no-print-directory distdir distdir="$dir/src" >/dev/null
	cd "$dir/src"
	./configure --quiet "$@"
}

case "${1:-example}" in
example)
	exec examples/orders/run.sh
	;;
check)
	exec make -j"$jobs" --no-print-directory check
	;;
asan)
	top=$(pwd)
	fresh_copy build-asan --enable-sanitizers
	make -j"$jobs" --no-print-directory
	TIDE_TESTDATA=${TIDE_TESTDATA:-$top/../shared/testdata} \
		exec make -j"$jobs" --no-print-directory check
	;;
tsan)
	# As for asan, configured with ThreadSanitizer, running only the
	# programs that use the library from several threads (thread_test,
	# backtest_thread_test) or as an embedder does (embed_test), which
	# keeps it short.  Any report
	# fails the run.  libevent and LMDB are not instrumented, yet need no
	# suppressions here: the engine uses them from its loop thread only,
	# and the pipe that wakes the loop orders the rest.
	fresh_copy build-tsan --enable-tsan
	make -j"$jobs" --no-print-directory
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:exitcode=66 \
		exec make -j"$jobs" --no-print-directory check \
		TESTS="tests/thread_test tests/embed_test tests/backtest_thread_test"
	;;
fuzz)
	# A clean copy of the sources, as for asan, configured with clang and
	# the fuzz targets.  Each target runs on a copy of its seed corpus
	# (the repository's stays as committed); its finds go to
	# build-fuzz/artifacts.  Any crash, leak, timeout or out-of-memory
	# fails the run, after every target has had its turn.
	seconds=${2:-60}
	case $seconds in '' | *[!0-9]*)
		echo "usage: $0 fuzz [SECONDS]" >&2
		exit 2
		;;
	esac
	fresh_copy build-fuzz CC=clang --enable-fuzzing
	mkdir -p ../corpus ../artifacts ../logs
	make -j"$jobs" --no-print-directory fuzz-build
	cd ..
	# One target per core at a time; each leaves its verdict in
	# logs/fuzz_T.status, and the summaries follow in a fixed order.
	run_target() {
		t=$1
		cp -R src/tests/fuzz/corpus/fuzz_$t corpus/fuzz_$t
		if UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			src/tests/fuzz/fuzz_$t corpus/fuzz_$t -dict=src/tests/fuzz/$t.dict \
			-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
			-artifact_prefix="artifacts/fuzz_$t-" -print_final_stats=1 \
			>logs/fuzz_$t.log 2>&1; then
			echo ok >logs/fuzz_$t.status
		else
			echo FAILED >logs/fuzz_$t.status
		fi
	}
	running=0
	for t in event request value config; do
		echo "fuzz: fuzz_$t for ${seconds}s"
		run_target $t &
		running=$((running + 1))
		if [ $running -ge "$jobs" ]; then
			wait
			running=0
		fi
	done
	wait
	failed=
	for t in event request value config; do
		status=$(cat logs/fuzz_$t.status 2>/dev/null || echo FAILED)
		[ "$status" = ok ] || failed="$failed fuzz_$t"
		# the last status line: "#RUNS DONE cov: C ft: F corp: N/SIZE ..."
		last=$(grep -E '^#[0-9]+' logs/fuzz_$t.log | tail -n 1)
		execs=$(grep -E '^stat::number_of_executed_units' logs/fuzz_$t.log | awk '{print $2}')
		cov=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
		ft=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
		corp=$(printf '%s\n' "$last" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
		echo "fuzz: fuzz_$t $status: ${execs:-?} executions, coverage ${cov:-?} edges" \
			"(${ft:-?} features), corpus ${corp:-?} (inputs/bytes)"
		if [ "$status" != ok ]; then
			grep -E 'ERROR|property broken|Test unit written' logs/fuzz_$t.log | head -n 5
			echo "fuzz: the input is in build-fuzz/artifacts/, the log in" \
				"build-fuzz/logs/fuzz_$t.log; rerun an input with" \
				"build-fuzz/src/tests/fuzz/fuzz_$t FILE"
		fi
	done
	if [ -n "$failed" ]; then
		echo "fuzz: FAILED:$failed" >&2
		exit 1
	fi
	;;
*)
	echo "usage: $0 [example|check|asan|tsan|fuzz [SECONDS]]" >&2
	exit 2
	;;
esac
