#!/usr/bin/env bash
# Issue 3, item 8: allocation-failure injection on the core paths. MCACHE_FAIL_ALLOC=N makes the
# Nth allocation through mcache's wrapper fail, and every later one (libcurl's and jansson's
# allocations go through it too). For N = 1, 2, ... until a run succeeds:
#   phase cold:   a pull of a 2-file model into an empty cache;
#   phase warm:   a pull of the same model into a cache that has it (nothing to download);
#   phase verify: verify --deep of that cache.
# Each run must exit 0 or 6 (local I/O or memory), never die of a signal (rc >= 128), never
# print a sanitizer report (under the ASan build, ctest runs this against the ASan binary), say
# one "mcache: " line when it fails, and publish nothing partial: after a failed cold pull
# models/ is empty, and (every MC_ALLOC_CHECK_EVERY N, default 8, and the first 8) a normal
# pull in that cache succeeds, byte-identical, and verify --deep exits 0. A failed warm pull or
# verify must leave the cached model intact (verify every N, --deep every few). verify must never
# report findings (exit 1) for a cache that is fine. The number of allocation points swept is
# printed. MC_ALLOC_MAX (default 2000) bounds each phase.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

MAX=${MC_ALLOC_MAX:-2000}
EVERY=${MC_ALLOC_CHECK_EVERY:-8}
WWW=$MC_TMP/www
step "fixture: a 2-file model (3 MiB shard + config.json)"
gen_model "$WWW/m" 3M 1 41
mapfile -t FILES < <(cd "$WWW/m" && ls)
[ "${#FILES[@]}" -eq 2 ] || fail "want a 2-file model, got: ${FILES[*]}"
nginx_start "$WWW"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f"); done
PULL=(pull "${URLS[@]}" --name m --chunk-size 1M --connections 2)

# Violations are collected, so that one run reports every allocation point that misbehaves;
# the test fails at the end when there is any.
VIOLATIONS=()
violation() {
	VIOLATIONS+=("$1")
	printf 'VIOLATION: %s\n' "$1" >&2
	printf '   stderr: %s\n' "$(head -c 600 "$MC_STDERR" | tr '\n' '|')" >&2
	[ "${#VIOLATIONS[@]}" -le 50 ] || fail "more than 50 violations; stopping"
}

# injected N ARGS...: runs mcache with the Nth allocation failing; checks rc and stderr.
injected() {
	local n=$1 what
	shift
	what="MCACHE_FAIL_ALLOC=$n mcache $(mc_quote "$@")"
	MC_RC=0
	MCACHE_FAIL_ALLOC=$n timeout -k 5 60 "$MCACHE_BIN" "$@" >"$MC_STDOUT" 2>"$MC_STDERR" || MC_RC=$?
	if [ "$MC_RC" -ge 124 ] || grep -q 'Sanitizer\|runtime error:' "$MC_STDERR"; then
		violation "$what exited $MC_RC (a signal, a timeout or a sanitizer report)"
		return 0
	fi
	case $MC_RC in
	0) ;;
	6)
		if [ "$(wc -l <"$MC_STDERR")" -ne 1 ] || ! grep -q '^mcache: ' "$MC_STDERR"; then
			violation "$what: want exactly one 'mcache: ' line on stderr"
		fi
		;;
	*) violation "$what exited $MC_RC, want 0 or 6 (out of memory)" ;;
	esac
}

# intact CACHE DEEP: the model in CACHE is complete and byte-identical; verify (--deep if DEEP).
intact() {
	assert_same_tree "$WWW/m" "$1/models/m" "${FILES[@]}" >/dev/null
	if [ "$2" = 1 ]; then
		mc_expect 0 --cache-dir "$1" verify --deep >/dev/null
	else
		mc_expect 0 --cache-dir "$1" verify >/dev/null
	fi
}

declare -A SWEPT=() MSGS=()
# note_msg: remembers the last error line (numbers as #), for the summary.
note_msg() {
	local m
	m=$(head -n1 "$MC_STDERR" | sed 's/[0-9]\+/#/g')
	[ -z "$m" ] || MSGS["$m"]=1
}

step "phase cold: a pull into an empty cache, failing allocation N = 1, 2, ..."
N=0
while :; do
	N=$((N + 1))
	[ "$N" -le "$MAX" ] || fail "cold pull still failing at MCACHE_FAIL_ALLOC=$MAX"
	C=$MC_TMP/cold
	rm -rf "$C"
	injected "$N" --cache-dir "$C" "${PULL[@]}"
	if [ "$MC_RC" -eq 0 ]; then
		intact "$C" 1
		break
	fi
	note_msg
	if [ -d "$C/models" ] && [ -n "$(ls -A "$C/models")" ]; then
		fail "MCACHE_FAIL_ALLOC=$N: a failed pull left '$(ls -A "$C/models")' under models/"
	fi
	if [ "$N" -le 8 ] || [ $((N % EVERY)) -eq 0 ]; then
		mc_expect 0 --cache-dir "$C" "${PULL[@]}" >/dev/null
		intact "$C" 1
	fi
done
SWEPT[cold]=$((N - 1))
log "cold pull: $((N - 1)) allocation points swept (each exit 6 with one line, or a VIOLATION above); N=$N succeeded"

step "phase warm: a pull of the cached model, failing allocation N = 1, 2, ..."
W=$MC_TMP/warm
mc_expect 0 --cache-dir "$W" "${PULL[@]}" >/dev/null
N=0
while :; do
	N=$((N + 1))
	[ "$N" -le "$MAX" ] || fail "warm pull still failing at MCACHE_FAIL_ALLOC=$MAX"
	injected "$N" --cache-dir "$W" "${PULL[@]}"
	RC=$MC_RC
	[ "$RC" -eq 0 ] || note_msg
	if [ "$N" -le 8 ] || [ $((N % EVERY)) -eq 0 ] || [ "$RC" -eq 0 ]; then
		intact "$W" 1
	else
		intact "$W" 0
	fi
	[ "$RC" -ne 0 ] || break
done
SWEPT[warm]=$((N - 1))
log "warm pull: $((N - 1)) allocation points swept; N=$N succeeded; the model stayed intact"

step "phase verify: verify --deep, failing allocation N = 1, 2, ..."
N=0
while :; do
	N=$((N + 1))
	[ "$N" -le "$MAX" ] || fail "verify --deep still failing at MCACHE_FAIL_ALLOC=$MAX"
	# exit 1 would be a false finding: the cache is fine, only memory ran out.
	injected "$N" --cache-dir "$W" verify --deep
	[ "$MC_RC" -ne 0 ] || break
	note_msg
done
SWEPT[verify]=$((N - 1))
intact "$W" 1
log "verify --deep: $((N - 1)) allocation points swept; N=$N succeeded"

step "summary"
log "allocation points swept: cold pull ${SWEPT[cold]}, warm pull ${SWEPT[warm]}, verify --deep ${SWEPT[verify]}"
log "distinct error lines (numbers as #): ${#MSGS[@]}"
for m in "${!MSGS[@]}"; do
	log "  $m"
done | sort | head -n 40
if [ "${#VIOLATIONS[@]}" -gt 0 ]; then
	printf '   %s\n' "${VIOLATIONS[@]}" >&2
	fail "${#VIOLATIONS[@]} allocation failure(s) handled wrongly (above)"
fi
