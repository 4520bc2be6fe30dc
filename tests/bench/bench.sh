#!/usr/bin/env bash
# mcache benchmark: mcache against wget, curl, aria2c and cp on the same bytes, one loopback
# nginx origin, interleaved rounds. Not a test and not in CI: numbers on a shared 2-core box are
# noisy, so read medians and spreads, never one run. Writes tests/bench/RESULTS.md.
#
#   bash tests/bench/bench.sh [--rounds N] [--quick] [--bin PATH] [--dir DIR] [--out FILE]
#                             [--mcache-args "ARGS"] [--no-capped] [--no-uncapped] [--note TEXT]
#
# Method (also written into RESULTS.md):
# - Fixture: gen_safetensors.py, 4 x 256 MiB shards + index JSON + config.json (--quick:
#   4 x 64 MiB), generated once under DIR (default /var/tmp/mcache-bench) and reused.
# - Scenarios: "uncapped" (location /) with every tool, and "capped" (/capped/, nginx
#   limit_rate 40m per connection, as S3 caps each connection) on a 2-shard subset (512 MiB;
#   --quick 128 MiB) without cp, which has no origin.
# - Rounds are interleaved (A B C ... A B C ...), N rounds (default 3). Before each run the
#   previous output is deleted and `sync` flushes it (not timed).
# - Each timed command is the tool followed by `sync`, so every tool pays for durability
#   (mcache also fsyncs its own files and directories). Nothing is dropped from the page cache:
#   the origin's files stay cached in RAM, as an object store's hot data would, and cp reads
#   them from the page cache, which makes cp + sync the local physical limit (the disk's write
#   and flush speed) that the uncapped scenario compares against.
# - GNU time measures wall time, user+sys CPU seconds and peak RSS of the whole process tree
#   (the largest single process). Origin requests and body bytes come from the nginx log.
# - mcache starts from an empty cache every round (cold), with its default connections and
#   chunk size unless --mcache-args says otherwise.
# - After every run the output's file sizes are checked, and in round 1 its bytes (cmp); a run
#   that fails or comes up short is retried once (counted in the raw table's "retries").
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
ROUNDS=3
QUICK=0
BIN=$SRC/build/mcache
W=${BENCH_DIR:-/var/tmp/mcache-bench}
OUTFILE=$HERE/RESULTS.md
MCACHE_ARGS=""
DO_UNCAPPED=1
DO_CAPPED=1
NOTE=""

usage() {
	sed -n '2,8p' "$0"
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift ;;
	--quick) QUICK=1 ;;
	--bin) BIN=$2; shift ;;
	--dir) W=$2; shift ;;
	--out) OUTFILE=$2; shift ;;
	--mcache-args) MCACHE_ARGS=$2; shift ;;
	--no-capped) DO_CAPPED=0 ;;
	--no-uncapped) DO_UNCAPPED=0 ;;
	--note) NOTE=$2; shift ;;
	-h | --help) usage 0 ;;
	*) echo "bench.sh: unknown option '$1'" >&2; usage 2 ;;
	esac
	shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --rounds wants a positive number" >&2; exit 2; }

# Reuse the test helpers for nginx (fail, log, mc_at_exit and the EXIT trap).
export MCACHE_SRC=$SRC MCACHE_BIN=$BIN
# shellcheck disable=SC1091
. "$SRC/tests/lib/common.sh"
# shellcheck disable=SC1091
. "$SRC/tests/lib/nginx.sh"
export MC_TEST_NAME=bench
trap mc_run_exit_hooks EXIT
trap 'exit 130' INT TERM

[ -x "$BIN" ] || fail "no mcache binary at '$BIN' (cmake --build build, or --bin PATH)"
for t in wget curl aria2c /usr/bin/time nginx python3 cmp; do
	command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] ||
		fail "'$t' is not installed (bash tests/deps.sh --bench)"
done

if [ "$QUICK" = 1 ]; then
	SHARD=64M
	SHARD_BYTES=$((64 << 20))
else
	SHARD=256M
	SHARD_BYTES=$((256 << 20))
