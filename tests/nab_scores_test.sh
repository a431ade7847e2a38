#!/bin/sh
# The default detector's NAB score as rules/README.md reports it.
# Skipped (77) without ../shared/testdata.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$("$here/data/nab_scores.sh") || exit $?
echo "$out" | tail -2
case $out in *"no detection): 55.9  (77 windows detected, 118 false detections, 39 windows missed)"*) ;;
*) echo "not the NAB score rules/README.md reports" >&2; exit 1 ;; esac
echo "nab score: as reported"
