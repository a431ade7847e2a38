#!/bin/sh
# embed.sh NAME FILE - FILE as a C string named NAME (for the live page,
# served from the binary: no file to find at run time).
set -eu
echo "/* made by dist/embed.sh from $(basename "$2"): edit that, not this */"
echo "#include <stddef.h>"
echo "const char $1[] ="
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t"/' -e 's/$/\\n"/' "$2"
printf "\t;\n"
echo "const size_t $1_len = sizeof $1 - 1;"
