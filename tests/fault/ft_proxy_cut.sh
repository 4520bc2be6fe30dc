#!/usr/bin/env bash
# Issue 3, items 2 and 7: nginx behind a proxy that closes every connection cleanly after N
# bytes (socat readbytes=N, as in ../shared/notes/test-servers.md "Faults"). Each connection
# carries at most N bytes, so most ranges arrive short and must be retried on a fresh connection
# from their last whole block. The pull still completes byte-identical; nginx's log shows the
# re-requested ranges and the bytes it sent stay within the model plus the cut ranges.
# Then a proxy that cuts every connection inside the headers: retries are bounded (--retries 2),
# the pull fails with exit 3 and one line, in bounded time, and nothing is published.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup
command -v socat >/dev/null || fail "socat is not installed (run tests/deps.sh)"

MIB=1048576
CHUNK=$((4 * MIB))
CUT=$((3 * MIB + MIB / 2)) # bytes per connection, headers included
WWW=$MC_TMP/www
step "fixture: 2 x 16 MiB shards, served by nginx behind a connection-cutting socat"
gen_model "$WWW/m" 32M 2 11
mapfile -t FILES < <(cd "$WWW/m" && ls)
TOTAL=$(files_bytes "$WWW/m" "${FILES[@]}")
nginx_start "$WWW"

SOCAT_PIDS=()
socat_stop() {
	local p
	for p in "${SOCAT_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	SOCAT_PIDS=()
}
mc_at_exit socat_stop

# proxy_start BYTES: socat on a free port in front of nginx, each connection cut after BYTES
# read from nginx; sets PROXY_URL.
proxy_start() {
	local port pid
	port=$(nginx_free_port)
	socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
		"TCP:127.0.0.1:$NGINX_PORT,readbytes=$1" 2>"$MC_TMP/socat-$port.log" &
	pid=$!
	SOCAT_PIDS+=("$pid")
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || fail "socat died: $(cat "$MC_TMP/socat-$port.log")"
		if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; then
			PROXY_URL="http://127.0.0.1:$port"
			log "socat pid $pid on $PROXY_URL -> nginx, $1 bytes per connection"
			return 0
		fi
		sleep 0.05
	done
	fail "socat did not listen on $port"
}

proxy_start "$CUT"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$PROXY_URL/m/$f"); done
# The readiness probe above opened a connection of its own: nginx logs nothing for it.
MARK=$(nginx_log_mark)
step "pull through the proxy: every connection ends after $CUT bytes"
C=$MC_TMP/cache
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name cut --chunk-size 4M --connections 4
assert_same_tree "$WWW/m" "$C/models/cut" "${FILES[@]}"
mc_expect 0 --cache-dir "$C" verify --deep
nginx_log_summary "$MARK" >"$MC_TMP/log.json"

python3 - "$MC_TMP/log.json" "$CHUNK" "$TOTAL" "$WWW/m" <<'PY' >"$MC_TMP/check.json" || fail "cannot analyse the log"
import json, os, sys
j = json.load(open(sys.argv[1]))
chunk, total, root = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = {"requests": j["requests"], "bytes": j["bytes"], "resumed": [], "uncovered": []}
for uri, u in j["per_uri"].items():
    size = os.path.getsize(os.path.join(root, os.path.basename(uri)))
    spans = []
    for rg in u["ranges"]:
        a, _, b = rg.partition("=")[2].partition("-")
        a, b = int(a), (int(b) + 1 if b else size)
        spans.append((a, min(b, size)))
        if a % chunk:
            out["resumed"].append("%s %s" % (os.path.basename(uri), rg))
    pos = 0
    for a, b in sorted(spans):
        if a > pos:
            break
        pos = max(pos, b)
    if pos < size and size > 0 and spans:
        out["uncovered"].append(uri)
print(json.dumps(out))
PY
log "nginx: $(json "$MC_TMP/log.json" '{k: j[k] for k in ("requests", "by_status", "bytes", "connections")}')"
log "re-requested ranges (not on a chunk boundary): $(json "$MC_TMP/check.json" 'j["resumed"]')"
NRES=$(json "$MC_TMP/check.json" 'len(j["resumed"])')
# 8 chunks of 4 MiB, each longer than one connection carries: every one is cut at least once.
assert_ge "$NRES" 8 "ranges re-requested from a kept block after a cut"
assert_eq "$(json "$MC_TMP/check.json" 'j["uncovered"]')" "[]" "files whose requested ranges leave a gap"
NREQ=$(json "$MC_TMP/log.json" 'j["requests"]')
BYTES=$(json "$MC_TMP/log.json" 'j["bytes"]')
NFILES=${#FILES[@]}
# Requests beyond one per chunk (and one per small file) are retries; each may waste up to a
# chunk (nginx counts what it wrote into the socket, which may exceed what socat forwarded).
MINREQ=$((TOTAL / CHUNK + NFILES))
LIMIT=$((TOTAL + TOTAL / 20 + (NREQ > MINREQ ? NREQ - MINREQ : 0) * CHUNK))
log "origin sent $BYTES bytes for a $TOTAL-byte model ($(python3 -c "print(round($BYTES / $TOTAL, 3))")x) in $NREQ requests; limit $LIMIT"
assert_le "$BYTES" "$LIMIT" "bytes nginx sent through the cutting proxy"

step "a proxy that cuts every connection inside the headers: bounded retries, exit 3"
proxy_start 100
MARK=$(nginx_log_mark)
T0=$(date +%s)
mc_expect 3 --cache-dir "$C" pull "$PROXY_URL/m/${FILES[1]}" --name never --retries 2
assert_one_error_line
grep -q '3 tries' "$MC_STDERR" || fail "the error does not name the 3 tries: $(cat "$MC_STDERR")"
ELAPSED=$(($(date +%s) - T0))
assert_le "$ELAPSED" 20 "seconds to give up after --retries 2"
[ ! -e "$C/models/never" ] || fail "a failed pull published models/never"
assert_eq "$(nginx_log_summary "$MARK" | python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])')" 3 \
	"requests nginx saw for one range tried 3 times"
step "the model pulled before is intact"
mc_expect 0 --cache-dir "$C" verify --deep
assert_same_tree "$WWW/m" "$C/models/cut" "${FILES[@]}"
