#!/usr/bin/env bash
# Tar bundles (issue 7): .tar.gz and .tar.zst archives made with tar, gzip and zstd, served by
# nginx, pulled into models whose files are byte-identical to the source tree; verify --deep
# clean; a warm re-pull fetches no body and unpacks nothing; --unpack for any name; the default
# model name; --include selects entries. Hostile archives (made with Python's tarfile, which
# writes any name): "../", absolute, symlink then a file through it, a hard link to outside, a
# size bomb and a count bomb (limits lowered by MCACHE_BUNDLE_*): exit 3 with one line, nothing
# under models/ or trees/, nothing outside the cache, and nothing left after gc.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

for tool in tar gzip zstd; do
	command -v "$tool" >/dev/null || fail "'$tool' is required (run tests/deps.sh)"
done
WWW=$MC_TMP/www
SRC=$MC_TMP/src
C=$MC_TMP/cache
OUT=$MC_TMP/outside
mkdir -p "$WWW" "$OUT"

step "fixture: a model tree (2 shards, config, a nested tokenizer, an empty file) as tar.gz and tar.zst"
gen_model "$SRC" 24M 2 3
mkdir -p "$SRC/tokenizer/extra"
head -c 300000 /dev/urandom >"$SRC/tokenizer/vocab.txt"
printf '{"a": 1}\n' >"$SRC/tokenizer/extra/special.json"
: >"$SRC/empty.txt"
mapfile -t FILES < <(cd "$SRC" && find . -type f -printf '%P\n' | sort)
log "${#FILES[@]} files: ${FILES[*]}"
(cd "$SRC" && tar -cf - .) | gzip -1 >"$WWW/llama.tar.gz"
(cd "$SRC" && tar -cf - .) | zstd -q -1 -o "$WWW/llama.tar.zst"
cp "$WWW/llama.tar.gz" "$WWW/llama.bundle"
log "tar.gz $(file_size "$WWW/llama.tar.gz") bytes, tar.zst $(file_size "$WWW/llama.tar.zst") bytes"
nginx_start "$WWW"

# same_tree DIR: DIR holds exactly the source tree's files, byte-identical.
same_tree() {
	local got
	got=$(cd "$1" && find . -type f -printf '%P\n' | sort | tr '\n' ' ')
	assert_eq "$got" "${FILES[*]} " "files under $1"
	assert_same_tree "$SRC" "$1" "${FILES[@]}"
}

step "pull a .tar.gz (presigned-style query): unpacked into the model"
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/llama.tar.gz?X-Amz-Signature=sekrit" --json
cp "$MC_STDOUT" "$MC_TMP/gz.json"
assert_eq "$(json "$MC_TMP/gz.json" 'j["name"]')" llama "default model name of a .tar.gz"
assert_eq "$(json "$MC_TMP/gz.json" 'j["files"]')" "${#FILES[@]}" "files of the model"
assert_eq "$(json "$MC_TMP/gz.json" 'j["bundles_unpacked"]')" 1 "bundles unpacked"
assert_eq "$(json "$MC_TMP/gz.json" 'j["bytes_fetched"]')" "$(file_size "$WWW/llama.tar.gz")" "bytes fetched"
same_tree "$C/models/llama"
for f in "${FILES[@]}"; do
	assert_eq "$(stat -L -c %a "$C/models/llama/$f")" 444 "mode of '$f'"
done
[ -z "$(find "$C/tmp" -type f)" ] || fail "files left in tmp/: $(find "$C/tmp" -type f | head -3)"
mc_expect 0 --cache-dir "$C" verify --deep llama
mc_expect 0 --cache-dir "$C" ls --json
M=$(ls_model "$MC_STDOUT" llama)
echo "$M" >"$MC_TMP/ls.json"
assert_eq "$(json "$MC_TMP/ls.json" 'j["files"] if isinstance(j["files"], int) else len(j["files"])')" \
	"${#FILES[@]}" "ls files"
for f in "$C/index.db" "$C/index.db-wal"; do assert_file_lacks "$f" sekrit; done
# The archive is a blob too (for the next pull), not a file of the model.
assert_eq "$(find "$C/blobs" -type f -size "$(file_size "$WWW/llama.tar.gz")c" | wc -l)" 1 "the archive's blob"

step "warm re-pull: a conditional request, no body, nothing unpacked, the same version"
V1=$(json "$MC_TMP/gz.json" 'j["version"]')
INO=$(stat -L -c %i "$C/models/llama/${FILES[0]}")
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/llama.tar.gz?X-Amz-Signature=sekrit" --json
cp "$MC_STDOUT" "$MC_TMP/warm.json"
nginx_log_summary "$MARK" >"$MC_TMP/warm-log.json"
log "origin: $(json "$MC_TMP/warm-log.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}')"
assert_eq "$(json "$MC_TMP/warm-log.json" 'j["bytes"]')" 0 "body bytes the origin sent for a warm re-pull"
assert_le "$(json "$MC_TMP/warm-log.json" 'j["requests"]')" 1 "requests of a warm re-pull"
assert_eq "$(json "$MC_TMP/warm.json" 'j["bytes_fetched"]')" 0 "bytes fetched by a warm re-pull"
assert_eq "$(json "$MC_TMP/warm.json" 'j["bundles_unpacked"]')" 0 "bundles unpacked by a warm re-pull"
assert_eq "$(json "$MC_TMP/warm.json" 'j["version"]')" "$V1" "version after a warm re-pull"
assert_eq "$(json "$MC_TMP/warm.json" 'j["files_reused"]')" "${#FILES[@]}" "files reused by a warm re-pull"
assert_eq "$(stat -L -c %i "$C/models/llama/${FILES[0]}")" "$INO" "inode after a warm re-pull"

