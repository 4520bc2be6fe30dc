#!/usr/bin/env bash
# Index recovery (`mcache rebuild-index`), with the real binary against a loopback nginx.
# Two models are pulled, then:
#  a) index.db deleted: every command refuses (exit 6, one line naming rebuild-index) instead
#     of starting an empty index; rebuild-index restores both models with the same files,
#     digests, sources and ETags (from the sidecars), verify --deep is clean, and a re-pull
#     downloads nothing;
#  b) index.db overwritten with garbage: exit 6 naming rebuild-index; rebuild-index restores it
#     and keeps the garbage, byte for byte, as index.db.corrupt-<time>;
#  c) one flipped byte in a blob: rebuild-index quarantines the blob (kept under quarantine/),
#     reports the file damaged and keeps it in the index, verify reports the blob missing, and
#     the next pull fetches that file alone and repairs the model;
#  d) a pull killed with SIGKILL: the next open runs quick_check, which catches an index page
#     damaged after the kill (the same damage goes unnoticed after a clean shutdown), and the
#     rebuild removes the dead pull's temp files; a pull killed again resumes and verifies;
#  e) rebuild-index refuses to run while another mcache process has the cache open;
#  f) MCACHE_FAIL_ALLOC=N for every allocation of a rebuild: exit 6 with one line, and either
#     the old index untouched or a whole new one in place, never none; then it succeeds.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup
command -v sqlite3 >/dev/null || fail "sqlite3 CLI is missing (run tests/deps.sh)"

WWW=$MC_TMP/www
C=$MC_TMP/cache

# mc_bg ARGS...: starts mcache in the background (output in $MC_TMP/bg.*), sets BG_PID, and
# registers its stop so that a failing test never leaves it running.
BG_PID=""
mc_bg() {
	"$MCACHE_BIN" "$@" >"$MC_TMP/bg.out" 2>"$MC_TMP/bg.err" &
	BG_PID=$!
	mc_at_exit "kill -KILL $BG_PID 2>/dev/null || true"
}

# wait_downloading: waits (10 s at most) until the background pull has a temp file, then lets it
# receive a few MiB (nginx sends 1 MiB/s per connection after the first 2 MiB of a response).
wait_downloading() {
	for _ in $(seq 200); do
		if [ -n "$(find "$C/tmp" -type f 2>/dev/null)" ]; then
			sleep 1.5
			kill -0 "$BG_PID" 2>/dev/null || fail "the background pull ended early: $(cat "$MC_TMP/bg.err")"
			return 0
		fi
		kill -0 "$BG_PID" 2>/dev/null || fail "the background pull ended early: $(cat "$MC_TMP/bg.err")"
		sleep 0.05
	done
	fail "the background pull never created a temp file"
}

# ls_digest FILE: the models of `ls --json` in FILE, reduced to what a rebuild must restore.
ls_digest() {
	python3 - "$1" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
out = []
for m in sorted(j["models"], key=lambda m: m["name"]):
    files = sorted((f["path"], f["size"], f["digest"], f["source"], f["etag"]) for f in m["file_list"])
    out.append([m["name"], m["version"], m["state"], m["files"], m["bytes"], m["pinned"],
                m["created_at"], files])
print(json.dumps(out, indent=1))
PY
}

# refused ARGS...: mcache ARGS exits 6 with one line that names rebuild-index.
refused() {
	mc_expect 6 --cache-dir "$C" "$@"
	assert_one_error_line
	grep -q "mcache rebuild-index" "$MC_STDERR" || fail "the error does not name 'mcache rebuild-index'"
}

# rebuild: runs rebuild-index --json into $MC_TMP/rebuild.json.
rebuild() {
	mc_expect 0 --cache-dir "$C" rebuild-index --json
	cp "$MC_STDOUT" "$MC_TMP/rebuild.json"
	log "rebuild: $(json "$MC_TMP/rebuild.json" '{k: v for k, v in j.items() if k != "notes"}')"
	log "notes: $(json "$MC_TMP/rebuild.json" '[(n["kind"], n["path"]) for n in j["notes"]]')"
}

step "fixture: alpha (2 x 12 MiB shards + JSON), beta (8 MiB + config), gamma (32 MiB)"
gen_model "$WWW/alpha" 24M 2 1
gen_model "$WWW/beta" 8M 1 2
gen_model "$WWW/gamma" 32M 1 3
mapfile -t AF < <(cd "$WWW/alpha" && ls)
mapfile -t BF < <(cd "$WWW/beta" && ls)
mapfile -t GF < <(cd "$WWW/gamma" && ls)
nginx_start "$WWW"
AURLS=() BURLS=() GSLOW=() GFAST=()
for f in "${AF[@]}"; do AURLS+=("$NGINX_URL/alpha/$f"); done
for f in "${BF[@]}"; do BURLS+=("$NGINX_URL/beta/$f"); done
for f in "${GF[@]}"; do
	GSLOW+=("$NGINX_URL/rate/gamma/$f?rate=1m")
	GFAST+=("$NGINX_URL/rate/gamma/$f") # the same objects (no query in their identity), no cap
