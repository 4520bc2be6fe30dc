#!/usr/bin/env bash
# Deep verify's reading rate: how fast `mcache verify --deep` reads a cached model, against a
# plain sequential read of the same blobs (cat). Not a test and not in CI; prints its numbers.
#
#   bash tests/bench/deep_verify.sh [--size 4G] [--bin PATH]
#
# Method: a model of 4 shards (gen_safetensors.py) is pulled from a loopback nginx into a fresh
# cache; then verify --deep --threads 1, 2 and 4, each cold (as root: sync and drop_caches
# before it; without root the "cold" runs are skipped) and hot (the blobs read once before), and
# `cat` of the blobs cold and hot. verify's own figure is read_mb_per_s of its --json document
# (bytes read / reading wall time; decimal MB).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
SIZE=4G
BIN=$SRC/build/mcache
while [ $# -gt 0 ]; do
	case $1 in
	--size) SIZE=$2; shift ;;
	--bin) BIN=$2; shift ;;
	-h | --help) sed -n '2,5p' "$0"; exit 0 ;;
	*) echo "deep_verify.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done
export MCACHE_BIN=$BIN
. "$SRC/tests/lib/common.sh"
. "$SRC/tests/lib/nginx.sh"
mc_setup

drop() { [ "$(id -u)" = 0 ] && sync && echo 3 >/proc/sys/vm/drop_caches; }
gen_model "$MC_TMP/www/m" "$SIZE" 4 5
nginx_start "$MC_TMP/www" >/dev/null
URLS=()
for f in "$MC_TMP/www/m"/*; do URLS+=("$NGINX_URL/m/$(basename "$f")"); done
"$BIN" --cache-dir "$MC_TMP/c" pull "${URLS[@]}" --name m -q
rm -rf "$MC_TMP/www"
BYTES=$(find "$MC_TMP/c/blobs" -type f -printf '%s\n' | python3 -c 'import sys; print(sum(map(int, sys.stdin)))')
echo "model: $BYTES bytes in 4 shards + 2 JSON files; $(nproc) CPUs"
for mode in cold hot; do
	[ "$mode" = hot ] || [ "$(id -u)" = 0 ] || { echo "cold: skipped (needs root)"; continue; }
	for t in 1 2 4; do
		if [ "$mode" = cold ]; then drop; else cat "$MC_TMP/c"/blobs/*/* >/dev/null; fi
		"$BIN" --cache-dir "$MC_TMP/c" --json verify --deep --threads "$t" >"$MC_TMP/v.json"
		json "$MC_TMP/v.json" "\"verify --deep $mode, %d thread(s): %.0f MB/s (%.2f s, ok %s)\" % (j['threads'], j['read_mb_per_s'], j['read_seconds'], j['ok'])"
	done
	[ "$mode" = cold ] && drop
	S=$(date +%s%N)
	cat "$MC_TMP/c"/blobs/*/* >/dev/null
	E=$(date +%s%N)
	echo "cat $mode: $((BYTES * 1000 / (E - S))) MB/s"
done
