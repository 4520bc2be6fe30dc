#!/usr/bin/env bash
# The TLS and redirect policy, and file selection:
#   - a redirect from https to http is refused (exit 3, one line); http to https is followed;
#   - TLS is verified: no CA fails (exit 3), --insecure works and says so on stderr,
#     SSL_CERT_DIR (a hashed CA directory) works;
#   - --include/--exclude pick files by their path in the model; nothing left: exit 7.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
gen_model "$WWW/m" 3M 2 5
chmod -R a+rX "$WWW"
nginx_start "$WWW" --tls
FILE=model-00001-of-00002.safetensors

step "https to http: refused"
MARK=$(nginx_log_mark)
mc_expect 3 --cache-dir "$C" pull "$NGINX_TLS_URL/to-http/m/$FILE" --name down --ca-file "$NGINX_CA"
assert_one_error_line
nginx_log_settle
assert_eq "$(nginx_log_summary "$MARK" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')" 1 \
	"requests (the downgrade must not be followed)"
[ ! -e "$C/models/down" ] || fail "a refused redirect published a model"

step "http to https: followed"
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/to-https/m/$FILE" --name up --ca-file "$NGINX_CA"
assert_same_tree "$WWW/m" "$C/models/up" "$FILE"

step "TLS verification: no CA fails, --insecure works and warns"
mc_expect 3 --cache-dir "$C" pull "$NGINX_TLS_URL/m/$FILE" --name noca
assert_one_error_line
mc_expect 0 --cache-dir "$C" pull "$NGINX_TLS_URL/m/$FILE" --name insecure --insecure
grep -q 'warning: --insecure' "$MC_STDERR" || fail "--insecure did not say so on stderr"
assert_same_tree "$WWW/m" "$C/models/insecure" "$FILE"

step "SSL_CERT_DIR: a hashed directory of CA certificates"
mkdir -p "$MC_TMP/certs"
cp "$NGINX_CA" "$MC_TMP/certs/ca.pem"
openssl rehash "$MC_TMP/certs" 2>/dev/null || c_rehash "$MC_TMP/certs" >/dev/null
SSL_CERT_DIR=$MC_TMP/certs mc_expect 0 --cache-dir "$C" pull "$NGINX_TLS_URL/m/$FILE" --name certdir
assert_same_tree "$WWW/m" "$C/models/certdir" "$FILE"

step "--include and --exclude"
mapfile -t urls < <(cd "$WWW" && find m -type f | sort | sed "s|^|$NGINX_URL/|")
mc_expect 0 --cache-dir "$C" --json pull "${urls[@]}" --name sel --include '*.safetensors' \
	--exclude 'model-00002-*'
assert_eq "$(ls "$C/models/sel")" "$FILE" "files selected"
mc_expect 7 --cache-dir "$C" pull "${urls[@]}" --name none --exclude '*'
assert_one_error_line
