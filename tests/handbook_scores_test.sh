#!/bin/sh
# The fraud pack's scores on the Fraud Detection Handbook's month, as
# rules/README.md reports them: parameters chosen on the first 14 days,
# the last 14 days scored.  Skipped (77) without ../shared/testdata.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$("$here/data/handbook_scores.sh" --set amount.limit=220 --set terminal.min=2 \
	--set spike.z=6) || exit $?
echo "$out"
first=$(echo "$out" | sed -n '/^== first/,/^== last/p' | grep '(all)')
last=$(echo "$out" | sed -n '/^== last/,$p' | grep '(all)')
case $first in *"F1 0.611"*) ;; *) echo "first 14 days: not F1 0.611: $first" >&2; exit 1 ;; esac
case $last in *"precision 0.731  recall 0.605  F1 0.662"*) ;;
*) echo "last 14 days: not P 0.731 R 0.605 F1 0.662: $last" >&2; exit 1 ;; esac
echo "handbook scores: as reported"
