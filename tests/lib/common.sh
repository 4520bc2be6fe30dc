# shellcheck shell=bash
# Shared helpers for mcache's shell tests (sourced; bash only).
#
# A test script does:
#   set -euo pipefail
#   . "$MCACHE_SRC/tests/lib/common.sh"      # or relative to the script
#   mc_setup                                  # temp dir, cleanup trap, MCACHE_BIN check
# and then uses mc_run / mc_expect / assert_* below. Every helper that starts a background
# process registers its own stop with mc_at_exit, and the one EXIT trap runs them all (last
# registered first), so a failing test still stops its servers. Exit codes follow CTest:
# 0 pass, 1 fail (fail "reason"), 77 skip (skip "reason").

# The source tree and the binary: CTest passes both; a direct run falls back to the checkout.
MC_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${MCACHE_SRC:=$(cd "$MC_LIB_DIR/../.." && pwd)}"
if [ -z "${MCACHE_BIN:-}" ]; then
	MCACHE_BIN=$MCACHE_SRC/build/mcache
	[ -x "$MCACHE_BIN" ] || [ ! -x "$MCACHE_SRC/build/cmd/mcache" ] || MCACHE_BIN=$MCACHE_SRC/build/cmd/mcache
fi
export MCACHE_SRC MCACHE_BIN

MC_TEST_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
MC_EXIT_HOOKS=()
MC_TMP=""
MC_SOFT_FAILED=0

# Prints a step header, so the CTest log shows how far a failing test got.
step() {
	printf '\n== %s: %s\n' "$MC_TEST_NAME" "$*"
}

log() {
	printf '   %s\n' "$*"
}

fail() {
	printf 'FAIL: %s: %s\n' "$MC_TEST_NAME" "$*" >&2
	exit 1
}

# soft CMD...: runs an assertion (assert_*, or any command) in a subshell; when it fails, the
# test goes on and fails at the end. For independent checks, so one run reports all of them.
soft() {
	if ! ("$@"); then
		MC_SOFT_FAILED=$((MC_SOFT_FAILED + 1))
	fi
}

skip() {
	printf 'SKIP: %s: %s\n' "$MC_TEST_NAME" "$*" >&2
	exit 77
}

# mc_at_exit CMD...: runs CMD (eval'd) when the test exits, in reverse order of registration.
mc_at_exit() {
	MC_EXIT_HOOKS+=("$*")
}

