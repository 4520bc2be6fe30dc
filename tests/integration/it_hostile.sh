#!/usr/bin/env bash
# Issue 5, path safety: the cache directory is often a hostPath shared with other pods, so
# another tenant may plant symlinks or hard links in it, and an origin may list hostile names.
# Nothing may ever be written outside the cache.
#
# (a) Planted links, each in a fresh cache, then a pull of a real model from a loopback nginx:
#     DIR/blobs, DIR/tmp, DIR/trees, DIR/models, DIR/trees/NAME, DIR/trees/NAME/<version>,
#     every DIR/blobs/ab, DIR/tmp/<id>.part, DIR/index.db (to an existing file and dangling),
#     DIR/index.db-wal as symlinks to an "outside" directory: exit 6 with one line that names
#     the symlink; DIR/models/NAME as a symlink: replaced, not followed (exit 0). A partial
#     download's temp file hard-linked from outside (after a SIGKILL mid-pull): the resume starts
#     that file over and the outside name keeps its bytes and mode. The outside directory is
#     compared (listing, modes, sizes, link counts, mtimes, SHA-256) before and after each case,
#     and no file appears anywhere else under the test's directory.
# (b) Hostile names from origins: a Hub listing (tests/lib/hf_hub.sh) and an S3 ListObjectsV2
#     answer (a static file on the same nginx) with "../escape", "/abs", "a/../../b", "a//b",
#     ".", "..", "a/", "", control characters (tab, \x01, NUL, DEL), a 4 KiB component, a path
#     over 4096 bytes and a backslash: the whole pull is refused, exit 3, one line, nothing
#     published, nothing written. A deep but legal 3 KiB path lands inside the model.
# (c) A cache root that is world-writable or owned by another user, and a world-writable
#     layout directory: exit 6, one line, nothing created; accepted with
#     MCACHE_ALLOW_SHARED_DIR=1 and with --allow-shared-dir.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
. "$(dirname "$0")/../lib/hf_hub.sh"
mc_setup

unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_TOKEN_PATH XDG_CACHE_HOME HF_ENDPOINT
while read -r v; do unset "$v"; done < <(compgen -e | grep '^AWS_' || true)
export HF_HOME=$MC_TMP/hf-home HOME=$MC_TMP/home
mkdir -p "$HOME"

WWW=$MC_TMP/www
OUTSIDE=$MC_TMP/outside
CACHES=$MC_TMP/caches
ABS_KEY=/tmp/mcache-it-hostile-abs-key # what an absolute key would name
hub() { python3 "$MC_LIB_DIR/hf_hub.py" "$@"; }

step "fixture: a model, an 8 MiB file, hostile Hub and S3 listings on nginx; an outside directory"
gen_model "$WWW/m" 3M 2 31
mapfile -t FILES < <(cd "$WWW/m" && ls)
head -c $((8 << 20)) /dev/urandom >"$WWW/big.bin"
mkdir -p "$OUTSIDE/sub" "$CACHES" "$MC_TMP/work"
printf 'outside file\n' >"$OUTSIDE/victim.txt"
printf 'SQLite format 3\0 not really\n' >"$OUTSIDE/existing.db"
printf 'nested\n' >"$OUTSIDE/sub/nested.txt"
[ ! -e "$ABS_KEY" ] || fail "'$ABS_KEY' exists before the test; remove it"
# Each name goes into its own repository's answer, next to a sound config.json.
python3 - "$WWW" "$ABS_KEY" <<'PY'
import json, os, sys
root, abs_key = sys.argv[1], sys.argv[2]
names = ["../escape", abs_key, "a/../../b", "a//b", ".", "..", "a/", "", "tab\there",
         "ctl\x01x", "nul\x00x", "del\x7fx", "x" * 4096, ("d" * 200 + "/") * 21 + "f",
         "a\\b", "sub/..", "./x"]
for i, name in enumerate(names):
    answer = {"sha": "%040x" % (i + 1), "siblings": [
        {"rfilename": "config.json", "size": 2}, {"rfilename": name, "size": 2}]}
    path = os.path.join(root, "api", "models", "hostile", "k%d" % i, "revision", "main")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(answer, f)
