#!/usr/bin/env bash
# Issue 6, `mcache init` as the drop-in init container of the seed article:
#  - the seed scenario: only MODEL_URL (a presigned-style query string) set, target /models (the
#    literal default path, bind-mounted in a private mount namespace): cold, then warm; the
#    origin log proves the warm run fetched no body (one 304), MCACHE_OFFLINE=1 sends nothing;
#    a partial model.safetensors left by a killed wget is replaced, never accepted;
#  - every stderr line is a JSON object with time, level and msg; the termination message says
#    "ready" (success) or the exit status and a one-line cause (failure); exit codes 2 (config),
#    3 (origin), 130 (SIGTERM mid-download, within 5 s);
#  - manifest mode (two models, a file list and include patterns): $MCACHE_TARGET/NAME/ trees of
#    hard links, in place on a warm run, swapped whole when the origin changes;
#  - a target on another filesystem (tmpfs /dev/shm): copies, byte-identical, not links;
#  - --dry-run and MCACHE_DRY_RUN: what would happen, no request, nothing written;
#  - the presigned query string appears in no output, no termination message and nowhere under
#    the cache or the target.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

[ "$(id -u)" -eq 0 ] || fail "it_init needs root (the literal /models target); CI runs as root"
command -v unshare >/dev/null || fail "unshare (util-linux) is required"
unset MODEL_URL MODEL_FILE MCACHE_TARGET MCACHE_MANIFEST MCACHE_OFFLINE MCACHE_DRY_RUN
unset MCACHE_MODEL_NAME MCACHE_TERMINATION_LOG MCACHE_CONNECTIONS MCACHE_MAX_RATE

SECRET=X-Amz-Signature=feedface0123456789
WWW=$MC_TMP/www
OUTS=$MC_TMP/outs
mkdir -p "$OUTS"
step "fixture: one 48 MiB safetensors file, and a 3-shard model"
mkdir -p "$WWW/seed"
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$WWW/seed/model.safetensors" --size 48M --seed 71 >/dev/null
gen_model "$WWW/multi" 24M 3 72
mapfile -t MFILES < <(cd "$WWW/multi" && ls)
nginx_start "$WWW"
URL="$NGINX_URL/seed/model.safetensors?$SECRET&X-Amz-Credential=AKIAEXAMPLE%2F20261125"

# init_run RC ENV...: runs `mcache init` with the given environment (and nothing else from the
# caller's), stdout/stderr/termination message saved for the secret check at the end.
TERM_LOG=$MC_TMP/termination-log
init_run() {
	local want=$1
	shift
	: >"$TERM_LOG"
	MC_RC=0
	env -i PATH="$PATH" MCACHE_TERMINATION_LOG="$TERM_LOG" "$@" \
		timeout -k 5 120 "$MCACHE_BIN" init >"$MC_STDOUT" 2>"$MC_STDERR" || MC_RC=$?
	cat "$MC_STDOUT" "$MC_STDERR" "$TERM_LOG" >>"$OUTS/all"
	if [ "$MC_RC" -ne "$want" ]; then
		mc_show_output
		fail "mcache init exited $MC_RC, want $want"
	fi
	python3 - "$MC_STDERR" <<'PY' || fail "stderr is not JSON lines: $(head -c 400 "$MC_STDERR")"
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    assert isinstance(o, dict) and {"time", "level", "msg"} <= set(o), line
PY
}
log_field() { # log_field MSG FIELD: FIELD of the last stderr line whose msg is MSG
	python3 - "$MC_STDERR" "$1" "$2" <<'PY'
import json, sys
v = None
for line in open(sys.argv[1]):
    o = json.loads(line)
    if o["msg"] == sys.argv[2]:
        v = o.get(sys.argv[3])
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)
PY
}

step "seed scenario, cold: only MODEL_URL, the literal /models target"
# A pod's view: /models is its volume. Where the machine has no /models (CI), this test
# makes it, runs init there with no target set at all, and removes it at exit. Where one
# exists, the run gets a private mount namespace with a temp directory bind-mounted on it
# (unshare needs / to be a mount point: not inside a chroot).
if [ ! -e /models ]; then
	mkdir /models
	mc_at_exit "rm -rf /models"
	HOSTMODELS=/models
	SEED_NS=0
