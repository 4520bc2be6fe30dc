#!/usr/bin/env bash
# A warm cache costs no download: pulling a model that is already complete must not transfer
# its bytes again (at most small probes: HEAD or a tiny range to compare ETags), must keep the
# files intact, and must leave verify clean. When one object changes at the origin, the next
# pull fetches that object only.
#
# What is asserted about probing: at most 64 KiB of body bytes per unchanged file and no
# full-body 200; whether the design revalidates with the origin on a re-pull is its choice;
# what is strict is that no file is downloaded again.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
step "fixture: 2 x 24 MiB shards"
gen_model "$WWW/m" 48M 2 5
mapfile -t FILES < <(cd "$WWW/m" && ls)
TOTAL=$(files_bytes "$WWW/m" "${FILES[@]}")
nginx_start "$WWW"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f"); done

step "first pull"
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name warm --chunk-size 4M --connections 8 --json
FETCHED=$(json_find "$MC_STDOUT" bytes_fetched)
[ -z "$FETCHED" ] || assert_eq "$FETCHED" "$TOTAL" "bytes_fetched of the first pull"
TARGET1=$(readlink "$C/models/warm")
INODE1=$(stat -L -c %i "$C/models/warm/${FILES[0]}")

step "second pull of the same model: no download"
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name warm --chunk-size 4M --connections 8 --json
cp "$MC_STDOUT" "$MC_TMP/pull2.json"
FETCHED=$(json_find "$MC_TMP/pull2.json" bytes_fetched)
if [ -n "$FETCHED" ]; then
	assert_le "$FETCHED" 65536 "bytes_fetched of the re-pull"
else
	log "pull --json has no bytes_fetched: relying on the origin's log alone"
fi
nginx_log_summary "$MARK" >"$MC_TMP/log2.json"
log "origin during re-pull: $(json "$MC_TMP/log2.json" '{k: j[k] for k in ("requests", "by_status", "bytes", "conditional")}')"
# Origin egress is what a re-pull must not cost (S3 bills it): revalidating an object needs a
# HEAD, a conditional request or a tiny range, not a chunk-sized range aborted after the headers
# (on loopback the origin has sent most of the chunk by then). Allow 64 KiB per file.
NF=${#FILES[@]}
soft assert_le "$(json "$MC_TMP/log2.json" 'j["bytes"]')" $((NF * 65536)) \
	"body bytes the origin sent for a re-pull of $NF unchanged files ($(json "$MC_TMP/log2.json" 'j["per_uri"]' | head -c 600))"
soft assert_eq "$(json "$MC_TMP/log2.json" 'j["full_body"]')" 0 "full-body responses during a re-pull"
W=$(json_find "$MC_TMP/pull2.json" writer)
# mcache.1: "writer is null when nothing was written".
[ -z "$W" ] || soft assert_eq "$W" null "pull --json writer when nothing was written"
assert_same_tree "$WWW/m" "$C/models/warm" "${FILES[@]}"
assert_eq "$(stat -L -c %i "$C/models/warm/${FILES[0]}")" "$INODE1" "blob inode after a re-pull"
log "models/warm -> $TARGET1 before, $(readlink "$C/models/warm") after"
mc_expect 0 --cache-dir "$C" verify --deep
assert_eq "$(find "$C/blobs" -type f | wc -l)" "${#FILES[@]}" "number of blobs"

step "the same bytes under a second name: no download either (content dedup)"
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name warm-alias --json
nginx_log_summary "$MARK" >"$MC_TMP/log3.json"
log "origin: $(json "$MC_TMP/log3.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}')"
assert_same_tree "$WWW/m" "$C/models/warm-alias" "${FILES[@]}"
assert_eq "$(stat -L -c %i "$C/models/warm-alias/${FILES[0]}")" "$INODE1" "the alias shares the blob"
soft assert_le "$(json "$MC_TMP/log3.json" 'j["bytes"]')" $((NF * 65536)) "body bytes the origin sent for known objects"

step "one object changes at the origin: only it is fetched again"
S=model-00001-of-00002.safetensors
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$WWW/m/$S" --size "$(stat -c %s "$WWW/m/$S")" --seed changed >/dev/null
touch -d "@$(($(date +%s) + 10))" "$WWW/m/$S" # a new Last-Modified and ETag
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name warm --chunk-size 4M --connections 8 --json
nginx_log_summary "$MARK" >"$MC_TMP/log4.json"
log "origin: $(json "$MC_TMP/log4.json" '{k: j[k] for k in ("requests", "by_status", "bytes")}')"
assert_same_tree "$WWW/m" "$C/models/warm" "${FILES[@]}"
SZ=$(stat -c %s "$WWW/m/$S")
assert_ge "$(json "$MC_TMP/log4.json" 'j["bytes"]')" "$SZ" "bytes sent for the changed object"
soft assert_le "$(json "$MC_TMP/log4.json" 'j["bytes"]')" $((SZ + NF * 65536)) "bytes sent when one object changed"
mc_expect 0 --cache-dir "$C" verify --deep
# The alias still has the old bytes: versions are immutable.
cmp -s "$WWW/m/$S" "$C/models/warm-alias/$S" && fail "the change leaked into the other model"
mc_expect 0 --cache-dir "$C" verify warm-alias --deep
