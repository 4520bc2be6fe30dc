#!/usr/bin/env bash
# The static binary and the image recipe (issue 6; packaging/README.md):
#   - packaging/static/build.sh builds build-static/mcache (run every time: the rebuilt libcurl
#     and libxml2 are cached, mcache's own build is incremental); the result is statically
#     linked (file, ldd, no PT_INTERP, no DT_NEEDED), stripped, at most 10 MB;
#   - packaging/Dockerfile runs that script and ships what this test checks (grep);
#   - in an empty root (chroot into a directory holding only the binary, no environment):
#     --version; a real pull from a loopback nginx by address and by `localhost` (libcurl
#     resolves it itself), byte-identical, verify --deep clean; an unknown name fails (exit 3,
#     one line); with /etc/hosts and /etc/resolv.conf (what kubelet mounts into every
#     container) names resolve from the file and from a real DNS answer (tests/packaging/
#     pk_dns.py), with no nsswitch.conf; as the image's user 65532:65532, also `mcache init`
#     (MODEL_URL, and a YAML manifest: libyaml is in the binary);
#   - https in the empty root: the CA bundle from SSL_CERT_FILE, from the compiled-in default
#     /etc/ssl/certs/ca-certificates.crt (where the image puts Debian's bundle); without any
#     bundle, or with SSL_CERT_FILE naming a missing file, the pull fails closed: exit 3, one
#     line naming SSL_CERT_FILE, nothing published.
# Needs root (chroot, apt-get in build.sh) and the Debian archive (first run); fails otherwise.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

[ "$(id -u)" -eq 0 ] ||
	fail "needs root: chroot into an empty directory and apt-get in packaging/static/build.sh (CI runs as root)"

STATIC=$MCACHE_SRC/build-static/mcache
CA_DEFAULT=/etc/ssl/certs/ca-certificates.crt

step "packaging/static/build.sh"
t0=$(date +%s)
bash "$MCACHE_SRC/packaging/static/build.sh" >"$MC_TMP/build.log" 2>&1 ||
	{ tail -n 40 "$MC_TMP/build.log" >&2; fail "packaging/static/build.sh failed"; }
sed 's/^/   /' "$MC_TMP/build.log" | grep -v 'link warning' || true
log "build.sh took $(($(date +%s) - t0)) s"

step "statically linked, stripped, small"
desc=$(file -b "$STATIC")
case $desc in *"statically linked"*) ;; *) fail "file says: $desc" ;; esac
case $desc in *"not stripped"*) fail "not stripped: $desc" ;; esac
out=$(ldd "$STATIC" 2>&1) && fail "ldd finds dynamic dependencies: $out"
case $out in *"not a dynamic executable"*) ;; *) fail "ldd says: $out" ;; esac
! readelf -lW "$STATIC" | grep -q INTERP || fail "the binary has a program interpreter (PT_INTERP)"
! readelf -dW "$STATIC" 2>/dev/null | grep -q NEEDED || fail "the binary has DT_NEEDED entries"
size=$(file_size "$STATIC")
assert_le "$size" 10000000 "build-static/mcache bytes"
log "$desc"
log "size: $size bytes"

step "packaging/Dockerfile ships what this test checks"
DF=$MCACHE_SRC/packaging/Dockerfile
[ -f "$DF" ] || fail "packaging/Dockerfile is missing"
grep -Eq '^FROM debian:12(\.[0-9]+)?(-slim)? AS ' "$DF" || fail "the builder stage is not FROM debian:12"
grep -Eq '^RUN .*packaging/static/build\.sh' "$DF" || fail "the Dockerfile does not run packaging/static/build.sh"
grep -Eq '^FROM scratch' "$DF" || fail "the final stage is not FROM scratch"
grep -Eq '^COPY --from=[a-z]+ \S*build-static/mcache /mcache$' "$DF" ||
	fail "the Dockerfile does not copy build-static/mcache to /mcache"
grep -Eq "^COPY --from=[a-z]+ $CA_DEFAULT $CA_DEFAULT\$" "$DF" ||
	fail "the Dockerfile does not ship the CA bundle at $CA_DEFAULT"
grep -Eq '^USER 65532:65532$' "$DF" || fail "the image does not run as 65532:65532"
grep -Fxq 'ENTRYPOINT ["/mcache"]' "$DF" || fail "the entrypoint is not /mcache"
if ! grep -q -- '--with-ca-bundle="$CA_BUNDLE"' "$MCACHE_SRC/packaging/static/build.sh" ||
	! grep -q "^CA_BUNDLE=$CA_DEFAULT\$" "$MCACHE_SRC/packaging/static/build.sh"; then
	fail "build.sh's compiled-in CA bundle is not $CA_DEFAULT"
fi
for l in title description source licenses version; do
	grep -q "org.opencontainers.image.$l=" "$DF" || fail "no OCI label org.opencontainers.image.$l"
done
v=$(sed -n 's/^ARG VERSION=//p' "$DF")
assert_eq "mcache $v" "$("$STATIC" --version | head -n1)" "the Dockerfile's default VERSION"
grep -Eqx 'build-\*|build-static/?' "$DF.dockerignore" 2>/dev/null ||
	fail "packaging/Dockerfile.dockerignore does not keep build-static/ out of the build context"
