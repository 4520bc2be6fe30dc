#!/usr/bin/env bash
# Guarantee 6: a presigned URL's query string is a secret. mcache must send it to the origin
# (nginx's log proves it did: the signature is what authorises the download) and must show it
# nowhere else: not in stdout or stderr (normal, -v and --json), not in `ls`/`verify` output,
# not in the index (index.db and its -wal/-shm), not anywhere under the cache directory, and
# not in the one-line error of a failed pull.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
SECRETS=(SECRETSIG123 AKIDSECRET456 TOKENSECRET789 PASSWDSECRET42)
Q="X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDSECRET456%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=SECRETSIG123&token=TOKENSECRET789"

step "fixture: a 2-shard model and its config"
gen_model "$WWW/m" 16M 2 4
mapfile -t FILES < <(cd "$WWW/m" && ls)
nginx_start "$WWW"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f?$Q"); done

OUT=$MC_TMP/outputs
mkdir -p "$OUT"
n=0
# keep: saves the last run's stdout and stderr for the final scan.
keep() {
	n=$((n + 1))
	cp "$MC_STDOUT" "$OUT/$n.out"
	cp "$MC_STDERR" "$OUT/$n.err"
}

step "pull presigned URLs (normal, then -v and --json into other names)"
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name presigned --chunk-size 4M --connections 4
keep
assert_same_tree "$WWW/m" "$C/models/presigned" "${FILES[@]}"
mc_expect 0 --cache-dir "$C" -v pull "${URLS[@]}" --name presigned-v --chunk-size 4M
keep
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name presigned-json -v --json
keep
grep -qF SECRETSIG123 "$NGINX_LOG" || fail "the origin never saw the signature: mcache dropped the query string"
log "the origin received the signed query (nginx log)"

step "ls, verify, in every output form"
for args in "ls" "ls --json" "-v ls" "verify" "verify --deep -v" "verify --json" "ls presigned"; do
	# shellcheck disable=SC2086 # word splitting of the canned argument lists is intended
	mc_run --cache-dir "$C" $args
	keep
done

step "failed pulls: errors name the URL without its secrets"
mc_expect 3 --cache-dir "$C" pull "$NGINX_URL/m/nosuch.safetensors?$Q" --name gone
assert_one_error_line
keep
mc_expect 3 --cache-dir "$C" -v pull "http://127.0.0.1:1/m/x.safetensors?$Q" --name closed
keep
mc_expect 2 --cache-dir "$C" pull "ftp://user:PASSWDSECRET42@127.0.0.1/x?$Q"
assert_one_error_line
keep

step "userinfo in the URL (user:password@) is a secret too"
mc_run --cache-dir "$C" -v pull "http://user:PASSWDSECRET42@127.0.0.1:$NGINX_PORT/m/config.json?$Q" --name userinfo
log "pull with user:password@ -> $MC_RC"
case $MC_RC in
0 | 2) ;;
*) mc_show_output; fail "pull with user:password@ exited $MC_RC, want 0 (or 2 if refused)" ;;
esac
keep

step "no secret in any output, in the index, or anywhere in the cache"
sync
for s in "${SECRETS[@]}"; do
	if grep -rlaF -- "$s" "$OUT" >"$MC_TMP/hits"; then
		while read -r h; do
			echo "--- $h:" >&2
			grep -aF -- "$s" "$h" | head -n3 >&2
		done <"$MC_TMP/hits"
		fail "secret '$s' appears in mcache's output"
	fi
	for f in "$C/index.db" "$C/index.db-wal" "$C/index.db-shm" "$C/index.db-journal"; do
		assert_file_lacks "$f" "$s"
	done
	if grep -rlaF -- "$s" "$C" >"$MC_TMP/hits"; then
		fail "secret '$s' is stored under the cache: $(head -n3 "$MC_TMP/hits" | tr '\n' ' ')"
	fi
	if find "$C" -name "*$s*" | grep -q .; then
		fail "secret '$s' is in a file name under the cache"
	fi
done
sqlite3 -readonly "$C/index.db" .dump >"$MC_TMP/dump.sql"
for s in "${SECRETS[@]}" "X-Amz-" "token="; do
	assert_file_lacks "$MC_TMP/dump.sql" "$s"
done
log "checked $n runs' stdout/stderr, index.db(-wal/-shm) and every file under the cache"
