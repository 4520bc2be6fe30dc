#!/usr/bin/env bash
# hf:// against a Hub-shaped nginx (tests/lib/hf_hub.sh): the API answers are static JSON files
# in the shape of GET /api/models/{repo}/revision/{rev}?blobs=true, the files sit under
# /{repo}/resolve/{sha}/. Checks: a pull is byte-identical, resolves the revision once and
# fetches every file from /resolve/<commit>/ (never /resolve/main/), records the commit; tags
# and refs/pr/1 (percent-encoded) resolve to their own commits; a gated repository is refused
# without a token (exit 3, one line naming HF_TOKEN) and pulls with HF_TOKEN or HF_TOKEN_PATH,
# the token reaching the Hub on the API call and every file request; a repository whose files
# redirect to a CDN on another host pulls with the token never reaching the CDN; a wrong
# token, a missing repository or revision (exit 7), an empty repository (exit 7), a listing
# with an unsafe name or malformed JSON (exit 3), a published sha256 that does not match the
# bytes (exit 4): each one line, nothing published. The token never appears in any output or
# anywhere under the cache directory.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
. "$(dirname "$0")/../lib/hf_hub.sh"
mc_setup

TOKEN=hf_itSecretToken7781
HUB=$MC_TMP/hub
SRC=$MC_TMP/src
C=$MC_TMP/cache
hub() { python3 "$MC_LIB_DIR/hf_hub.py" "$@"; }

# Nothing from the caller's Hugging Face setup may reach the binary under test.
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_TOKEN_PATH XDG_CACHE_HOME HF_ENDPOINT
export HF_HOME=$MC_TMP/hf-home # empty: no token file

# Every output of every run, for the token check at the end.
OUTS=$MC_TMP/outputs
mkdir -p "$OUTS"
hf_run() {
	local want=$1
	shift
	mc_expect "$want" "$@"
	cat "$MC_STDOUT" "$MC_STDERR" >>"$OUTS/all"
}
nothing_published() {
	[ ! -e "$C/models/$1" ] || fail "a failed pull published models/$1"
}

step "fixture: a Hub with acme/tiny (main, refs/pr/1, v1), gated/model, cdnorg/model and bad repos"
gen_model "$SRC/main" 6M 2 11
mkdir -p "$SRC/main/sub dir"
printf 'notes\n' >"$SRC/main/sub dir/notes #1.txt"
gen_model "$SRC/v1" 3M 1 12
gen_model "$SRC/pr" 2M 1 13
gen_model "$SRC/cdn" 6M 2 14 # its own bytes: blobs the cache already holds are not fetched
printf 'cdn notes\n' >"$SRC/cdn/notes.txt"
# An LFS file smaller than the 302 page that redirects it: the size limit is the object's.
printf 'tiny lfs\n' >"$SRC/cdn/tiny.bin"
SHA_MAIN=$(hub sha tiny-main)
SHA_V1=$(hub sha tiny-v1)
SHA_PR=$(hub sha tiny-pr1)
hub publish "$HUB" acme/tiny --src "$SRC/main" --sha "$SHA_MAIN" --rev main
hub publish "$HUB" acme/tiny --src "$SRC/v1" --sha "$SHA_V1" --rev v1
hub publish "$HUB" acme/tiny --src "$SRC/pr" --sha "$SHA_PR" --rev refs/pr/1
hub publish "$HUB" gated/model --src "$SRC/v1" --sha "$(hub sha gated)" --rev main
hub publish "$HUB" cdnorg/model --src "$SRC/cdn" --sha "$(hub sha cdn)" --rev main
hub publish "$HUB" acme/liar --src "$SRC/v1" --sha "$(hub sha liar)" --rev main \
	--lie model.safetensors
