#!/usr/bin/env bash
# tests/bench/memory.sh - what Tide's rules cost in memory: an idle rule
# (and one with a window), and a key of a rule's state, in the engine's
# RSS and anonymous memory (/proc/PID/status) and in the log (LMDB).
#
#   tests/bench/memory.sh                       (from a built tree; ~1.5 min)
#   MEM_RUNS=1 MEM_KEYS=20000 tests/bench/memory.sh        (a quick check)
#   MEM_PARTS=keys MEM_KEYS=500000 tests/bench/memory.sh   (keyed state only)
#
# 1. Idle rules: `tide run` with a script of 0 rules, then of N rules that
#    no event reaches, each keyed by subject with a small state and a ttl
#    (and the same with one sliding window each).  Once the engine is up
#    (its endpoints file, and `tide stat --json` lists the rules) and has
#    settled, VmRSS and RssAnon are read; then one event that no rule
#    handles is published (every rule's checkpoint gets written) and they
#    are read again, with the LMDB pages in use.  Per rule: (N - 0) / N.
# 2. Keyed state: one rule keyed by subject, then MEM_KEYS events with as
#    many distinct subjects, published with `tide publish --wait` (until
#    the rule has handled them all); RSS, RssAnon and LMDB before and
#    after, minus a bare engine (no script) over the same events, per key.
#
# Every engine runs on a fresh data directory with ipc:// endpoints inside
# the work directory, in `sync` (the default durability).  Figures are the
# median of MEM_RUNS runs (all runs listed); the configurations go round
# robin, so each run pairs with the baseline of its own round.
#
# Environment (all optional):
#   TIDE          the tide binary (default: ./tide at the top of the tree)
#   MEM_RULES     idle rule counts (default "100 1000")
#   MEM_KEYS      distinct keys (events) of the keyed-state part (default 100000)
#   MEM_RUNS      runs per figure (default 3)
#   MEM_SETTLE    seconds to let an engine settle before reading (default 1)
#   MEM_PARTS     which parts (default "idle keys")
#   BENCH_TMPDIR  where the work directory goes (default /var/tmp)
#   MEM_KEEP=1    keep the work directory (logs, data) at the end
#   CC            compiler for tidebench (LMDB page counts; default cc)
#
# Output (stdout): one summary line per figure, `name value key=value...`
# (the medians; *_runs= lists every run), then a markdown section for
# tests/bench/RESULTS.md with every run's raw line.  Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
TIDE=${TIDE:-$top/tide}
RULES=${MEM_RULES:-100 1000}
KEYS=${MEM_KEYS:-100000}
RUNS=${MEM_RUNS:-3}
SETTLE=${MEM_SETTLE:-1}
PARTS=${MEM_PARTS:-idle keys}
CC=${CC:-cc}

say() { printf '%s\n' "$*" >&2; }
die() { say "memory bench: $*"; exit 1; }
want() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

[ -x "$TIDE" ] || die "no tide binary at $TIDE (build it first, or set TIDE=)"
case $KEYS$RUNS${RULES// /} in *[!0-9]*) die "MEM_RULES, MEM_KEYS and MEM_RUNS must be numbers" ;; esac
case $SETTLE in '' | *[!0-9.]*) die "MEM_SETTLE must be a number of seconds" ;; esac
if [ "$RUNS" -lt 1 ] || [ "$KEYS" -lt 1 ]; then die "MEM_RUNS and MEM_KEYS must be at least 1"; fi
for n in $RULES; do [ "$n" -ge 1 ] || die "MEM_RULES must be positive"; done
want idle || want keys || die "MEM_PARTS names neither idle nor keys"

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/tide-mem.XXXXXX")
pids=()
cleanup() {
	local p
	for p in ${pids[@]+"${pids[@]}"}; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in ${pids[@]+"${pids[@]}"}; do
		wait "$p" 2>/dev/null || true
	done
	if [ "${MEM_KEEP:-0}" = 1 ]; then
		say "memory bench: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # drop a pid from the cleanup list
	local p keep=()
	for p in ${pids[@]+"${pids[@]}"}; do [ "$p" = "$1" ] || keep+=("$p"); done
	pids=("${keep[@]+"${keep[@]}"}")
}