log "builder runs build.sh; FROM scratch with /mcache, the CA bundle, USER 65532, OCI labels"

# The empty root, and MCACHE_BIN pointing at a wrapper that runs /mcache inside it with no
# environment but MC_CR_ENV (NAME=VALUE words), as MC_CR_USER when set: mc_expect works as is.
R=$MC_TMP/root
mkdir "$R"
cp "$STATIC" "$R/mcache"
CHROOT=$(command -v chroot)
cat >"$MC_TMP/in-root" <<EOF
#!/bin/sh
# shellcheck disable=SC2086
exec env -i \${MC_CR_ENV:-} $CHROOT \${MC_CR_USER:+--userspec=\$MC_CR_USER} '$R' /mcache "\$@"
EOF
chmod +x "$MC_TMP/in-root"
DYN_BIN=$MCACHE_BIN
MCACHE_BIN=$MC_TMP/in-root
only_binary() { # the root holds the binary and what the current step put there, nothing else
	local got
	got=$(cd "$R" && find . -mindepth 1 -maxdepth 1 | sort | tr '\n' ' ')
	assert_eq "$got" "$* " "entries in the empty root"
}

step "empty root: --version"
only_binary ./mcache
mc_expect 0 --version
assert_eq "$(head -n1 "$MC_STDOUT")" "$("$DYN_BIN" --version | head -n1)" "--version"
log "$(tr '\n' ' ' <"$MC_STDOUT")"

WWW=$MC_TMP/www
gen_model "$WWW/m" 6M 2 7
mapfile -t FILES < <(cd "$WWW/m" && ls)
nginx_start "$WWW" --tls
urls() { # urls BASE: the model's files under BASE/m/
	local f
	for f in "${FILES[@]}"; do printf '%s/m/%s\n' "$1" "$f"; done
}

step "empty root: pull by address, verify --deep"
mapfile -t U < <(urls "$NGINX_URL")
mc_expect 0 --cache-dir /cache pull "${U[@]}" --name m --chunk-size 1M --connections 4
assert_same_tree "$WWW/m" "$R/cache/models/m" "${FILES[@]}"
mc_expect 0 --cache-dir /cache verify --deep
mc_expect 0 --cache-dir /cache ls --json
assert_eq "$(json "$MC_STDOUT" 'j["models"][0]["name"]')" m "ls --json in the root"

step "empty root: a .tar.zst bundle unpacks (libarchive's tar reader and zstd, linked in)"
command -v zstd >/dev/null || fail "zstd is required (tests/deps.sh)"
tar -C "$WWW/m" -cf - . | zstd -q -o "$WWW/m.tar.zst"
mc_expect 0 --cache-dir /cache pull "$NGINX_URL/m.tar.zst" --name bundle
assert_same_tree "$WWW/m" "$R/cache/models/bundle" "${FILES[@]}"

step "empty root: localhost (resolved by libcurl), an unknown name fails"
mapfile -t U < <(urls "http://localhost:$NGINX_PORT")
mc_expect 0 --cache-dir /cache-lh pull "${U[@]}" --name m
assert_same_tree "$WWW/m" "$R/cache-lh/models/m" "${FILES[@]}"
mc_expect 3 --cache-dir /cache-nx pull "http://origin.invalid:$NGINX_PORT/m/${FILES[0]}" --name m \
	--retries 0
assert_one_error_line
grep -q 'resolve' "$MC_STDERR" || fail "the error does not say the name did not resolve"
[ ! -e "$R/cache-nx/models/m" ] || fail "a failed pull published models/m"

step "kubelet's /etc/hosts and /etc/resolv.conf: names from the file and from DNS"
DNS_ADDR=127.53.$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))
python3 "$MCACHE_SRC/tests/packaging/pk_dns.py" "$DNS_ADDR" "$MC_TMP/dns.log" origin.dns.test \
	>"$MC_TMP/dns.out" 2>&1 &
DNS_PID=$!
mc_at_exit "kill $DNS_PID 2>/dev/null; wait $DNS_PID 2>/dev/null"
for _ in $(seq 50); do
	grep -q ready "$MC_TMP/dns.out" 2>/dev/null && break
	kill -0 "$DNS_PID" 2>/dev/null || fail "the test DNS server did not start: $(cat "$MC_TMP/dns.out")"
	sleep 0.1
done
mkdir "$R/etc"
printf '127.0.0.1 localhost\n127.0.0.1 origin.hosts.test\n' >"$R/etc/hosts"
printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$DNS_ADDR" >"$R/etc/resolv.conf"
mapfile -t U < <(urls "http://origin.hosts.test:$NGINX_PORT")
mc_expect 0 --cache-dir /cache-hosts pull "${U[@]}" --name m
assert_same_tree "$WWW/m" "$R/cache-hosts/models/m" "${FILES[@]}"
mapfile -t U < <(urls "http://origin.dns.test:$NGINX_PORT")
mc_expect 0 --cache-dir /cache-dns pull "${U[@]}" --name m
assert_same_tree "$WWW/m" "$R/cache-dns/models/m" "${FILES[@]}"
grep -q '^origin.dns.test 1$' "$MC_TMP/dns.log" || fail "the DNS server was not asked for origin.dns.test"
! grep -q '^origin.hosts.test ' "$MC_TMP/dns.log" ||
	fail "origin.hosts.test went to DNS: /etc/hosts is not read first"