hub publish "$HUB" acme/tiny-copy --src "$SRC/main" --sha "$(hub sha tiny-copy)" --rev main
hub answer "$HUB" acme/empty main --json "{\"sha\":\"$(hub sha empty)\",\"siblings\":[]}"
hub answer "$HUB" acme/evil main --json "{\"sha\":\"$(hub sha evil)\",\"siblings\":[
	{\"rfilename\":\"config.json\",\"size\":2},{\"rfilename\":\"../../evil\",\"size\":2}]}"
hub answer "$HUB" acme/garbled main --json '<html><body>502 Bad Gateway</body></html>'
hub answer "$HUB" acme/branchy main --json '{"sha":"main","siblings":[{"rfilename":"a"}]}'
mapfile -t FILES_MAIN < <(cd "$SRC/main" && find . -type f | sed 's|^\./||' | sort)
mapfile -t FILES_V1 < <(cd "$SRC/v1" && find . -type f | sed 's|^\./||' | sort)
mapfile -t FILES_PR < <(cd "$SRC/pr" && find . -type f | sed 's|^\./||' | sort)
mapfile -t FILES_CDN < <(cd "$SRC/cdn" && find . -type f | sed 's|^\./||' | sort)
export SHA_MAIN
FILES_MAIN_NL=$(printf '%s\n' "${FILES_MAIN[@]}")
export FILES_MAIN_NL
hub_start "$HUB" "$TOKEN"
export HF_ENDPOINT=$HUB_URL/ # a trailing slash, as users write it

step "pull hf://acme/tiny@main: byte-identical, every file from /resolve/<commit>/"
MARK=$(nginx_log_mark)
hf_run 0 --cache-dir "$C" pull hf://acme/tiny@main --name tiny --chunk-size 1M --connections 4
assert_same_tree "$SRC/main" "$C/models/tiny" "${FILES_MAIN[@]}"
assert_eq "$(hub_log "$MARK" 'len([x for x in r if x["uri"].startswith("/api/")])')" 1 \
	"API requests"
assert_eq "$(hub_log "$MARK" '[x["request_uri"] for x in r if x["uri"].startswith("/api/")][0]')" \
	"/api/models/acme/tiny/revision/main?blobs=true" "the API request"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["uri"].split("/resolve/")[1].split("/")[0]
	for x in r if not x["uri"].startswith("/api/")))')" "[\"$SHA_MAIN\"]" \
	"commits in the file requests"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["uri"].split("/resolve/" + env["SHA_MAIN"] + "/")[1]
	for x in r if "/resolve/" in x["uri"]))')" \
	"$(hub_log "$MARK" 'sorted(env["FILES_MAIN_NL"].splitlines())')" "files requested"
assert_eq "$(hub_log "$MARK" 'any("sub%20dir/notes%20%231.txt" in x["request_uri"] for x in r)')" \
	true "a percent-encoded path"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["auth"] for x in r))')" '["none"]' \
	"Authorization without a token"
assert_eq "$(hub_log "$MARK" 'all(x["status"] in (200, 206) for x in r)')" true "statuses"
hf_run 0 --cache-dir "$C" --json ls
grep -qF "$SHA_MAIN" "$MC_STDOUT" || fail "ls --json does not show the commit $SHA_MAIN"
hf_run 0 --cache-dir "$C" verify --deep tiny