# Run a client in the background (bounded by timeout) and wait for it, so
# Ctrl-C is handled at once.  Its stdin is the file given (a background
# command's would be /dev/null), its stdout goes to $work/client.out, its
# stderr to $work/client.err.
client() { # seconds stdin-file command...
	local p rc=0 t=$1 in=$2
	shift 2
	timeout "$t" "$@" <"$in" >"$work/client.out" 2>"$work/client.err" &
	p=$!
	pids+=("$p")
	wait "$p" || rc=$?
	forget_pid "$p"
	return $rc
}

# ---- LMDB pages: tidebench (optional) -------------------------------------

mkdir -p "$work/bin"
have_pages=0
# shellcheck disable=SC2046
if pkg-config --exists nanomsg lmdb 2>/dev/null &&
	"$CC" -O2 -Wall -o "$work/bin/tidebench" "$here/tidebench.c" \
		$(pkg-config --cflags --libs nanomsg lmdb) 2>"$work/cc.log"; then
	have_pages=1
else
	say "memory bench: tidebench did not build (nanomsg/lmdb dev files?): LMDB figures from tide stat's size only"
fi
lmdb_live() { # data dir: bytes in the B-trees' pages (every database), or -1
	local out
	if [ $have_pages = 1 ] && out=$(timeout 30 "$work/bin/tidebench" pages --data "$1" 2>/dev/null); then
		grep -o 'bytes_live=[0-9]*' <<<"$out" | cut -d= -f2
	else
		echo -1
	fi
}

# ---- the engine ---------------------------------------------------------------

json_num() { # name json: the first "name":number in json
	grep -o "\"$1\":[0-9]*" <<<"$2" | head -1 | cut -d: -f2
}
stat_json() { # data dir: `tide stat --json`, bounded
	timeout 30 "$TIDE" stat --json --data "$1" || fail "tide stat --json --data $1 failed"
}
proc_kb() { # field pid: a line of /proc/PID/status, in kB
	awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"
}

seqno=0
tide_pid='' tide_data='' tide_dir=''
fail() { # message: the engine's log, then die
	[ -n "$tide_dir" ] && [ -e "$tide_dir/tide.log" ] && cat "$tide_dir/tide.log" >&2
	die "$*"
}
# Start `tide run` on a fresh data directory and wait (at most 30 s) until
# its endpoints file is there and `tide stat --json` answers with every
# consumer listed; then let it settle.
start_tide() { # script ('' for none) consumers-expected
	local script=() st end
	seqno=$((seqno + 1))
	tide_dir="$work/t$seqno"
	tide_data="$tide_dir/data"
	mkdir -p "$tide_dir"
	[ -n "$1" ] && script=(--script "$1")
	"$TIDE" run -q --data "$tide_data" --pull "ipc://$tide_dir/pull.ipc" \
		--rep "ipc://$tide_dir/rep.ipc" --pub "ipc://$tide_dir/pub.ipc" \
		"${script[@]+"${script[@]}"}" 2>"$tide_dir/tide.log" &
	tide_pid=$!
	pids+=("$tide_pid")
	end=$((SECONDS + 30))
	while :; do
		kill -0 "$tide_pid" 2>/dev/null || fail "tide run ${1:-(no script)} exited"
		[ $SECONDS -lt $end ] || fail "tide run ${1:-(no script)} did not come up in 30 s"
		if [ -s "$tide_data/endpoints" ] &&
			st=$(timeout 10 "$TIDE" stat --json --data "$tide_data" 2>/dev/null); then
			case $st in *'"running":true'*)
				[ "$(grep -o '"checkpoint":' <<<"$st" | wc -l)" = "$2" ] && break ;;
			esac
		fi
		sleep 0.05
	done
	sleep "$SETTLE"
}
stop_tide() {
	kill -TERM "$tide_pid" 2>/dev/null || true
	wait "$tide_pid" 2>/dev/null || true
	forget_pid "$tide_pid"
	[ "${MEM_KEEP:-0}" = 1 ] || rm -rf "$tide_dir"
	tide_pid='' tide_dir=''
}
# Publish a file of NDJSON to the running engine and wait until every
# consumer has handled it.
publish() { # file
	client 300 "$1" "$TIDE" publish -q --data "$tide_data" --timeout 60 --wait --wait-timeout 240 ||
		fail "tide publish $1 failed: $(cat "$work/client.err")"
}

