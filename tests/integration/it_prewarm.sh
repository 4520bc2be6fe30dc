#!/usr/bin/env bash
# Issue 7, prewarm: `mcache prewarm MANIFEST` against a real nginx.
#  - three models by priority, one failing (404): exit 3, the other two ready (byte-identical),
#    pulled highest priority first (the origin's log order), `pin: true` honoured, the failure
#    reported per model; --json: JSON lines on stderr, one summary document on stdout;
#  - not a terminal: no carriage returns or escape codes; on a terminal (script(1)): redraws
#    in place; -q: nothing on stderr for a good manifest;
#  - a warm second pass fetches no body; '-' reads the manifest from stdin;
#  - --max-rate caps the whole prewarm (a lower bound on time only);
#  - a bad manifest: exit 2 naming its line, nothing pulled;
#  - --watch 1s repeats passes until SIGTERM, which between passes exits 0 at once.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
step "fixture: models a (2 x 12 MiB) and b (3 x 4 MiB)"
gen_model "$WWW/a" 24M 2 81
gen_model "$WWW/b" 12M 3 82
mapfile -t AF < <(cd "$WWW/a" && ls)
mapfile -t BF < <(cd "$WWW/b" && ls)
nginx_start "$WWW"
list() { # list DIR FILE...: YAML list items of the URLs
	local d=$1 f
	shift
	for f in "$@"; do printf '      - "%s/%s/%s"\n' "$NGINX_URL" "$d" "$f"; done
}
cat >"$MC_TMP/m.yaml" <<YAML
# low priority first in the file: prewarm reorders
models:
  - name: low-b
    uri:
$(list b "${BF[@]}")
  - name: broken
    priority: 5
    uri: "$NGINX_URL/nope/missing.safetensors"
  - name: top-a
    priority: 10
    pin: true
    uri:
$(list a "${AF[@]}")
YAML

step "three models, one failing: exit 3, the others ready, by priority"
MARK=$(nginx_log_mark)
mc_expect 3 --cache-dir "$C" prewarm "$MC_TMP/m.yaml"
assert_same_tree "$WWW/a" "$C/models/top-a" "${AF[@]}"
assert_same_tree "$WWW/b" "$C/models/low-b" "${BF[@]}"
grep -q '^FAILED  broken (exit 3): HTTP 404' "$MC_STDOUT" || fail "no failure line for broken: $(cat "$MC_STDOUT")"
grep -q '^ok      top-a: .*pinned' "$MC_STDOUT" || fail "top-a not reported pinned"
if grep -q "$(printf '\r')" "$MC_STDERR" || grep -q "$(printf '\033')" "$MC_STDERR"; then
	fail "redraws on a non-terminal stderr"
fi
nginx_settle() { nginx_log_summary "$MARK" >/dev/null; }
nginx_settle
ORDER=$(python3 - "$NGINX_JSONLOG" "$MARK" <<'PY'
import json, sys
seen = []
for line in open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]:
    d = json.loads(line)["uri"].split("/")[1]
    if d not in seen:
        seen.append(d)
print(" ".join(seen))
PY
)
assert_eq "$ORDER" "a nope b" "origin directories in the order first requested"
mc_expect 0 --cache-dir "$C" --json ls
assert_eq "$(ls_model "$MC_STDOUT" top-a | python3 -c 'import json,sys; print(json.load(sys.stdin)["pinned"])')" True "top-a pinned"
assert_eq "$(ls_model "$MC_STDOUT" low-b | python3 -c 'import json,sys; print(json.load(sys.stdin)["pinned"])')" False "low-b not pinned"

step "--json: JSON lines on stderr, one document on stdout"
mc_expect 3 --cache-dir "$C" --json prewarm "$MC_TMP/m.yaml"
assert_eq "$(json "$MC_STDOUT" '[m["name"] + ":" + m["status"] for m in j["models"]]')" \
	'["top-a:ok", "broken:failed", "low-b:ok"]' "summary models"