else
	HOSTMODELS=$MC_TMP/models
	mkdir -p "$HOSTMODELS"
	SEED_NS=1
fi
seed_init() {
	local want=$1
	shift
	: >"$TERM_LOG"
	MC_RC=0
	if [ "$SEED_NS" = 1 ]; then
		env -i PATH="$PATH" MODEL_URL="$URL" MCACHE_TERMINATION_LOG="$TERM_LOG" "$@" \
			unshare --mount --propagation private sh -c \
			'mount --bind "$1" /models && exec timeout -k 5 120 "$2" init' sh "$HOSTMODELS" \
			"$MCACHE_BIN" >"$MC_STDOUT" 2>"$MC_STDERR" || MC_RC=$?
	else
		env -i PATH="$PATH" MODEL_URL="$URL" MCACHE_TERMINATION_LOG="$TERM_LOG" "$@" \
			timeout -k 5 120 "$MCACHE_BIN" init >"$MC_STDOUT" 2>"$MC_STDERR" || MC_RC=$?
	fi
	cat "$MC_STDOUT" "$MC_STDERR" "$TERM_LOG" >>"$OUTS/all"
	[ "$MC_RC" -eq "$want" ] || { mc_show_output; fail "seed init exited $MC_RC, want $want"; }
}
MARK=$(nginx_log_mark)
seed_init 0
cmp -s "$WWW/seed/model.safetensors" "$HOSTMODELS/model.safetensors" ||
	fail "/models/model.safetensors differs from the origin's"
[ -d "$HOSTMODELS/.mcache/blobs" ] || fail "the cache is not in /models/.mcache"
grep -q "ready" "$TERM_LOG" || fail "termination message: $(cat "$TERM_LOG")"
nginx_log_summary "$MARK" >"$MC_TMP/cold.json"
assert_ge "$(json "$MC_TMP/cold.json" 'j["bytes"]')" "$(file_size "$WWW/seed/model.safetensors")" "bytes of the cold run"
assert_eq "$(stat -c %h "$HOSTMODELS/model.safetensors")" 3 "links of the target file (blob, tree, target)"
log "termination message: $(cat "$TERM_LOG")"

step "seed scenario, warm: one conditional request, no body"
MARK=$(nginx_log_mark)
seed_init 0
nginx_log_summary "$MARK" >"$MC_TMP/warm.json"
assert_eq "$(json "$MC_TMP/warm.json" 'j["bytes"]')" 0 "body bytes of the warm run"
assert_eq "$(json "$MC_TMP/warm.json" 'j["by_status"]')" '{"304": 1}' "responses of the warm run"
log "warm run: $(grep -o '"duration_ms":[0-9]*' "$MC_STDERR" | tail -n1) (measured by the run itself)"
MARK=$(nginx_log_mark)
seed_init 0 MCACHE_OFFLINE=1
nginx_log_summary "$MARK" >"$MC_TMP/offline.json"
assert_eq "$(json "$MC_TMP/offline.json" 'j["requests"]')" 0 "requests of a warm MCACHE_OFFLINE=1 run"

step "a partial model.safetensors (a killed wget) is replaced, never accepted"
rm -f "$HOSTMODELS/model.safetensors"
head -c 1000000 "$WWW/seed/model.safetensors" >"$HOSTMODELS/model.safetensors"
seed_init 0
cmp -s "$WWW/seed/model.safetensors" "$HOSTMODELS/model.safetensors" ||
	fail "the partial file was accepted"
assert_eq "$(log_field "model ready" materialised)" "hard link" "how the file was placed"

C=$MC_TMP/cache
T=$MC_TMP/target
step "configuration errors: exit 2, one JSON error line, a termination message"
init_run 2 MCACHE_TARGET="$T" MCACHE_DIR="$C"
grep -q 'MODEL_URL' "$MC_STDERR" || fail "the error does not name MODEL_URL"
grep -q 'failed (exit 2)' "$TERM_LOG" || fail "termination message: $(cat "$TERM_LOG")"
init_run 2 MODEL_URL="$URL" MCACHE_MANIFEST=/nonexistent MCACHE_TARGET="$T"
init_run 2 MODEL_URL="$URL" MODEL_FILE=../escape MCACHE_TARGET="$T"
init_run 2 MODEL_URL="$URL" MCACHE_OFFLINE=maybe MCACHE_TARGET="$T"
[ ! -e "$MC_TMP/escape" ] || fail "MODEL_FILE=../escape wrote outside the target"

