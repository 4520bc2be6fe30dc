#!/usr/bin/env bash
# Warm start of `mcache init`: how long a pod restarting on a node that already holds its model
# waits for its init container, for a small (16 MiB) and a large (1 GiB) model. Not a test and
# not in CI. Writes tests/bench/WARM_START.md.
#
#   bash tests/bench/warm_start.sh [--rounds N] [--bin PATH] [--dir DIR] [--out FILE]
#
# Method: one loopback nginx serves both files; each model is placed once (cold) by
# `mcache init` with MODEL_URL into its own target directory (cache in TARGET/.mcache, as the
# drop-in default). Then N interleaved rounds (default 21) of four warm runs: small and large,
# each with the default origin check (one conditional request: 304) and with MCACHE_OFFLINE=1
# (no request). Each time is the wall time of the whole process (fork, exec, open the index,
# check, stat the target), taken with date +%s%N around it. Medians and 90th percentiles.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
ROUNDS=21
BIN=$SRC/build/mcache
W=${BENCH_DIR:-/var/tmp/mcache-bench}/warm
OUTFILE=$HERE/WARM_START.md

while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift ;;
	--bin) BIN=$2; shift ;;
	--dir) W=$2; shift ;;
	--out) OUTFILE=$2; shift ;;
	-h | --help) sed -n '2,6p' "$0"; exit 0 ;;
	*) echo "warm_start.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done

export MC_TEST_NAME=warm-start MCACHE_BIN=$BIN
. "$SRC/tests/lib/common.sh"
. "$SRC/tests/lib/nginx.sh"
mc_setup

mkdir -p "$W/www"
for s in 16M 1G; do
	[ -f "$W/www/m-$s.safetensors" ] ||
		python3 "$SRC/tests/lib/gen_safetensors.py" file "$W/www/m-$s.safetensors" --size "$s" --seed "$s" >/dev/null
done
nginx_start "$W/www"

run_init() { # run_init SIZE [ENV...]: prints the process's wall milliseconds
	local s=$1 t0 t1
	shift
	t0=$(date +%s%N)
	env MODEL_URL="$NGINX_URL/m-$s.safetensors" MCACHE_TARGET="$MC_TMP/t-$s" \
		MCACHE_TERMINATION_LOG=/dev/null "$@" "$BIN" init 2>"$MC_TMP/err" ||
		{ cat "$MC_TMP/err" >&2; fail "mcache init failed"; }
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000))
}

step "cold placements"
for s in 16M 1G; do
	log "$s cold: $(($(run_init "$s") / 1000)) ms"
done
step "$ROUNDS interleaved rounds of warm runs"
for _ in $(seq "$ROUNDS"); do
	for s in 16M 1G; do
		run_init "$s" >>"$MC_TMP/check-$s.us"
		run_init "$s" MCACHE_OFFLINE=1 >>"$MC_TMP/offline-$s.us"
	done
done
python3 - "$MC_TMP" "$ROUNDS" "$OUTFILE" "$("$BIN" --version | head -n1)" <<'PY'
import statistics, sys, time
d, rounds, out, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def stats(name):
    v = sorted(int(x) / 1000.0 for x in open(f"{d}/{name}.us"))
    return statistics.median(v), v[max(0, int(len(v) * 0.9) - 1)], v[0], v[-1]
rows = []
for s in ("16M", "1G"):
    for mode, label in (("check", "default: one conditional request (304)"),
                        ("offline", "MCACHE_OFFLINE=1: no request")):
        m, p90, lo, hi = stats(f"{mode}-{s}")
        rows.append(f"| {s} | {label} | {m:.1f} | {p90:.1f} | {lo:.1f}–{hi:.1f} |")
text = f"""# Warm start of `mcache init`

`bash tests/bench/warm_start.sh` ({version}, {time.strftime('%Y-%m-%d')}, {rounds} interleaved
rounds, loopback nginx, 2 cores). Wall time of the whole `mcache init` process, placing one
file that the node cache and the target already hold (hard link in place): milliseconds.
Target: ≤ 20 ms median for either size (issue 8), ≤ 100 ms (issue 6).

| model | mode | median | p90 | min–max |
|---|---|---|---|---|
""" + "\n".join(rows) + """

Independent of size by construction: nothing is read or hashed; the index is opened, the
origin asked once (or not), the target file's inode compared with the blob's.
"""
open(out, "w").write(text)
print(text)
PY