raw="$work/raw.txt"
: >"$raw"
record() { # line: one run's result, kept for the report
	printf '%s\n' "$1" >>"$raw"
	say "  $1"
}
per() { # kb_a kb_b n: (a - b) kB in bytes per n
	echo $((($1 - $2) * 1024 / $3))
}
perb() { # bytes_a bytes_b n: (a - b) bytes per n, or -1 when unknown
	if [ "$1" -lt 0 ] || [ "$2" -lt 0 ]; then echo -1; else echo $((($1 - $2) / $3)); fi
}

# ---- 1. idle rules --------------------------------------------------------------

# The rule of the brief: keyed by subject, a small state, a ttl; "window"
# adds one sliding window (count and sum of data.amount over an hour).
window_opt='windows = { h1 = { sliding = "1h", value = "data.amount", aggregates = { "count", "sum" } } }'
idle_script() { # n none|window -> path
	local f="$work/idle_$1_$2.lua"
	[ -s "$f" ] || awk -v n="$1" -v w="$2" -v wo="$window_opt" 'BEGIN {
		print "local tide = require \"tide\""
		for (i = 1; i <= n; i++)
			printf "tide.on(\"never.sent.%d\", function(ev, st) st.n = (st.n or 0) + 1 end,\n" \
				"  { name = \"idle_%d\", key = \"subject\", ttl = \"1d\"%s })\n", i, i, w == "window" ? ", " wo : ""
	}' >"$f"
	echo "$f"
}
other_event="$work/other.ndjson"
echo '{"specversion":"1.0","id":"mem-other-1","source":"/bench/mem","type":"no.rule.listens","subject":"s-1","data":{"amount":1}}' >"$other_event"

# One engine: the readings right after the start (settled), then after one
# event no rule handles (every consumer's checkpoint is in the log by then).
# Sets m_rss m_anon m_ev_rss m_ev_anon m_live m_size m_live0 m_size0.
m_rss=0 m_anon=0 m_ev_rss=0 m_ev_anon=0 m_live=0 m_size=0 m_live0=0 m_size0=0
measure_idle() { # script consumers
	local st
	start_tide "$1" "$2"
	m_rss=$(proc_kb VmRSS "$tide_pid") m_anon=$(proc_kb RssAnon "$tide_pid")
	st=$(stat_json "$tide_data")
	m_size0=$(json_num size "$st") m_live0=$(lmdb_live "$tide_data")
	publish "$other_event"
	sleep "$SETTLE"
	m_ev_rss=$(proc_kb VmRSS "$tide_pid") m_ev_anon=$(proc_kb RssAnon "$tide_pid")
	st=$(stat_json "$tide_data")
	[ "$(json_num events "$st")" = 1 ] || fail "expected one event in the log: $st"
	case $st in *'"checkpoint":0'*) fail "a rule did not move past the event: $st" ;; esac
	m_size=$(json_num size "$st") m_live=$(lmdb_live "$tide_data")
	stop_tide
}

