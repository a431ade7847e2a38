#!/bin/sh
# man.sh TIDE OUTDIR - the manual pages, tide(1) and tide-COMMAND(1) for
# every command `TIDE --help` lists, made from the commands' own --help
# texts: one source for both, so they cannot disagree.
#
# A help text is read as: "usage:" lines (the synopsis), paragraphs (the
# description), then sections whose heading ends in ':' at the start of a
# line ("options:"), holding items ("  -d, --data DIR    what it does",
# continued on lines indented further) and plain lines.
set -eu
tide=$1
out=$2
mkdir -p "$out"
version=$("$tide" version | sed 's/^tide //')
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d 2>/dev/null || date -u +%Y-%m-%d)

# help text on stdin -> roff on stdout; $1 page name, $2 title, $3 what
# it is (for NAME)
to_roff() {
	awk -v name="$1" -v title="$2" -v summary="$3" -v version="$version" -v date="$date" '
	function esc(s) {
		gsub(/\\/, "\\e", s)
		gsub(/-/, "\\-", s)
		if (s ~ /^[.'\'']/) s = "\\&" s
		return s
	}
	BEGIN { state = "usage"; printf ".TH %s 1 \"%s\" \"tide %s\" \"Tide manual\"\n", title, date, version }
	state == "usage" && /^usage:/ { sub(/^usage: */, ""); syn[++nsyn] = $0; next }
	state == "usage" && /^       / && nsyn > 0 { sub(/^ +/, ""); syn[++nsyn] = $0; next }
	state == "usage" && /^$/ { next }
	state == "usage" {
		state = "desc"
		print ".SH NAME"
		print name " \\- " esc(summary)
		print ".SH SYNOPSIS"
		for (i = 1; i <= nsyn; i++) { print esc(syn[i]); if (i < nsyn) print ".br" }
		if ($0 !~ /^[A-Za-z][A-Za-z ]*:$/) { print ".SH DESCRIPTION"; print esc($0); next }
	}
	/^[A-Za-z][A-Za-z ]*:$/ {
		h = toupper($0); sub(/:$/, "", h)
		print ".SH " h
		state = "section"; next
	}
	/^$/ { print ".PP"; next }
	state == "section" && /^  +[^ ]/ && match($0, /[^ ]  +[^ ]/) {
		tag = substr($0, 1, RSTART); sub(/^ +/, "", tag)
		text = substr($0, RSTART + 1); sub(/^ +/, "", text)
		print ".TP"
		print "\\fB" esc(tag) "\\fR"
		print esc(text)
		next
	}
	state == "section" && /^  +-/ {
		tag = $0; sub(/^ +/, "", tag)
		print ".TP"
		print "\\fB" esc(tag) "\\fR"
		next
	}
	{ line = $0; sub(/^ +/, "", line); print esc(line) }
	END {
		print ".SH SEE ALSO"
		if (name == "tide") print "The README of the Tide sources, and tide\\-COMMAND(1) for each command."
		else print "tide(1)"
	}'
}

"$tide" --help | to_roff tide TIDE "a durable, Lua-scriptable event processing engine" \
	>"$out/tide.1"
"$tide" --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/' |
	while read -r cmd what; do
		[ "$cmd" = version ] && continue
		"$tide" "$cmd" --help | to_roff "tide-$cmd" "TIDE-$(echo "$cmd" | tr a-z A-Z)" "$what" \
			>"$out/tide-$cmd.1"
	done