step "pull the .tar.zst: the same files, every blob shared"
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/llama.tar.zst" --name zst --json
cp "$MC_STDOUT" "$MC_TMP/zst.json"
assert_eq "$(json "$MC_TMP/zst.json" 'j["bundles_unpacked"]')" 1 "bundles unpacked (zst)"
same_tree "$C/models/zst"
assert_eq "$(stat -L -c %i "$C/models/zst/${FILES[0]}")" "$INO" "the zst model shares the blobs"
mc_expect 0 --cache-dir "$C" verify --deep zst

step "--unpack: any name is a bundle; --include selects its entries"
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/llama.bundle" --name forced --unpack --json
same_tree "$C/models/forced"
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/llama.tar.gz" --name jsononly --include '*.json' --json
got=$(cd "$C/models/jsononly" && find . -type f -printf '%P\n' | sort | tr '\n' ' ')
want=$(printf '%s\n' "${FILES[@]}" | grep '\.json$' | tr '\n' ' ')
assert_eq "$got" "$want" "files selected by --include '*.json'"
mc_expect 0 --cache-dir "$C" verify --deep

step "hostile archives: exit 3, one line, nothing published, nothing outside"
python3 - "$WWW" "$OUT" <<'PY'
import io, sys, tarfile
www, out = sys.argv[1], sys.argv[2]

def make(name, entries, mode="w:gz"):
    with tarfile.open(f"{www}/{name}", mode, format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.type = e.get("type", tarfile.REGTYPE)
            ti.linkname = e.get("link", "")
            data = e.get("data", b"")
            ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data) if ti.size else None)

make("dotdot.tar.gz", [{"name": "ok.txt", "data": b"fine"}, {"name": "../../../../outside-evil", "data": b"x"}])
make("absolute.tar.gz", [{"name": out + "/abs-evil", "data": b"x"}])
make("symlink.tar.gz", [{"name": "link", "type": tarfile.SYMTYPE, "link": out},
                        {"name": "link/pwned", "data": b"x"}])
make("hardlink.tar.gz", [{"name": "h", "type": tarfile.LNKTYPE, "link": out + "/target"}])
# 64 MiB of zeros: about 64 KiB compressed.
make("sizebomb.tar.gz", [{"name": "zeros.bin", "data": bytes(64 << 20)}])
make("countbomb.tar.gz", [{"name": "f%04d" % i, "data": b"x"} for i in range(500)])
PY
printf 'target\n' >"$OUT/target"
hostile() {
	local file=$1 says=$2
	shift 2
	mc_run --cache-dir "$C" pull "$NGINX_URL/$file" --name hostile "$@"
	if [ "$MC_RC" -ne 3 ]; then
		mc_show_output
		fail "pull of $file exited $MC_RC, want 3"
	fi
	assert_one_error_line
	grep -qF -- "$says" "$MC_STDERR" || fail "the error for $file does not say '$says'"
	if [ -e "$C/models/hostile" ] || [ -L "$C/models/hostile" ]; then
		fail "models/hostile exists after $file"
	fi
	[ -z "$(find "$C/trees" -path '*/hostile/*' -type f 2>/dev/null)" ] || fail "trees/hostile holds files after $file"
	[ -z "$(find "$C/tmp" -type f)" ] || fail "files left in tmp/ after $file"
	assert_eq "$(find "$OUT" -mindepth 1 | tr '\n' ' ')" "$OUT/target " "what is outside the cache after $file"
	[ ! -e "$MC_TMP/outside-evil" ] || fail "$file wrote outside the cache"
	assert_eq "$(cat "$OUT/target")" target "the hard link's target after $file"
}
hostile dotdot.tar.gz "safe relative path"
hostile absolute.tar.gz "safe relative path"
hostile symlink.tar.gz "symbolic link"
hostile hardlink.tar.gz "outside the bundle"
MCACHE_BUNDLE_MAX_BYTES=8M hostile sizebomb.tar.gz MCACHE_BUNDLE_MAX_BYTES
MCACHE_BUNDLE_MAX_ENTRIES=100 hostile countbomb.tar.gz MCACHE_BUNDLE_MAX_ENTRIES
# The ratio limit alone (default 100 x + 1 GiB) lets 64 MiB through: the bomb is a limit, not a
# broken archive.
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/sizebomb.tar.gz" --name bomb-allowed --json
assert_eq "$(file_size "$C/models/bomb-allowed/zeros.bin")" $((64 << 20)) "the size bomb under the default limits"
mc_expect 0 --cache-dir "$C" rm bomb-allowed

step "gc leaves nothing of the refused pulls; the good models still verify"
mc_expect 0 --cache-dir "$C" gc --json
mc_expect 0 --cache-dir "$C" ls --json
assert_eq "$(json "$MC_STDOUT" '"hostile" in [m["name"] for m in (j["models"] if isinstance(j, dict) else j)]')" \
	false "a refused model listed"
mc_expect 0 --cache-dir "$C" verify --deep
command -v sqlite3 >/dev/null || fail "sqlite3 CLI is missing (run tests/deps.sh)"
# Blobs left: the model files (shared by every model) and the archives of live versions.
BUNDLES=$(sqlite3 -readonly "$C/index.db" "SELECT count(DISTINCT digest) FROM bundles")
FILEBLOBS=$(sqlite3 -readonly "$C/index.db" "SELECT count(DISTINCT digest) FROM files")
assert_eq "$(find "$C/blobs" -type f | wc -l)" $((BUNDLES + FILEBLOBS)) "blobs after gc"
assert_eq "$(sqlite3 -readonly "$C/index.db" "SELECT count(*) FROM bundles b JOIN versions v ON v.id = b.version_id WHERE v.state <> 'complete'")" \
	0 "bundles of failed versions after gc"