fi
mkdir -p "$W"
chmod 0755 "$W"
MC_TMP=$W/run
rm -rf "$MC_TMP"
mkdir -p "$MC_TMP"
chmod 0755 "$MC_TMP"
WWW=$W/www
STAMP="shards=4 shard=$SHARD seed=bench"

step "fixture: 4 x $SHARD safetensors shards + JSON under $WWW/m"
if [ "$(cat "$W/fixture.stamp" 2>/dev/null)" != "$STAMP" ]; then
	rm -rf "$WWW" "$W/fixture.stamp"
	python3 "$SRC/tests/lib/gen_safetensors.py" model "$WWW/m" --size $((4 * SHARD_BYTES)) \
		--shards 4 --seed bench >/dev/null
	echo "$STAMP" >"$W/fixture.stamp"
else
	log "reusing the fixture ($STAMP)"
fi
mapfile -t ALL < <(cd "$WWW/m" && ls)
CAPPED=()
for f in "${ALL[@]}"; do
	[[ $f == *.safetensors ]] && [ ${#CAPPED[@]} -lt 2 ] && CAPPED+=("$f")
done
# Warm the page cache with the origin's files (nginx and cp read them from RAM).
cat "${ALL[@]/#/$WWW/m/}" >/dev/null

NGINX_WORKERS=$(nproc)
export NGINX_WORKERS
nginx_start "$WWW"

RAW=$MC_TMP/raw.tsv
printf 'scenario\ttool\tround\twall_s\tuser_s\tsys_s\tmaxrss_kb\trequests\torigin_bytes\tbytes\tretries\n' >"$RAW"
OUT=$MC_TMP/out

# tool_cmd TOOL LOCATION FILE...: prints the shell command that fetches FILEs into $OUT.
tool_cmd() {
	local tool=$1 loc=$2 f urls=()
	shift 2
	for f in "$@"; do urls+=("$NGINX_URL$loc/m/$f"); done
	case $tool in
	mcache)
		# shellcheck disable=SC2086
		printf '%q ' "$BIN" --cache-dir "$OUT/cache" -q pull "${urls[@]}" --name bench $MCACHE_ARGS
		;;
	wget) printf "%q " wget -nv -P "$OUT" "${urls[@]}" ;;
	curl) printf '%q ' curl -sS --fail --output-dir "$OUT" --remote-name-all "${urls[@]}" ;;
	curl-P4)
		printf '%s\n' "${urls[@]}" >"$MC_TMP/urls.txt"
		printf 'xargs -P4 -n1 curl -sS --fail --output-dir %q -O <%q' "$OUT" "$MC_TMP/urls.txt"
		;;
	aria2c)
		printf '%s\n' "${urls[@]}" >"$MC_TMP/urls.txt"
		printf '%q ' aria2c -q -x16 -s16 -k8M -j4 --file-allocation=falloc \
			--allow-overwrite=true --auto-file-renaming=false -d "$OUT" -i "$MC_TMP/urls.txt"
		;;
	cp) printf '%q ' cp -r "$WWW/m" "$OUT/cp" ;;
	esac
	printf " && sync"
}

# Where TOOL left FILE.
out_path() {
	case $1 in
	mcache) echo "$OUT/cache/models/bench/$2" ;;
	cp) echo "$OUT/cp/$2" ;;
	*) echo "$OUT/$2" ;;
	esac
}

