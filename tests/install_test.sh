#!/bin/bash
# install_test.sh - Tide as an embedder gets it.  Installs the build into
# a temporary root (make install DESTDIR=...), checks what tide.pc says
# and what the libraries hold, builds examples/embed against the
# installed files through pkg-config only (linked to libtide.so, then to
# libtide.a), and runs the gateway: readings are answered with their seq,
# each alert is printed once, the consumers' events are in the log, and
# SIGTERM ends it with status 0 after the engine's stop notice.
#
# Run by `make check`, which passes the build's directories and
# compiler; EXAMPLE_CFLAGS and EXAMPLE_LDFLAGS carry the sanitizer flags
# of a --enable-sanitizers build (an instrumented libtide needs them).
set -u

fail() {
	echo "install_test: FAIL: $*" >&2
	exit 1
}

builddir=${TIDE_TOP_BUILDDIR:?run by make check}
srcdir=${TIDE_TOP_SRCDIR:?run by make check}
libdir=${TIDE_LIBDIR:?run by make check}
bindir=${TIDE_BINDIR:?run by make check}
make=${MAKE:-make}
pkg_config=${PKG_CONFIG:-pkg-config}

work=$(mktemp -d "${TMPDIR:-/tmp}/tide-install-XXXXXX") || fail "cannot make a temporary directory"
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

root=$work/root
data=$work/data
example=$work/embed

# A make of our own, not a job of the one running the tests.
submake() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "$make" --no-print-directory "$@"
}

# ---------------------------------------------------------------------------
# Install, and what pkg-config makes of it

submake -C "$builddir" install DESTDIR="$root" >"$work/install.log" 2>&1 || {
	cat "$work/install.log" >&2
	fail "make install DESTDIR=$root failed"
}
lib=$root$libdir
tide=$root$bindir/tide
[ -f "$lib/pkgconfig/tide.pc" ] || fail "no tide.pc in $lib/pkgconfig"
[ -f "$lib/libtide.a" ] || fail "libtide.a was not installed in $lib"
[ -x "$tide" ] || fail "the tide command was not installed in $root$bindir"

# The systemd unit and its configuration: installed, the unit valid as
# systemd reads it (its paths pointed into the staged root), the
# configuration one the engine starts with.
prefix=${TIDE_PREFIX:?run by make check}
sysconfdir=${TIDE_SYSCONFDIR:?run by make check}
unit=$root$prefix/lib/systemd/system/tide.service
conf=$root$sysconfdir/tide/tide.lua
[ -f "$unit" ] || fail "no tide.service in $root$prefix/lib/systemd/system"
[ -f "$conf" ] || fail "no tide.lua in $root$sysconfdir/tide"
grep -q "^ExecStart=$bindir/tide run --config $sysconfdir/tide/tide.lua " "$unit" ||
	fail "tide.service does not start $bindir/tide with $sysconfdir/tide/tide.lua"
for want in Restart=on-failure StateDirectoryMode=0700 NoNewPrivileges=yes ProtectSystem=strict; do
	grep -q "^$want\$" "$unit" || fail "tide.service lacks $want"
done
command -v systemd-analyze >/dev/null || fail "systemd-analyze is needed to check tide.service"
sed -e "s|$bindir/tide|$tide|" -e "s|$sysconfdir/tide|$root$sysconfdir/tide|" "$unit" \
	>"$work/tide.service"
out=$(systemd-analyze verify "$work/tide.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
# A manual page for tide and for each command its --help lists, that
# groff reads without a warning.
mandir=${TIDE_MANDIR:?run by make check}
command -v groff >/dev/null || fail "groff is needed to check the manual pages"
pages=tide
for c in $(LD_LIBRARY_PATH=$lib "$tide" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }'); do
	[ "$c" = version ] || pages="$pages tide-$c"
done
for p in $pages; do
	page=$root$mandir/man1/$p.1
	[ -s "$page" ] || fail "no manual page $p.1 in $root$mandir/man1"
	warn=$(groff -man -Tutf8 -ww -z "$page" 2>&1) || fail "groff cannot read $p.1: $warn"
	[ -z "$warn" ] || fail "groff warns about $p.1: $warn"
	grep -q '^\.TP' "$page" || fail "$p.1 lists no options or commands"
	grep -q '^\.SH SYNOPSIS' "$page" || fail "$p.1 has no SYNOPSIS"
done

LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
	"$tide" run --config "$conf" --data "$work/confcheck" --http 127.0.0.1:0 \
	>"$work/conf.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do
	[ -s "$work/confcheck/endpoints" ] && break
	kill -0 "$cpid" 2>/dev/null || break
	sleep 0.05
done
[ -s "$work/confcheck/endpoints" ] || fail "the installed tide.lua does not start: $(cat "$work/conf.log")"
kill -TERM "$cpid"
wait "$cpid" || fail "tide run with the installed tide.lua did not stop cleanly"

# The staged root stands for /: pkg-config puts it before the paths it
# prints (PKG_CONFIG_SYSROOT_DIR), as when building against a sysroot.
export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

cflags=$("$pkg_config" --cflags tide) || fail "pkg-config --cflags tide failed"
libs=$("$pkg_config" --libs tide) || fail "pkg-config --libs tide failed"
static_libs=$("$pkg_config" --static --libs tide) || fail "pkg-config --static --libs tide failed"
case $cflags in
*lua*) fail "pkg-config --cflags tide names Lua's headers, which tide.h does not need: $cflags" ;;
esac
header=
for flag in $cflags; do
	case $flag in -I*) [ -f "${flag#-I}/tide.h" ] && header=${flag#-I} ;; esac
done
[ -n "$header" ] || fail "pkg-config --cflags tide ($cflags) leads to no tide.h"
for want in -ltide -levent; do
	case " $libs " in *" $want "*) ;; *) fail "pkg-config --libs tide lacks $want: $libs" ;; esac
