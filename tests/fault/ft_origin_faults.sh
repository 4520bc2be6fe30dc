#!/usr/bin/env bash
# Issue 3, items 2-4 and 7: a misbehaving origin (tests/lib/fault_origin.py) serving one 24 MiB
# file, pulled with --chunk-size 4M --connections 4 (chunks at 0, 4, 8, ... 20 MiB; the fault is
# put on the chunk at 8 MiB with `at=8388608` unless said otherwise).
#   transient faults (reset or clean close mid-body, 200 to a range, wrong or missing
#   Content-Range, a body longer than the range, 503/429 with Retry-After in seconds and as an
#   HTTP-date, a stall, a drip, a redirect chain): the pull succeeds, the file is byte-identical,
#   and the origin's log shows the retry, on a fresh connection (and its timing where it matters);
#   permanent faults (404, 403, 416, gzip on a range, 500 forever with --retries 2, a redirect to
#   ftp://, too many redirects): exit 3, exactly one "mcache: " line, nothing under models/, no
#   retry where none is due (exactly 3 tries for the 500);
#   the object changes mid-download (ETag flip; and Last-Modified only, without ETag): exit 3,
#   nothing published, and the next pull gives exactly the new content, never a mix.
# Each case uses its own cache directory and a fresh origin state (/__reset), and runs in a
# subshell (soft): a failing case is reported and the others still run.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/fault_origin.sh"
mc_setup

MIB=1048576
SIZE=$((24 * MIB))
AT=$((8 * MIB))    # the faulted chunk: [8 MiB, 12 MiB)
AT_END=$((12 * MIB))
F=model.bin
WWW=$MC_TMP/www
mkdir -p "$WWW"
step "fixture: one 24 MiB file, every byte pseudo-random"
python3 -c 'import random, sys; sys.stdout.buffer.write(random.Random(3).randbytes(int(sys.argv[1])))' \
	"$SIZE" >"$WWW/$F"
fault_start "$WWW"

# pull_case NAME SPEC [PULL ARGS...]: a pull of F with SPEC's faults into its own cache
# ($MC_TMP/c-NAME, set as C); sets MARK (the log before it) and ELAPSED (seconds, 1 decimal).
pull_case() {
	local name=$1 spec=$2 t0 t1
	shift 2
	fault_reset
	MARK=$(fault_log_mark) # after the last case's stragglers (a failed case may leave some)
	C=$MC_TMP/c-$name
	t0=$(date +%s%N)
	mc_run --cache-dir "$C" pull "$(fault_url "$spec" "$F")" --name "$name" \
		--chunk-size 4M --connections 4 "$@"
	t1=$(date +%s%N)
	fault_log_settle
	ELAPSED=$(((t1 - t0) / 100000000))
	ELAPSED="$((ELAPSED / 10)).$((ELAPSED % 10))"
}

# transient NAME SPEC [PULL ARGS...]: the pull must succeed with a byte-identical file.
transient() {
	local name=$1 spec=$2
	step "transient: $name ($spec)"
	pull_case "$@"
	if [ "$MC_RC" -ne 0 ]; then
		mc_show_output
		fail "$name: pull with '$spec' exited $MC_RC, want 0 (a transient fault must be retried)"
	fi
	assert_same_tree "$WWW" "$C/models/$name" "$F"
	log "$name: ${ELAPSED} s, requests: $(fault_log "$MARK" '[(x["start"], x["status"], x["bytes"], x["fault"]) for x in r if x["fault"] or x["start"] is not None and '"$AT"' <= x["start"] < '"$AT_END"']')"
}

# q PYEXPR: fault_log over the current case.
q() {
	fault_log_now "$MARK" "$1"
}

# The requests for the faulted chunk, as a Python expression: those starting in it.
IN_CHUNK="[x for x in r if x['start'] is not None and $AT <= x['start'] < $AT_END]"
FAULTED="[x for x in r if x['fault']]"