step "an origin error: exit 3, the cause in the termination message, nothing placed"
init_run 3 MODEL_URL="$NGINX_URL/seed/missing.safetensors?$SECRET" MCACHE_TARGET="$T" MCACHE_DIR="$C"
grep -q 'failed (exit 3)' "$TERM_LOG" || fail "termination message: $(cat "$TERM_LOG")"
grep -q '404' "$TERM_LOG" || fail "the termination message does not say 404: $(cat "$TERM_LOG")"
[ ! -e "$T/model.safetensors" ] || fail "a failed init placed a file"

step "SIGTERM mid-download (pod deletion): exit 130 within 5 s, termination message says so"
: >"$TERM_LOG"
env -i PATH="$PATH" MODEL_URL="$NGINX_URL/rate/seed/model.safetensors?rate=2m&$SECRET" \
	MCACHE_TARGET="$MC_TMP/t-term" MCACHE_DIR="$MC_TMP/c-term" MCACHE_TERMINATION_LOG="$TERM_LOG" \
	"$MCACHE_BIN" init >"$MC_STDOUT" 2>"$MC_STDERR" &
PID=$!
mc_at_exit "kill -KILL $PID 2>/dev/null || true"
sleep 1.5
T0=$(date +%s%N)
kill -TERM "$PID"
RC=0
wait "$PID" || RC=$?
MS=$((($(date +%s%N) - T0) / 1000000))
cat "$MC_STDERR" "$TERM_LOG" >>"$OUTS/all"
assert_eq "$RC" 130 "exit status after SIGTERM"
assert_le "$MS" 5000 "milliseconds from SIGTERM to exit"
grep -q 'failed (exit 130)' "$TERM_LOG" || fail "termination message after SIGTERM: $(cat "$TERM_LOG")"
[ ! -e "$MC_TMP/t-term/model.safetensors" ] || fail "an interrupted init placed a file"

step "manifest mode: two models into \$MCACHE_TARGET/NAME/"
cat >"$MC_TMP/models.yaml" <<YAML
models:
  - name: seed
    uri: "$NGINX_URL/seed/model.safetensors?$SECRET"
  - name: multi
    priority: 5
    pin: true
    uri:
$(for f in "${MFILES[@]}"; do printf '      - "%s"\n' "$NGINX_URL/multi/$f"; done)
    include: ["*.safetensors", "*.json"]
YAML
init_run 0 MCACHE_MANIFEST="$MC_TMP/models.yaml" MCACHE_TARGET="$T" MCACHE_DIR="$C"
assert_same_tree "$WWW/multi" "$T/multi" "${MFILES[@]}"
cmp -s "$WWW/seed/model.safetensors" "$T/seed/model.safetensors" || fail "$T/seed/model.safetensors differs"
assert_eq "$(python3 -c 'import json,sys; print([json.loads(l)["model"] for l in open(sys.argv[1]) if "model ready" in l])' "$MC_STDERR")" \
	"['multi', 'seed']" "models in priority order"