assert_eq "$(json "$MC_STDOUT" '[j["ok"], j["failed"]]')" '[2, 1]' "ok and failed counts"
assert_eq "$(json "$MC_STDOUT" 'sum(m.get("bytes_fetched", 0) for m in j["models"])')" 0 "bytes fetched by a warm pass"
python3 - "$MC_STDERR" <<'PY' || fail "stderr is not JSON lines: $(head -c 300 "$MC_STDERR")"
import json, sys
events = [json.loads(l)["event"] for l in open(sys.argv[1])]
assert events == ["ready", "failed", "ready"], events
PY

step "-q is silent for a good manifest; '-' reads standard input"
grep -v -e 'broken' -e 'missing' "$MC_TMP/m.yaml" | sed '/priority: 5/d' >"$MC_TMP/good.yaml"
MC_RC=0
"$MCACHE_BIN" --cache-dir "$C" -q prewarm - <"$MC_TMP/good.yaml" >"$MC_STDOUT" 2>"$MC_STDERR" || MC_RC=$?
assert_eq "$MC_RC" 0 "exit of a quiet prewarm from stdin"
assert_eq "$(wc -c <"$MC_STDERR")" 0 "stderr bytes with -q"

step "on a terminal: the display is redrawn in place"
command -v script >/dev/null || fail "script(1) (bsdutils) is required"
script -qec "$(printf '%q ' "$MCACHE_BIN" --cache-dir "$MC_TMP/c-tty" prewarm "$MC_TMP/good.yaml")" /dev/null >"$MC_TMP/tty.out" 2>&1 ||
	fail "prewarm on a terminal failed: $(tail -c 400 "$MC_TMP/tty.out")"
grep -q "$(printf '\033\\[2K')" "$MC_TMP/tty.out" || fail "no in-place redraw on a terminal"
grep -q 'prewarm: 2/2 models ready' "$MC_TMP/tty.out" || fail "no total line on a terminal"

step "--max-rate caps the whole prewarm"
T0=$(date +%s%N)
mc_expect 0 --cache-dir "$MC_TMP/c-rate" prewarm "$MC_TMP/good.yaml" --max-rate 12M --connections 4
MS=$((($(date +%s%N) - T0) / 1000000))
TOTAL=$(($(files_bytes "$WWW/a" "${AF[@]}") + $(files_bytes "$WWW/b" "${BF[@]}")))
log "$TOTAL bytes at --max-rate 12M in $MS ms"
assert_ge "$MS" $((TOTAL * 1000 / (12 * 1048576) * 8 / 10)) "milliseconds for the capped prewarm (lower bound)"

step "a bad manifest: exit 2 naming the line, nothing pulled"
printf 'models:\n  - name: x\n    uri: http://127.0.0.1:1/x\n    pinned: true\n' >"$MC_TMP/bad.yaml"
mc_expect 2 --cache-dir "$MC_TMP/c-bad" prewarm "$MC_TMP/bad.yaml"
assert_one_error_line
grep -q "line 4: unknown key 'pinned'" "$MC_STDERR" || fail "message: $(cat "$MC_STDERR")"
mc_expect 2 --cache-dir "$MC_TMP/c-bad" prewarm "$MC_TMP/good.yaml" --watch 0s
mc_expect 2 --cache-dir "$MC_TMP/c-bad" prewarm - --watch 10s </dev/null

step "--watch 1s: passes repeat until SIGTERM, which exits 0 between passes"
"$MCACHE_BIN" --cache-dir "$C" --json prewarm "$MC_TMP/good.yaml" --watch 1s >"$MC_TMP/watch.out" 2>"$MC_TMP/watch.err" &
PID=$!
mc_at_exit "kill -KILL $PID 2>/dev/null || true"
for _ in $(seq 100); do
	[ "$(wc -l <"$MC_TMP/watch.out")" -ge 2 ] && break
	sleep 0.1
done
assert_ge "$(wc -l <"$MC_TMP/watch.out")" 2 "passes written by --watch"
sleep 0.3
kill -TERM "$PID"
RC=0
wait "$PID" || RC=$?
assert_eq "$RC" 0 "exit status after SIGTERM between passes"
mc_expect 0 --cache-dir "$C" verify --deep
