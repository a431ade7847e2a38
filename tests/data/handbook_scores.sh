#!/bin/sh
# handbook_scores.sh - the fraud pack (rules/fraud) backtested on the Fraud
# Detection Handbook's simulated month (../shared/testdata/fraud/
# handbook-sim-2018-04), with the confirmed frauds fed back 7 days late:
# precision, recall and F1 of the transactions of the first 14 days (where
# parameters are chosen) and of the last 14 (reported), the rules running
# over the whole month, with the parameters of rules/fraud/handbook.params
# (HANDBOOK_PARAMS names another file; empty: the scripts' defaults).
# Extra arguments go to tide backtest and win over the file (e.g. --set
# amount.limit=500).
#
#   tests/data/handbook_scores.sh [--set NAME=VALUE ...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
tide=${TIDE:-$top/tide}
data=${TIDE_TESTDATA:-$top/../shared/testdata}/fraud/handbook-sim-2018-04
[ -d "$data" ] || { echo "handbook_scores: $data not found; skipped" >&2; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v delay=7 -f "$here/handbook_feedback.awk" "$data"/2018-04-*.csv |
	sort -s -t '	' -k1,1 | cut -f2- >"$tmp/month.ndjson"
params=${HANDBOOK_PARAMS-$top/rules/fraud/handbook.params}
set -- $(for r in "$top"/rules/fraud/*.lua; do printf -- '-s %s ' "$r"; done) \
	${params:+--params "$params"} "$@"
# the rules run over the whole month each time (what they learnt before
# a stretch stays); only the stretch's transactions are scored
for part in "first 14 days (choose parameters here)|2018-04-01T00:00:00Z|2018-04-14T23:59:59Z" \
	"last 14 days (report these)|2018-04-15T00:00:00Z|2018-04-28T23:59:59Z"; do
	IFS='|' read -r name from until <<EOS
$part
EOS
	echo "== $name"
	"$tide" backtest "$@" --score-from "$from" --score-until "$until" --label data.is_fraud \
		--alerts fraud.alert "$tmp/month.ndjson" 2>&1 | sed -n '/^flagged/,$p'
done