done

step "pull alpha and beta; every version has its sidecar beside its tree"
mc_expect 0 --cache-dir "$C" pull "${AURLS[@]}" --name alpha --chunk-size 4M
mc_expect 0 --cache-dir "$C" pull "${BURLS[@]}" --name beta
mc_expect 0 --cache-dir "$C" ls --json
cp "$MC_STDOUT" "$MC_TMP/ls0.json"
ls_digest "$MC_TMP/ls0.json" >"$MC_TMP/ls0.digest"
for m in alpha beta; do
	V=$(basename "$(readlink "$C/models/$m")")
	SC=$C/trees/$m/$V.json
	[ -f "$SC" ] || fail "no sidecar '$SC'"
	[ ! -e "$C/models/$m/$V.json" ] || fail "the sidecar is inside the tree consumers read"
	python3 - "$SC" "$MC_TMP/ls0.json" "$m" "$V" <<'PY' || fail "sidecar '$SC' does not describe $m version $V"
import json, sys
sc = json.load(open(sys.argv[1]))
m = [x for x in json.load(open(sys.argv[2]))["models"] if x["name"] == sys.argv[3]][0]
assert sc["model"] == m["name"] and sc["version"] == int(sys.argv[4]) == m["version"], sc
assert sc["source"].startswith("http://127.0.0.1:"), sc["source"]
want = sorted((f["path"], f["size"], f["digest"], f["source"], f["etag"]) for f in m["file_list"])
got = sorted((f["path"], f["size"], f["digest"], f["source"], f["etag"]) for f in sc["files"])
assert got == want, (got, want)
assert all(f["last_modified"] for f in sc["files"]), "no Last-Modified recorded"
PY
done
log "sidecars match ls --json"
mc_expect 0 --cache-dir "$C" verify --deep

step "(a) index.db deleted: commands refuse, rebuild-index restores everything"
rm -f "$C/index.db" "$C/index.db-wal" "$C/index.db-shm"
refused ls
refused pull "${AURLS[@]}" --name alpha
[ ! -e "$C/index.db" ] || fail "a refused command created a fresh index.db"
rebuild
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["models"]')" 2 "models rebuilt"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["versions"]')" 2 "versions rebuilt"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["files"]')" $((${#AF[@]} + ${#BF[@]})) "files rebuilt"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["blobs"]')" "$(find "$C/blobs" -type f | wc -l)" "blobs rebuilt"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["sidecars"]')" 2 "versions restored from sidecars"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["quarantined"] + j["damaged"] + j["missing"]')" 0 "damage found in a healthy cache"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["moved_aside"]')" null "moved_aside with no index"
mc_expect 0 --cache-dir "$C" ls --json
ls_digest "$MC_STDOUT" >"$MC_TMP/ls1.digest"
diff -u "$MC_TMP/ls0.digest" "$MC_TMP/ls1.digest" >&2 || fail "ls --json after the rebuild differs from before"
log "ls --json: same models, versions, files, digests, sources and ETags"
mc_expect 0 --cache-dir "$C" verify --deep
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${AURLS[@]}" --name alpha --json
assert_eq "$(json_find "$MC_STDOUT" bytes_fetched)" 0 "bytes_fetched of alpha's re-pull"
assert_eq "$(json_find "$MC_STDOUT" version)" "$(json "$MC_TMP/ls0.json" '[m["version"] for m in j["models"] if m["name"] == "alpha"][0]')" "alpha's version after the re-pull"
mc_expect 0 --cache-dir "$C" pull "${BURLS[@]}" --name beta --json
assert_eq "$(json_find "$MC_STDOUT" bytes_fetched)" 0 "bytes_fetched of beta's re-pull"
nginx_log_summary "$MARK" >"$MC_TMP/log_a.json"
log "origin during the re-pulls: $(json "$MC_TMP/log_a.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}')"
assert_le "$(json "$MC_TMP/log_a.json" 'j["bytes"]')" $(((${#AF[@]} + ${#BF[@]}) * 65536)) "body bytes sent for re-pulls after a rebuild"
assert_eq "$(json "$MC_TMP/log_a.json" 'j["full_body"]')" 0 "full-body responses after a rebuild"

step "(b) index.db overwritten with garbage: exit 6 naming rebuild-index; the garbage is kept"
head -c 65536 /dev/urandom >"$MC_TMP/garbage"
cp "$MC_TMP/garbage" "$C/index.db"
rm -f "$C/index.db-wal" "$C/index.db-shm"
refused ls
refused verify
refused pull "${BURLS[@]}" --name beta
rebuild
ASIDE=$(json "$MC_TMP/rebuild.json" 'j["moved_aside"]')
case $ASIDE in index.db.corrupt-[0-9]*) ;; *) fail "moved_aside is '$ASIDE'" ;; esac
cmp -s "$MC_TMP/garbage" "$C/$ASIDE" || fail "the garbage index was not kept byte for byte as '$ASIDE'"
json "$MC_TMP/rebuild.json" '[n for n in j["notes"] if n["kind"] == "moved-aside" and n["path"] == "index.db"]' |
	grep -qF "$ASIDE" || fail "no moved-aside note for index.db"
mc_expect 0 --cache-dir "$C" ls --json
ls_digest "$MC_STDOUT" >"$MC_TMP/ls2.digest"
diff -u "$MC_TMP/ls0.digest" "$MC_TMP/ls2.digest" >&2 || fail "ls --json after the second rebuild differs"
mc_expect 0 --cache-dir "$C" verify --deep
log "garbage kept as $ASIDE; models restored"

step "(c) a flipped byte in a blob: quarantined, the file kept and reported, the next pull repairs it"
S=model.safetensors
BB=$(blob_of "$C" "$C/models/beta/$S")
HEX=$(basename "$BB")
chmod u+w "$BB"
python3 - "$BB" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(4 << 20)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0x40]))
PY
chmod 0444 "$BB"
rebuild
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["quarantined"]')" 1 "blobs quarantined"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["damaged"]')" 1 "files reported damaged"
json "$MC_TMP/rebuild.json" '[n for n in j["notes"] if n["kind"] == "quarantined"]' | grep -qF "blobs/${HEX:0:2}/$HEX" ||
	fail "no quarantined note for blobs/${HEX:0:2}/$HEX"