PY
DEEP=$(python3 -c 'print("/".join(["d%02d" % i + "e" * 196 for i in range(15)]) + "/w.txt")')
mkdir -p "$MC_TMP/hub-extra/deep/$(dirname "$DEEP")"
printf 'deep\n' >"$MC_TMP/hub-extra/deep/$DEEP"
hub publish "$WWW" acme/deep --src "$MC_TMP/hub-extra/deep" --sha "$(hub sha deep)" --rev main
# A static ListObjectsV2 answer per bucket: GET /BUCKET/?list-type=2&prefix=p/ is served from
# BUCKET/index.html, whatever the query. XML cannot carry \x01 or NUL; a tab it can.
python3 - "$WWW" "$ABS_KEY" <<'PY'
import os, sys
from xml.sax.saxutils import escape
root, abs_key = sys.argv[1], sys.argv[2]
keys = ["p/../escape", "p/" + abs_key, "p/a/../../b", "p/a//b", "p/.", "p/..", "p/a/./b",
        "p/tab\there", "p/" + "x" * 4096, "p/a\\b", "p//abs"]
for i, key in enumerate(keys):
    entries = "".join(
        "<Contents><Key>%s</Key><Size>2</Size><ETag>\"e%d\"</ETag></Contents>" % (escape(k), i)
        for k in ["p/config.json", key])
    body = ('<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            "<Name>s3k%d</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>"
            "<IsTruncated>false</IsTruncated>%s</ListBucketResult>" % (i, entries))
    os.makedirs(os.path.join(root, "s3k%d" % i), exist_ok=True)
    with open(os.path.join(root, "s3k%d" % i, "index.html"), "w") as f:
        f.write(body)
PY
hub_start "$WWW" hostileToken
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f"); done
cd "$MC_TMP/work" # a relative path that escaped would land here, where the scan looks
MARK=$MC_TMP/mark
touch "$MARK"
sleep 0.01

# snap: the outside directory as a listing with types, modes, sizes, link counts and mtimes,
# and the SHA-256 of each file.
snap() {
	(cd "$OUTSIDE" && find . -printf '%y %m %s %n %T@ %p\n' | LC_ALL=C sort &&
		find . -type f -exec sha256sum {} + | LC_ALL=C sort)
}
SNAP=$MC_TMP/outside.snap
snap >"$SNAP"

# assert_nothing_escaped WHAT [SKIP]: the outside directory is as it was (but for lines naming
# SKIP, checked by the caller), and nothing under the test's directory changed since the start
# except the caches, nginx's files and the runs' output.
assert_nothing_escaped() {
	local now strays
	now=$(snap | grep -v -- "${2:-^$}")
	if [ "$now" != "$(cat "$SNAP")" ]; then
		diff <(cat "$SNAP") <(printf '%s\n' "$now") >&2 || true
		fail "$1: the outside directory changed"
	fi
	strays=$(find "$MC_TMP" -mindepth 1 \( -path "$CACHES" -o -path "$OUTSIDE" -o -path "$MC_TMP/nginx" \
		-o -path "$MC_TMP/stdout" -o -path "$MC_TMP/stderr" -o -path "$SNAP" \) \
		-prune -o -newer "$MARK" -print)
	[ -z "$strays" ] || fail "$1: written outside the cache: $strays"
	[ ! -e "$ABS_KEY" ] || fail "$1: '$ABS_KEY' was written"
}

# fresh NAME: a new cache directory with its layout, in $C.
fresh() {
	C=$CACHES/$1
	mc_run --cache-dir "$C" ls --json
	[ "$MC_RC" -eq 0 ] || {
		mc_show_output
		fail "cannot create the cache $C"
	}
}

# refused CASE RC PATTERN ARGS...: mcache ARGS exits RC with one line matching PATTERN, and
# nothing escaped.
refused() {
	local what=$1 rc=$2 pattern=$3
	shift 3
	mc_expect "$rc" "$@"
	assert_one_error_line
	grep -q -- "$pattern" "$MC_STDERR" || fail "$what: the message lacks '$pattern'"
	assert_nothing_escaped "$what"
}

# plant_dir REL: DIR/REL becomes a symlink to the outside directory.
plant_dir() {
	rm -rf "${C:?}/$1"
	ln -s "$OUTSIDE" "$C/$1"
}

step "(a) planted symlinks for the layout directories: refused, never followed"
for d in blobs tmp trees models; do
	fresh "layout-$d"
	plant_dir "$d"
	refused "symlink $d" 6 "refusing '$C/$d': it is a symbolic link" \
		--cache-dir "$C" pull "${URLS[@]}" --name m
	refused "symlink $d, shared dir allowed" 6 "is a symbolic link" \
		--cache-dir "$C" --allow-shared-dir ls
done

step "(a) trees/NAME, trees/NAME/<version>, every blobs/ab, tmp/<id>.part as symlinks"
fresh tree-name
ln -s "$OUTSIDE" "$C/trees/m"
refused "symlink trees/m" 6 "refusing '$C/trees/m': it is a symbolic link" \
	--cache-dir "$C" pull "${URLS[@]}" --name m