# a_retry_after WHAT: the log shows the faulted request, then a 206 for the chunk after it.
a_retry_after() {
	local n ok
	n=$(q "len($FAULTED)")
	[ "$n" -ge 1 ] || fail "$1: the origin never applied the fault (log: $(q 'r'))"
	ok=$(q "any(x['status'] == 206 and not x['fault'] and not x['aborted'] and x['t'] >= max(f['t'] for f in $FAULTED) for x in $IN_CHUNK)")
	[ "$ok" = true ] || fail "$1: no 206 for the chunk after the fault: $(q "$IN_CHUNK")"
	# A failed range is retried on a fresh connection (the old one may be what was broken).
	ok=$(q "all(x['peer'] not in [f['peer'] for f in $FAULTED] for x in $IN_CHUNK if not x['fault'] and x['t'] >= min(f['t'] for f in $FAULTED))")
	[ "$ok" = true ] || fail "$1: a retry reused the faulted connection: $(q "[(x['start'], x['status'], x['peer'], x['fault']) for x in $IN_CHUNK]")"
}

case_reset() {
	transient reset "at=$AT,reset=1500000,times=1"
	a_retry_after "reset mid-body"
}
soft case_reset

case_close() {
	transient close "at=$AT,close=1500000,times=1"
	a_retry_after "clean close mid-body"
	# 1.5 MB arrived before the close: the whole first MiB block is kept, the retry asks for the rest.
	assert_eq "$(q "sorted(x['start'] for x in $IN_CHUNK if not x['fault'])")" "[$((9 * MIB))]" \
		"starts of the retried requests for the chunk after a short body (the received block is kept)"
}
soft case_close

case_full200_range() {
	transient full200-range "at=$AT,full200,times=1"
	a_retry_after "200 to a range"
	assert_eq "$(q "[x['status'] for x in $FAULTED]")" "[200]" "status of the faulted request"
}
soft case_full200_range

case_full200_probe() {
	transient full200-probe "full200,times=1"
	# A 200 to the first request is the whole file: used as such (or the download restarts).
	assert_eq "$(q "r[0]['status']")" 200 "status of the probe"
}
soft case_full200_probe

case_badrange() {
	transient badrange "at=$AT,badrange,times=1"
	a_retry_after "wrong Content-Range"
}
soft case_badrange

case_norange() {
	transient norange "at=$AT,norange,times=1"
	a_retry_after "missing Content-Range"
}
soft case_norange

case_longcl() {
	transient longcl "at=$AT,longcl=4096,times=1"
	# The range is longer than asked: its tail is an error; the blocks before it may be kept.
	[ "$(q "len($FAULTED)")" -eq 1 ] || fail "longcl: the fault was not applied"
}
soft case_longcl

# 4 KiB of junk after the probe's body, 50 ms late: it waits on the kept-alive connection, and
# the next range sent over it reads junk where its status line should be ("HTTP/0.9"). A garbled
# response is transient: that range must be retried on a fresh connection.
case_long() {
	transient long "at=0,long=4096,times=1"
}
soft case_long

case_retry_after_503() {
	transient retry-after-503 "at=$AT,status=503,retry=2,times=1"
	a_retry_after "503 with Retry-After: 2"
	GAP=$(q "round(min(x['t'] for x in $IN_CHUNK if not x['fault']) - ${FAULTED}[0]['t_end'], 2)")
	log "503 Retry-After: 2 -> retried after $GAP s"
	python3 -c 'import sys; sys.exit(not 1.8 <= float(sys.argv[1]) <= 12)' "$GAP" ||
		fail "503 with Retry-After: 2 was retried after $GAP s, want 1.8 to 12 s"
}
soft case_retry_after_503

case_retry_date_429() {
	transient retry-date-429 "at=$AT,status=429,retrydate=3,times=1"
	a_retry_after "429 with an HTTP-date Retry-After"
	GAP=$(q "round(min(x['t'] for x in $IN_CHUNK if not x['fault']) - ${FAULTED}[0]['t_end'], 2)")
	log "429 Retry-After: <now + 3 s as an HTTP-date> -> retried after $GAP s"
	# The date has a 1 s resolution: the wait is 2 to 3 s; backoff alone would be under 1 s.
	python3 -c 'import sys; sys.exit(not 1.8 <= float(sys.argv[1]) <= 12)' "$GAP" ||
		fail "429 with Retry-After as an HTTP-date 3 s ahead was retried after $GAP s, want 1.8 to 12 s"
}
soft case_retry_date_429