json "$MC_TMP/rebuild.json" '[n["path"] for n in j["notes"] if n["kind"] == "damaged"]' | grep -qF "/beta/" ||
	fail "no damaged note for beta's $S"
[ ! -e "$BB" ] || fail "the damaged blob is still under blobs/"
Q=$(find "$C/quarantine" -type f -name "$HEX.*")
[ -n "$Q" ] || fail "the damaged blob is not under quarantine/"
cmp -s "$Q" "$WWW/beta/$S" && fail "the quarantined file is not the damaged one"
assert_eq "$(cmp -l "$Q" "$WWW/beta/$S" | wc -l)" 1 "bytes that differ in the quarantined blob"
mc_expect 0 --cache-dir "$C" ls --json
ls_digest "$MC_STDOUT" >"$MC_TMP/ls3.digest"
diff -u "$MC_TMP/ls0.digest" "$MC_TMP/ls3.digest" >&2 || fail "ls --json lost or changed the damaged file"
log "beta still lists $S with its digest"
mc_expect 1 --cache-dir "$C" verify beta --json
json_objects_with "$MC_STDOUT" kind >"$MC_TMP/findings"
log "findings: $(tr '\n' ' ' <"$MC_TMP/findings")"
grep '"kind": "missing"' "$MC_TMP/findings" | grep -qF "blobs/${HEX:0:2}/$HEX" || fail "verify does not report the quarantined blob missing"
mc_expect 0 --cache-dir "$C" verify alpha --deep
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${BURLS[@]}" --name beta --json
assert_eq "$(json_find "$MC_STDOUT" bytes_fetched)" "$(file_size "$WWW/beta/$S")" "bytes_fetched repairing beta"
nginx_log_summary "$MARK" >"$MC_TMP/log_c.json"
log "origin: $(json "$MC_TMP/log_c.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}')"
assert_same_tree "$WWW/beta" "$C/models/beta" "${BF[@]}"
mc_expect 0 --cache-dir "$C" verify --deep

step "(e) rebuild-index refuses while another process has the cache open"
NASIDE=$(find "$C" -maxdepth 1 -name 'index.db.corrupt-*' | wc -l)
mc_bg --cache-dir "$C" pull "${GSLOW[@]}" --name gamma --connections 2 -q
wait_downloading
mc_expect 6 --cache-dir "$C" rebuild-index
assert_one_error_line
grep -q "another mcache process has the cache open" "$MC_STDERR" || fail "the refusal does not say why"
assert_eq "$(find "$C" -maxdepth 1 -name 'index.db.corrupt-*' | wc -l)" "$NASIDE" "indexes moved aside by a refused rebuild"
log "refused while pid $BG_PID pulls"

