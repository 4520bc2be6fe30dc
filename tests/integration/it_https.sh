#!/usr/bin/env bash
# HTTPS with a private CA: nginx serves TLS with a server certificate for 127.0.0.1 signed by a
# CA made for this test. The pull succeeds with --ca-file ca.pem and with SSL_CERT_FILE=ca.pem;
# without the CA it fails certificate verification: exit 3, one line on stderr, nothing
# published.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
step "fixture: 2 x 12 MiB shards over TLS"
gen_model "$WWW/m" 24M 2 3
mapfile -t FILES < <(cd "$WWW/m" && ls)
nginx_start "$WWW" --tls
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_TLS_URL/m/$f"); done

step "pull --ca-file ca.pem"
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$MC_TMP/c1" pull "${URLS[@]}" --name tls --ca-file "$NGINX_CA" \
	--chunk-size 4M --connections 4
assert_same_tree "$WWW/m" "$MC_TMP/c1/models/tls" "${FILES[@]}"
nginx_log_summary "$MARK" >"$MC_TMP/log.json"
assert_eq "$(json "$MC_TMP/log.json" 'sum(1 for u in j["per_uri"] if u.startswith("/m/"))')" \
	"${#FILES[@]}" "files requested over TLS"
mc_expect 0 --cache-dir "$MC_TMP/c1" verify --deep

step "no CA: certificate verification fails with exit 3"
mc_expect 3 --cache-dir "$MC_TMP/c2" pull "${URLS[@]}" --name tls
assert_one_error_line
[ ! -e "$MC_TMP/c2/models/tls" ] || fail "a failed pull published models/tls"

step "--ca-file with a CA that did not sign the server: exit 3"
mkdir -p "$MC_TMP/other"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-keyout "$MC_TMP/other/k.pem" -out "$MC_TMP/other/ca.pem" -subj "/CN=other CA" 2>/dev/null
mc_expect 3 --cache-dir "$MC_TMP/c2" pull "${URLS[@]}" --name tls --ca-file "$MC_TMP/other/ca.pem"
assert_one_error_line

step "SSL_CERT_FILE=ca.pem"
SSL_CERT_FILE=$NGINX_CA mc_expect 0 --cache-dir "$MC_TMP/c3" pull "${URLS[@]}" --name tls
assert_same_tree "$WWW/m" "$MC_TMP/c3/models/tls" "${FILES[@]}"

step "the cache that failed is usable afterwards"
mc_expect 0 --cache-dir "$MC_TMP/c2" pull "${URLS[@]}" --name tls --ca-file "$NGINX_CA"
assert_same_tree "$WWW/m" "$MC_TMP/c2/models/tls" "${FILES[@]}"
mc_expect 0 --cache-dir "$MC_TMP/c2" verify --deep
