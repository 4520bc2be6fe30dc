#!/usr/bin/env bash
# s3:// against a real S3 implementation: Ceph RADOS Gateway on 127.0.0.1 (tests/lib/rgw.sh,
# which checks SigV4 like AWS does), fixtures uploaded with awscli. One gateway for the whole
# script; each case runs on its own (a failing case is reported and the others still run; the
# summary at the end lists them).
#
# Cases: a model under a prefix with nested "directories" (multipart-uploaded shards) pulled
# byte-identical, the neighbouring prefixes left out, ls --json sources and ETags; a re-pull
# that fetches nothing; one object by key (endpoint and region from AWS_ENDPOINT_URL_S3 and
# AWS_DEFAULT_REGION); ListObjectsV2 pagination (1003 objects); awkward keys (space, + = &, é,
# 模型, %, : @ ; , ( ) ! ' * $ ~, a deep path) under a prefix and one by one; an empty object;
# "folder" marker objects; anonymous access to a public-read bucket (unsigned, as the gateway's
# log shows) and to a private one (exit 3); temporary credentials from STS GetSessionToken (with
# the token: works; without it or with a tampered one: exit 3); a wrong secret
# (SignatureDoesNotMatch), an unknown access key (InvalidAccessKeyId), a bogus session token:
# exit 3, one line, nothing published; an empty prefix, a missing bucket, a missing key: exit 7;
# bad s3:// URIs: exit 2; an object overwritten
# at the origin: fetched again, the model shows exactly the new bytes; keys with ".." and "."
# segments never write outside the cache. Finally, no secret (the secret keys, the session
# tokens, a signature or a credential scope) in any stdout/stderr of any run (plain, -v, --json),
# in index.db(-wal/-shm) or in any file under the cache.
#
# Two gateways on one cluster (tests/lib/rgw.sh): RGW_URL as the notes' recipe has it, and
# RGW_STS_URL with STS enabled, the only one that checks session tokens; the session-token cases
# use the second.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/rgw.sh"
mc_setup

# Nothing from the caller's AWS setup may reach mcache: every AWS_* variable goes, and HOME is an
# empty directory (no ~/.aws/credentials or config to fall back on).
while read -r v; do unset "$v"; done < <(compgen -e | grep '^AWS_' || true)
export HOME=$MC_TMP/home
mkdir -p "$HOME"

step "start Ceph RGW"
rgw_start
rgw_start_sts

C=$MC_TMP/cache
SRC=$MC_TMP/src
OUT=$MC_TMP/outputs # every run's stdout and stderr, scanned for secrets at the end
mkdir -p "$SRC" "$OUT" "$MC_TMP/work"
cd "$MC_TMP/work" # relative paths that escape would land here, where the scan looks
B=models-bkt      # private
PB=public-bkt     # public-read
WRONG_SECRET=wrongsecret$(python3 -c 'import secrets; print(secrets.token_hex(12))')
UNKNOWN_KEY=AKIDUNKNOWN$(python3 -c 'import secrets; print(secrets.token_hex(6).upper())')
# A session token that looks like an STS one (base64), and one that is not even base64.
BOGUS_TOKEN=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(150)).decode())')
BOGUS_TOKEN2=bogustoken$(python3 -c 'import secrets; print(secrets.token_hex(16))')
SIXTY_FOUR_K=65536

# keep: saves the last run's stdout and stderr for the final secrets scan.
keep() {
	local f
	f=$(mktemp "$OUT/run.XXXXXX")
	cp "$MC_STDOUT" "$f.out"
	cp "$MC_STDERR" "$f.err"
}

# s3_env MODE: the environment mcache sees: the gateway's endpoint and region, and with MODE
# "user" the S3 user's keys, with "anon" no credentials at all.
s3_env() {
	unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_ENDPOINT_URL \
		AWS_ENDPOINT_URL_S3 AWS_REGION AWS_DEFAULT_REGION
	export AWS_ENDPOINT_URL=$RGW_URL AWS_REGION=us-east-1
	case $1 in
	user) export AWS_ACCESS_KEY_ID=$RGW_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$RGW_SECRET_KEY ;;
	anon) ;;
	*) fail "s3_env: unknown mode '$1'" ;;
	esac
}

# upload DIR S3URI [awscli options]: DIR's files under S3URI (keys = relative paths).
upload() {
	local d=$1 dst=$2
	shift 2
	rgw_aws s3 cp --recursive --only-show-errors "$@" "$d" "$dst" >"$MC_TMP/upload.log" 2>&1 ||
		fail "awscli upload of '$d' to $dst failed: $(tail -n3 "$MC_TMP/upload.log")"
}

