#!/bin/bash
# rules_data_test.sh - the rule engine's promise on public labelled data:
# not one alert changes when the engine is killed in the middle of open
# windows and timers, and live alerts equal replayed ones.
#
# Data (from $TIDE_TESTDATA, never copied into the tree; the test is
# skipped when it is absent): the first 7 days of the Fraud Detection
# Handbook's simulated card transactions (fraud/handbook-sim-2018-04) and
# three Numenta Anomaly Benchmark series (iot/NAB/data), turned into
# CloudEvents by tests/data/handbook2ndjson.awk and tests/data/nab2ndjson.awk
# and interleaved into one stream.  The rules are tests/data/rules_data.lua
# (keyed state with ttl, sliding, tumbling and count windows, on_close, an
# absence timer, a pattern sequence, a table shared by two consumers, a
# z-score over a count window).
#
#   A  tide run, every event published at once, caught up, SIGTERM.
#   B  the same events in 6 chunks.  Each chunk is published in the
#      background and the engine killed (SIGKILL) a random fraction of a
#      second later; the chunk is published again, acknowledged, to the
#      engine started without scripts (what was stored is a duplicate:
#      ids deduplicate), which leaves the rules a backlog; the engine is
#      started with the rules and killed twice at random moments while
#      they catch up.  One SIGHUP on the way reloads the scripts while
#      they catch up.  At the end the rules catch up, and SIGTERM.
#
# Then the emitted events of A and B must be the same events in the same
# order, and `tide replay` over B's log must emit exactly B's events.
#
# An emitted event's default id is "<seq of its cause>.<n>": a position
# in the log, and in A and B the emitted events fall between the
# published ones at places that depend on timing.  So each emitted id is
# first checked against its own log (the seq must be that of the event
# named by causationid), then written relative to the cause
# ("@tx-1596.1") for the comparison of A with B.  The comparison of B with
# its replay takes the ids as they are.
#
# Environment: TIDE_TESTDATA (make check sets it), TIDE_TOP_BUILDDIR or
# TIDE_BIN (the tide command), RULES_DATA_SEED (the same random delays
# as a run before), RULES_DATA_KEEP=1 (keep the temporary directory).
# Exit status: 0 passed, 1 failed, 77 skipped (no data).
set -u
export LC_ALL=C

name=rules_data_test
here=$(cd "$(dirname "$0")" && pwd)
srcdir=${TIDE_TOP_SRCDIR:-$here/..}
tide=${TIDE_BIN:-${TIDE_TOP_BUILDDIR:-$here/..}/tide}
testdata=${TIDE_TESTDATA:-$srcdir/../shared/testdata}
rules=$here/data/rules_data.lua
handbook=$testdata/fraud/handbook-sim-2018-04
nab=$testdata/iot/NAB/data
days="01 02 03 04 05 06 07"
series="realKnownCause/machine_temperature_system_failure
realAWSCloudwatch/ec2_cpu_utilization_fe7f93
realAWSCloudwatch/rds_cpu_utilization_cc0c53"
# the rules of tests/data/rules_data.lua; each must raise some alert
rule_names="velocity spend_24h spike dormant busy_day terminal_busy card_testing zscore"
chunks=6

say() { echo "$name: $*"; }
fail() {
	echo "$name: FAIL: $*" >&2
	exit 1
}

for d in $days; do
	[ -r "$handbook/2018-04-$d.csv" ] || {
		say "SKIP: no $handbook/2018-04-$d.csv (set TIDE_TESTDATA to the shared test data)"
		exit 77
	}
done
for s in $series; do
	[ -r "$nab/$s.csv" ] || {
		say "SKIP: no $nab/$s.csv (set TIDE_TESTDATA to the shared test data)"
		exit 77
	}
done
[ -x "$tide" ] || fail "no tide command at $tide (set TIDE_TOP_BUILDDIR or TIDE_BIN)"
[ -r "$rules" ] || fail "no $rules"

seed=${RULES_DATA_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}
case $seed in '' | *[!0-9]*) fail "RULES_DATA_SEED must be a number" ;; esac
RANDOM=$seed