[ ! -e "$C/models/m" ] || fail "a refused pull published models/m"
rm "$C/trees/m"
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name m
assert_same_tree "$WWW/m" "$C/models/m" "${FILES[@]}"

fresh tree-version
mkdir "$C/trees/m"
for v in $(seq 1 8); do ln -s "$OUTSIDE" "$C/trees/m/$v"; done
refused "symlink trees/m/<version>" 6 "trees/m/1'" --cache-dir "$C" pull "${URLS[@]}" --name m

fresh blob-dirs
for i in $(seq 0 255); do ln -s "$OUTSIDE" "$C/blobs/$(printf %02x "$i")"; done
refused "symlinks blobs/00..ff" 6 "/blobs/[0-9a-f][0-9a-f]': it is a symbolic link" \
	--cache-dir "$C" pull "${URLS[@]}" --name m
[ ! -e "$C/models/m" ] || fail "a refused pull published models/m"

fresh tmp-parts
# Download ids (and so temp names) follow the placeholder rows a pull claims first: plant many.
for i in $(seq 1 64); do ln -s "$OUTSIDE/part$i" "$C/tmp/$i.part"; done
refused "symlinks tmp/N.part" 6 "tmp/[0-9][0-9]*\.part" --cache-dir "$C" pull "${URLS[@]}" --name m

step "(a) index.db and index.db-wal as symlinks: refused by every command"
fresh index-existing
rm -f "$C"/index.db*
ln -s "$OUTSIDE/existing.db" "$C/index.db"
refused "index.db -> an existing file" 6 "index.db': it is a symbolic link" \
	--cache-dir "$C" pull "${URLS[@]}" --name m
refused "index.db -> an existing file (ls)" 6 "is a symbolic link" --cache-dir "$C" ls
fresh index-dangling
rm -f "$C"/index.db*
ln -s "$OUTSIDE/new.db" "$C/index.db"
refused "index.db -> a missing file" 6 "index.db': it is a symbolic link" \
	--cache-dir "$C" --allow-shared-dir pull "${URLS[@]}" --name m
fresh index-wal
# The WAL outlives the processes (no checkpoint on close): plant over the real one.
rm -f "$C/index.db-wal"
ln -s "$OUTSIDE/new.db-wal" "$C/index.db-wal"
refused "index.db-wal -> a missing file" 6 "index.db-wal': it is a symbolic link" \
	--cache-dir "$C" pull "${URLS[@]}" --name m

step "(a) models/NAME planted as a symlink: replaced by the pull, not followed"
fresh model-link
ln -s "$OUTSIDE" "$C/models/m"
mc_expect 0 --cache-dir "$C" --json pull "${URLS[@]}" --name m
V=$(json_find "$MC_STDOUT" version)
assert_eq "$(readlink "$C/models/m")" "../trees/m/$V" "models/m after the pull"
assert_same_tree "$WWW/m" "$C/models/m" "${FILES[@]}"
mc_expect 0 --cache-dir "$C" verify --deep
assert_nothing_escaped "models/m planted"

step "(a) a partial download's temp file hard-linked from outside: started over, not written"
fresh hard-link
"$MCACHE_BIN" --cache-dir "$C" pull "$NGINX_URL/big.bin" --name big \
	--max-rate 2M --chunk-size 1M --connections 2 >"$MC_TMP/stdout" 2>"$MC_TMP/stderr" &
PULL_PID=$!
mc_at_exit "kill -KILL $PULL_PID 2>/dev/null || true"
sleep 1.5
kill -KILL "$PULL_PID" 2>/dev/null || true
RC=0
wait "$PULL_PID" || RC=$?
[ "$RC" -eq 137 ] || fail "the rate-capped pull was not running at the kill (exit $RC)"
mapfile -t PARTS < <(cd "$C/tmp" && ls)
[ "${#PARTS[@]}" -eq 1 ] || fail "want one temp file after the kill, got: ${PARTS[*]:-none}"
# The outside name takes the inode; the name under tmp/ becomes its second link.
mv "$C/tmp/${PARTS[0]}" "$OUTSIDE/partial.bin"
ln "$OUTSIDE/partial.bin" "$C/tmp/${PARTS[0]}"
chmod 0640 "$OUTSIDE/partial.bin"
SUM_BEFORE=$(sha256sum <"$OUTSIDE/partial.bin")
snap | grep -v partial.bin >"$SNAP"
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/big.bin" --name big --chunk-size 1M
cmp -s "$WWW/big.bin" "$C/models/big/big.bin" || fail "big.bin differs from the origin's"
assert_eq "$(sha256sum <"$OUTSIDE/partial.bin")" "$SUM_BEFORE" "the hard-linked outside file's bytes"
assert_eq "$(stat -c '%a %h' "$OUTSIDE/partial.bin")" "640 1" "its mode and link count"
assert_nothing_escaped "hard-linked temp file" partial.bin
rm "$OUTSIDE/partial.bin"
snap >"$SNAP"