done
for private in -llua5.4 -lnanomsg -llmdb -lyajl -lsodium; do
	case " $libs " in *" $private "*) fail "pkg-config --libs tide has the private $private: $libs" ;; esac
	case " $static_libs " in
	*" $private "*) ;;
	*) fail "pkg-config --static --libs tide lacks $private: $static_libs" ;;
	esac
done

# libtide.a holds the engine; libtide.so exports tide.h's functions only
# (a sanitizer's instrumentation may add symbols of its own).
members=$(ar t "$lib/libtide.a") || fail "ar cannot read libtide.a"
for module in engine log consumer script event; do
	printf '%s\n' "$members" | grep -q "$module\.o$" || fail "libtide.a lacks the engine's $module.o"
done
nm -g --defined-only "$lib/libtide.a" 2>/dev/null | grep -q ' T tide_engine_new$' ||
	fail "libtide.a does not define tide_engine_new"
strays=$(nm -D --defined-only "$lib/libtide.so" | awk '{ print $NF }' |
	grep -v -E '^(tide_|__(asan|odr_asan|ubsan|sancov)|_(init|fini|edata|end)$|__bss_start$)')
[ -z "$strays" ] || fail "libtide.so exports more than tide.h declares:" $strays

# The installed header stands alone, in strict C99 and in C++.
printf '#include <tide.h>\nint main(void) { tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;\n(void)o; return TIDE_VERSION_NUM > 0 ? 0 : 1; }\n' >"$work/header.c"
cp "$work/header.c" "$work/header.cpp"
# shellcheck disable=SC2086
${CC:-cc} -std=c99 -pedantic -Wall -Wextra -Werror $cflags -fsyntax-only "$work/header.c" ||
	fail "tide.h does not compile alone as C99"
if command -v "${CXX:-g++}" >/dev/null 2>&1; then
	# shellcheck disable=SC2086
	"${CXX:-g++}" -std=c++11 -pedantic -Wall -Wextra -Werror $cflags -fsyntax-only \
		"$work/header.cpp" || fail "tide.h does not compile in C++"
fi

# ---------------------------------------------------------------------------
# The example, built as a stranger would

mkdir -p "$example" || fail "cannot make $example"
for f in gateway.c rules.lua Makefile; do
	cp "$srcdir/examples/embed/$f" "$example/" || fail "cannot copy examples/embed/$f"
done
submake -C "$example" all static CC="${CC:-cc}" PKG_CONFIG="$pkg_config" \
	CFLAGS="${EXAMPLE_CFLAGS:--g}" LDFLAGS="${EXAMPLE_LDFLAGS:-}" >"$work/build.log" 2>&1 || {
	cat "$work/build.log" >&2
	fail "examples/embed does not build against the installed library"
}
readelf -d "$example/gateway" | grep -q 'NEEDED.*libtide\.so' ||
	fail "gateway is not linked to libtide.so"
if readelf -d "$example/gateway-static" | grep -q 'NEEDED.*libtide'; then
	fail "gateway-static still needs libtide.so"
fi

# ---------------------------------------------------------------------------
# Running it