mc_expect 0 --cache-dir "$C" --json ls
assert_eq "$(ls_model "$MC_STDOUT" multi | python3 -c 'import json,sys; print(json.load(sys.stdin)["pinned"])')" True "multi pinned by the manifest"
INO=$(stat -c %i "$T/multi/${MFILES[0]}")
MARK=$(nginx_log_mark)
init_run 0 MCACHE_MANIFEST="$MC_TMP/models.yaml" MCACHE_TARGET="$T" MCACHE_DIR="$C"
assert_eq "$(stat -c %i "$T/multi/${MFILES[0]}")" "$INO" "inode of a file in place after a warm run"
nginx_log_summary "$MARK" >"$MC_TMP/m-warm.json"
assert_eq "$(json "$MC_TMP/m-warm.json" 'j["bytes"]')" 0 "body bytes of a warm manifest run"
step "manifest mode: a changed origin file swaps the model's tree whole"
S=${MFILES[1]}
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$WWW/multi/$S" --size "$(file_size "$WWW/multi/$S")" --seed changed >/dev/null
touch -d "@$(($(date +%s) + 10))" "$WWW/multi/$S"
init_run 0 MCACHE_MANIFEST="$MC_TMP/models.yaml" MCACHE_TARGET="$T" MCACHE_DIR="$C"
assert_same_tree "$WWW/multi" "$T/multi" "${MFILES[@]}"
[ -z "$(find "$T" -maxdepth 1 -name '.*.mcache-*.tmp')" ] || fail "temp trees left in the target"
init_run 2 MCACHE_MANIFEST="$MC_TMP/models.yaml.missing" MCACHE_TARGET="$T" MCACHE_DIR="$C"
printf 'models:\n  - name: x\n    url: http://a/b\n' >"$MC_TMP/bad.yaml"
init_run 2 MCACHE_MANIFEST="$MC_TMP/bad.yaml" MCACHE_TARGET="$T" MCACHE_DIR="$C"
grep -q "line 3" "$MC_STDERR" || fail "the manifest error does not name its line: $(cat "$MC_STDERR")"

step "a target on another filesystem (tmpfs): copies, byte-identical"
SHM=$(mktemp -d /dev/shm/mcache-it-init.XXXXXX)
mc_at_exit "rm -rf '$SHM'"
[ "$(stat -f -c %T "$SHM")" = tmpfs ] || fail "/dev/shm is not a tmpfs here"
init_run 0 MODEL_URL="$URL" MCACHE_TARGET="$SHM" MCACHE_DIR="$C"
cmp -s "$WWW/seed/model.safetensors" "$SHM/model.safetensors" || fail "the copy differs"
assert_eq "$(log_field "model ready" materialised)" copy "how the file was placed on tmpfs"
assert_eq "$(stat -c %h "$SHM/model.safetensors")" 1 "links of a copied file"
init_run 0 MCACHE_MANIFEST="$MC_TMP/models.yaml" MCACHE_TARGET="$SHM" MCACHE_DIR="$C"
assert_same_tree "$WWW/multi" "$SHM/multi" "${MFILES[@]}"

step "--dry-run and MCACHE_DRY_RUN: no request, nothing written"
MARK=$(nginx_log_mark)
init_run 0 MODEL_URL="$URL" MCACHE_TARGET="$MC_TMP/t-dry" MCACHE_DIR="$MC_TMP/c-dry" MCACHE_DRY_RUN=1
grep -q 'pull' "$MC_STDOUT" || fail "the dry run does not say it would pull: $(cat "$MC_STDOUT")"
[ ! -e "$MC_TMP/t-dry" ] && [ ! -e "$MC_TMP/c-dry" ] || fail "a dry run created the target or the cache"
init_run 0 MCACHE_MANIFEST="$MC_TMP/models.yaml" MCACHE_TARGET="$T" MCACHE_DIR="$C" MCACHE_DRY_RUN=1
grep -q '^cached multi' "$MC_STDOUT" || fail "the dry run does not see multi cached: $(cat "$MC_STDOUT")"
nginx_log_summary "$MARK" >"$MC_TMP/dry.json"
assert_eq "$(json "$MC_TMP/dry.json" 'j["requests"]')" 0 "requests of dry runs"

step "the cache is intact; the secret is nowhere"
mc_expect 0 --cache-dir "$C" verify --deep
mc_expect 0 --cache-dir "$HOSTMODELS/.mcache" verify --deep
assert_file_lacks "$OUTS/all" feedface0123456789
assert_file_lacks "$OUTS/all" AKIAEXAMPLE
for d in "$C" "$T" "$HOSTMODELS" "$SHM"; do
	if grep -raqF feedface0123456789 "$d"; then
		fail "the presigned signature is stored under '$d'"
	fi
done
log "secret absent from $(wc -l <"$OUTS/all") lines of output and from the cache and targets"
