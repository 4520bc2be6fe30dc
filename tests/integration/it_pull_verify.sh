#!/usr/bin/env bash
# Pull a 4-shard safetensors model (4 x 40 MiB + JSON) from a local nginx with 4 MiB ranges
# over 8 connections, then check everything a node operator relies on: the files are
# byte-identical under DIR/models/NAME/, the origin saw parallel range requests that cover
# every byte once, the index and `ls --json` describe the model, the blobs are read-only hard
# links, and verify finds nothing - until a blob's byte is flipped (deep verify: digest), a
# blob is truncated (fast verify: size), a tree entry is deleted (fast verify: missing) and a
# blob is made writable (not-readonly).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
NAME=llama-test
CHUNK=$((4 << 20))

step "fixture: 4 x 40 MiB safetensors shards, index and config"
gen_model "$WWW/m" 160M 4 1
mapfile -t FILES < <(cd "$WWW/m" && ls)
TOTAL=$(files_bytes "$WWW/m" "${FILES[@]}")
log "${#FILES[@]} files, $TOTAL bytes"
assert_ge "$TOTAL" $((128 << 20)) "fixture size"
nginx_start "$WWW"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f"); done

step "pull --chunk-size 4M --connections 8"
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name "$NAME" --chunk-size 4M --connections 8 --json
cp "$MC_STDOUT" "$MC_TMP/pull.json"
json "$MC_TMP/pull.json" 'j' >/dev/null # stdout of --json is one JSON document
assert_same_tree "$WWW/m" "$C/models/$NAME" "${FILES[@]}"
[ -L "$C/models/$NAME" ] || fail "'$C/models/$NAME' is not a symlink to a version tree"
case $(readlink "$C/models/$NAME") in
../trees/"$NAME"/*) ;;
*) fail "models/$NAME points to '$(readlink "$C/models/$NAME")', want ../trees/$NAME/<vid>" ;;
esac
B=$(json_find "$MC_TMP/pull.json" bytes)
[ -z "$B" ] || assert_eq "$B" "$TOTAL" "pull --json bytes"

step "the origin saw parallel 4 MiB range requests covering every byte once"
nginx_log_summary "$MARK" >"$MC_TMP/log.json"
log "origin: $(json "$MC_TMP/log.json" '{k: j[k] for k in ("requests", "by_status", "bytes", "ranged", "connections")}')"
N206=$(json "$MC_TMP/log.json" 'j["by_status"].get("206", 0)')
# 40 MiB / 4 MiB = 10 ranges per shard at least.
assert_ge "$N206" 40 "206 responses"
assert_ge "$(json "$MC_TMP/log.json" 'j["ranged"]')" 40 "requests with a Range header"
assert_ge "$(json "$MC_TMP/log.json" 'j["connections"]')" 2 "distinct connections"
assert_le "$(json "$MC_TMP/log.json" 'j["connections"]')" 64 "distinct connections"
assert_eq "$(json "$MC_TMP/log.json" 'j["full_body"]')" 0 "full-body 200 responses for large files"
# Every shard's ranges are at most a chunk long and cover it (a probe may overlap a little).
python3 - "$MC_TMP/log.json" "$WWW/m" "$CHUNK" <<'PY' || fail "range requests do not match the plan"
import json, os, re, sys
log = json.load(open(sys.argv[1]))
root, chunk = sys.argv[2], int(sys.argv[3])
for name in sorted(os.listdir(root)):
    if not name.endswith(".safetensors"):
        continue
    size = os.path.getsize(os.path.join(root, name))
    u = log["per_uri"].get("/m/" + name)
    if not u:
        sys.exit("no request for " + name)
    spans = []
    for r in u["ranges"]:
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", r)
        if not m:
            sys.exit("%s: unexpected Range header %r" % (name, r))
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else size - 1
        if b - a + 1 > chunk:
            sys.exit("%s: range %r is longer than the chunk size %d" % (name, r, chunk))
        spans.append((a, min(b, size - 1)))
    spans.sort()
    pos = 0
    for a, b in spans:
        if a > pos:
            sys.exit("%s: bytes %d..%d were never requested" % (name, pos, a - 1))
        pos = max(pos, b + 1)
    if pos < size:
        sys.exit("%s: bytes %d.. were never requested" % (name, pos))
    # Body bytes sent for this file: the file once, plus what a probe, a retry or a stolen tail
    # may cost (the origin counts what it pushed into the socket before the client hung up,
    # up to a chunk each): 5 % and two chunks. A second download of the file does not fit.
    if u["bytes"] > size * 1.05 + 2 * chunk:
        sys.exit("%s: origin sent %d bytes for a %d-byte file" % (name, u["bytes"], size))
    print("   %s: %d ranges, %d bytes sent" % (name, len(u["ranges"]), u["bytes"]))
PY
assert_le "$(json "$MC_TMP/log.json" 'j["bytes"]')" $((TOTAL + TOTAL / 20 + 4 * CHUNK)) "bytes the origin sent"

step "the index records the model and its files"
[ -f "$C/index.db" ] || fail "no index at '$C/index.db'"
command -v sqlite3 >/dev/null || fail "sqlite3 CLI is missing (run tests/deps.sh)"
TABLES=$(sqlite3 -readonly "$C/index.db" "SELECT group_concat(name, ' ') FROM sqlite_master WHERE type = 'table'")
log "tables: $TABLES"
[ -n "$TABLES" ] || fail "index.db has no tables"
sqlite3 -readonly "$C/index.db" .dump >"$MC_TMP/index.sql"
grep -qF "'$NAME'" "$MC_TMP/index.sql" || fail "index.db does not mention the model '$NAME'"
for f in "${FILES[@]}"; do
	grep -qF "$f" "$MC_TMP/index.sql" || fail "index.db does not mention the file '$f'"
done
sqlite3 -readonly "$C/index.db" "PRAGMA integrity_check" | grep -qx ok || fail "index.db integrity_check"
# Precise rows, through the schema cache/index.c has today (models -> versions -> files, blobs).
# The schema is the cache's internal business: if these queries stop compiling, say so and
# rely on the dump check above rather than fail.
Q_FILES="SELECT count(*) || ' ' || sum(f.size) FROM files f JOIN models m ON f.version_id = m.current_version WHERE m.name = '$NAME'"
if ROWS=$(sqlite3 -readonly "$C/index.db" "$Q_FILES" 2>/dev/null); then
	assert_eq "$ROWS" "${#FILES[@]} $TOTAL" "files rows (count, bytes) of the current version"
	sqlite3 -readonly "$C/index.db" "SELECT digest FROM blobs ORDER BY 1" >"$MC_TMP/digests.db"
	find "$C/blobs" -type f -printf '%f\n' | sort >"$MC_TMP/digests.disk"
	cmp -s "$MC_TMP/digests.db" "$MC_TMP/digests.disk" ||
		fail "blob names on disk differ from the digests in the index"
	log "index: ${#FILES[@]} file rows, $TOTAL bytes; blob names match the recorded digests"
else
	log "index schema changed (files/models query failed): precise row checks not run"
fi

step "ls --json lists the model with its files and bytes"
mc_expect 0 --cache-dir "$C" ls --json
cp "$MC_STDOUT" "$MC_TMP/ls.json"
M=$(ls_model "$MC_TMP/ls.json" "$NAME")
echo "$M" >"$MC_TMP/model.json"
assert_eq "$(json "$MC_TMP/model.json" 'j["state"]')" complete "ls state"
assert_eq "$(json "$MC_TMP/model.json" 'j["bytes"]')" "$TOTAL" "ls bytes"
FILES_FIELD=$(json "$MC_TMP/model.json" 'j["files"] if isinstance(j["files"], int) else len(j["files"])')
assert_eq "$FILES_FIELD" "${#FILES[@]}" "ls files"
# The same through global options after the command.
mc_expect 0 ls --json --cache-dir "$C"
ls_model "$MC_STDOUT" "$NAME" >/dev/null
MCACHE_DIR=$C mc_expect 0 ls --json
ls_model "$MC_STDOUT" "$NAME" >/dev/null

step "blobs are read-only, content-addressed hard links"
for f in "${FILES[@]}"; do
	b=$(blob_of "$C" "$C/models/$NAME/$f")
	assert_eq "$(stat -c %a "$b")" 444 "mode of blob '$b'"
	assert_ge "$(stat -c %h "$b")" 2 "link count of blob '$b'"
	case $b in
	"$C"/blobs/[0-9a-f][0-9a-f]/[0-9a-f]*) ;;
	*) fail "blob '$b' is not at blobs/ab/<hex>" ;;
	esac
	[ "$(basename "$b" | cut -c1-2)" = "$(basename "$(dirname "$b")")" ] ||
		fail "blob '$b' is not in the directory named by its first two hex digits"
done
assert_eq "$(find "$C/blobs" -type f | wc -l)" "${#FILES[@]}" "number of blobs"
[ -z "$(find "$C/tmp" -type f 2>/dev/null)" ] || fail "files left in tmp/: $(find "$C/tmp" -type f | head -3)"

step "verify and verify --deep find nothing"
mc_expect 0 --cache-dir "$C" verify
mc_expect 0 --cache-dir "$C" verify "$NAME" --deep
mc_expect 0 --cache-dir "$C" verify --deep --json
json "$MC_STDOUT" 'j' >/dev/null

# verify_expect ARGS...: verify exits 1 with a finding of KIND for PATH (--json output).
verify_expect() {
	local kind=$1 path=$2
	shift 2
	mc_expect 1 --cache-dir "$C" verify "$NAME" --json "$@"
	cp "$MC_STDOUT" "$MC_TMP/verify.json"
	json_objects_with "$MC_TMP/verify.json" kind >"$MC_TMP/findings"
	log "findings: $(tr '\n' ' ' <"$MC_TMP/findings")"
	python3 - "$MC_TMP/findings" "$kind" "$path" <<'PY' || fail "verify $* did not report '$kind' for '$path'"
import json, sys
for line in open(sys.argv[1]):
    f = json.loads(line)
    if f.get("kind") == sys.argv[2] and sys.argv[3] in json.dumps(f):
        sys.exit(0)
sys.exit(1)
PY
	# The human form says the same: exit status 1, and it names the file.
	mc_expect 1 --cache-dir "$C" verify "$NAME" "$@"
	grep -qF -- "$path" "$MC_STDOUT" "$MC_STDERR" || fail "human verify output does not name '$path'"
}

step "one flipped byte inside a blob (mtime kept): verify --deep reports a digest finding"
S2=${FILES[1]}
B2=$(blob_of "$C" "$C/models/$NAME/$S2")
chmod u+w "$B2"
python3 - "$B2" <<'PY'
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.seek(st.st_size // 2 + 12345)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0x01]))
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
PY
chmod 0444 "$B2"
cmp -s "$WWW/m/$S2" "$C/models/$NAME/$S2" && fail "the byte flip did not change the file"
verify_expect digest "$S2" --deep

step "a truncated blob: fast verify reports a size finding"
S3=${FILES[2]}
B3=$(blob_of "$C" "$C/models/$NAME/$S3")
chmod u+w "$B3"
truncate -s $(($(stat -c %s "$B3") - 4096)) "$B3"
chmod 0444 "$B3"
verify_expect size "$S3"

step "a deleted tree entry: fast verify reports a missing finding"
rm -f "$C/models/$NAME/config.json"
verify_expect missing config.json

step "a writable blob: verify reports not-readonly"
S5=${FILES[4]}
chmod 0644 "$(blob_of "$C" "$C/models/$NAME/$S5")"
verify_expect not-readonly "$S5"

step "the four findings together"
mc_expect 1 --cache-dir "$C" verify --deep --json
json_objects_with "$MC_STDOUT" kind >"$MC_TMP/findings"
for k in digest size missing not-readonly; do
	grep -q "\"kind\": \"$k\"" "$MC_TMP/findings" || fail "verify --deep lost the '$k' finding"
done