step "(d) SIGKILL mid-pull, then damage to an index page: quick_check catches it on the next open"
kill -KILL "$BG_PID"
wait "$BG_PID" 2>/dev/null || true
[ -n "$(find "$C/tmp" -type f)" ] || fail "the killed pull left no temp file"
# The dead pull's WAL is folded into index.db, then one page of an index no open touches
# (files_source) is overwritten.
python3 - "$C/index.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
root = db.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'files_source'").fetchone()[0]
size = db.execute("PRAGMA page_size").fetchone()[0]
db.close()
with open(sys.argv[1], "r+b") as f:
    f.seek((root - 1) * size)
    f.write(b"\xa5" * size)
PY
# Control: the same index with no dead session (a clean shutdown) opens without a check.
mkdir -p "$MC_TMP/clean"
cp "$C/index.db" "$MC_TMP/clean/index.db"
sqlite3 "$MC_TMP/clean/index.db" "DELETE FROM sessions"
mc_expect 0 --cache-dir "$MC_TMP/clean" ls
refused ls
grep -q "is damaged" "$MC_STDERR" || fail "the refusal is not quick_check's"
refused verify # the refusal kept the dead session's row: every open checks until the rebuild
grep -q "is damaged" "$MC_STDERR" || fail "the second open did not run quick_check"
rebuild
assert_ge "$(json "$MC_TMP/rebuild.json" 'j["tmp_removed"]')" 1 "temp files of the killed pull removed"
[ -z "$(find "$C/tmp" -type f)" ] || fail "tmp/ still holds files after the rebuild"
assert_eq "$(json "$MC_TMP/rebuild.json" 'j["models"]')" 2 "models rebuilt (gamma never completed)"
mc_expect 0 --cache-dir "$C" ls --json
ls_digest "$MC_STDOUT" >/dev/null
sqlite3 -readonly "$C/index.db" "PRAGMA integrity_check" | grep -qx ok || fail "the rebuilt index fails integrity_check"

step "(d) SIGKILL mid-pull on an intact index: the next pull resumes and verifies"
mc_bg --cache-dir "$C" pull "${GSLOW[@]}" --name gamma --connections 2 -q
wait_downloading
kill -KILL "$BG_PID"
wait "$BG_PID" 2>/dev/null || true
mc_expect 0 --cache-dir "$C" ls
mc_expect 0 --cache-dir "$C" pull "${GFAST[@]}" --name gamma --json
assert_same_tree "$WWW/gamma" "$C/models/gamma" "${GF[@]}"
assert_le "$(json_find "$MC_STDOUT" bytes_fetched)" $(($(files_bytes "$WWW/gamma" "${GF[@]}") - (1 << 20))) "bytes_fetched of the resumed pull"
log "resumed: fetched $(json_find "$MC_STDOUT" bytes_fetched) of $(files_bytes "$WWW/gamma" "${GF[@]}") bytes"
mc_expect 0 --cache-dir "$C" verify --deep
mc_expect 0 --cache-dir "$C" ls --json
assert_eq "$(json "$MC_STDOUT" 'sorted(m["name"] for m in j["models"])')" '["alpha", "beta", "gamma"]' "models at the end"

step "(f) rebuild-index under allocation failures: exit 6 with one line, the old index intact"
cp "$MC_TMP/garbage" "$C/index.db"
rm -f "$C/index.db-wal" "$C/index.db-shm"
N=1
while :; do
	MCACHE_FAIL_ALLOC=$N mc_run --cache-dir "$C" rebuild-index
	[ "$MC_RC" -eq 0 ] && break
	if [ "$MC_RC" -ne 6 ]; then
		mc_show_output
		fail "rebuild-index with MCACHE_FAIL_ALLOC=$N exited $MC_RC, want 0 or 6"
	fi
	assert_one_error_line >/dev/null
	[ -z "$(find "$C" -maxdepth 1 -name 'index.db.rebuild*')" ] || fail "MCACHE_FAIL_ALLOC=$N left index.db.rebuild behind"
	# Out of memory before the swap leaves the garbage in place; after it, a whole new index.
	if ! cmp -s "$MC_TMP/garbage" "$C/index.db"; then
		sqlite3 -readonly "$C/index.db" "PRAGMA integrity_check" | grep -qx ok ||
			fail "MCACHE_FAIL_ALLOC=$N left a broken index.db"
		cp "$MC_TMP/garbage" "$C/index.db"
	fi
	N=$((N + 1))
	[ "$N" -le 5000 ] || fail "rebuild-index still fails with MCACHE_FAIL_ALLOC=$N"
done
log "rebuild-index swept over $((N - 1)) allocation points"
mc_expect 0 --cache-dir "$C" verify --deep
mc_expect 0 --cache-dir "$C" ls --json
assert_eq "$(json "$MC_STDOUT" 'sorted(m["name"] for m in j["models"])')" '["alpha", "beta", "gamma"]' "models after the sweep"
