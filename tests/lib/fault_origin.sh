# shellcheck shell=bash
# The scripted misbehaving origin (tests/lib/fault_origin.py) for the fault tests (sourced after
# common.sh).
#
#   fault_start ROOT        serves ROOT on 127.0.0.1; sets FAULT_URL (http://127.0.0.1:PORT) and
#                           FAULT_LOG (one JSON line per request); registers fault_stop
#   fault_stop              stops it by PID (idempotent)
#   fault_reset             forgets request counts and flipped files (GET /__reset)
#   fault_url SPEC FILE     prints the URL of FILE served with the faults in SPEC
#                           (e.g. "at=8388608,reset=1500000,times=1"; SPEC is percent-encoded)
#   fault_log_mark          prints the number of requests logged so far
#   fault_log MARK PYEXPR   evaluates PYEXPR over the requests logged after MARK, bound to `r`
#                           (a list of dicts: path, range, start, status, bytes, t, t_end,
#                           fault, aborted), and prints the result (JSON for containers)
#   fault_log_now MARK PYEXPR   the same without waiting (after a fault_log_settle)
# The origin logs a request when it ends; fault_log waits until the log stops growing.

FAULT_PID=""

fault_start() {
	local root out port
	root=$(cd "$1" && pwd) || fail "fault origin root '$1' does not exist"
	FAULT_DIR=$MC_TMP/fault-origin
	mkdir -p "$FAULT_DIR"
	FAULT_LOG=$FAULT_DIR/requests.jsonl
	: >"$FAULT_LOG"
	out=$FAULT_DIR/stdout
	python3 "$MC_LIB_DIR/fault_origin.py" --root "$root" --log "$FAULT_LOG" \
		>"$out" 2>"$FAULT_DIR/stderr" &
	FAULT_PID=$!
	mc_at_exit fault_stop
	for _ in $(seq 100); do
		port=$(sed -n 's/^PORT \([0-9]*\)$/\1/p' "$out")
		[ -n "$port" ] && break
		kill -0 "$FAULT_PID" 2>/dev/null || fail "the fault origin died: $(tail -n5 "$FAULT_DIR/stderr")"
		sleep 0.05
	done
	[ -n "$port" ] || fail "the fault origin did not start within 5 s"
	FAULT_URL="http://127.0.0.1:$port"
	export FAULT_URL FAULT_LOG
	log "fault origin pid $FAULT_PID on $FAULT_URL serving $root"
}

fault_stop() {
	local pid=$FAULT_PID
	[ -n "$pid" ] || return 0
	FAULT_PID=""
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

fault_reset() {
	curl -sf --max-time 5 "$FAULT_URL/__reset" >/dev/null || fail "the fault origin does not answer /__reset"
}

fault_url() {
	local spec
	spec=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="=,"))' "$1")
	printf '%s/f/%s/%s\n' "$FAULT_URL" "$spec" "$2"
}

# Waits until the log stops growing (a request is logged when its response ends).
fault_log_settle() {
	local a b
	b=$(wc -l <"$FAULT_LOG")
	while :; do
		sleep 0.15
		a=$(wc -l <"$FAULT_LOG")
		[ "$a" = "$b" ] && return 0
		b=$a
	done
}

fault_log_mark() {
	fault_log_settle
	wc -l <"$FAULT_LOG"
}

fault_log() {
	fault_log_settle
	fault_log_now "$@"
}

fault_log_now() {
	python3 - "$FAULT_LOG" "$1" "$2" <<'PY' || fail "cannot evaluate '$2' on the fault origin's log"
import json, sys
r = []
with open(sys.argv[1]) as f:
    for line in f.read().splitlines()[int(sys.argv[2]):]:
        x = json.loads(line)
        if x["path"] == "/__reset":
            continue
        a = x["range"].partition("=")[2].partition("-")[0]
        x["start"] = int(a) if a.isdigit() else None
        r.append(x)
v = eval(sys.argv[3], {"r": r, "len": len, "sum": sum, "any": any, "all": all, "min": min,
                       "max": max, "sorted": sorted, "round": round})
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (dict, list)):
    print(json.dumps(v))
else:
    print(v)
PY
}