work=$(mktemp -d "${TMPDIR:-/tmp}/tide-rules-data-XXXXXX") || fail "cannot make a temporary directory"
engine= publisher=
cleanup() {
	[ -n "$publisher" ] && { kill -KILL "$publisher" 2>/dev/null; wait "$publisher" 2>/dev/null; }
	[ -n "$engine" ] && { kill -KILL "$engine" 2>/dev/null; wait "$engine" 2>/dev/null; }
	if [ "${RULES_DATA_KEEP:-0}" = 1 ]; then
		echo "$name: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
started=$(date +%s)
say "seed $seed (RULES_DATA_SEED=$seed draws the same delays before the kills)"

# ---------------------------------------------------------------------------
# Helpers

# pause LOW HIGH: sleep a random number of milliseconds in [LOW, HIGH]
# (drawn here, not in a subshell, so that the seed decides them all).
pause() {
	local v=$(($1 + RANDOM % ($2 - $1 + 1)))
	sleep "$((v / 1000)).$((v % 1000 / 100))$((v % 100 / 10))$((v % 10))"
}

# start DIR [bare]: start the engine on DIR (its endpoints inside DIR)
# with the rules, or bare (no scripts: it only stores what is published);
# log to DIR.log; wait until it listens.
start() {
	rm -f "$1/endpoints"
	if [ "${2:-}" = bare ]; then
		"$tide" run --data "$1" >>"$1.log" 2>&1 &
	else
		"$tide" run --data "$1" --script "$rules" >>"$1.log" 2>&1 &
	fi
	engine=$!
	for _ in $(seq 200); do
		[ -s "$1/endpoints" ] && return 0
		kill -0 "$engine" 2>/dev/null || {
			tail -20 "$1.log" >&2
			wait "$engine" 2>/dev/null
			engine=
			fail "tide run on $1 exited at start"
		}
		sleep 0.05
	done
	tail -20 "$1.log" >&2
	fail "tide run on $1 did not listen within 10 s"
}

# crash: SIGKILL the engine.
crash() {
	kill -KILL "$engine" 2>/dev/null
	wait "$engine" 2>/dev/null
	engine=
}

# stop DIR: SIGTERM; the engine must exit with status 0 within 20 s.
stop() {
	local status
	kill -TERM "$engine" || fail "the engine on $1 is gone before SIGTERM"
	for _ in $(seq 200); do
		kill -0 "$engine" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$engine" 2>/dev/null && fail "the engine on $1 did not stop within 20 s of SIGTERM"
	wait "$engine"
	status=$?
	engine=
	[ "$status" = 0 ] || {
		tail -20 "$1.log" >&2
		fail "the engine on $1 exited with status $status after SIGTERM"
	}
}

# stat_json DIR: `tide stat --json` into $work/stat.json.
stat_json() {
	"$tide" stat --data "$1" --json >"$work/stat.json" 2>"$work/stat.err" || {
		cat "$work/stat.err" >&2
		fail "tide stat --data $1 failed"
	}
}

# progress: "LAST MIN MAX N" of the last stat: the last seq, the lowest
# and highest checkpoint and the number of consumers.
progress() {
	awk '{
		last = $0; sub(/.*"last_seq":/, "", last); sub(/[^0-9].*/, "", last)
		min = -1; max = 0; n = 0; s = $0
		while (match(s, /"checkpoint":[0-9]+/)) {
			c = substr(s, RSTART + 13, RLENGTH - 13) + 0
			if (min < 0 || c < min) min = c
			if (c > max) max = c
			n++
			s = substr(s, RSTART + RLENGTH)
		}
		print last + 0, min, max, n
	}' "$work/stat.json"
}

# caught_up DIR: wait (at most 180 s) until the four consumers' checkpoints
# are at the log's last seq; the engine must stay up meanwhile.
caught_up() {
	local last min max n deadline=$((SECONDS + 180))
	while [ "$SECONDS" -lt "$deadline" ]; do
		kill -0 "$engine" 2>/dev/null || {
			tail -20 "$1.log" >&2
			fail "the engine on $1 died while catching up"
		}
		stat_json "$1"
		read -r last min max n <<<"$(progress)"
		[ "$n" = 4 ] && [ "$min" = "$last" ] && [ "$max" = "$last" ] && return 0
		sleep 0.1
	done
	cat "$work/stat.json" >&2
	fail "the consumers on $1 did not catch up within 180 s"
}

