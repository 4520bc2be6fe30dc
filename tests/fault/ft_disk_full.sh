#!/usr/bin/env bash
# Issue 3, items 5 and 7: the cache on a 64 MiB tmpfs that fills up (needs root for mount; CI
# runs as root; skipped otherwise).
#   1. a small model pulled first, to protect;
#   2. the disk completely full (a filler file): a pull exits 5 with one line, never a signal;
#      the index stays usable (verify, ls --json), then the filler goes;
#   3. a 96 MiB model (3 x 32 MiB) into ~56 MiB free: exit 5, one line naming the bytes needed
#      and the bytes free, nothing published, the small model still verifies, ls --json parses;
#   4. the tmpfs grown to 256 MiB (mount -o remount): the same pull completes, byte-identical,
#      keeping what the failed run had: the origin's bytes over both runs stay within
#      1.05 x the model + (connections + files) x chunk (what a run may lose in flight + probes);
#   5. the disk filled by another writer while a pull runs (nginx /rate/, ~4 s): the pull's
#      files were reserved up front, so it completes, or fails with 5 and one line (the index
#      cannot grow); never a signal; after the filler goes the index verifies and a pull
#      completes byte-identical, keeping the chunks made durable before the failure.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup
[ "$(id -u)" -eq 0 ] || skip "needs root to mount a tmpfs"

MIB=1048576
CHUNK=$((2 * MIB))
CONNS=2
WWW=$MC_TMP/www
step "fixtures: a small model (8 MiB) and a big one (3 x 32 MiB)"
gen_model "$WWW/small" 8M 1 21
gen_model "$WWW/big" 96M 3 22
mapfile -t SMALL < <(cd "$WWW/small" && ls)
mapfile -t BIG < <(cd "$WWW/big" && ls)
BIGBYTES=$(files_bytes "$WWW/big" "${BIG[@]}")
nginx_start "$WWW"

FS=$MC_TMP/fs
mkdir -p "$FS"
mount -t tmpfs -o size=64m,mode=0755 tmpfs "$FS" || skip "cannot mount a tmpfs here"
mc_at_exit "umount '$FS' 2>/dev/null || umount -l '$FS'"
C=$FS/cache
avail() {
	df -B1 --output=avail "$FS" | tail -n1 | tr -d ' '
}

# no_signal: the last run did not die of a signal and left no sanitizer report.
no_signal() {
	if [ "$MC_RC" -ge 128 ] || grep -q 'Sanitizer\|runtime error:' "$MC_STDERR"; then
		mc_show_output
		fail "mcache exited $MC_RC on a full disk"
	fi
}

# index_ok: the small model verifies (fast and deep) and ls --json parses and lists it complete.
index_ok() {
	mc_expect 0 --cache-dir "$C" verify
	mc_expect 0 --cache-dir "$C" verify small --deep
	mc_expect 0 --cache-dir "$C" ls --json
	ls_model "$MC_STDOUT" small >"$MC_TMP/small.json"
	assert_eq "$(json "$MC_TMP/small.json" 'j["state"]')" complete "state of the small model"
	assert_same_tree "$WWW/small" "$C/models/small" "${SMALL[@]}"
}

step "1. a small model to protect"
URLS=()
for f in "${SMALL[@]}"; do URLS+=("$NGINX_URL/small/$f"); done
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name small
index_ok

step "2. the disk completely full: a pull fails cleanly"
dd if=/dev/zero of="$FS/filler" bs=1M 2>/dev/null || true
log "free after the filler: $(avail) bytes"
mc_run --cache-dir "$C" pull "$NGINX_URL/big/${BIG[1]}" --name full
no_signal
if [ "$MC_RC" -ne 5 ]; then
	mc_show_output
	fail "a pull onto a full disk exited $MC_RC, want 5 (no space)"
fi
assert_one_error_line
[ ! -e "$C/models/full" ] || fail "a pull onto a full disk published models/full"
# verify only reads, but SQLite may need room for its -shm file: 0, or 5 with one line (never 1,
# a false finding, nor a signal).
mc_run --cache-dir "$C" verify small
no_signal
case $MC_RC in
0) log "verify on a full disk: 0" ;;
5)
	assert_one_error_line
	log "verify on a full disk: 5 (cannot open the index without free space)"
	;;
*)
	mc_show_output
	fail "verify on a full disk exited $MC_RC, want 0 (or 5: no space)"
	;;
esac
rm -f "$FS/filler"
index_ok

step "3. a 96 MiB model into ~56 MiB free: exit 5 before it fills the disk"
URLS=()
for f in "${BIG[@]}"; do URLS+=("$NGINX_URL/big/$f"); done
MARK=$(nginx_log_mark)
FREE0=$(avail)
log "free before: $FREE0 bytes; the model needs $BIGBYTES"
mc_run --cache-dir "$C" pull "${URLS[@]}" --name big --chunk-size 2M --connections $CONNS
no_signal
if [ "$MC_RC" -ne 5 ]; then
	mc_show_output
	fail "pulling $BIGBYTES bytes into $FREE0 free exited $MC_RC, want 5 (no space)"
