#!/usr/bin/env bash
# Issue 5, single-flight and atomic versions: several processes share one cache directory (init
# containers of several pods, a prewarm DaemonSet, an operator) without a daemon.
#  1. 6 concurrent pulls of one model (defaults): all exit 0, identical trees, one blob per
#     file, verify --deep clean, and the origin sends at most 1.15 x the model's bytes.
#  2. 8 concurrent pulls (two model names sharing the files) from a slow origin; the process
#     writing a temp file is SIGKILLed mid-way: every other pull exits 0 with the same bytes,
#     a survivor takes the download over and resumes it (bytes <= 1.15 x model + the killed
#     process's ranges in flight), and nothing is left in tmp/.
#  3. A reader that opens models/NAME once per pass (as the README tells consumers to) and reads
#     every file beneath that handle, polling while the model is updated at the origin and
#     pulled again: every pass sees all files of the old version or all of the new one, never a
#     mix and never a missing or short file; both versions are seen.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

ASAN=0
case $MCACHE_BIN in *build-asan*) ASAN=1 ;; esac
MIB=1048576
WWW=$MC_TMP/www
# /rate/ paced 128 KiB at a time rather than in 2 MiB bursts (as in ft_kill_loop.sh).
eval "nginx_write_conf_orig() $(declare -f nginx_write_conf | tail -n +2)"
nginx_write_conf() {
	nginx_write_conf_orig "$@"
	sed -i 's|limit_rate \$mc_rate; }|limit_rate $mc_rate; sendfile_max_chunk 128k; }|' "$1/nginx.conf"
	grep -q 'sendfile_max_chunk 128k' "$1/nginx.conf" || fail "cannot pace nginx's /rate/ (nginx.sh changed?)"
}

SIZE=128M
[ "$ASAN" = 1 ] && SIZE=64M
step "fixture: $SIZE in 4 shards (+ json)"
gen_model "$WWW/m" "$SIZE" 4 51
mapfile -t FILES < <(cd "$WWW/m" && ls)
TOTAL=$(files_bytes "$WWW/m" "${FILES[@]}")
nginx_start "$WWW"

urls() { # urls PREFIX: the model's URLs under NGINX_URL/PREFIX
	local f
	for f in "${FILES[@]}"; do printf '%s\n' "$NGINX_URL/$1$f"; done
}

# run_pulls OUTDIR NAME... : one background pull per NAME; sets PIDS.
run_pulls() {
	local out=$1 i=0 n
	shift
	PIDS=()
	for n in "$@"; do
		timeout -k 5 300 "$MCACHE_BIN" --cache-dir "$C" pull "${PULL_ARGS[@]}" --name "$n" \
			--json "${URLS[@]}" >"$out/$i.out" 2>"$out/$i.err" &
		PIDS+=($!)
		i=$((i + 1))
	done
}

step "1. six concurrent pulls of one model"
C=$MC_TMP/c1
mkdir -p "$MC_TMP/r1"
mapfile -t URLS < <(urls m/)
PULL_ARGS=()
MARK=$(nginx_log_mark)
run_pulls "$MC_TMP/r1" m m m m m m
for i in "${!PIDS[@]}"; do
	rc=0
	wait "${PIDS[$i]}" || rc=$?
	[ "$rc" -eq 0 ] || fail "pull $i exited $rc: $(head -c 600 "$MC_TMP/r1/$i.err")"
done
nginx_log_summary "$MARK" >"$MC_TMP/log1.json"
SENT=$(json "$MC_TMP/log1.json" 'j["bytes"]')
log "origin: $(json "$MC_TMP/log1.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}') for a $TOTAL-byte model"
FETCHED=0
for i in "${!PIDS[@]}"; do
	FETCHED=$((FETCHED + $(json "$MC_TMP/r1/$i.out" 'j["bytes_fetched"]')))