# attempt SCENARIO TOOL ROUND LOCATION FILE...: one timed run; on success appends a row to
# $RAW (with the retry count in $TRIES) and returns 0; otherwise says why and returns 1.
attempt() {
	local sc=$1 tool=$2 round=$3 loc=$4 cmd mark f p wall user sys rss req bytes total=0
	shift 4
	rm -rf "$OUT"
	mkdir -p "$OUT"
	sync
	cmd=$(tool_cmd "$tool" "$loc" "$@")
	mark=$(nginx_log_mark)
	if ! /usr/bin/time -f '%e %U %S %M' -o "$MC_TMP/time" bash -c "$cmd" >"$MC_TMP/tool.log" 2>&1; then
		cat "$MC_TMP/tool.log" >&2
		echo "   WARN: $tool ($sc, round $round) failed: $cmd" >&2
		return 1
	fi
	read -r wall user sys rss <"$MC_TMP/time"
	nginx_log_summary "$mark" >"$MC_TMP/log.json"
	req=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["requests"], j["bytes"])' "$MC_TMP/log.json")
	bytes=${req#* }
	req=${req% *}
	for f in "$@"; do
		p=$(out_path "$tool" "$f")
		# Several tools exit 0 after a short transfer (curl reports only its last URL's
		# status), so the output is checked, never the exit status alone.
		if [ "$(stat -c %s "$p" 2>/dev/null)" != "$(stat -c %s "$WWW/m/$f")" ]; then
			echo "   WARN: $tool ($sc, round $round): '$p' is missing or has the wrong size" >&2
			return 1
		fi
		if [ "$round" = 1 ] && ! cmp -s "$p" "$WWW/m/$f"; then
			echo "   WARN: $tool ($sc): '$p' differs from the origin" >&2
			return 1
		fi
		total=$((total + $(stat -c %s "$p")))
	done
	[ "$tool" != cp ] || req=0 bytes=0
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$tool" "$round" "$wall" "$user" \
		"$sys" "$rss" "$req" "$bytes" "$total" "$TRIES" >>"$RAW"
	printf '   %-8s %-8s round %d: %6.2f s wall, %5.2f s CPU, %6d KiB RSS, %4d requests%s\n' \
		"$sc" "$tool" "$round" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" \
		"$rss" "$req" "$([ "$TRIES" = 0 ] || echo " (after $TRIES retry)")"
}

# run_one SCENARIO TOOL ROUND LOCATION FILE...: one measurement; a failed or short run (a
# hiccup on a shared machine) is retried once and counted in the "retries" column.
run_one() {
	TRIES=0
	attempt "$@" && return 0
	TRIES=1
	attempt "$@" || fail "$2 ($1, round $3) failed twice; see the warnings above"
}

if [ "$DO_UNCAPPED" = 1 ]; then
	step "uncapped: ${#ALL[@]} files, $ROUNDS interleaved rounds"
	for r in $(seq "$ROUNDS"); do
		for tool in mcache wget curl curl-P4 aria2c cp; do
			run_one uncapped "$tool" "$r" "" "${ALL[@]}"
		done
	done
fi
if [ "$DO_CAPPED" = 1 ]; then
	step "capped (limit_rate 40m per connection): ${#CAPPED[@]} shards, $ROUNDS interleaved rounds"
	for r in $(seq "$ROUNDS"); do
		for tool in mcache wget curl curl-P4 aria2c; do
			run_one capped "$tool" "$r" /capped "${CAPPED[@]}"
		done
	done
fi
rm -rf "$OUT"

step "results -> $OUTFILE"
{
	echo "nproc=$(nproc)"
	echo "mem=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
	echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "kernel=$(uname -r)"
	echo "fs=$(df -T "$W" | awk 'NR == 2 {print $2 " on " $1}')"
	echo "mcache=$("$BIN" --version 2>&1 | head -n1) ($BIN)"
	[ -z "$NOTE" ] || echo "note=$NOTE"
	echo "nginx=$(nginx -v 2>&1 | head -n1)"
	echo "wget=$(wget --version | head -n1)"
	echo "curl=$(curl --version | head -n1)"
	echo "aria2c=$(aria2c --version | head -n1)"
	echo "commit=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null)$(git -C "$SRC" diff --quiet 2>/dev/null || echo '+dirty')"
	echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "rounds=$ROUNDS"
	echo "quick=$QUICK"
	echo "mcache_args=${MCACHE_ARGS:-(defaults)}"
	echo "fixture=4 x $SHARD shards + $((${#ALL[@]} - 4)) JSON files; capped subset: ${#CAPPED[@]} shards"
} >"$MC_TMP/env.txt"
python3 "$HERE/bench_report.py" "$RAW" "$MC_TMP/env.txt" "$0" >"$OUTFILE"
cat "$OUTFILE"
