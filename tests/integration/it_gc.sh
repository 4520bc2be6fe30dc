#!/usr/bin/env bash
# Capacity management against a real nginx: pin, unpin, rm, gc and the budget.
#   1. two models sharing a file store it once (one blob; the blobs' bytes are the unique bytes)
#   2. gc --dry-run changes nothing; gc --max-bytes below the total keeps the pinned model and
#      the most recently used one, evicts the least recently used unpinned one, lands under
#      the budget (ls --json, the blobs' bytes), and verify is clean
#   3. rm removes models/NAME and trees/NAME, its unshared blobs, and verify is clean; unknown
#      names exit 7, bad names 2, with one error line
#   4. gc --max-bytes 1 while another process pulls a model (rate-capped): that model survives,
#      the pull succeeds byte-identical, its temp file is never removed; the budget it cannot
#      meet is a warning, exit 0
#   5. a pull with MCACHE_MAX_BYTES evicts the least recently used model after pulling; a
#      budget saved with gc --save is used by later gc and pull runs; the variable overrides it
#   6. (root) a pull into a full tmpfs makes room by evicting the LRU model, and succeeds
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

MIB=1048576
WWW=$MC_TMP/www
C=$MC_TMP/cache
gen_file() { # gen_file PATH SIZE SEED
	python3 "$MC_LIB_DIR/gen_safetensors.py" file "$1" --size "$2" --seed "$3" >/dev/null ||
		fail "cannot generate '$1'"
}
# The bytes of the blobs on disk, each file once.
blob_bytes() {
	find "$C/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}
ls_names() {
	mc_run --cache-dir "${1:-$C}" ls --json
	[ "$MC_RC" -eq 0 ] || { mc_show_output; fail "ls exited $MC_RC"; }
	json "$MC_STDOUT" '" ".join(m["name"] for m in j["models"])'
}
# Waits until the last use of a model (a second's resolution) can differ from the ones before.
tick() { sleep 1.1; }

step "fixture: a (shared 4M + 2M), b (the same shared 4M + 3M), c (2M), d (1M), big (24M)"
mkdir -p "$WWW"/{a,b,c,d,big,e}
gen_file "$WWW/a/shared.safetensors" 4M shared
cp "$WWW/a/shared.safetensors" "$WWW/b/shared.safetensors"
gen_file "$WWW/a/a.safetensors" 2M a
gen_file "$WWW/b/b.safetensors" 3M b
gen_file "$WWW/c/c.safetensors" 2M c
gen_file "$WWW/d/d.safetensors" 1M d
gen_file "$WWW/big/big.safetensors" 24M big
gen_file "$WWW/e/e.safetensors" 2M e
nginx_start "$WWW"
U=$NGINX_URL

step "1. two models sharing a file store it once"
mc_expect 0 --cache-dir "$C" pull "$U/a/shared.safetensors" "$U/a/a.safetensors" --name a
tick
mc_expect 0 --cache-dir "$C" pull "$U/b/shared.safetensors" "$U/b/b.safetensors" --name b
tick
mc_expect 0 --cache-dir "$C" pull "$U/c/c.safetensors" --name c
assert_eq "$(stat -L -c %i "$C/models/a/shared.safetensors")" \
	"$(stat -L -c %i "$C/models/b/shared.safetensors")" "the shared file's inode in a and b"
assert_eq "$(find "$C/blobs" -type f | wc -l)" 4 "blobs for 4 distinct files"
assert_eq "$(blob_bytes)" $((11 * MIB)) "bytes under blobs/ (4M stored once + 2M + 3M + 2M)"

step "2. pin c, use a again; gc --dry-run, then gc --max-bytes 9M evicts b alone"
mc_expect 0 --cache-dir "$C" pin c
mc_expect 7 --cache-dir "$C" pin nosuch
assert_one_error_line
mc_expect 2 --cache-dir "$C" pin ../x
assert_one_error_line
tick
mc_expect 0 --cache-dir "$C" pull "$U/a/shared.safetensors" "$U/a/a.safetensors" --name a
mc_expect 0 --cache-dir "$C" ls --json
assert_eq "$(json "$MC_STDOUT" '[m["pinned"] for m in j["models"]]')" '[false, false, true]' "pins a, b, c"
mc_expect 0 --cache-dir "$C" gc --max-bytes 9M --dry-run --json
cp "$MC_STDOUT" "$MC_TMP/dry.json"
assert_eq "$(json "$MC_TMP/dry.json" '[m["name"] for m in j["evicted"]]')" '["b"]' "dry run: would evict"
assert_eq "$(json "$MC_TMP/dry.json" 'j["dry_run"]')" true "dry_run"
assert_eq "$(ls_names)" "a b c" "models after a dry run"
assert_eq "$(blob_bytes)" $((11 * MIB)) "blob bytes after a dry run"
mc_expect 0 --cache-dir "$C" gc --max-bytes 9M --json
cp "$MC_STDOUT" "$MC_TMP/gc.json"
log "gc: $(json "$MC_TMP/gc.json" '{k: j[k] for k in ("bytes_before", "bytes_after", "budget_met", "removed")}')"
assert_eq "$(json "$MC_TMP/gc.json" '[m["name"] for m in j["evicted"]]')" '["b"]' "evicted"
assert_eq "$(json "$MC_TMP/gc.json" 'j["evicted"][0]["bytes_freed"]')" $((3 * MIB)) "b freed its own 3M, not the shared 4M"
assert_eq "$(json "$MC_TMP/gc.json" 'j["budget_met"]')" true "budget_met"
assert_eq "$(json "$MC_TMP/gc.json" 'j["max_bytes"]')" $((9 * MIB)) "max_bytes"
assert_eq "$(json "$MC_TMP/gc.json" 'j["bytes_after"]')" $((8 * MIB)) "bytes_after"
assert_eq "$(json "$MC_TMP/gc.json" 'j["bytes_after"] == j["bytes_before"] - j["bytes_freed"]')" true "bytes add up"
assert_eq "$(ls_names)" "a c" "models after gc"
assert_le "$(blob_bytes)" $((9 * MIB)) "blob bytes within the budget"
if [ -e "$C/models/b" ] || [ -e "$C/trees/b" ]; then fail "models/b or trees/b is still there"; fi
assert_same_tree "$WWW/a" "$C/models/a" shared.safetensors a.safetensors
mc_expect 0 --cache-dir "$C" verify --deep
# Human output: one line per evicted model, then the summary.
mc_expect 0 --cache-dir "$C" gc --max-bytes 9M
grep -q '^freed 0 B: 0 models, 0 old versions, 0 blobs, 0 temp files; 8[.0]* MiB of 9[.0]* MiB budget used$' \
	"$MC_STDOUT" || { mc_show_output; fail "gc's summary line"; }

step "3. rm: the link, the trees, the unshared blobs; unknown names exit 7"
mc_expect 0 --cache-dir "$C" pull "$U/d/d.safetensors" --name d
mc_expect 0 --cache-dir "$C" rm a --json
assert_eq "$(json "$MC_STDOUT" 'j["removed"][0]["bytes_freed"]')" $((6 * MIB)) "rm a freed shared + a"
if [ -e "$C/models/a" ] || [ -e "$C/trees/a" ]; then fail "models/a or trees/a is still there"; fi
assert_eq "$(ls_names)" "c d" "models after rm"
assert_eq "$(blob_bytes)" $((3 * MIB)) "blob bytes after rm"
mc_expect 0 --cache-dir "$C" verify --deep
mc_expect 7 --cache-dir "$C" rm a
assert_one_error_line
grep -q "no model 'a' in the cache" "$MC_STDERR" || fail "rm's message for an unknown model"
mc_expect 2 --cache-dir "$C" rm 'bad/name'
assert_one_error_line
mc_expect 2 --cache-dir "$C" rm
assert_one_error_line

step "4. gc --max-bytes 1 while another process pulls 24M at 4 MiB/s"
tick
mc_expect 0 --cache-dir "$C" pull "$U/e/e.safetensors" --name e # unpinned, to be evicted
"$MCACHE_BIN" --cache-dir "$C" pull "$U/big/big.safetensors" --name big --max-rate 4M \
	--chunk-size 1M --connections 2 -q >"$MC_TMP/big.out" 2>"$MC_TMP/big.err" &
BIG=$!
mc_at_exit "kill $BIG 2>/dev/null || true"
for _ in $(seq 100); do
	compgen -G "$C/tmp/*.part" >/dev/null && break
	sleep 0.1
done
PART=$(compgen -G "$C/tmp/*.part" | head -n1) || true
[ -n "$PART" ] || fail "the pull of big never started a download"
log "pull of big running (pid $BIG), temp file $(basename "$PART")"
mc_expect 0 --cache-dir "$C" gc --max-bytes 1 --json
cp "$MC_STDOUT" "$MC_TMP/gc4.json"
log "gc: $(json "$MC_TMP/gc4.json" '{k: j[k] for k in ("evicted", "budget_met", "bytes_after")}')"
assert_eq "$(json "$MC_TMP/gc4.json" 'sorted(m["name"] for m in j["evicted"])')" '["d", "e"]' "evicted while big is pulled"
assert_eq "$(json "$MC_TMP/gc4.json" 'j["budget_met"]')" false "budget_met with a pinned model and a pull"
grep -q '^mcache: warning: the cache uses .* over its 1 B budget' "$MC_STDERR" ||
	{ mc_show_output; fail "no warning for a budget gc could not meet"; }
kill -0 "$BIG" 2>/dev/null || fail "the pull of big ended before gc ran: make it slower"
[ -e "$PART" ] || fail "gc removed the temp file of a live pull"
mc_expect 0 --cache-dir "$C" gc --max-bytes 1 -q # once more, still during the pull
BIG_RC=0
wait "$BIG" || BIG_RC=$?
[ "$BIG_RC" -eq 0 ] || fail "the pull of big exited $BIG_RC: $(cat "$MC_TMP/big.err")"
assert_same_tree "$WWW/big" "$C/models/big" big.safetensors
assert_eq "$(ls_names)" "big c" "models after the concurrent gc"
mc_expect 0 --cache-dir "$C" verify --deep

step "5. a budget: MCACHE_MAX_BYTES on pull, and one saved with gc --save"
mc_expect 0 --cache-dir "$C" unpin c
mc_expect 0 --cache-dir "$C" rm big
tick
mc_expect 0 --cache-dir "$C" pull "$U/d/d.safetensors" --name d
tick
# c (2M, least recently used) and d (1M), then e (2M): a 3M budget holds d and e, not c.
MCACHE_MAX_BYTES=3M mc_expect 0 --cache-dir "$C" pull "$U/e/e.safetensors" --name e --json
cp "$MC_STDOUT" "$MC_TMP/pull5.json"
log "pull's gc: $(json "$MC_TMP/pull5.json" 'j["gc"]')"
assert_eq "$(json "$MC_TMP/pull5.json" 'j["gc"]["removed"]["models"]')" 1 "models evicted after the pull"
assert_eq "$(json "$MC_TMP/pull5.json" 'j["gc"]["budget_met"]')" true "budget met after the pull"
assert_eq "$(ls_names)" "d e" "c (LRU) went, e (just pulled) stayed"
MCACHE_MAX_BYTES=lots mc_expect 2 --cache-dir "$C" gc
assert_one_error_line
mc_expect 0 --cache-dir "$C" gc --max-bytes 2M --save --json
assert_eq "$(json "$MC_STDOUT" '[m["name"] for m in j["evicted"]]')" '["d"]' "evicted at the saved budget"
mc_expect 0 --cache-dir "$C" gc --json
assert_eq "$(json "$MC_STDOUT" 'j["max_bytes"]')" $((2 * MIB)) "the saved budget is used"
MCACHE_MAX_BYTES=30M mc_expect 0 --cache-dir "$C" gc --json
assert_eq "$(json "$MC_STDOUT" 'j["max_bytes"]')" $((30 * MIB)) "MCACHE_MAX_BYTES overrides the saved budget"
tick
mc_expect 0 --cache-dir "$C" pull "$U/d/d.safetensors" --name d --json
assert_eq "$(json "$MC_STDOUT" 'j["gc"]["removed"]["models"]')" 1 "pull keeps to the saved budget"
assert_eq "$(ls_names)" "d" "e (LRU) went after pulling d"
mc_expect 0 --cache-dir "$C" gc --max-bytes 0 --save --json
assert_eq "$(json "$MC_STDOUT" 'j["max_bytes"]')" null "no budget after --max-bytes 0 --save"
mc_expect 2 --cache-dir "$C" gc --save
assert_one_error_line
mc_expect 2 --cache-dir "$C" gc --max-bytes 12Q
assert_one_error_line
mc_expect 0 --cache-dir "$C" verify --deep

step "6. a full disk: the pull makes room by evicting the least recently used model"
if [ "$(id -u)" -ne 0 ] || ! command -v mount >/dev/null; then
	log "not run: needs root to mount a tmpfs"
else
	FS=$MC_TMP/fs
	mkdir -p "$FS"
	if mount -t tmpfs -o size=32m,mode=0755 tmpfs "$FS"; then
		mc_at_exit "umount '$FS' 2>/dev/null || umount -l '$FS'"
		T=$FS/cache
		mc_expect 0 --cache-dir "$T" pull "$U/a/shared.safetensors" "$U/a/a.safetensors" --name a
		tick
		mc_expect 0 --cache-dir "$T" pull "$U/b/b.safetensors" "$U/c/c.safetensors" --name bc
		log "free before: $(df -B1 --output=avail "$FS" | tail -n1) bytes"
		# 24M does not fit beside 11M in 32M; without a (6M, least recently used) it does.
		mc_expect 0 --cache-dir "$T" pull "$U/big/big.safetensors" --name big
		assert_same_tree "$WWW/big" "$T/models/big" big.safetensors
		assert_eq "$(ls_names "$T")" "bc big" "models after making room"
		mc_expect 0 --cache-dir "$T" verify --deep
	else
		log "not run: cannot mount a tmpfs here"
	fi
fi