# start PROGRAM RUN: start the gateway on a free port; sets pid and port.
start() {
	out=$work/$2.out
	err=$work/$2.err
	"$example/$1" -d "$data" -r "$example/rules.lua" 0 >"$out" 2>"$err" &
	pid=$!
	port=
	for _ in $(seq 300); do
		port=$(sed -n 's/^gateway: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$err")
		[ -n "$port" ] && return
		kill -0 "$pid" 2>/dev/null || {
			cat "$err" >&2
			fail "$1 exited before listening"
		}
		sleep 0.1
	done
	cat "$err" >&2
	fail "$1 did not listen within 30 s"
}

# send LINE...: send the lines on one connection; the answers, one per
# line, go to the array answers.
send() {
	local line
	answers=()
	exec 4<>"/dev/tcp/127.0.0.1/$port" || fail "cannot connect to 127.0.0.1:$port"
	printf '%s\n' "$@" >&4
	for line in "$@"; do
		IFS= read -r -t 30 answer <&4 || fail "no answer within 30 s to '$line'"
		answers+=("$answer")
	done
	exec 4>&-
}

# wait_lines PATTERN N FILE: wait until FILE has N lines matching PATTERN.
wait_lines() {
	for _ in $(seq 300); do
		[ "$(grep -c -- "$1" "$3")" -ge "$2" ] && return
		sleep 0.1
	done
	cat "$3" >&2
	fail "$3 has $(grep -c -- "$1" "$3") lines matching '$1' after 30 s, not $2"
}

# stop: SIGTERM, and status 0 after the stop notice.
stop() {
	kill -TERM "$pid" || fail "the gateway is gone before SIGTERM"
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "the gateway did not stop within 30 s of SIGTERM"
	wait "$pid"
	status=$?
	pid=
	[ "$status" = 0 ] || {
		cat "$err" >&2
		fail "the gateway exited with status $status after SIGTERM"
	}
	grep -q '^gateway: stopped$' "$err" || {
		cat "$err" >&2
		fail "the gateway exited without its stop notice"
	}
}

# seq_of ANSWER: the seq in "ok SEQ", or fail.
seq_of() {
	case $1 in
	"ok "[0-9]*) echo "${1#ok }" ;;
	*) fail "expected 'ok SEQ', got '$1'" ;;
	esac
}

count() {
	"$tide" log --data "$data" --type "$1" | grep -c '"type"'
}

# First run, linked to libtide.so: three readings over their limits among
# five, and two lines that are no readings.
start gateway shared
send "sensor-1,temperature,21.5" "sensor-2,temperature,85" "not a reading" \
	"sensor-3,humidity,97.25" "sensor-1,temperature,hot" "sensor-4,pressure,1013" \
	"sensor-2,temperature,90.5"
last=0
for i in 0 1 3 5 6; do
	s=$(seq_of "${answers[$i]}")
	[ "$s" -gt "$last" ] || fail "answer ${answers[$i]} does not follow seq $last"
	last=$s
done
[ "${answers[2]}" = "error expected device,metric,value" ] ||
	fail "a line that is no reading was answered '${answers[2]}'"
[ "${answers[4]}" = "error value is not a number" ] ||
	fail "a value that is no number was answered '${answers[4]}'"
wait_lines '^alert: ' 3 "$out"
stop
[ "$(grep -c '^alert: ' "$out")" = 3 ] || { cat "$out" >&2; fail "not three alerts printed"; }
for a in 'sensor-2 temperature 85 over 80' 'sensor-3 humidity 97.25 over 95' \
	'sensor-2 temperature 90.5 over 80'; do
	[ "$(grep -c "^alert: $a (seq [0-9]*)$" "$out")" = 1 ] || {
		cat "$out" >&2
		fail "'alert: $a' was not printed once"
	}
done

# Second run, linked to libtide.a, on the same log: one new alert; the
# three of the first run are not printed again.
start gateway-static static
send "sensor-5,temperature,99"
s=$(seq_of "${answers[0]}")
[ "$s" -gt "$last" ] || fail "the second run's seq $s does not follow $last"
wait_lines '^alert: ' 1 "$out"
stop
[ "$(grep -c '^alert: ' "$out")" = 1 ] || { cat "$out" >&2; fail "the second run printed old alerts"; }
grep -q '^alert: sensor-5 temperature 99 over 80 (seq [0-9]*)$' "$out" ||
	fail "the second run's alert is not printed"

# The log, read by the installed command.
[ "$(count sensor.reading)" = 6 ] || fail "not six readings in the log"
[ "$(count sensor.alert)" = 4 ] || fail "not four alerts (from rules.lua) in the log"
[ "$(count sensor.alert.notified)" = 4 ] ||
	fail "not four sensor.alert.notified (tide_emit from the C consumer) in the log"
"$tide" log --data "$data" --type sensor.alert.notified | grep -q '"subject":"sensor-5"' ||
	fail "no sensor.alert.notified for sensor-5"

echo "install_test: installed library, pkg-config, static and shared example: ok"
