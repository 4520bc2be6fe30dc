#!/usr/bin/env bash
# Guarantee 8: bad input gets one clear line on stderr ("mcache: ...") and the documented exit
# status (2 usage, 3 origin, 7 not found), and nothing already cached is lost.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
step "a model in the cache to protect"
gen_model "$WWW/m" 8M 1 6
mapfile -t FILES < <(cd "$WWW/m" && ls)
nginx_start "$WWW"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f"); done
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name keep
mc_expect 0 --cache-dir "$C" verify --deep

# bad RC ARGS...: mcache exits RC with exactly one "mcache: " line on stderr.
bad() {
	local rc=$1
	shift
	mc_expect "$rc" --cache-dir "$C" "$@"
	assert_one_error_line
}

step "usage errors: exit 2"
bad 2 pull ftp://x/y
bad 2 pull "file:///etc/passwd"
bad 2 pull "not a url"
bad 2 pull
bad 2 frobnicate
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --connections 0
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --connections many
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --connections 100000
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --chunk-size 3X
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --chunk-size 0
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --max-rate fast
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --writer floppy
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --name ../escape
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --name "a/b"
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --no-such-option
bad 2 pull "$NGINX_URL/m/${FILES[0]}" --name
bad 2 verify --no-such-option
bad 2 ls --deep-fried
if [ -e "$MC_TMP/escape" ] || [ -e "$C/escape" ]; then
	fail "--name ../escape created something"
fi
mc_expect 2 # no command at all
grep -q . "$MC_STDERR" || fail "no command: nothing on stderr"

step "origin errors: exit 3"
bad 3 pull http://127.0.0.1:1/x.safetensors --name closed-port
bad 3 pull "$NGINX_URL/m/nosuch.safetensors" --name not-found
bad 3 pull "$NGINX_URL/m/${FILES[0]}" "$NGINX_URL/m/missing.json" --name half-missing
[ ! -e "$C/models/not-found" ] || fail "a 404 pull published models/not-found"
[ ! -e "$C/models/half-missing" ] || fail "a half-failed pull published models/half-missing"

step "not found: exit 7"
bad 7 verify nosuchmodel
bad 7 verify keep nosuchmodel

step "the cached model is intact"
mc_expect 0 --cache-dir "$C" verify
mc_expect 0 --cache-dir "$C" verify keep --deep
assert_same_tree "$WWW/m" "$C/models/keep" "${FILES[@]}"
mc_expect 0 --cache-dir "$C" ls --json
ls_model "$MC_STDOUT" keep >"$MC_TMP/keep.json"
assert_eq "$(json "$MC_TMP/keep.json" 'j["state"]')" complete "state of the protected model"