# tree_files DIR: the regular files under DIR (following the models/NAME symlink), relative, sorted.
tree_files() {
	(cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
}

# assert_tree SRC DST: DST holds exactly SRC's files, byte-identical.
assert_tree() {
	local src=$1 dst=$2 f
	[ -d "$dst" ] || fail "'$dst' is missing"
	tree_files "$src" >"$MC_TMP/want.lst"
	tree_files "$dst" >"$MC_TMP/got.lst"
	if ! cmp -s "$MC_TMP/want.lst" "$MC_TMP/got.lst"; then
		diff "$MC_TMP/want.lst" "$MC_TMP/got.lst" | head -n 20 >&2 || true
		fail "the files under '$dst' are not the origin's ($(wc -l <"$MC_TMP/want.lst") wanted, $(wc -l <"$MC_TMP/got.lst") there; diff above)"
	fi
	while IFS= read -r f; do
		cmp -s "$src/$f" "$dst/$f" || fail "'$dst/$f' differs from the origin's '$f'"
	done <"$MC_TMP/want.lst"
	log "$(wc -l <"$MC_TMP/want.lst") files byte-identical under $dst"
}

# assert_not_published NAME: no model NAME in the tree, and in ls --json none or one that is not
# complete (cache/list.c: a model never completed is listed with its last attempt's state).
assert_not_published() {
	[ ! -e "$C/models/$1" ] && [ ! -L "$C/models/$1" ] || fail "a failed pull published models/$1"
	if [ -d "$C/trees/$1" ] && [ -n "$(find "$C/trees/$1" -type f | head -n1)" ]; then
		fail "a failed pull left files under trees/$1"
	fi
	if [ -e "$C/index.db" ]; then
		mc_run --cache-dir "$C" ls --json
		[ "$MC_RC" -eq 0 ] || { mc_show_output; fail "ls --json exited $MC_RC after a failed pull"; }
		assert_eq "$(json "$MC_STDOUT" "[m.get('state') for m in j['models'] if m.get('name') == '$1' and m.get('state') == 'complete']")" \
			"[]" "model '$1' listed as complete after a failed pull"
	fi
}

# expect_fail RC WORD NAME ARGS...: mcache exits RC with one 'mcache: ' line that names WORD
# (an S3 error code; empty: any), and publishes nothing as NAME.
expect_fail() {
	local rc=$1 word=$2 name=$3
	shift 3
	mc_expect "$rc" --cache-dir "$C" "$@"
	keep
	assert_one_error_line
	if [ -n "$word" ] && ! grep -q -- "$word" "$MC_STDERR"; then
		fail "the error line does not name '$word': $(head -c 300 "$MC_STDERR")"
	fi
	assert_not_published "$name"
}

# pull_json NAME URI... [options]: a successful pull --json; BYTES_FETCHED from its output.
pull_json() {
	local name=$1
	shift
	mc_expect 0 --cache-dir "$C" pull "$@" --name "$name" --json
	keep
	cp "$MC_STDOUT" "$MC_TMP/pull.$name.json"
	BYTES_FETCHED=$(json_find "$MC_STDOUT" bytes_fetched)
	[ -n "$BYTES_FETCHED" ] || fail "pull --json printed no bytes_fetched: $(head -c 300 "$MC_STDOUT")"
	log "bytes_fetched $BYTES_FETCHED"
}

# ------------------------------------------------------------------------------------------
step "fixtures (awscli)"
T0=$(date +%s)
rgw_aws s3 mb "s3://$B" >/dev/null
rgw_aws s3 mb "s3://$PB" >/dev/null

# llama: nested "directories"; the 32 MiB shards go up as multipart uploads (ETag "...-N").
gen_model "$MC_TMP/gen" 64M 2 11
mkdir -p "$SRC/llama/shards"
mv "$MC_TMP/gen/config.json" "$MC_TMP/gen/model.safetensors.index.json" "$SRC/llama/"
mv "$MC_TMP/gen"/*.safetensors "$SRC/llama/shards/"
upload "$SRC/llama" "s3://$B/llama/"
# Neighbours that share the prefix's characters but not the prefix "llama/".
echo decoy >"$MC_TMP/decoy"
rgw_aws s3 cp --only-show-errors "$MC_TMP/decoy" "s3://$B/llama-other/decoy.bin"
rgw_aws s3 cp --only-show-errors "$MC_TMP/decoy" "s3://$B/llamaX.bin"
rgw_aws s3api list-objects-v2 --bucket "$B" --prefix llama/ >"$MC_TMP/llama.list"
log "llama/: $(json "$MC_TMP/llama.list" '[(o["Key"], o["Size"], o["ETag"]) for o in j["Contents"]]')"

# Pagination: 1003 objects (ListObjectsV2 returns at most 1000 a page). The keys around the
# page boundary are awkward, so the continuation token (radosgw's is the last key) is too.
mkdir -p "$SRC/many"
python3 - "$SRC/many" <<'PY'
import sys
for i in range(1003):
    name = "obj-%04d%s.txt" % (i, " é+=&" if 990 <= i <= 1002 else "")
    with open("%s/%s" % (sys.argv[1], name), "w") as f:
        f.write("object %d\n" % i * (1 + i % 7))
PY
upload "$SRC/many" "s3://$B/many/"

# Awkward keys; deterministic contents of assorted sizes, one empty.
mkdir -p "$SRC/awk"
python3 - "$SRC/awk" <<'PY'
import os, random, sys
names = ["with space.bin", "plus+sign.bin", "eq=sign.bin", "amp&and.bin", "café-é.bin",
         "模型/权重.bin", "a/b/c/d/e/f.bin", "pct%20literal.bin", "tilde~_-.bin",
         "semi;comma,paren(1)!'.bin", "colon:at@.bin", "star*dollar$.bin",
         "dir with space/x y+z=1&2.bin"]
rnd = random.Random(7)
for i, n in enumerate(names):
    p = os.path.join(sys.argv[1], n)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(rnd.randbytes(1000 + i * 77777))
PY
upload "$SRC/awk" "s3://$B/awk/"

# An empty object next to a non-empty one.
mkdir -p "$SRC/empty"
: >"$SRC/empty/empty.bin"
printf 'x\n' >"$SRC/empty/x.txt"
upload "$SRC/empty" "s3://$B/empty/"

# "Folder" markers: zero-byte objects whose keys end in "/" (what S3 consoles create).
mkdir -p "$SRC/dm/sub"
head -c 5000 /dev/urandom >"$SRC/dm/sub/x.bin"
head -c 3000 /dev/urandom >"$SRC/dm/y.bin"
upload "$SRC/dm" "s3://$B/dm/"
rgw_aws s3api put-object --bucket "$B" --key dm/sub/ --content-length 0 >/dev/null
rgw_aws s3api put-object --bucket "$B" --key dm/ --content-length 0 >/dev/null

# For temporary credentials.
mkdir -p "$SRC/sess/d"
head -c 200000 /dev/urandom >"$SRC/sess/a.bin"
head -c 300000 /dev/urandom >"$SRC/sess/d/b.bin"
upload "$SRC/sess" "s3://$B/sess/"

# Public-read: the bucket (listing) and each object.
mkdir -p "$SRC/pub/sub"
head -c 1500000 /dev/urandom >"$SRC/pub/weights.bin"
echo '{"public": true}' >"$SRC/pub/sub/config.json"
upload "$SRC/pub" "s3://$PB/pub/" --acl public-read
rgw_aws s3api put-bucket-acl --bucket "$PB" --acl public-read
[ "$(curl -s -o /dev/null -w '%{http_code}' "$RGW_URL/$PB/pub/weights.bin")" = 200 ] ||
	fail "the public object is not readable anonymously (fixture)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$RGW_URL/$B/llama/config.json")" = 403 ] ||
	fail "the private object is readable anonymously (fixture)"

# A model to kill mid-pull and resume, and an object to overwrite mid-pull.
mkdir -p "$SRC/resume" "$SRC/race" "$MC_TMP/race-b"
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$SRC/resume/big.safetensors" --size 96M --seed resume >/dev/null
printf '{"resume": 1}\n' >"$SRC/resume/config.json"
upload "$SRC/resume" "s3://$B/resume/"
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$SRC/race/obj.safetensors" --size 32M --seed race-a >/dev/null
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$MC_TMP/race-b/obj.safetensors" --size 32M --seed race-b >/dev/null
upload "$SRC/race" "s3://$B/race/"

# Keys with "." and ".." segments and an empty segment (S3 keeps them literally).
printf 'ok\n' >"$MC_TMP/ok.txt"
for k in 'trav/../../escape.txt' 'trav/../../../../../../../../tmp/escape.txt' 'trav/./dot.txt' \
	'trav//double.txt' 'trav/ok.txt'; do
	rgw_aws s3api put-object --bucket "$B" --key "$k" --body "$MC_TMP/ok.txt" >/dev/null
done
log "fixtures uploaded in $(($(date +%s) - T0)) s; gateway RSS $(($(rgw_rss_kib) / 1024)) MiB"

# ------------------------------------------------------------------------------------------
RESULTS=()
# run_case NAME: runs case_NAME in a subshell with errexit, so its environment stays its own
# and a failure is recorded while the next cases still run.
run_case() {
	local rc=0
	step "case $1"
	set +e
	(
		set -e
		"case_$1"
	)
	rc=$?
	set -e
	if [ "$rc" -eq 0 ]; then
		RESULTS+=("ok    $1")
	else
		RESULTS+=("FAIL  $1")
		MC_SOFT_FAILED=$((MC_SOFT_FAILED + 1))
	fi
}

case_prefix_model() {
	s3_env user
	local mark total
	total=$(du -sb --apparent-size "$SRC/llama" | cut -f1)
	mark=$(rgw_log_mark)
	pull_json llama "s3://$B/llama/" --connections 8 --chunk-size 4M
	assert_tree "$SRC/llama" "$C/models/llama"
	[ -f "$C/models/llama/shards/model-00001-of-00002.safetensors" ] || fail "nested path shards/ missing"
	rgw_log_summary "$mark" >"$MC_TMP/log.llama.json"
	log "gateway: $(json "$MC_TMP/log.llama.json" '{k: j[k] for k in ("requests", "by_status", "by_method", "lists", "bytes")}')"
	assert_ge "$BYTES_FETCHED" 67108864 "bytes_fetched of the first pull"
	assert_le "$BYTES_FETCHED" $((total + 4096)) "bytes_fetched of the first pull"
	mc_expect 0 --cache-dir "$C" verify --deep llama
	keep
}

case_ls_sources() {
	s3_env user
	mc_expect 0 --cache-dir "$C" ls --json
	keep
	ls_model "$MC_STDOUT" llama >"$MC_TMP/ls.llama.json"
	json "$MC_TMP/ls.llama.json" '[(f["path"], f["source"], f.get("etag")) for f in j["file_list"]]' >"$MC_TMP/ls.llama.txt"
	log "ls: $(head -c 600 "$MC_TMP/ls.llama.txt")"
	assert_eq "$(json "$MC_TMP/ls.llama.json" "all(f['source'] == 's3://$B/llama/' + f['path'] for f in j['file_list'])")" \
		true "every source is s3://$B/llama/<path>"
	assert_eq "$(json "$MC_STDOUT" "[f['source'] for m in j['models'] for f in m['file_list'] if '?' in (f['source'] or '')]")" \
		"[]" "sources with a query string"
	# The listing's ETags are the version markers the index keeps (quotes optional).
	python3 - "$MC_TMP/ls.llama.json" "$MC_TMP/llama.list" <<'PY' || fail "the recorded ETags are not the gateway's"
import json, sys
files = {f["path"]: (f.get("etag") or "").strip('"') for f in json.load(open(sys.argv[1]))["file_list"]}
listing = {o["Key"][len("llama/"):]: o["ETag"].strip('"') for o in json.load(open(sys.argv[2]))["Contents"]}
bad = {k: (files.get(k), v) for k, v in listing.items() if files.get(k) != v}
if bad:
    sys.exit("ETag (recorded, listed) differ: %r" % bad)
print("   ETags recorded as listed, e.g. %r" % sorted(listing.values())[-1])
PY
}

case_repull() {
	s3_env user
	local mark
	mark=$(rgw_log_mark)
	pull_json llama "s3://$B/llama/" --connections 8 --chunk-size 4M
	assert_le "$BYTES_FETCHED" "$SIXTY_FOUR_K" "bytes_fetched of a re-pull of an unchanged model"
	rgw_log_summary "$mark" >"$MC_TMP/log.repull.json"
	log "gateway: $(json "$MC_TMP/log.repull.json" '{k: j[k] for k in ("requests", "by_status", "by_method", "lists", "gets", "bytes")}')"
	assert_le "$(json "$MC_TMP/log.repull.json" 'sum(j["per_key"].values())')" $((4 * SIXTY_FOUR_K)) \
		"object body bytes the gateway sent for a re-pull of 4 unchanged files ($(json "$MC_TMP/log.repull.json" 'j["per_key"]' | head -c 400))"
	assert_tree "$SRC/llama" "$C/models/llama"
}

case_single_object() {
	s3_env user
	# The S3-specific endpoint variable and the default region, this time.
	unset AWS_ENDPOINT_URL AWS_REGION
	export AWS_ENDPOINT_URL_S3=$RGW_URL AWS_DEFAULT_REGION=us-east-1
	pull_json one "s3://$B/llama/config.json"
	assert_eq "$(tree_files "$C/models/one")" config.json "the files of a single-object model"
	cmp -s "$SRC/llama/config.json" "$C/models/one/config.json" || fail "models/one/config.json differs"
	pull_json shard "s3://$B/llama/shards/model-00002-of-00002.safetensors"
	assert_eq "$(tree_files "$C/models/shard")" model-00002-of-00002.safetensors "the files of a single-object model"
	cmp -s "$SRC/llama/shards/model-00002-of-00002.safetensors" "$C/models/shard/model-00002-of-00002.safetensors" ||
		fail "models/shard/model-00002-of-00002.safetensors differs"
	# The same object (key and ETag) is already in the cache under llama.
	assert_le "$BYTES_FETCHED" "$SIXTY_FOUR_K" "bytes_fetched for an object the cache holds under another model"
	# README: s3://bucket/key with no object of that exact key is the "directory" key/.
	pull_json llamadir "s3://$B/llama"
	assert_tree "$SRC/llama" "$C/models/llamadir"
}

case_pagination() {
	s3_env user
	local mark
	mark=$(rgw_log_mark)
	pull_json many "s3://$B/many/"
	rgw_log_summary "$mark" >"$MC_TMP/log.many.json"
	log "gateway: $(json "$MC_TMP/log.many.json" '{k: j[k] for k in ("requests", "by_status", "lists", "continuations", "gets")}')"
	assert_eq "$(tree_files "$C/models/many" | wc -l)" 1003 "files in the 1003-object model"
	assert_tree "$SRC/many" "$C/models/many"
	assert_ge "$(json "$MC_TMP/log.many.json" 'j["continuations"]')" 1 "ListObjectsV2 requests with a continuation-token"
	mc_expect 0 --cache-dir "$C" ls --json
	assert_eq "$(json "$MC_STDOUT" "[len(m['file_list']) for m in j['models'] if m['name'] == 'many']")" "[1003]" "files of 'many' in ls --json"
}

case_awkward_keys() {
	s3_env user
	pull_json awk "s3://$B/awk/"
	assert_tree "$SRC/awk" "$C/models/awk"
	mc_expect 0 --cache-dir "$C" ls --json
	ls_model "$MC_STDOUT" awk >"$MC_TMP/ls.awk.json"
	# Sources name the key, raw or percent-encoded, never with a query string.
	python3 - "$MC_TMP/ls.awk.json" "$B" <<'PY' || fail "ls --json sources of awkward keys"
import json, sys
from urllib.parse import unquote
m = json.load(open(sys.argv[1]))
bad = []
for f in m["file_list"]:
    s, want = f["source"] or "", "s3://%s/awk/%s" % (sys.argv[2], f["path"])
    if "?" in s.replace(want, "") or (s != want and unquote(s) != want):
        bad.append((f["path"], s))
if bad:
    sys.exit("sources that do not name s3://BUCKET/KEY: %r" % bad)
print("   sources, e.g. %r" % sorted(f["source"] for f in m["file_list"])[-1])
PY
	mc_expect 0 --cache-dir "$C" verify --deep awk
	step "case awkward_keys: awkward prefixes"
	pull_json awkdir "s3://$B/awk/dir with space/"
	assert_tree "$SRC/awk/dir with space" "$C/models/awkdir"
	pull_json awkcn "s3://$B/awk/模型/"
	assert_tree "$SRC/awk/模型" "$C/models/awkcn"
	step "case awkward_keys: one object at a time (s3://BUCKET/KEY, the key taken literally)"
	local k i=0
	for k in "with space.bin" "plus+sign.bin" "pct%20literal.bin" "模型/权重.bin" "dir with space/x y+z=1&2.bin"; do
		i=$((i + 1))
		mc_expect 0 --cache-dir "$C" pull "s3://$B/awk/$k" --name "awk1-$i"
		keep
		assert_eq "$(tree_files "$C/models/awk1-$i")" "$(basename "$k")" "the file of s3://$B/awk/$k"
		cmp -s "$SRC/awk/$k" "$C/models/awk1-$i/$(basename "$k")" || fail "s3://$B/awk/$k differs"
	done
}

case_empty_object() {
	s3_env user
	pull_json empty "s3://$B/empty/"
	assert_tree "$SRC/empty" "$C/models/empty"
	pull_json empty1 "s3://$B/empty/empty.bin"
	assert_eq "$(tree_files "$C/models/empty1")" empty.bin "the file of s3://$B/empty/empty.bin"
	[ ! -s "$C/models/empty1/empty.bin" ] || fail "models/empty1/empty.bin is not empty"
}

case_folder_markers() {
	s3_env user
	mc_run --cache-dir "$C" pull "s3://$B/dm/" --name dm
	keep
	if [ "$MC_RC" -ne 0 ]; then
		mc_show_output
		fail "a prefix with zero-byte 'folder/' marker objects (dm/, dm/sub/) exited $MC_RC, want 0"
	fi
	assert_tree "$SRC/dm" "$C/models/dm"
}

case_anonymous() {
	s3_env anon
	local mark
	mark=$(rgw_log_mark)
	pull_json anon "s3://$PB/pub/"
	assert_tree "$SRC/pub" "$C/models/anon"
	rgw_log_summary "$mark" >"$MC_TMP/log.anon.json"
	log "gateway: $(json "$MC_TMP/log.anon.json" '{k: j[k] for k in ("requests", "by_status", "users")}')"
	# radosgw logs unsigned requests as user "anonymous" (or "-").
	assert_eq "$(json "$MC_TMP/log.anon.json" 'all(u in ("anonymous", "-") for u in j["users"])')" true \
		"only unsigned requests (users the gateway saw: $(json "$MC_TMP/log.anon.json" 'j["users"]'))"
	step "case anonymous: a private bucket"
	expect_fail 3 AccessDenied anonpriv pull "s3://$B/llama/" --name anonpriv
	expect_fail 3 AccessDenied anonpriv pull "s3://$B/llama/config.json" --name anonpriv
}

case_session_token() {
	rgw_session_token
	s3_env user
	export AWS_ENDPOINT_URL=$RGW_STS_URL
	export AWS_ACCESS_KEY_ID=$RGW_TMP_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$RGW_TMP_SECRET_KEY \
		AWS_SESSION_TOKEN=$RGW_TMP_SESSION_TOKEN
	pull_json sess "s3://$B/sess/"
	assert_tree "$SRC/sess" "$C/models/sess"
	step "case session_token: the token absent, then tampered"
	unset AWS_SESSION_TOKEN
	expect_fail 3 "" sessnotoken pull "s3://$B/sess/" --name sessnotoken
	export AWS_SESSION_TOKEN="${RGW_TMP_SESSION_TOKEN:0:40}AAAA${RGW_TMP_SESSION_TOKEN:44}"
	expect_fail 3 "" sesstampered pull "s3://$B/sess/d/b.bin" --name sesstampered
	# Temporary credentials go into the final scan.
	printf '%s\n' "$RGW_TMP_SECRET_KEY" "$RGW_TMP_SESSION_TOKEN" >"$MC_TMP/tmp-secrets"
}

case_wrong_secret() {
	s3_env user
	export AWS_SECRET_ACCESS_KEY=$WRONG_SECRET
	expect_fail 3 SignatureDoesNotMatch denied pull "s3://$B/llama/" --name denied
	expect_fail 3 SignatureDoesNotMatch denied pull "s3://$B/llama/config.json" --name denied
	mc_expect 3 --cache-dir "$C" -v pull "s3://$B/llama/" --name denied
	keep
	grep -q SignatureDoesNotMatch "$MC_STDERR" || fail "-v: no SignatureDoesNotMatch in stderr"
	mc_expect 3 --cache-dir "$C" -v pull "s3://$B/sess/a.bin" --name denied --json
	keep
	assert_not_published denied
}

case_unknown_key() {
	s3_env user
	export AWS_ACCESS_KEY_ID=$UNKNOWN_KEY
	expect_fail 3 InvalidAccessKeyId unknownkey pull "s3://$B/llama/" --name unknownkey
}

case_bogus_session_token() {
	s3_env user
	export AWS_ENDPOINT_URL=$RGW_STS_URL # the gateway that checks tokens
	export AWS_SESSION_TOKEN=$BOGUS_TOKEN
	expect_fail 3 "" bogustoken pull "s3://$B/llama/" --name bogustoken
	expect_fail 3 "" bogustoken pull "s3://$B/sess/a.bin" --name bogustoken
	mc_expect 3 --cache-dir "$C" -v pull "s3://$B/sess/" --name bogustoken --json
	keep
	export AWS_SESSION_TOKEN=$BOGUS_TOKEN2 # not base64: the gateway answers 400 InvalidArgument
	expect_fail 3 "" bogustoken pull "s3://$B/llama/" --name bogustoken
}

case_not_found() {
	s3_env user
	expect_fail 7 "" notfound pull "s3://$B/nothing-here/" --name notfound
	expect_fail 7 "" notfound pull "s3://$B/llam" --name notfound
	expect_fail 7 NoSuchBucket notfound pull "s3://no-such-bucket-mc/llama/" --name notfound
	expect_fail 7 "" notfound pull "s3://$B/llama/nope.bin" --name notfound
	expect_fail 7 NoSuchBucket notfound pull "s3://no-such-bucket-mc/llama/config.json" --name notfound
}

case_bad_uris() {
	s3_env user
	local u
	for u in "s3://" "s3:///llama/" "s3:///"; do
		expect_fail 2 "" baduri pull "$u" --name baduri
	done
	# Bucket names S3 does not allow: refused (2) or left to the origin to refuse (3).
	for u in "s3://Bad_Bucket!/x" "s3://b/x" "s3://bkt%2Fx/y"; do
		mc_run --cache-dir "$C" pull "$u" --name baduri
		keep
		log "mcache pull $u -> $MC_RC: $(head -c 200 "$MC_STDERR")"
		case $MC_RC in
		2 | 3 | 7) assert_one_error_line ;;
		*) mc_show_output; fail "pull $u exited $MC_RC, want 2 (or 3/7 from the origin)" ;;
		esac
		assert_not_published baduri
	done
}

case_overwrite() {
	s3_env user
	local S=shards/model-00001-of-00002.safetensors sz mark old_blob
	sz=$(stat -c %s "$SRC/llama/$S")
	old_blob=$(blob_of "$C" "$C/models/llama/$S")
	python3 "$MC_LIB_DIR/gen_safetensors.py" file "$SRC/llama/$S" --size "$sz" --seed overwritten >/dev/null
	rgw_aws s3 cp --only-show-errors "$SRC/llama/$S" "s3://$B/llama/$S"
	mark=$(rgw_log_mark)
	pull_json llama "s3://$B/llama/" --connections 8 --chunk-size 4M
	rgw_log_summary "$mark" >"$MC_TMP/log.overwrite.json"
	log "gateway: $(json "$MC_TMP/log.overwrite.json" '{k: j[k] for k in ("requests", "by_status", "per_key")}')"
	assert_tree "$SRC/llama" "$C/models/llama"
	assert_ge "$BYTES_FETCHED" "$sz" "bytes_fetched after one object changed"
	assert_le "$BYTES_FETCHED" $((sz + 4 * SIXTY_FOUR_K)) "bytes_fetched after one object changed"
	mc_expect 0 --cache-dir "$C" verify --deep llama
	# The single-object model 'shard' still shows its own bytes (the other shard: unchanged);
	# the old blob of the overwritten object was never modified in place.
	if [ -e "$old_blob" ]; then
		cmp -s "$old_blob" "$C/models/llama/$S" && fail "the old blob now holds the new bytes"
	fi
	log "the overwritten object's model shows exactly the new bytes"
}

case_cache_intact() {
	local m
	mc_expect 0 --cache-dir "$C" verify --deep
	keep
	for m in llama many; do
		[ -d "$C/models/$m" ] || fail "models/$m is gone"
	done
	assert_tree "$SRC/llama" "$C/models/llama"
}

# resume_after_kill: SIGKILL mid-pull of 96 MiB (capped at 12 MiB/s, 1.5 s after the gateway served its
# first range: the gateway finishes a range long before the capped client has read it from the
# socket, so its log alone says little about the client's progress), then a pull completes
# the model from what was kept: the gateway sends at most 5 % more than the model plus the ranges
# in flight at the kill.
case_resume_after_kill() {
	s3_env user
	local mark pid rc=0 size chunk=1048576 conns=4 sent
	size=$(du -sb --apparent-size "$SRC/resume" | cut -f1)
	mark=$(rgw_log_mark)
	"$MCACHE_BIN" --cache-dir "$C" pull "s3://$B/resume/" --name resume --max-rate 12M \
		--connections "$conns" --chunk-size 1M >"$MC_TMP/kill.out" 2>"$MC_TMP/kill.err" &
	pid=$!
	local i served=0
	for i in $(seq 60); do
		# Not rgw_log_summary: it waits for a quiet log, and this one never is.
		served=$(tail -n +"$((mark + 1))" "$RGW_DIR/log/client.rgw.a.log" |
			grep -c "beast: .*\"GET /$B/resume/big.safetensors[? ].*\" 206 " || true)
		[ "$served" -ge 1 ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	sleep 1.5
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" || rc=$?
	cp "$MC_TMP/kill.out" "$OUT/kill.out"
	cp "$MC_TMP/kill.err" "$OUT/kill.err"
	log "the first pull, killed 1.5 s after its first range was served -> $rc"
	[ "$served" -ge 1 ] || fail "the gateway served no range of the object within 12 s"
	[ "$rc" -eq 137 ] || fail "the rate-capped pull was not running at the kill (exit $rc): make it slower"
	assert_not_published resume
	pull_json resume "s3://$B/resume/" --connections "$conns" --chunk-size 1M
	assert_tree "$SRC/resume" "$C/models/resume"
	assert_le "$BYTES_FETCHED" $((size - 4 * 1048576)) "bytes_fetched of the resumed pull (the killed one ran ~1.5 s at 12 MiB/s)"
	rgw_log_summary "$mark" >"$MC_TMP/log.resume.json"
	sent=$(json "$MC_TMP/log.resume.json" 'sum(j["per_key"].values())')
	log "gateway: $(json "$MC_TMP/log.resume.json" '{k: j[k] for k in ("requests", "by_status", "per_key")}')"
	assert_le "$sent" $((size * 105 / 100 + conns * chunk)) "object bytes the gateway sent over both pulls (model $size)"
	mc_expect 0 --cache-dir "$C" verify --deep resume
}

# overwrite_mid_pull: the object changes at the origin while a rate-capped pull is fetching it.
# Never a mix: the pull fails cleanly (If-Match: 412) or shows one whole version; the next pull
# shows exactly the new one.
case_overwrite_mid_pull() {
	s3_env user
	local pid rc=0 f=obj.safetensors
	"$MCACHE_BIN" --cache-dir "$C" pull "s3://$B/race/" --name race --max-rate 8M --connections 2 \
		--chunk-size 1M >"$MC_TMP/race.out" 2>"$MC_TMP/race.err" &
	pid=$!
	sleep 1
	rgw_aws s3 cp --only-show-errors "$MC_TMP/race-b/$f" "s3://$B/race/$f"
	log "overwritten at the origin; the pull $(kill -0 "$pid" 2>/dev/null && echo "still runs" || echo "had ended by the end of the upload")"
	wait "$pid" || rc=$?
	cp "$MC_TMP/race.out" "$OUT/race.out"
	cp "$MC_TMP/race.err" "$OUT/race.err"
	log "the pull during the overwrite -> $rc: $(head -c 300 "$MC_TMP/race.err")"
	case $rc in
	0)
		if cmp -s "$SRC/race/$f" "$C/models/race/$f"; then
			log "it shows the old version, whole"
		elif cmp -s "$MC_TMP/race-b/$f" "$C/models/race/$f"; then
			log "it shows the new version, whole"
		else
			fail "models/race/$f is neither version: a mix"
		fi
		;;
	3)
		[ "$(wc -l <"$MC_TMP/race.err")" -eq 1 ] && grep -q '^mcache: ' "$MC_TMP/race.err" ||
			fail "want one 'mcache: ' line, got: $(head -c 600 "$MC_TMP/race.err")"
		assert_not_published race
		;;
	*) fail "a pull during an overwrite exited $rc, want 0 (one whole version) or 3 (one line)" ;;
	esac
	pull_json race "s3://$B/race/"
	cmp -s "$MC_TMP/race-b/$f" "$C/models/race/$f" || fail "after the overwrite, models/race/$f is not the new version"
	mc_expect 0 --cache-dir "$C" verify --deep race
}

case_traversal_keys() {
	s3_env user
	mc_run --cache-dir "$C" pull "s3://$B/trav/" --name trav
	keep
	log "pull of keys with '..', '.' and '//' -> $MC_RC: $(head -c 300 "$MC_STDERR")"
	case $MC_RC in
	0) [ -f "$C/models/trav/ok.txt" ] || fail "exit 0 but models/trav/ok.txt is missing" ;;
	2 | 3 | 4) assert_one_error_line ;;
	*) mc_show_output; fail "keys with '..' segments: exit $MC_RC, want 0 (unsafe keys refused) or a clean error" ;;
	esac
	local hits
	hits=$(
		ls -d /escape.txt /tmp/escape.txt 2>/dev/null || true
		find "$MC_TMP" -name escape.txt | grep -v "^$C/trees/trav/[^/]*/" | grep -v "^$C/models/trav/" || true
	)
	[ -z "$hits" ] || fail "a key with '..' wrote outside the model's tree: $hits"
}