fi
assert_one_error_line
FREE1=$(avail)
# The line names the bytes needed and the bytes free: two numbers, the free one as df sees it
# now (the failed run keeps its reservation for a resume), the needed one larger.
python3 - "$MC_STDERR" "$FREE1" <<'PY' || fail "the no-space error does not name the bytes needed and free ($FREE1): $(cat "$MC_STDERR")"
import re, sys
line = open(sys.argv[1]).read()
free = int(sys.argv[2])
nums = [int(n) for n in re.findall(r"\d+", line.replace(",", ""))]
near = [n for n in nums if abs(n - free) <= (1 << 20)]
assert near, "no number near the free space"
assert any(n > max(near) for n in nums), "no number larger than the free space"
assert re.search(r"free|avail", line, re.I), "the line does not say 'free'"
PY
[ ! -e "$C/models/big" ] || fail "a pull that ran out of space published models/big"
index_ok
mc_run --cache-dir "$C" ls --json
ls_model "$MC_STDOUT" big >"$MC_TMP/big.json" 2>/dev/null || true
log "big in ls after the failure: $(cat "$MC_TMP/big.json" 2>/dev/null || echo absent)"
BYTES1=$(nginx_log_summary "$MARK" --uri-prefix /big/ | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')
log "the failed pull made the origin send $BYTES1 bytes; tmp/ holds $(du -sb "$C/tmp" | cut -f1) bytes"

step "4. more space (remount at 256 MiB): the pull completes and keeps what it had"
mount -o remount,size=256m "$FS" || fail "cannot grow the tmpfs"
MARK2=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name big --chunk-size 2M --connections $CONNS
assert_same_tree "$WWW/big" "$C/models/big" "${BIG[@]}"
mc_expect 0 --cache-dir "$C" verify --deep
index_ok
BYTES2=$(nginx_log_summary "$MARK2" --uri-prefix /big/ | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')
SUM=$((BYTES1 + BYTES2))
LIMIT=$((BIGBYTES + BIGBYTES / 20 + (CONNS + ${#BIG[@]}) * CHUNK))
log "origin bytes: failed run $BYTES1 + resumed run $BYTES2 = $SUM for a $BIGBYTES-byte model ($(python3 -c "print(round($SUM / $BIGBYTES, 3))")x); limit $LIMIT"
assert_le "$SUM" "$LIMIT" "origin bytes over the failed and the resumed pull"

step "5. the disk fills up while a pull runs"
gen_model "$WWW/mid" 32M 2 23
mapfile -t MID < <(cd "$WWW/mid" && ls)
URLS=()
for f in "${MID[@]}"; do URLS+=("$NGINX_URL/rate/mid/$f?rate=1m"); done
"$MCACHE_BIN" --cache-dir "$C" pull "${URLS[@]}" --name mid --chunk-size 2M --connections 4 \
	>"$MC_TMP/mid.out" 2>"$MC_TMP/mid.err" &
PID=$!
# 2 MiB ranges at 1 MiB/s on 4 connections: 8 ranges are whole (and durable) after ~2 s.
sleep 2.2
kill -0 "$PID" 2>/dev/null || fail "the paced pull ended within 2.2 s: $(cat "$MC_TMP/mid.err")"
dd if=/dev/zero of="$FS/filler" bs=64k 2>/dev/null || true
log "free after the filler: $(avail) bytes, the pull still running"
MC_RC=0
wait "$PID" || MC_RC=$?
FIRST_RC=$MC_RC
MC_STDERR=$MC_TMP/mid.err
MC_STDOUT=$MC_TMP/mid.out
no_signal
case $MC_RC in
0) log "the pull completed on its reserved space" ;;
5) assert_one_error_line ;;
*)
	mc_show_output
	fail "a pull whose disk filled up exited $MC_RC, want 0 or 5"
	;;
esac
MC_STDOUT=$MC_TMP/stdout
MC_STDERR=$MC_TMP/stderr
SPANS=$(sqlite3 "$C/index.db" 'SELECT count(*) || " downloads, " || (SELECT coalesce(sum(nblocks), 0) FROM download_spans) || " blocks recorded" FROM downloads' 2>&1 || true)
log "index after the failure: $SPANS; tmp/: $(ls "$C/tmp" | tr '\n' ' ')"
rm -f "$FS/filler"
index_ok
URLS=()
for f in "${MID[@]}"; do URLS+=("$NGINX_URL/rate/mid/$f"); done # the same objects: no ?rate, no cap
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name mid --chunk-size 2M --connections 4 --json
assert_same_tree "$WWW/mid" "$C/models/mid" "${MID[@]}"
MIDBYTES=$(files_bytes "$WWW/mid" "${MID[@]}")
FETCHED=$(json_find "$MC_STDOUT" bytes_fetched)
log "after the filler went, the pull fetched $FETCHED of $MIDBYTES bytes"
if [ "$FIRST_RC" -eq 5 ]; then
	assert_le "$FETCHED" $((MIDBYTES - 4 * MIB)) "bytes fetched again after a no-space failure (the durable chunks must be kept)"
fi
mc_expect 0 --cache-dir "$C" verify --deep