step "(b) hostile names in a Hub listing: refused whole, exit 3"
export HF_ENDPOINT=$HUB_URL
C=$CACHES/hf-keys
for i in $(seq 0 16); do
	# k10's NUL never reaches the name check: jansson refuses "\u0000" in a string.
	pattern="unsafe file name"
	[ "$i" -ne 10 ] || pattern="bad Hub API answer"
	refused "hf key $i" 3 "$pattern" --cache-dir "$C" pull "hf://hostile/k$i" --name "k$i"
	[ ! -e "$C/models/k$i" ] || fail "hf key $i: models/k$i was published"
done
assert_eq "$(find "$C/tmp" "$C/trees" "$C/blobs" -mindepth 1 | wc -l)" 0 \
	"files under tmp/, trees/ and blobs/ after refused listings"

step "(b) a deep but legal path (3 KiB, 15 components) stays inside the model"
mc_expect 0 --cache-dir "$C" pull hf://acme/deep --name deep
cmp -s "$MC_TMP/hub-extra/deep/$DEEP" "$C/models/deep/$DEEP" || fail "the deep file differs"
assert_nothing_escaped "deep path"

step "(b) hostile keys in an S3 listing: refused whole, exit 3"
export AWS_ENDPOINT_URL=$NGINX_URL
C=$CACHES/s3-keys
for i in $(seq 0 10); do
	refused "s3 key $i" 3 "cannot be a file path" --cache-dir "$C" pull "s3://s3k$i/p/" --name "s$i"
	[ ! -e "$C/models/s$i" ] || fail "s3 key $i: models/s$i was published"
done
assert_eq "$(find "$C/tmp" "$C/trees" "$C/blobs" -mindepth 1 | wc -l)" 0 \
	"files under tmp/, trees/ and blobs/ after refused listings"
unset AWS_ENDPOINT_URL

step "(c) a world-writable cache root: refused before anything is made in it"
C=$CACHES/world
mkdir "$C"
chmod 1777 "$C"
refused "world-writable root" 6 "refusing cache directory '$C': it is world-writable (mode 1777)" \
	--cache-dir "$C" pull "${URLS[@]}" --name m
assert_eq "$(find "$C" -mindepth 1 | wc -l)" 0 "entries in the refused world-writable root"
MCACHE_ALLOW_SHARED_DIR=1 mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name m
assert_same_tree "$WWW/m" "$C/models/m" "${FILES[@]}"
assert_eq "$(stat -c %a "$C/blobs" "$C/tmp" "$C/trees" "$C/models" | sort -u)" 755 \
	"modes of the directories mcache made"
mc_expect 0 --cache-dir "$C" --allow-shared-dir verify --deep
MCACHE_ALLOW_SHARED_DIR=0 mc_expect 6 --cache-dir "$C" ls
assert_one_error_line

step "(c) a world-writable layout directory: refused"
fresh sub-world
chmod 0777 "$C/blobs"
refused "world-writable blobs/" 6 "refusing '$C/blobs': it is world-writable (mode 0777)" \
	--cache-dir "$C" pull "${URLS[@]}" --name m
MCACHE_ALLOW_SHARED_DIR=1 mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name m

step "(c) a cache root owned by another user: refused"
if [ "$(id -u)" -eq 0 ]; then
	C=$CACHES/other-owner
	mkdir "$C"
	chown nobody "$C"
	refused "root owned by nobody" 6 "it is owned by uid $(id -u nobody), not by this user (uid 0)" \
		--cache-dir "$C" pull "${URLS[@]}" --name m
	assert_eq "$(find "$C" -mindepth 1 | wc -l)" 0 "entries in the refused root"
	MCACHE_ALLOW_SHARED_DIR=1 mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name m
	assert_same_tree "$WWW/m" "$C/models/m" "${FILES[@]}"
	mc_expect 0 --cache-dir "$C" --allow-shared-dir verify --deep
else
	# Without root no directory of another user can be made; "/" is one (root's, read-only to
	# us), so the refusal is checked there, and its acceptance only runs as root (as in CI).
	refused "root owned by uid 0" 6 "it is owned by uid 0, not by this user (uid $(id -u))" \
		--cache-dir / ls
	log "NOTE: not root: accepting another user's directory with MCACHE_ALLOW_SHARED_DIR=1 is checked only as root"
fi
assert_nothing_escaped "the whole test"