mc_expect 3 --cache-dir /cache-nx pull "http://nosuch.dns.test:$NGINX_PORT/m/${FILES[0]}" \
	--name m --retries 0
assert_one_error_line
grep -q '^nosuch.dns.test 1$' "$MC_TMP/dns.log" || fail "the DNS server was not asked for nosuch.dns.test"
log "DNS queries: $(cut -d' ' -f1 "$MC_TMP/dns.log" | sort | uniq -c | tr -s ' \n' ' ')"
rm -rf "${R:?}/etc" "${R:?}"/cache-*

step "the image's user 65532:65532"
install -d -o 65532 -g 65532 -m 0755 "$R/data"
mapfile -t U < <(urls "$NGINX_URL")
MC_CR_USER=65532:65532 mc_expect 0 --cache-dir /data/cache pull "${U[@]}" --name m
assert_same_tree "$WWW/m" "$R/data/cache/models/m" "${FILES[@]}"
assert_eq "$(stat -c %u:%g "$R/data/cache/index.db")" 65532:65532 "index.db owner"

step "the image's job, as 65532: mcache init with MODEL_URL, then with a YAML manifest"
install -d -o 65532 -g 65532 -m 0755 "$R/dev" "$R/models" "$R/models2"
install -o 65532 -g 65532 -m 0644 /dev/null "$R/dev/termination-log"
MC_CR_USER=65532:65532 MC_CR_ENV="MODEL_URL=${U[1]} MCACHE_TARGET=/models" mc_expect 0 init
cmp -s "$WWW/m/${FILES[1]}" "$R/models/model.safetensors" ||
	fail "/models/model.safetensors differs from the origin's ${FILES[1]}"
[ -s "$R/dev/termination-log" ] || fail "init wrote no termination message"
{
	printf 'models:\n  - name: mm\n    uri:\n'
	printf '      - %s\n' "${U[@]}"
} >"$R/manifest.yaml"
MC_CR_USER=65532:65532 MC_CR_ENV="MCACHE_MANIFEST=/manifest.yaml MCACHE_TARGET=/models2" \
	mc_expect 0 init
assert_same_tree "$WWW/m" "$R/models2/mm" "${FILES[@]}"
rm -rf "${R:?}/data" "${R:?}/cache" "${R:?}/dev" "${R:?}/models" "${R:?}/models2" "${R:?}/manifest.yaml"

step "https: the CA bundle from SSL_CERT_FILE"
only_binary ./mcache
mapfile -t U < <(urls "$NGINX_TLS_URL")
cp "$NGINX_CA" "$R/ca.pem"
MC_CR_ENV="SSL_CERT_FILE=/ca.pem" mc_expect 0 --cache-dir /tls pull "${U[@]}" --name m \
	--chunk-size 1M --connections 4
assert_same_tree "$WWW/m" "$R/tls/models/m" "${FILES[@]}"
mapfile -t U < <(urls "https://localhost:$NGINX_TLS_PORT")
MC_CR_ENV="SSL_CERT_FILE=/ca.pem" mc_expect 0 --cache-dir /tls-lh pull "${U[@]}" --name m
assert_same_tree "$WWW/m" "$R/tls-lh/models/m" "${FILES[@]}"
rm -rf "$R/tls" "$R/tls-lh"

step "https: no CA bundle anywhere fails closed"
rm "$R/ca.pem"
only_binary ./mcache
mapfile -t U < <(urls "$NGINX_TLS_URL")
mc_expect 3 --cache-dir /tls pull "${U[@]}" --name m
assert_one_error_line
grep -q 'SSL_CERT_FILE' "$MC_STDERR" || fail "the error does not name SSL_CERT_FILE"
grep -qF "$CA_DEFAULT" "$MC_STDERR" || fail "the error does not name the default bundle $CA_DEFAULT"
[ ! -e "$R/tls/models/m" ] || fail "a pull without CA certificates published models/m"
MC_CR_ENV="SSL_CERT_FILE=/missing.pem" mc_expect 3 --cache-dir /tls pull "${U[@]}" --name m
assert_one_error_line
grep -q '/missing.pem.*SSL_CERT_FILE' "$MC_STDERR" || fail "the error does not name /missing.pem and SSL_CERT_FILE"
[ ! -e "$R/tls/models/m" ] || fail "a pull without CA certificates published models/m"

step "https: the compiled-in default $CA_DEFAULT (where the image puts Debian's bundle)"
mkdir -p "$R$(dirname "$CA_DEFAULT")"
cp "$NGINX_CA" "$R$CA_DEFAULT"
mc_expect 0 --cache-dir /tls pull "${U[@]}" --name m
assert_same_tree "$WWW/m" "$R/tls/models/m" "${FILES[@]}"
mc_expect 0 --cache-dir /tls verify --deep