run_idle() { # run
	local b_rss b_anon b_ev_rss b_ev_anon b_live b_size b_live0 b_size0 n w s line
	printf 'local tide = require "tide"\n' >"$work/idle_0.lua"
	measure_idle "$work/idle_0.lua" 0
	b_rss=$m_rss b_anon=$m_anon b_ev_rss=$m_ev_rss b_ev_anon=$m_ev_anon
	b_live=$m_live b_size=$m_size b_live0=$m_live0 b_size0=$m_size0
	record "memory/idle_base $b_rss run=$1 rss_kb=$b_rss anon_kb=$b_anon ev_rss_kb=$b_ev_rss ev_anon_kb=$b_ev_anon lmdb_live0_bytes=$b_live0 stat_size0=$b_size0 lmdb_live_bytes=$b_live stat_size=$b_size"
	for n in $RULES; do
		for w in none window; do
			s=$(idle_script "$n" "$w")
			measure_idle "$s" "$n"
			line="memory/idle_rule $(per "$m_rss" "$b_rss" "$n") rules=$n window=$w run=$1"
			line+=" rss_kb=$m_rss anon_kb=$m_anon base_rss_kb=$b_rss base_anon_kb=$b_anon"
			line+=" rss_per_rule_bytes=$(per "$m_rss" "$b_rss" "$n") anon_per_rule_bytes=$(per "$m_anon" "$b_anon" "$n")"
			line+=" ev_rss_kb=$m_ev_rss ev_anon_kb=$m_ev_anon base_ev_rss_kb=$b_ev_rss base_ev_anon_kb=$b_ev_anon"
			line+=" ev_rss_per_rule_bytes=$(per "$m_ev_rss" "$b_ev_rss" "$n") ev_anon_per_rule_bytes=$(per "$m_ev_anon" "$b_ev_anon" "$n")"
			line+=" lmdb_live0_bytes=$m_live0 lmdb_live0_per_rule_bytes=$(perb "$m_live0" "$b_live0" "$n")"
			line+=" lmdb_live_bytes=$m_live base_lmdb_live_bytes=$b_live lmdb_live_per_rule_bytes=$(perb "$m_live" "$b_live" "$n")"
			line+=" stat_size=$m_size base_stat_size=$b_size lmdb_size_per_rule_bytes=$(perb "$m_size" "$b_size" "$n")"
			record "$line"
		done
	done
}

# ---- 2. keyed state ---------------------------------------------------------------

# KEYS events, each with a subject of its own (about 130 bytes each).
keys_events="$work/keys.ndjson"
make_keys_events() {
	[ -s "$keys_events" ] && return 0
	awk -v n="$KEYS" 'BEGIN { for (i = 0; i < n; i++)
		printf "{\"specversion\":\"1.0\",\"id\":\"mem-%d\",\"source\":\"/bench/mem\",\"type\":\"mem.reading\",\"subject\":\"key-%07d\",\"data\":{\"amount\":%d.25}}\n",
			i, i, i % 1000 }' >"$keys_events"
}
# The rules: "plain" (key subject, a counter in the state), "ttl" (the
# same, forgotten after 30 days: a timer per key), "window" (ttl and one
# sliding window, count and sum of data.amount over an hour).
key_rules="plain ttl window"
key_script() { # plain|ttl|window -> path
	local f="$work/keys_$1.lua" opt
	case $1 in
	plain) opt='key = "subject"' ;;
	ttl) opt='key = "subject", ttl = "30d"' ;;
	window) opt="key = \"subject\", ttl = \"30d\", $window_opt" ;;
	esac
	cat >"$f" <<EOF
local tide = require "tide"
tide.on("mem.reading", function(ev, st) st.n = (st.n or 0) + 1 end,
  { name = "keys", $opt })
EOF
	echo "$f"
}

# One engine (a rule, or none), KEYS events published; sets the readings.
k_rss0=0 k_anon0=0 k_rss1=0 k_anon1=0 k_live=0 k_size=0 k_pub=0 k_timers=0
measure_keys() { # script ('' for none) consumers
	local st t0 want_timers=0
	start_tide "$1" "$2"
	k_rss0=$(proc_kb VmRSS "$tide_pid") k_anon0=$(proc_kb RssAnon "$tide_pid")
	t0=$EPOCHREALTIME
	publish "$keys_events"
	k_pub=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
	sleep "$SETTLE"
	k_rss1=$(proc_kb VmRSS "$tide_pid") k_anon1=$(proc_kb RssAnon "$tide_pid")
	st=$(stat_json "$tide_data")
	[ "$(json_num events "$st")" = "$KEYS" ] || fail "expected $KEYS events in the log: $st"
	if [ "$2" = 1 ]; then
		if [ "$(json_num checkpoint "$st")" != "$KEYS" ] || [ "$(json_num keys "$st")" != "$KEYS" ]; then
			fail "the rule has not handled $KEYS events on $KEYS keys: $st"
		fi
		case $1 in *_plain.lua) ;; *) want_timers=$KEYS ;; esac
		k_timers=$(json_num timers "$st")
		[ "$k_timers" = "$want_timers" ] || fail "expected $want_timers timers (ttl): $st"
	fi
	k_size=$(json_num size "$st") k_live=$(lmdb_live "$tide_data")
	stop_tide
}