mc_run_exit_hooks() {
	local rc=$? i
	trap - EXIT INT TERM
	if [ "$rc" -eq 0 ] && [ "$MC_SOFT_FAILED" -gt 0 ]; then
		printf 'FAIL: %s: %d check(s) failed above\n' "$MC_TEST_NAME" "$MC_SOFT_FAILED" >&2
		rc=1
	fi
	for ((i = ${#MC_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
		eval "${MC_EXIT_HOOKS[$i]}" || true
	done
	if [ "$rc" -eq 0 ]; then
		printf '\nPASS: %s\n' "$MC_TEST_NAME"
	elif [ "$rc" -ne 77 ]; then
		printf '\n%s exited %d\n' "$MC_TEST_NAME" "$rc" >&2
	fi
	exit "$rc"
}

# mc_setup: the temp dir ($MC_TMP, world-traversable for nginx's workers), traps, the binary.
# MC_KEEP_TMP=1 keeps the temp dir for debugging.
mc_setup() {
	trap mc_run_exit_hooks EXIT
	trap 'exit 130' INT TERM
	MC_TMP=$(mktemp -d "${TMPDIR:-/tmp}/mcache-$MC_TEST_NAME.XXXXXX")
	chmod 0755 "$MC_TMP"
	if [ "${MC_KEEP_TMP:-0}" = 1 ]; then
		mc_at_exit "echo 'kept $MC_TMP' >&2"
	else
		mc_at_exit "rm -rf '$MC_TMP'"
	fi
	export MC_TMP
	[ -x "$MCACHE_BIN" ] || fail "mcache binary '$MCACHE_BIN' is missing (build first, or set MCACHE_BIN)"
	for tool in python3 cmp timeout; do
		command -v "$tool" >/dev/null || fail "'$tool' is required (run tests/deps.sh)"
	done
	# Nothing from the caller's environment may steer the binary under test.
	unset MCACHE_DIR MCACHE_WRITER SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
	export no_proxy='*' NO_PROXY='*'
	MC_STDOUT=$MC_TMP/stdout
	MC_STDERR=$MC_TMP/stderr
}

# mc_run ARGS...: runs the binary under a time bound (MC_CMD_TIMEOUT, default 300 s), stdout to
# $MC_STDOUT and stderr to $MC_STDERR; sets MC_RC and never fails by itself.
mc_run() {
	MC_RC=0
	timeout -k 5 "${MC_CMD_TIMEOUT:-300}" "$MCACHE_BIN" "$@" >"$MC_STDOUT" 2>"$MC_STDERR" || MC_RC=$?
	if [ "$MC_RC" -eq 124 ] || [ "$MC_RC" -eq 137 ]; then
		mc_show_output
		fail "mcache $* did not finish within ${MC_CMD_TIMEOUT:-300} s"
	fi
}

mc_show_output() {
	echo "--- stdout ---" >&2
	head -c 4000 "$MC_STDOUT" >&2 || true
	echo "--- stderr ---" >&2
	head -c 4000 "$MC_STDERR" >&2 || true
	echo "--------------" >&2
}

# mc_expect RC ARGS...: runs mcache and fails the test unless it exits RC.
mc_expect() {
	local want=$1
	shift
	mc_run "$@"
	if [ "$MC_RC" -ne "$want" ]; then
		mc_show_output
		fail "mcache $(mc_quote "$@") exited $MC_RC, want $want"
	fi
	log "mcache $(mc_quote "$@") -> $MC_RC"
}

# Prints ARGS for a log line, with query strings cut so secrets do not land in test logs.
mc_quote() {
	local a out=""
	for a in "$@"; do
		out+="${a%%\?*}"
		[ "$a" != "${a%%\?*}" ] && out+="?…"
		out+=" "
	done
	printf '%s' "${out% }"
}

# assert_one_error_line: $MC_STDERR is exactly one line, starting "mcache: ".
assert_one_error_line() {
	local n
	n=$(wc -l <"$MC_STDERR")
	if [ "$n" -ne 1 ] || ! head -n1 "$MC_STDERR" | grep -q '^mcache: '; then
		mc_show_output
		fail "want exactly one stderr line starting 'mcache: ', got $n line(s)"
	fi
	log "stderr: $(head -c 200 "$MC_STDERR")"
}

assert_eq() {
	[ "$1" = "$2" ] || fail "${3:-values differ}: got '$1', want '$2'"
}

assert_ge() {
	[ "$1" -ge "$2" ] || fail "${3:-value too small}: got $1, want >= $2"
}

assert_le() {
	[ "$1" -le "$2" ] || fail "${3:-value too large}: got $1, want <= $2"
}

# assert_file_lacks FILE STRING: FILE (binary or text) does not contain STRING.
assert_file_lacks() {
	if [ -e "$1" ] && grep -aqF -- "$2" "$1"; then
		fail "'$1' contains '$2'"
	fi
}

# assert_same_tree SRC_DIR DST_DIR FILE...: each FILE is byte-identical in both.
assert_same_tree() {
	local src=$1 dst=$2 f
	shift 2
	for f in "$@"; do
		[ -f "$dst/$f" ] || fail "'$dst/$f' is missing"
		cmp -s "$src/$f" "$dst/$f" || fail "'$dst/$f' differs from the origin's '$src/$f'"
	done
	log "$# files byte-identical under $dst"
}

# json FILE PYEXPR: evaluates PYEXPR with `j` bound to FILE's parsed JSON and prints the
# result (JSON for containers, plain text for scalars). Fails the test when FILE is not JSON.
json() {
	python3 - "$1" "$2" <<'PY' || fail "cannot evaluate '$2' on the JSON in '$1'"
import json, sys
with open(sys.argv[1]) as f:
    text = f.read()
try:
    j = json.loads(text)
except ValueError as e:
    sys.exit("not JSON (%s): %r" % (e, text[:300]))
r = eval(sys.argv[2], {"j": j, "len": len, "sum": sum, "any": any, "all": all})
if isinstance(r, bool):
    print("true" if r else "false")
elif isinstance(r, (dict, list)):
    print(json.dumps(r))
elif r is None:
    print("null")
else:
    print(r)
PY
}

# file_size PATH: bytes.
file_size() {
	stat -c %s "$1"
}

# gen_model DIR SIZE SHARDS SEED: a sharded safetensors model (see gen_safetensors.py).
gen_model() {
	python3 "$MC_LIB_DIR/gen_safetensors.py" model "$1" --size "$2" --shards "$3" --seed "$4" >/dev/null ||
		fail "cannot generate the fixture in '$1'"
}

# json_find FILE KEY: the first value of KEY anywhere in FILE's JSON (depth-first), or nothing
# when no object has that key. For fields whose nesting the output format may still move.
json_find() {
	python3 - "$1" "$2" <<'PY' || fail "'$1' is not JSON"
import json, sys
def walk(x):
    if isinstance(x, dict):
        if sys.argv[2] in x:
            return True, x[sys.argv[2]]
        x = list(x.values())
    if isinstance(x, list):
        for v in x:
            found, val = walk(v)
            if found:
                return True, val
    return False, None
with open(sys.argv[1]) as f:
    found, val = walk(json.load(f))
if found:
    print(json.dumps(val) if isinstance(val, (dict, list, bool)) or val is None else val)
PY
}

# json_objects_with FILE KEY: every object anywhere in FILE's JSON that has KEY, one JSON
# object a line (e.g. the findings of verify --json, whatever they are nested in).
json_objects_with() {
	python3 - "$1" "$2" <<'PY' || fail "'$1' is not JSON"
import json, sys
def walk(x):
    if isinstance(x, dict):
        if sys.argv[2] in x:
            print(json.dumps(x, sort_keys=True))
        for v in x.values():
            walk(v)
    elif isinstance(x, list):
        for v in x:
            walk(v)
with open(sys.argv[1]) as f:
    walk(json.load(f))
PY
}

# ls_model FILE NAME: the object for model NAME from `ls --json` output in FILE, or fails.
ls_model() {
	python3 - "$1" "$2" <<'PY' || fail "model '$2' is not in the ls --json output"
import json, sys
with open(sys.argv[1]) as f:
    j = json.load(f)
models = j["models"] if isinstance(j, dict) else j
for m in models:
    if m.get("name") == sys.argv[2]:
        print(json.dumps(m, sort_keys=True))
        sys.exit(0)
sys.exit("no model %r among %r" % (sys.argv[2], [m.get("name") for m in models]))
PY
}

# blob_of CACHE PATH: the blob under CACHE/blobs that PATH (a file in a tree) is a hard link of.
blob_of() {
	local ino b
	ino=$(stat -L -c %i "$2")
	b=$(find "$1/blobs" -type f -inum "$ino" | head -n1)
	[ -n "$b" ] || fail "'$2' is not a hard link of any blob under '$1/blobs'"
	printf '%s\n' "$b"
}

# files_bytes DIR FILE...: total size of the named files.
files_bytes() {
	local d=$1 f t=0
	shift
	for f in "$@"; do
		t=$((t + $(stat -c %s "$d/$f")))
	done
	echo "$t"
}