# healthy DIR: no consumer failed, parked a dead letter or dropped a late
# event (either would make the alerts depend on timing).
healthy() {
	stat_json "$1"
	if grep -q -E '"(failed|dead|retrying|late)":[1-9]' "$work/stat.json"; then
		cat "$work/stat.json" >&2
		fail "a consumer on $1 failed, retried, parked or dropped a late event"
	fi
}

# emitted DIR: the emitted events of DIR's log (source /tide/...), in log
# order, without seq, version and recorded, into DIR.raw; the same with
# each id written relative to its cause into DIR.norm.  Every emitted id
# must be "<seq of its cause>.<tag><n>".
emitted() {
	"$tide" log --data "$1" >"$1.log.ndjson" 2>"$work/log.err" || {
		cat "$work/log.err" >&2
		fail "tide log --data $1 failed"
	}
	awk -v raw="$1.raw" -v norm="$1.norm" '
	function str(line, f) {
		if (!match(line, "\"" f "\":\"[^\"]*\"")) return ""
		return substr(line, RSTART + length(f) + 4, RLENGTH - length(f) - 5)
	}
	{
		seq = $0; sub(/^\{"seq":/, "", seq); sub(/[^0-9].*/, "", seq)
		id = str($0, "id")
		at[id] = seq # where each event is (a cause comes before its effects)
		if (index($0, "\"source\":\"/tide/") == 0)
			next # a published event
		line = $0
		sub(/^\{"seq":[0-9]+,/, "{", line)
		sub(/^\{"version":[0-9]+,/, "{", line)
		sub(/^\{"recorded":"[^"]*",/, "{", line)
		print line > raw
		cause = str(line, "causationid")
		dot = index(id, ".")
		if (dot == 0 || !(cause in at) || substr(id, 1, dot - 1) != at[cause]) {
			printf "emitted event %s (seq %s): its cause %s is at seq %s\n", id, seq,
				cause, (cause in at) ? at[cause] : "nowhere"
			bad++
		}
		# the first "id" is that of the event: data comes last
		p = index(line, "\"id\":\"" id "\"")
		print substr(line, 1, p + 5) "@" cause substr(id, dot) substr(line, p + 6 + length(id)) > norm
	}
	END { exit bad > 0 }' "$1.log.ndjson" >"$work/ids.err" || {
		head -5 "$work/ids.err" >&2
		fail "$(wc -l <"$work/ids.err") emitted ids in $1 do not name their cause's seq"
	}
	: >>"$1.raw"
	: >>"$1.norm"
}

# published DIR: the ids of DIR's published events, in log order.
published() {
	grep -v '"source":"/tide/' "$1.log.ndjson" | sed 's/^.*"specversion":"1.0","id":"\([^"]*\)".*$/\1/'
}

# per_rule FILE: "rule count" lines.
per_rule() {
	sed -n 's/.*"data":{.*"rule":"\([a-z_0-9]*\)".*/\1/p' "$1" | sort | uniq -c |
		awk '{ printf "%s %d\n", $2, $1 }'
}

# differ WHAT GOT WANT: fail with the first differences (lines of GOT
# marked <, of WANT >).
differ() {
	local at
	at=$(cmp "$2" "$3" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')
	echo "$name: $1: first difference at line ${at:-?}; < ${2##*/} ($(wc -l <"$2") lines), > ${3##*/} ($(wc -l <"$3") lines):" >&2
	diff "$2" "$3" | head -20 | cut -c1-400 >&2
	fail "$1"
}

# ---------------------------------------------------------------------------
# The events: card transactions, and the NAB series merged by time, spread
# evenly through them (each rule has a clock of its own).

for d in $days; do
	cat "$handbook/2018-04-$d.csv"
done | awk -f "$here/data/handbook2ndjson.awk" >"$work/cards.ndjson" || fail "cannot convert the transactions"
for s in $series; do
	awk -v series="${s##*/}" -f "$here/data/nab2ndjson.awk" "$nab/$s.csv" ||
		fail "cannot convert $s"
done | sed 's/^\(.*"time":"\([^"]*\)".*\)$/\2 \1/' | sort -s -k1,1 | cut -d' ' -f2- \
	>"$work/sensors.ndjson" || fail "cannot merge the series"
ncards=$(wc -l <"$work/cards.ndjson")
nsensors=$(wc -l <"$work/sensors.ndjson")
for d in $days; do
	cat "$handbook/2018-04-$d.csv"
done | awk -F, '$2 != "TRANSACTION_ID" && NF >= 6' >"$work/rows.csv"
[ "$ncards" = "$(wc -l <"$work/rows.csv")" ] || fail "$ncards transactions converted of $(wc -l <"$work/rows.csv")"
[ "$ncards" -gt 60000 ] || fail "only $ncards transactions in 7 days of the handbook's data"
want=0
for s in $series; do
	want=$((want + $(awk -F, 'FNR > 1 && NF >= 2' "$nab/$s.csv" | wc -l)))
done
[ "$nsensors" = "$want" ] || fail "$nsensors sensor readings converted of $want"
awk -v ns="$nsensors" -v nc="$ncards" -v sensors="$work/sensors.ndjson" '
	{ print; while (j < ns && j * nc <= NR * ns && (getline line < sensors) > 0) { print line; j++ } }
	END { while ((getline line < sensors) > 0) print line }' "$work/cards.ndjson" >"$work/events.ndjson"
total=$(wc -l <"$work/events.ndjson")
[ "$total" = $((ncards + nsensors)) ] || fail "interleaving lost events: $total of $((ncards + nsensors))"
say "$ncards card transactions (7 days) and $nsensors sensor readings ($(echo $series | wc -w) NAB series): $total events"

# the chunks of run B
per=$(((total + chunks - 1) / chunks))
awk -v per="$per" -v out="$work/chunk" '{ print > (out "." (int((NR - 1) / per) + 1)) }' "$work/events.ndjson"

# ---------------------------------------------------------------------------
# Run A: uninterrupted.

A=$work/A
t0=$(date +%s)
start "$A"
"$tide" publish -q --data "$A" --timeout 120 <"$work/events.ndjson" ||
	fail "publishing to A failed"
caught_up "$A"
stop "$A"
healthy "$A"
emitted "$A"
say "run A: $(wc -l <"$A.raw") alerts in $(($(date +%s) - t0)) s"

# ---------------------------------------------------------------------------
# Run B: killed while publishing and while catching up, reloaded once.

B=$work/B
t0=$(date +%s)
hup_chunk=$((2 + RANDOM % (chunks - 2)))
kills=0 behind_max=0
# note_kill: after a kill, what was committed: the last seq and how far
# the consumers were behind it.
note_kill() {
	local last min max n
	kills=$((kills + 1))
	stat_json "$B"
	read -r last min max n <<<"$(progress)"
	[ $((last - min)) -gt "$behind_max" ] && behind_max=$((last - min))
	line="$line killed at seq $last (consumers at $min);"
}
for i in $(seq "$chunks"); do
	line="$name: chunk $i/$chunks:"
	# 1. the rules running: the chunk published in the background, the
	# engine killed at a random moment while it stores and handles it
	start "$B"
	"$tide" publish -q --data "$B" --timeout 30 <"$work/chunk.$i" >/dev/null 2>&1 &
	publisher=$!
	pause 50 900
	crash
	kill -KILL "$publisher" 2>/dev/null
	wait "$publisher" 2>/dev/null
	publisher=
	note_kill
	# 2. the whole chunk again, acknowledged (what was stored is a
	# duplicate), to an engine without scripts: the rules have a backlog
	start "$B" bare
	timeout 120 "$tide" publish -q --data "$B" --timeout 60 <"$work/chunk.$i" ||
		fail "publishing chunk $i to B again failed"
	stop "$B"
	# 3. the rules catch up, and are killed at random moments meanwhile;
	# once, a reload: a fresh Lua state takes over between two turns
	start "$B"
	pause 20 500
	crash
	note_kill
	start "$B"
	if [ "$i" = "$hup_chunk" ]; then
		pause 0 300
		kill -HUP "$engine"
		for _ in $(seq 100); do
			grep -q 'scripts reloaded' "$B.log" && break
			sleep 0.1
		done
		grep -q 'scripts reloaded' "$B.log" || fail "SIGHUP did not reload the scripts of B"
		line="$line reloaded;"
	fi
	pause 20 500
	crash
	note_kill
	echo "$line"
done
start "$B"
caught_up "$B"
stop "$B"
healthy "$B"
emitted "$B"
say "run B: $(wc -l <"$B.raw") alerts in $(($(date +%s) - t0)) s"

# ---------------------------------------------------------------------------
# Every event stored once, in the same order; the same alerts.

published "$A" >"$work/A.ids"
published "$B" >"$work/B.ids"
sed 's/^{"specversion":"1.0","id":"\([^"]*\)".*$/\1/' "$work/events.ndjson" >"$work/in.ids"
cmp -s "$work/A.ids" "$work/in.ids" || differ "A's log does not hold each event once, in order" "$work/A.ids" "$work/in.ids"
cmp -s "$work/B.ids" "$work/in.ids" || differ "B's log does not hold each event once, in order" "$work/B.ids" "$work/in.ids"
cmp -s "$A.norm" "$B.norm" || differ "the alerts of B (killed) differ from those of A" "$B.norm" "$A.norm"

# ---------------------------------------------------------------------------
# Live = replay, on B's log.

t0=$(date +%s)
"$tide" replay -q --data "$B" --script "$rules" >"$work/replay.out" 2>"$work/replay.err" || {
	tail -5 "$work/replay.err" >&2
	fail "tide replay on B failed"
}
sed -n 's/^{"emit":\(.*\),"consumer":"[^"]*","cause":[0-9]*}$/\1/p' "$work/replay.out" >"$work/replay.emits"
[ "$(grep -c '^{"emit":' "$work/replay.out")" = "$(wc -l <"$work/replay.emits")" ] ||
	fail "cannot read tide replay's output"
cmp -s "$work/replay.emits" "$B.raw" || differ "tide replay does not emit what B emitted" "$work/replay.emits" "$B.raw"
say "replay of B: $(wc -l <"$work/replay.emits") emits, the same, in $(($(date +%s) - t0)) s"

# ---------------------------------------------------------------------------
# What the rules found

per_rule "$A.raw" >"$work/rules.txt"
for r in $rule_names; do
	grep -q "^$r " "$work/rules.txt" || fail "rule $r raised no alert: the test does not exercise it"
done
# the alerts that a transaction raised (not a timer or a window's close,
# whose cause is whichever event moved the clock), on transactions
# labelled fraud in the data
awk -F, '$9 == 1 { print "tx-" $2 }' "$work/rows.csv" >"$work/fraud.ids"
awk 'NR == FNR { fraud[$1] = 1; next }
	{
		r = $0; sub(/.*"rule":"/, "", r); sub(/".*/, "", r)
		c = $0; sub(/.*"causationid":"/, "", c); sub(/".*/, "", c)
		if (c in fraud) hit[r]++
	}
	END { for (r in hit) print r, hit[r] }' "$work/fraud.ids" "$A.raw" >"$work/labels.txt"
while read -r r n; do
	case $r in
	busy_day | dormant | zscore) l= ;;
	*) l=", $(awk -v r="$r" '$1 == r { n = $2 } END { print n + 0 }' "$work/labels.txt") on a transaction labelled fraud" ;;
	esac
	say "  $r: $n$l"
done <"$work/rules.txt"
say "ok: $(wc -l <"$A.raw") alerts, the same uninterrupted, killed $kills times (up to $behind_max events behind) and replayed; $(($(date +%s) - started)) s"