done
log "bytes_fetched summed over the 6 pulls: $FETCHED"
grep -h "waiting for" "$MC_TMP"/r1/*.err | head -n 3 || true
assert_le "$SENT" $((TOTAL * 115 / 100)) "origin bytes for 6 concurrent pulls (<= 1.15 x model)"
assert_ge "$SENT" "$TOTAL" "origin bytes (the model was fetched)"
assert_same_tree "$WWW/m" "$C/models/m" "${FILES[@]}"
assert_eq "$(find "$C/blobs" -type f | wc -l)" "${#FILES[@]}" "blobs after 6 concurrent pulls"
assert_eq "$(find "$C/tmp" -type f | wc -l)" 0 "temp files left"
mc_expect 0 --cache-dir "$C" verify --deep

step "2. eight concurrent pulls (two names), the downloading process SIGKILLed mid-way"
C=$MC_TMP/c2
mkdir -p "$MC_TMP/r2"
RATE=6m
[ "$ASAN" = 1 ] && RATE=4m
mapfile -t URLS < <(urls "rate/m/")
for i in "${!URLS[@]}"; do URLS[i]="${URLS[i]}?rate=$RATE"; done
CONNS=8
PULL_ARGS=(--chunk-size 2M --connections "$CONNS")
MARK=$(nginx_log_mark)
run_pulls "$MC_TMP/r2" a a a a a b b b
# The victim: a pull holding a temp file open, once some progress is durable.
VICTIM=""
for _ in $(seq 200); do
	sleep 0.05
	parts=$(find "$C/tmp" -name '*.part' 2>/dev/null | wc -l)
	[ "$parts" -gt 0 ] || continue
	for pid in "${PIDS[@]}"; do
		mpid=$(pgrep -P "$pid" -x mcache || true)
		[ -n "$mpid" ] || continue
		# A shard's temp file (not a small JSON one that ends at once).
		for fd in /proc/"$mpid"/fd/*; do
			t=$(readlink "$fd" 2>/dev/null) || continue
			case $t in *.part) ;; *) continue ;; esac
			if [ "$(stat -L -c %s "$fd" 2>/dev/null || echo 0)" -ge $((8 * MIB)) ]; then
				VICTIM=$pid
				VICTIM_MC=$mpid
				break 3
			fi
		done
	done
done
[ -n "$VICTIM" ] || fail "no pull was seen writing a temp file"
sleep 0.7
kill -KILL "$VICTIM_MC" || fail "the pull writing a temp file ended before its SIGKILL (origin too fast?)"
log "SIGKILLed mcache pid $VICTIM_MC (under timeout pid $VICTIM) while it was downloading"
for i in "${!PIDS[@]}"; do
	rc=0
	wait "${PIDS[$i]}" || rc=$?
	if [ "${PIDS[$i]}" = "$VICTIM" ]; then
		[ "$rc" -ne 0 ] || fail "the killed pull exited 0"
		continue
	fi
	[ "$rc" -eq 0 ] || fail "pull $i exited $rc: $(head -c 600 "$MC_TMP/r2/$i.err")"
done
nginx_log_summary "$MARK" >"$MC_TMP/log2.json"
SENT=$(json "$MC_TMP/log2.json" 'j["bytes"]')
log "origin: $(json "$MC_TMP/log2.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}') for a $TOTAL-byte model"
# What the victim had in flight when killed is lost: at most CONNS ranges of one chunk.
LIMIT=$((TOTAL * 115 / 100 + CONNS * 2 * MIB))
assert_le "$SENT" "$LIMIT" "origin bytes for 8 pulls with one killed (<= 1.15 x model + ranges in flight)"
for n in a b; do
	assert_same_tree "$WWW/m" "$C/models/$n" "${FILES[@]}"
done
assert_eq "$(find "$C/blobs" -type f | wc -l)" "${#FILES[@]}" "blobs shared by models a and b"
assert_eq "$(find "$C/tmp" -type f | wc -l)" 0 "temp files left after the takeover"
assert_eq "$(stat -L -c %i "$C/models/a/${FILES[0]}")" "$(stat -L -c %i "$C/models/b/${FILES[0]}")" \
	"models a and b share the blob"
mc_expect 0 --cache-dir "$C" verify --deep

step "3. a reader polling models/u while it is updated sees one whole version at a time"
C=$MC_TMP/c3
gen_model "$WWW/u" 24M 3 61
mapfile -t UFILES < <(cd "$WWW/u" && ls)
UURLS=()
for f in "${UFILES[@]}"; do UURLS+=("$NGINX_URL/u/$f"); done
mc_expect 0 --cache-dir "$C" pull --name u "${UURLS[@]}"
(cd "$WWW/u" && sha256sum "${UFILES[@]}") >"$MC_TMP/v1.sums"
cat >"$MC_TMP/reader.py" <<'PY'
import hashlib, os, sys, time
root, stop, files = sys.argv[1], sys.argv[2], sys.argv[3:]
seen = {}
passes = 0
while not os.path.exists(stop) or passes == 0:
    d = os.open(os.path.join(root, "models", "u"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        state = []
        for f in files:
            fd = os.open(f, os.O_RDONLY, dir_fd=d)
            with os.fdopen(fd, "rb") as fh:
                state.append(hashlib.sha256(fh.read()).hexdigest())
    finally:
        os.close(d)
    key = tuple(state)
    seen[key] = seen.get(key, 0) + 1
    passes += 1
for k, n in seen.items():
    print(n, " ".join(k))
PY
python3 "$MC_TMP/reader.py" "$C" "$MC_TMP/stop" "${UFILES[@]}" >"$MC_TMP/reader.out" 2>"$MC_TMP/reader.err" &
READER=$!
mc_at_exit "kill $READER 2>/dev/null || true"
sleep 0.5
for f in "${UFILES[@]}"; do
	case $f in *.safetensors) python3 "$MC_LIB_DIR/gen_safetensors.py" file "$WWW/u/$f" \
		--size "$(stat -c %s "$WWW/u/$f")" --seed "v2-$f" >/dev/null ;;
	*) printf '{"v": 2}\n' >"$WWW/u/$f" ;;
	esac
	touch -d "@$(($(date +%s) + 10))" "$WWW/u/$f"
done
(cd "$WWW/u" && sha256sum "${UFILES[@]}") >"$MC_TMP/v2.sums"
mc_expect 0 --cache-dir "$C" pull --name u "${UURLS[@]}"
sleep 0.5
touch "$MC_TMP/stop"
rc=0
wait "$READER" || rc=$?
[ "$rc" -eq 0 ] || fail "the reader failed (a missing or unreadable file?): $(head -c 600 "$MC_TMP/reader.err")"
V1=$(awk '{print $1}' "$MC_TMP/v1.sums" | paste -sd' ')
V2=$(awk '{print $1}' "$MC_TMP/v2.sums" | paste -sd' ')
N1=0
N2=0
while read -r n sums; do
	if [ "$sums" = "$V1" ]; then
		N1=$n
	elif [ "$sums" = "$V2" ]; then
		N2=$n
	else
		fail "the reader saw a mix of versions (or a partial file) in $n passes: $sums"
	fi
done <"$MC_TMP/reader.out"
log "reader: $N1 passes saw the old version, $N2 the new one, none a mix"
assert_ge "$N1" 1 "passes that saw the old version"
assert_ge "$N2" 1 "passes that saw the new version"
assert_same_tree "$WWW/u" "$C/models/u" "${UFILES[@]}"
mc_expect 0 --cache-dir "$C" verify --deep