step "a second pull of @main fetches nothing new"
MARK=$(nginx_log_mark)
hf_run 0 --cache-dir "$C" pull hf://acme/tiny@main --name tiny
assert_le "$(hub_log "$MARK" 'sum(x["bytes"] for x in r if "/resolve/" in x["uri"])')" \
	$((64 * 1024 * ${#FILES_MAIN[@]})) "body bytes of a warm re-pull"

step "another repository with the same LFS files: linked by their published sha256, not fetched"
MARK=$(nginx_log_mark)
hf_run 0 --cache-dir "$C" pull hf://acme/tiny-copy --name tiny-copy
assert_same_tree "$SRC/main" "$C/models/tiny-copy" "${FILES_MAIN[@]}"
LFS_GETS=$(hub_log "$MARK" 'len([x for x in r if "/resolve/" in x["uri"] and x["uri"].endswith(".safetensors")])')
assert_eq "$LFS_GETS" 0 "requests for LFS files whose sha256 the cache already holds"
for f in "${FILES_MAIN[@]}"; do
	case $f in *.safetensors)
		assert_eq "$(stat -c %i "$C/models/tiny-copy/$f")" "$(stat -c %i "$C/models/tiny/$f")" 			"inode of $f in both models" ;;
	esac
done

step "@v1 (a tag) and refs/pr/1 (a ref with slashes, percent-encoded) resolve to their commits"
MARK=$(nginx_log_mark)
hf_run 0 --cache-dir "$C" pull hf://acme/tiny@v1 --name tiny-v1
assert_same_tree "$SRC/v1" "$C/models/tiny-v1" "${FILES_V1[@]}"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["uri"].split("/resolve/")[1].split("/")[0]
	for x in r if "/resolve/" in x["uri"]))')" "[\"$SHA_V1\"]" "commit of v1"
MARK=$(nginx_log_mark)
hf_run 0 --cache-dir "$C" pull "hf://acme/tiny@refs/pr/1" --name tiny-pr
assert_same_tree "$SRC/pr" "$C/models/tiny-pr" "${FILES_PR[@]}"
assert_eq "$(hub_log "$MARK" '[x["request_uri"] for x in r if x["uri"].startswith("/api/")]')" \
	'["/api/models/acme/tiny/revision/refs%2Fpr%2F1?blobs=true"]' "the API request for refs/pr/1"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["uri"].split("/resolve/")[1].split("/")[0]
	for x in r if "/resolve/" in x["uri"]))')" "[\"$SHA_PR\"]" "commit of refs/pr/1"
hf_run 0 --cache-dir "$C" --json ls
grep -qF "$SHA_V1" "$MC_STDOUT" || fail "ls --json does not show the commit $SHA_V1"
grep -qF "$SHA_PR" "$MC_STDOUT" || fail "ls --json does not show the commit $SHA_PR"

step "a gated repository without a token: exit 3, one line naming HF_TOKEN"
hf_run 3 --cache-dir "$C" pull hf://gated/model --name gated
assert_one_error_line
grep -q 'HF_TOKEN' "$MC_STDERR" || fail "the 401 message does not mention HF_TOKEN"
nothing_published gated

step "a wrong token: exit 3, one line, the token not echoed"
HF_TOKEN=hf_wrongToken0000 hf_run 3 --cache-dir "$C" pull hf://gated/model --name gated
assert_one_error_line
assert_file_lacks "$MC_STDERR" hf_wrongToken0000
nothing_published gated

step "HF_TOKEN: the token reaches the API and every file request"
MARK=$(nginx_log_mark)
HF_TOKEN=$TOKEN hf_run 0 --cache-dir "$C" pull hf://gated/model --name gated -v
assert_same_tree "$SRC/v1" "$C/models/gated" "${FILES_V1[@]}"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["auth"] for x in r))')" '["good"]' \
	"Authorization on every request to the Hub"
HF_TOKEN=$TOKEN hf_run 0 --cache-dir "$C" --json pull hf://gated/model --name gated

step "HF_TOKEN_PATH and \$HF_HOME/token (first line, trimmed)"
printf '  %s  \nignored\n' "$TOKEN" >"$MC_TMP/token-file"
HF_TOKEN_PATH=$MC_TMP/token-file hf_run 0 --cache-dir "$MC_TMP/c-file" pull hf://gated/model \
	--name gated
assert_same_tree "$SRC/v1" "$MC_TMP/c-file/models/gated" "${FILES_V1[@]}"
mkdir -p "$MC_TMP/hf-home2"
printf '%s\n' "$TOKEN" >"$MC_TMP/hf-home2/token"
HF_HOME=$MC_TMP/hf-home2 hf_run 0 --cache-dir "$MC_TMP/c-home" pull hf://gated/model --name gated
assert_same_tree "$SRC/v1" "$MC_TMP/c-home/models/gated" "${FILES_V1[@]}"
HF_TOKEN_PATH=$MC_TMP/no-such-file hf_run 2 --cache-dir "$MC_TMP/c-home" pull hf://gated/model \
	--name gated2
