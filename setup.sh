#!/bin/sh
# setup.sh - install the Debian packages Tide needs (only those missing),
# build it, then:
#   ./setup.sh          run the order-flow example (examples/orders)
#   ./setup.sh check    run the test suite (make check)
#   ./setup.sh asan     run the test suite under ASan + UBSan (build-asan/)
set -eu
cd "$(dirname "$0")"

PACKAGES="build-essential autoconf automake libtool pkg-config \
liblua5.4-dev libevent-dev libnanomsg-dev nanomsg-utils liblmdb-dev libyajl-dev libsodium-dev check"

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

case "${1:-example}" in
example)
	exec examples/orders/run.sh
	;;
check)
	exec make -j"$jobs" --no-print-directory check
	;;
asan)
	# A separate, clean copy of the sources (the tree itself is configured
	# for the normal build), configured with ASan + UBSan.
	top=$(pwd)
	rm -rf build-asan
	mkdir build-asan
	make --no-print-directory distdir distdir=build-asan/src >/dev/null
	cd build-asan/src
	./configure --quiet --enable-sanitizers
	make -j"$jobs" --no-print-directory
	TIDE_TESTDATA=${TIDE_TESTDATA:-$top/../shared/testdata} \
		exec make -j"$jobs" --no-print-directory check
	;;
*)
	echo "usage: $0 [example|check|asan]" >&2
	exit 2
	;;
esac