for c in prefix_model ls_sources repull single_object pagination awkward_keys empty_object folder_markers anonymous session_token \
	wrong_secret unknown_key bogus_session_token not_found bad_uris overwrite resume_after_kill overwrite_mid_pull traversal_keys; do
	run_case "$c"
done

step "the models pulled earlier survived every failed pull"
run_case cache_intact

step "no secret in any output, in the index, or anywhere in the cache"
SECRETS=("$RGW_SECRET_KEY" "$WRONG_SECRET" "$BOGUS_TOKEN" "$BOGUS_TOKEN2")
[ -f "$MC_TMP/tmp-secrets" ] && mapfile -t -O "${#SECRETS[@]}" SECRETS <"$MC_TMP/tmp-secrets"
# Each secret whole, and its first and last 16 characters (a truncated secret is still a leak).
NEEDLES=()
for s in "${SECRETS[@]}"; do
	NEEDLES+=("$s")
	[ "${#s}" -ge 32 ] && NEEDLES+=("${s:0:16}" "${s: -16}")
done
printf '%s\n' "${NEEDLES[@]}" >"$MC_TMP/needles"
# Signing material whatever the secret: a query-string signature, credential or token with a
# value (a redaction such as "=REDACTED" or "=[redacted]" passes), an Authorization header's
# Signature=<hex> or Credential=<key>/<date>/, a security-token header with a value.
PATTERNS='X-Amz-(Signature|Credential|Security-Token)=[A-Za-z0-9%+/=]{12}|Signature=[0-9a-f]{16}|Credential=[A-Za-z0-9]{8,}/[0-9]{8}/|x-amz-security-token: *[A-Za-z0-9+/=]{16}'
sync
SCANNED=$(find "$OUT" -type f | wc -l)
scan() { # scan FILE...: fails on any needle or pattern
	local hits
	hits=$(grep -laF -f "$MC_TMP/needles" -- "$@" 2>/dev/null || true)
	hits+=$(grep -laiE -- "$PATTERNS" "$@" 2>/dev/null || true)
	if [ -n "$hits" ]; then
		printf '%s\n' "$hits" | head -n 5 | while IFS= read -r h; do
			echo "--- $h:" >&2
			{ grep -aoF -f "$MC_TMP/needles" -- "$h"; grep -aoiE -- "$PATTERNS" "$h"; } | head -n 3 | cut -c1-24 | sed 's/$/…/' >&2 || true
		done
		fail "secret material in: $(printf '%s' "$hits" | tr '\n' ' ' | head -c 400)"
	fi
}
mapfile -t OUTFILES < <(find "$OUT" -type f)
scan "${OUTFILES[@]}"
mapfile -t CACHEFILES < <(find "$C" -type f)
scan "${CACHEFILES[@]}"
if find "$C" | grep -qF -f "$MC_TMP/needles"; then
	fail "a secret is in a file name under the cache"
fi
sqlite3 -readonly "$C/index.db" .dump >"$MC_TMP/dump.sql"
scan "$MC_TMP/dump.sql"
for s in "X-Amz-" "token=" "Signature=" "Credential="; do
	assert_file_lacks "$MC_TMP/dump.sql" "$s"
done
log "checked $SCANNED stdout/stderr files, ${#CACHEFILES[@]} files under the cache (index.db and its -wal/-shm among them) and the index dump"

step "summary"
for r in "${RESULTS[@]}"; do log "$r"; done
log "gateway RSS at the end: $(($(rgw_rss_kib) / 1024)) MiB"