assert_one_error_line

step "files redirected to a CDN on another host: the token stays with the Hub"
MARK=$(nginx_log_mark)
HF_TOKEN=$TOKEN hf_run 0 --cache-dir "$C" pull hf://cdnorg/model --name cdn --chunk-size 1M \
	--connections 4
assert_same_tree "$SRC/cdn" "$C/models/cdn" "${FILES_CDN[@]}"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["uri"].rsplit("/", 1)[1] for x in r
	if x["uri"].startswith("/cdn/")))')" \
	'["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tiny.bin"]' \
	"files served by the CDN"
assert_eq "$(hub_log "$MARK" 'sorted(set((x["host"], x["auth"]) for x in r
	if x["uri"].startswith("/cdn/")))')" '[["localhost", "none"]]' \
	"Authorization at the CDN (must be none)"
assert_eq "$(hub_log "$MARK" 'sorted(set(x["auth"] for x in r
	if not x["uri"].startswith("/cdn/")))')" '["good"]' "Authorization at the Hub"
assert_eq "$(hub_log "$MARK" 'all(x["status"] == 302 for x in r
	if x["uri"].startswith("/cdnorg/") and x["uri"].endswith(".safetensors"))')" \
	true "the Hub redirects every LFS file"

step "a missing repository or revision: exit 7"
hf_run 7 --cache-dir "$C" pull hf://acme/nothing --name nothing
assert_one_error_line
hf_run 7 --cache-dir "$C" pull hf://acme/tiny@no-such-branch --name nothing
assert_one_error_line
hf_run 7 --cache-dir "$C" pull hf://acme/empty --name nothing
assert_one_error_line
nothing_published nothing

step "unsafe or malformed answers: exit 3, nothing written outside the cache"
hf_run 3 --cache-dir "$C" pull hf://acme/evil --name evil
assert_one_error_line
grep -q 'unsafe file name' "$MC_STDERR" || fail "the message does not say 'unsafe file name'"
if [ -e "$MC_TMP/evil" ] || [ -e "$C/evil" ]; then fail "a '../../evil' file was written"; fi
hf_run 3 --cache-dir "$C" pull hf://acme/garbled --name garbled
assert_one_error_line
grep -q 'bad Hub API answer' "$MC_STDERR" || fail "the message does not say 'bad Hub API answer'"
hf_run 3 --cache-dir "$C" pull hf://acme/branchy --name branchy
assert_one_error_line
nothing_published evil
nothing_published garbled
nothing_published branchy

step "bad URIs: exit 2"
hf_run 2 --cache-dir "$C" pull hf://acme/../etc --name bad
assert_one_error_line
hf_run 2 --cache-dir "$C" pull "hf://acme/tiny@a b" --name bad
assert_one_error_line
HF_ENDPOINT=ftp://hub.example hf_run 2 --cache-dir "$C" pull hf://acme/tiny --name bad
assert_one_error_line

step "a published sha256 that does not match the bytes: exit 4, nothing published"
hf_run 4 --cache-dir "$C" pull hf://acme/liar --name liar
assert_one_error_line
nothing_published liar

step "the cache is intact after all of that"
hf_run 0 --cache-dir "$C" verify --deep

step "the token appears in no output and nowhere under the cache directories"
for d in "$C" "$MC_TMP/c-file" "$MC_TMP/c-home"; do
	if grep -raqF "$TOKEN" "$d"; then
		fail "the token is stored under '$d': $(grep -ralF "$TOKEN" "$d" | head -n3)"
	fi
done
assert_file_lacks "$OUTS/all" "$TOKEN"
assert_file_lacks "$OUTS/all" hf_wrongToken0000
log "token absent from $(wc -l <"$OUTS/all") lines of output and from the caches"