run_keys() { # run
	local b_rss b_anon b_live b_size r line
	measure_keys '' 0
	b_rss=$((k_rss1 - k_rss0)) b_anon=$((k_anon1 - k_anon0)) b_live=$k_live b_size=$k_size
	line="memory/key_bare $(per "$k_rss1" "$k_rss0" "$KEYS") keys=$KEYS run=$1"
	line+=" rss0_kb=$k_rss0 rss1_kb=$k_rss1 anon0_kb=$k_anon0 anon1_kb=$k_anon1"
	line+=" rss_per_event_bytes=$(per "$k_rss1" "$k_rss0" "$KEYS") anon_per_event_bytes=$(per "$k_anon1" "$k_anon0" "$KEYS")"
	line+=" lmdb_live_bytes=$b_live lmdb_live_per_event_bytes=$(perb "$b_live" 0 "$KEYS")"
	line+=" stat_size=$b_size publish_s=$k_pub"
	record "$line"
	for r in $key_rules; do
		measure_keys "$(key_script "$r")" 1
		line="memory/key $(per $((k_rss1 - k_rss0)) "$b_rss" "$KEYS") keys=$KEYS rule=$r run=$1"
		line+=" rss0_kb=$k_rss0 rss1_kb=$k_rss1 anon0_kb=$k_anon0 anon1_kb=$k_anon1"
		line+=" rule_rss_per_key_bytes=$(per "$k_rss1" "$k_rss0" "$KEYS") rule_anon_per_key_bytes=$(per "$k_anon1" "$k_anon0" "$KEYS")"
		line+=" rss_per_key_bytes=$(per $((k_rss1 - k_rss0)) "$b_rss" "$KEYS")"
		line+=" anon_per_key_bytes=$(per $((k_anon1 - k_anon0)) "$b_anon" "$KEYS")"
		line+=" lmdb_live_bytes=$k_live bare_lmdb_live_bytes=$b_live lmdb_live_per_key_bytes=$(perb "$k_live" "$b_live" "$KEYS")"
		line+=" stat_size=$k_size bare_stat_size=$b_size lmdb_size_per_key_bytes=$(perb "$k_size" "$b_size" "$KEYS")"
		line+=" timers=$k_timers publish_s=$k_pub"
		record "$line"
	done
}

# ---- the runs -----------------------------------------------------------------

say "memory bench: $RUNS runs; idle rules: $RULES; keyed state: $KEYS keys; work dir $work"
if want idle; then
	for n in $RULES; do
		for w in none window; do
			"$TIDE" check "$(idle_script "$n" "$w")" >/dev/null 2>"$work/check.err" ||
				die "tide check of the idle rules failed: $(cat "$work/check.err")"
		done
	done
fi
if want keys; then
	for r in $key_rules; do
		"$TIDE" check "$(key_script "$r")" >/dev/null 2>"$work/check.err" ||
			die "tide check of the keyed rule $r failed: $(cat "$work/check.err")"
	done
	make_keys_events
fi
for r in $(seq 1 "$RUNS"); do
	say "round $r of $RUNS"
	if want idle; then run_idle "$r"; fi
	if want keys; then run_keys "$r"; fi
done

# ---- the report -------------------------------------------------------------------

# The lines of one figure: first word $1, and every word of $2 among the rest.
lines_of() { # key "k=v k=v"
	awk -v k="$1" -v m="$2" 'BEGIN { n = split(m, want, " ") }
		$1 == k { ok = 1; for (i = 1; i <= n; i++) if (index(" " $0 " ", " " want[i] " ") == 0) ok = 0
			if (ok) print }' "$raw"
}
fvals() { # key match field: that field of every matching line, in run order
	lines_of "$1" "$2" | grep -o " $3=-\{0,1\}[0-9.]*" | cut -d= -f2
}
median() { # values on stdin
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "-"; exit }
		if (NR % 2) printf "%.0f\n", v[(NR + 1) / 2]
		else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() { fvals "$1" "$2" "$3" | median; }