case_stall() {
	transient stall "at=$AT,stall=60,times=1" --stall-timeout 2
	a_retry_after "a stall"
	STALL=$(q "round(${FAULTED}[0]['t_end'] - ${FAULTED}[0]['t'], 2)")
	log "stalled request aborted by the client after $STALL s (--stall-timeout 2)"
	assert_eq "$(q "${FAULTED}[0]['aborted']")" true "the stalled request was abandoned by the client"
	python3 -c 'import sys; sys.exit(not 1.5 <= float(sys.argv[1]) <= 8)' "$STALL" ||
		fail "the stalled request was aborted after $STALL s, want about 2 s (1.5 to 8)"
	python3 -c 'import sys; sys.exit(not float(sys.argv[1]) < 20)' "$ELAPSED" ||
		fail "the pull with a stall took $ELAPSED s"
}
soft case_stall

# 500 kB/s: the chunk alone would take 8.4 s. The tail must not wait on it: its blocks are
# re-split to idle connections (work stealing), which shows as requests starting inside the chunk.
case_drip() {
	transient drip "at=$AT,drip=500000,times=1"
	log "drip: the dripping request sent $(q "${FAULTED}[0]['bytes']") bytes, aborted: $(q "${FAULTED}[0]['aborted']")"
	SPLIT=$(q "[x['start'] for x in $IN_CHUNK if not x['fault'] and x['start'] > $AT]")
	[ "$SPLIT" != "[]" ] || fail "drip: no part of the slow chunk went to another connection: $(q "$IN_CHUNK")"
	python3 -c 'import sys; sys.exit(not float(sys.argv[1]) < 8.4)' "$ELAPSED" ||
		fail "drip: the pull took $ELAPSED s, as long as the dripping chunk alone (8.4 s)"
}
soft case_drip

case_redirects() {
	transient redirects "redirect=3"
	N302=$(q "len([x for x in r if x['status'] == 302])")
	N206=$(q "len([x for x in r if x['status'] == 206])")
	log "redirect chain: $N302 redirects for $N206 ranges"
	assert_ge "$N302" $((3 * N206)) "redirects (3 per request)"
}
soft case_redirects

# permanent NAME SPEC [PULL ARGS...]: exit 3, one error line, nothing published.
permanent() {
	local name=$1 spec=$2
	step "permanent: $name ($spec)"
	pull_case "$@"
	if [ "$MC_RC" -ne 3 ]; then
		mc_show_output
		fail "$name: pull with '$spec' exited $MC_RC, want 3"
	fi
	assert_one_error_line
	[ ! -e "$C/models/$name" ] || fail "$name: a failed pull published models/$name"
	if [ -d "$C/models" ] && [ -n "$(ls -A "$C/models")" ]; then
		fail "$name: models/ is not empty after a failed pull: $(ls -A "$C/models")"
	fi
	log "$name: ${ELAPSED} s, $(q 'len(r)') requests"
}

case_not_found() {
	permanent not-found "status=404"
	assert_eq "$(q 'len(r)')" 1 "requests for a 404 (not retried)"
}
soft case_not_found

case_forbidden() {
	permanent forbidden "at=$AT,status=403"
	assert_eq "$(q "len($IN_CHUNK)")" 1 "requests for a range answered 403 (not retried)"
}
soft case_forbidden

case_range_416() {
	permanent range-416 "at=$AT,status=416"
	assert_eq "$(q "len($IN_CHUNK)")" 1 "requests for a range answered 416 with the size known (not retried)"
}
soft case_range_416

case_gzip() {
	permanent gzip "at=$AT,gzip"
	assert_eq "$(q "len($IN_CHUNK)")" 1 "requests for a range answered with Content-Encoding: gzip (not retried)"
	grep -qi 'gzip\|encod' "$MC_STDERR" || fail "the error does not say the body was encoded: $(cat "$MC_STDERR")"
}
soft case_gzip

case_error_500() {
	permanent error-500 "at=$AT,status=500" --retries 2
	assert_eq "$(q "len($IN_CHUNK)")" 3 "requests for a range answered 500 forever with --retries 2"
	grep -q '3 tries' "$MC_STDERR" || fail "the error does not name the 3 tries: $(cat "$MC_STDERR")"
	grep -q '500' "$MC_STDERR" || fail "the error does not name the status: $(cat "$MC_STDERR")"
}
soft case_error_500

case_redirect_ftp() {
	permanent redirect-ftp "redirectto=ftp://127.0.0.1:1/$F"
	grep -qi 'ftp' "$MC_STDERR" || fail "the error does not name the refused protocol: $(cat "$MC_STDERR")"
}
soft case_redirect_ftp

case_redirect_loop() {
	permanent redirect-loop "redirect=40"
	N=$(q 'len(r)')
	assert_le "$N" 64 "requests for an endless redirect chain"
}
soft case_redirect_loop