all() { fvals "$1" "$2" "$3" | paste -sd, -; }
fmt() { # thousands separators; "-" for unknown (negative LMDB readings)
	awk -v n="$1" 'BEGIN { if (n == "-") { print "-"; exit }
		s = sprintf("%.0f", n < 0 ? -n : n); o = ""
		while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
		print (n < 0 && s o != "0" ? "-" : "") s o }'
}
lmdb_med() { # key match field: the median, or "-" without tidebench
	if [ $have_pages = 1 ]; then med "$1" "$2" "$3"; else echo -; fi
}
summary() { # key match name fields...: one summary line of medians
	local k=$1 m=$2 name=$3 f out
	shift 3
	out="$name $(med "$k" "$m" "$1") $m runs=$RUNS"
	for f in "$@"; do
		case $have_pages$f in 0lmdb_live*) out+=" $f=-" ;; *) out+=" $f=$(med "$k" "$m" "$f")" ;; esac
	done
	for f in "$@"; do
		case $have_pages$f in 0lmdb_live*) ;; *) out+=" ${f%_bytes}_runs=$(all "$k" "$m" "$f")" ;; esac
	done
	echo "$out"
}

# the summary lines
if want idle; then
	for n in $RULES; do
		for w in none window; do
			summary memory/idle_rule "rules=$n window=$w" memory/idle_rule \
				rss_per_rule_bytes anon_per_rule_bytes ev_rss_per_rule_bytes ev_anon_per_rule_bytes \
				lmdb_live_per_rule_bytes lmdb_size_per_rule_bytes
		done
	done
fi
if want keys; then
	summary memory/key_bare "keys=$KEYS" memory/key_bare rss_per_event_bytes anon_per_event_bytes \
		lmdb_live_per_event_bytes lmdb_live_bytes stat_size
	for r in $key_rules; do
		summary memory/key "keys=$KEYS rule=$r" memory/key rss_per_key_bytes anon_per_key_bytes \
			lmdb_live_per_key_bytes lmdb_size_per_key_bytes rule_rss_per_key_bytes rule_anon_per_key_bytes
	done
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
ram=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
fs=$(df -T "$work" | awk 'NR == 2 { print $2 }')
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }

row() { # label key match rss-field anon-field lmdb-field unit
	local v
	v=$(fvals "$2" "$3" "$4" | paste -sd' ' -)
	[ -n "$v" ] || return 0
	printf '| %s | **%s** | %s | %s | %s |\n' "$1" "$(fmt "$(med "$2" "$3" "$4")")" \
		"$(fmt "$(med "$2" "$3" "$5")")" "$(fmt "$(lmdb_med "$2" "$3" "$6")")" \
		"$(for x in $v; do fmt "$x"; done | paste -sd';' - | sed 's/;/; /g')"
}

echo
echo "## Memory: idle rules and keyed state, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "\`MEM_RULES=\"$RULES\" MEM_KEYS=$KEYS MEM_RUNS=$RUNS tests/bench/memory.sh\`"
echo
echo "Machine: ${cpu:-?}, $(nproc) cores, $ram RAM, Linux $(uname -r), data on $fs."
echo "Tide $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?'), LMDB $(ver liblmdb-dev);" \
	"each figure the median of $RUNS runs (all runs listed), every run on a fresh engine in \`sync\`."
echo
echo "| memory, bytes (median of $RUNS) | RSS | anonymous | LMDB in use | RSS, every run |"
echo "| --- | --- | --- | --- | --- |"
if want idle; then
	for n in $RULES; do
		row "An idle rule (key subject, ttl 1d, a counter), $(fmt "$n") rules, per rule" \
			memory/idle_rule "rules=$n window=none" rss_per_rule_bytes anon_per_rule_bytes lmdb_live_per_rule_bytes
		row "The same with one sliding window (1h, count and sum), $(fmt "$n") rules, per rule" \
			memory/idle_rule "rules=$n window=window" rss_per_rule_bytes anon_per_rule_bytes lmdb_live_per_rule_bytes
	done
fi
if want keys; then
	k=$(fmt "$KEYS")
	row "A key of a rule's state (key subject, \`st.n\` counter, no ttl), $k keys, per key, minus bare" \
		memory/key "keys=$KEYS rule=plain" rss_per_key_bytes anon_per_key_bytes lmdb_live_per_key_bytes
	row "The same with \`ttl = \"30d\"\` (a timer per key), per key, minus bare" \
		memory/key "keys=$KEYS rule=ttl" rss_per_key_bytes anon_per_key_bytes lmdb_live_per_key_bytes
	row "The same with ttl and one sliding window (1h, count and sum), per key, minus bare" \
		memory/key "keys=$KEYS rule=window" rss_per_key_bytes anon_per_key_bytes lmdb_live_per_key_bytes
	row "A bare engine (no script) over the same $k events, per event (the log itself)" \
		memory/key_bare "keys=$KEYS" rss_per_event_bytes anon_per_event_bytes lmdb_live_per_event_bytes
fi
echo
echo "RSS and anonymous: VmRSS and RssAnon of \`tide run\` (/proc/PID/status, kB), read after the"
echo "engine has settled (${SETTLE} s). LMDB in use: the pages of every B-tree in data.mdb"
echo "(\`tidebench pages\`), a page being $(getconf PAGESIZE 2>/dev/null || echo 4096) bytes, so its resolution is a page over the count."
echo "RSS also counts file-backed pages (libraries, the LMDB map), which vary by a few hundred kB"
echo "from one engine to the next: with few rules the anonymous column is the steadier one. The"
echo "anonymous memory of a Lua state includes garbage not yet collected, which moves a run's figure."
if want idle; then
	echo "Idle rules: the engine with N rules minus one with a script of no rule, in the same round,"
	echo "over N; read once the engine is up (\`tide stat --json\` lists the N rules). LMDB after one"
	echo "event that no rule handles (each rule's checkpoint written). RSS per rule after that event:"
	sep=''
	for n in $RULES; do
		printf '%s%s at %s rules (%s with a window)' "$sep" \
			"$(fmt "$(med memory/idle_rule "rules=$n window=none" ev_rss_per_rule_bytes)")" "$(fmt "$n")" \
			"$(fmt "$(med memory/idle_rule "rules=$n window=window" ev_rss_per_rule_bytes)")"
		sep=', '
	done
	echo "."
	echo "\`tide stat\`'s size (the used part of data.mdb, free pages included) per rule:"
	sep=''
	for n in $RULES; do
		printf '%s%s at %s rules' "$sep" "$(fmt "$(med memory/idle_rule "rules=$n window=none" lmdb_size_per_rule_bytes)")" "$(fmt "$n")"
		sep=', '
	done
	echo "."
fi
if want keys; then
	echo "Keyed state: $(fmt "$KEYS") events of about $(($(wc -c <"$keys_events") / KEYS)) bytes, each with a subject of its own, by"
	echo "\`tide publish --wait\` (until the rule has handled them all: checked in \`tide stat\`, with"
	echo "$(fmt "$KEYS") keys, and a timer per key with a ttl); growth of the engine from before the"
	echo "first event to after the last, minus a bare engine's growth over the same events, in the same round."
	echo "Without subtracting, the rule's engine grows by $(fmt "$(med memory/key "keys=$KEYS rule=plain" rule_rss_per_key_bytes)") bytes per key (plain),"
	echo "$(fmt "$(med memory/key "keys=$KEYS rule=ttl" rule_rss_per_key_bytes)") (ttl), $(fmt "$(med memory/key "keys=$KEYS rule=window" rule_rss_per_key_bytes)") (window)."
	echo "LMDB: the rule's log minus the bare log, per key; by \`tide stat\`'s size:"
	echo "$(fmt "$(med memory/key "keys=$KEYS rule=plain" lmdb_size_per_key_bytes)") / $(fmt "$(med memory/key "keys=$KEYS rule=ttl" lmdb_size_per_key_bytes)") / $(fmt "$(med memory/key "keys=$KEYS rule=window" lmdb_size_per_key_bytes)") bytes per key (plain / ttl / window)."
	echo "Tide keeps the states of up to 250,000 keys per rule decoded in memory (README.md), so"
	echo "below that every key is in memory; past it RSS per key falls, the log's share does not."
fi
echo
echo "<details><summary>raw results (every run)</summary>"
echo
echo '```'
cat "$raw"
echo '```'
echo "</details>"