# flip_case NAME SPEC: the object changes after the first 2 requests (probe + one range): the
# pull fails with exit 3 (a range refused with 412, or answered 200 to a stale If-Range), and
# nothing is published; the next pull gives exactly the new version (every MiB differs between
# the two, so a block kept from the old one would show).
flip_case() {
	local name=$1 spec=$2
	step "the object changes mid-download: $name ($spec)"
	fault_reset
	C=$MC_TMP/c-$name
	URL=$(fault_url "$spec" "$F")
	MARK=$(wc -l <"$FAULT_LOG")
	mc_expect 3 --cache-dir "$C" pull "$URL" --name "$name" --chunk-size 4M --connections 4
	fault_log_settle
	assert_one_error_line
	grep -qi 'changed' "$MC_STDERR" || fail "the error does not say the object changed: $(cat "$MC_STDERR")"
	[ ! -e "$C/models/$name" ] || fail "a pull that saw two versions published models/$name"
	log "first pull: $(q '[(x["start"], x["status"], x["if_match"] or x["if_range"]) for x in r]')"
	[ "$(q "any(x['status'] in (412, 200) for x in r[1:])")" = true ] ||
		fail "no range was refused (412 to If-Match, or 200 to a stale If-Range)"
	[ "$(q "all(x['if_match'] or x['if_range'] for x in r[1:] if x['status'] in (200, 206, 412))")" = true ] ||
		fail "a range after the probe was sent without If-Match/If-Range: $(q 'r')"
	MARK=$(wc -l <"$FAULT_LOG")
	mc_expect 0 --cache-dir "$C" pull "$URL" --name "$name" --chunk-size 4M --connections 4
	if ! cmp -s "$MC_TMP/new-$F" "$C/models/$name/$F"; then
		cmp "$C/models/$name/$F" "$WWW/$F" >/dev/null 2>&1 && fail "$name: the second pull published the OLD version"
		python3 - "$WWW/$F" "$MC_TMP/new-$F" "$C/models/$name/$F" <<'PY' >&2
import sys
old, new, got = (open(p, "rb").read() for p in sys.argv[1:])
M = 1 << 20
blocks = ["new" if got[i:i + M] == new[i:i + M] else "OLD" if got[i:i + M] == old[i:i + M] else "?"
          for i in range(0, len(got), M)]
print("per-MiB block versions:", " ".join(blocks))
PY
		fail "$name: the pull after the object changed is not the new version (a mix of versions?)"
	fi
	log "models/$name/$F is the new version, byte for byte"
	mc_expect 0 --cache-dir "$C" verify --deep
}

python3 "$MC_LIB_DIR/fault_origin.py" flip "$WWW/$F" "$MC_TMP/new-$F"
soft flip_case flip "etagflip,times=2"
# Without an ETag, ranges are pinned with If-Range: Last-Modified; a changed object answers 200.
soft flip_case flip-lastmod "etagflip,noetag,times=2"

step "SIGTERM while every connection is stalled: exit 130 within 5 s, one line"
fault_reset
C=$MC_TMP/c-term-stall
"$MCACHE_BIN" --cache-dir "$C" pull "$(fault_url "stall=60" "$F")" --name term-stall \
	--chunk-size 4M --connections 4 >"$MC_TMP/term.out" 2>"$MC_TMP/term.err" &
PID=$!
sleep 1.5
kill -0 "$PID" 2>/dev/null || fail "the stalled pull ended before SIGTERM: $(cat "$MC_TMP/term.err")"
S0=$(date +%s%N)
kill -TERM "$PID"
(sleep 10 && kill -KILL "$PID" 2>/dev/null) &
WD=$!
RC=0
wait "$PID" || RC=$?
kill "$WD" 2>/dev/null || true
wait "$WD" 2>/dev/null || true
MS=$((($(date +%s%N) - S0) / 1000000))
log "SIGTERM with stalled connections: exit $RC after $MS ms: $(head -c 200 "$MC_TMP/term.err")"
assert_eq "$RC" 130 "exit status after SIGTERM with stalled connections"
assert_le "$MS" 5000 "milliseconds from SIGTERM to exit with stalled connections"
MC_STDERR=$MC_TMP/term.err assert_one_error_line
[ ! -e "$C/models/term-stall" ] || fail "an interrupted pull published models/term-stall"
