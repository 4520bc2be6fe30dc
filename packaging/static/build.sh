#!/usr/bin/env bash
# Builds one fully static, stripped mcache at build-static/mcache (relative to the repository
# root) on Debian 12, from Debian packages only. Run as root (it apt-get installs what it
# needs); CI and packaging/Dockerfile run exactly this.
#
#   bash packaging/static/build.sh            build (the rebuilt libraries are cached)
#   bash packaging/static/build.sh --refresh  fetch and rebuild libcurl and libxml2 as well
#
# Debian ships static archives for every library mcache links, but two cannot be used as they
# are (packaging/README.md has the whole story):
#   - libcurl.a wants GSSAPI, LDAP, RTMP, libssh2, libpsl and libidn2, which have no static
#     archives: a minimal libcurl (HTTP/HTTPS, OpenSSL, zlib, threaded resolver) is built here;
#   - libxml2.a is built with ICU (C++, ~30 MB of data tables): a minimal libxml2 is built.
# Both come from Debian's own source packages with Debian's patches (the security fixes), via
# a private deb-src apt configuration under build-static/deps/apt (the system's apt sources are
# not touched). They are installed under build-static/deps/<name>-<key>/, where the key hashes
# this script's recipe, so a second run skips them (no network) and compiles mcache alone.
# Environment: JOBS (parallel jobs, default nproc).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/build-static
DEPS=$OUT/deps
JOBS=${JOBS:-$(nproc)}
REFRESH=0
for a in "$@"; do
	case $a in
	--refresh) REFRESH=1 ;;
	-h | --help)
		sed -n '2,18p' "$0"
		exit 0
		;;
	*)
		echo "build.sh: unknown option '$a'" >&2
		exit 2
		;;
	esac
done

say() { printf 'build.sh: [%3ds] %s\n' "$SECONDS" "$*"; }
die() {
	printf 'build.sh: %s\n' "$*" >&2
	exit 1
}

# The trust store a FROM-scratch image ships, and libcurl's compiled-in default (see
# packaging/README.md, "CA certificates"). No CA directory, no OpenSSL fallback: one file.
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

CFLAGS_DEPS="-O2 -ffunction-sections -fdata-sections"

# libcurl: HTTP and HTTPS only. Proxies stay (clusters behind HTTPS_PROXY); everything that
# needs a library without a static archive, and every protocol mcache never speaks, goes.
CURL_CONFIGURE=(
	--disable-shared --enable-static --disable-dependency-tracking --disable-silent-rules
	--with-openssl --with-zlib
	--with-ca-bundle="$CA_BUNDLE" --without-ca-path --without-ca-fallback
	--disable-openssl-auto-load-config
	--enable-threaded-resolver --disable-ares --enable-ipv6
	--disable-ftp --disable-file --disable-ldap --disable-ldaps --disable-rtsp --disable-dict
	--disable-telnet --disable-tftp --disable-pop3 --disable-imap --disable-smb --disable-smtp
	--disable-gopher --disable-mqtt --disable-manual --disable-ntlm --disable-ntlm-wb
	--disable-alt-svc --disable-websockets --disable-tls-srp --disable-netrc
	--without-libpsl --without-libidn2 --without-librtmp --without-libssh2 --without-libssh
	--without-brotli --without-zstd --without-nghttp2 --without-ngtcp2 --without-nghttp3
	--without-quiche --without-msh3 --without-hyper --without-gssapi --without-libgsasl
)
# libxml2: the parser and the tree (S3 listings and error bodies); no ICU, no iconv (built-in
# UTF-8/UTF-16/ISO-8859-x only), no zlib/lzma/HTTP/FTP/catalog/modules (no dlopen).
XML_CONFIGURE=(
	--disable-shared --enable-static --disable-dependency-tracking
	--without-python --without-icu --without-iconv --with-iso8859x --without-zlib
	--without-lzma --without-http --without-ftp --without-catalog --without-modules
	--without-readline --without-history --without-debug --without-docbook --without-legacy
)
# Everything else is linked from Debian's own static archives.
PKGS=(
	build-essential cmake pkg-config dpkg-dev file ca-certificates
	libssl-dev zlib1g-dev liburing-dev libxxhash-dev libsqlite3-dev libjansson-dev libyaml-dev
	libarchive-dev libzstd-dev
)

recipe_key() { # NAME ARGS...: a short hash of a library's recipe (name, flags, CA path)
	printf '%s\n' "$@" "$CFLAGS_DEPS" "$CA_BUNDLE" "recipe 1" | sha256sum | cut -c1-12
}
CURL_PREFIX=$DEPS/curl-$(recipe_key curl "${CURL_CONFIGURE[@]}")
XML_PREFIX=$DEPS/libxml2-$(recipe_key libxml2 "${XML_CONFIGURE[@]}")

install_packages() {
	local p missing=()
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A private apt configuration that reads Debian's deb-src indexes: the system's sources, with
# "Types: deb" turned into "Types: deb-src", under $DEPS/apt. The system's apt is untouched.
APT_DIR=$DEPS/apt
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
	-o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
	-o "APT::Sandbox::User=root")
APT_READY=0
apt_src_ready() {
	[ "$APT_READY" = 1 ] && return 0
	local f n=0
	rm -rf "$APT_DIR"
	mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		sed 's/^Types:.*/Types: deb-src/' "$f" >"$APT_DIR/sources.list.d/src-$(basename "$f")"
		n=$((n + 1))
	done
	if [ -f /etc/apt/sources.list ]; then
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$APT_DIR/sources.list.d/src.list"
		n=$((n + 1))
	fi
	[ "$n" -gt 0 ] || die "no apt sources found under /etc/apt to derive deb-src lines from"
	say "apt-get update (deb-src indexes, private to $APT_DIR)"
	apt-get "${APT_OPTS[@]}" update -qq || die "apt-get update of the deb-src indexes failed"
	APT_READY=1
}

# fetch_source PKG DIR: Debian's source package PKG, unpacked without its patches into DIR
# (their series file is applied by the caller). Prints the version. apt_src_ready first.
fetch_source() {
	local pkg=$1 dir=$2 dsc
	rm -rf "$DEPS/src/$pkg"
	mkdir -p "$DEPS/src/$pkg"
	(cd "$DEPS/src/$pkg" && apt-get "${APT_OPTS[@]}" source --download-only -qq "$pkg") >&2 ||
		die "apt-get source $pkg failed"
	dsc=$(ls "$DEPS/src/$pkg"/*.dsc)
	rm -rf "$dir"
	mkdir -p "$(dirname "$dir")"
	# apt checked the files against the signed archive indexes; dpkg-source checks them again
	# against the .dsc, whose maintainer signature it cannot check without debian-keyring.
	dpkg-source --skip-patches -x "$dsc" "$dir" >"$DEPS/src/$pkg.log" 2>&1 ||
		{ cat "$DEPS/src/$pkg.log" >&2; die "dpkg-source -x $dsc failed"; }
	sed -n 's/^Version: //p' "$dsc"
}

# apply_patches DIR SKIP...: Debian's quilt series in DIR, in order, except the named patches.
# Then the autotools outputs are touched, so that make never tries to regenerate them (the
# patches that change configure.ac or Makefile.am only concern builds and tests not made here).
apply_patches() {
	local dir=$1 p s n=0
	shift
	while read -r p _; do
		case $p in '' | '#'*) continue ;; esac
		for s in "$@"; do [ "$p" = "$s" ] && continue 2; done
		patch -d "$dir" -p1 --batch --quiet <"$dir/debian/patches/$p" || die "patch $p failed in $dir"
		n=$((n + 1))
	done <"$dir/debian/patches/series"
	(cd "$dir" && touch aclocal.m4 && touch configure && find . \( -name Makefile.in -o \
		-name '*config*.h.in' \) -exec touch {} +)
	say "$(basename "$dir"): applied $n Debian patches"
}

build_curl() {
	local w=$DEPS/work/curl ver
	apt_src_ready
	ver=$(fetch_source curl "$w")
	# Debian's last two patches rename the library for its GnuTLS and NSS flavours; its
	# OpenSSL flavour is built without them, and so is this one.
	apply_patches "$w" 90_gnutls.patch 99_nss.patch
	say "configuring libcurl $ver"
	(cd "$w" && CFLAGS=$CFLAGS_DEPS ./configure --prefix="$CURL_PREFIX.tmp" "${CURL_CONFIGURE[@]}" \
		>configure.out 2>&1) || { tail -n 30 "$w/configure.out" >&2; die "libcurl configure failed"; }
	say "building libcurl $ver"
	(cd "$w" && make -C lib -j"$JOBS" >make.out 2>&1 && make -C lib install >>make.out 2>&1 &&
		make -C include install >>make.out 2>&1 && make install-pkgconfigDATA >>make.out 2>&1) ||
		{ tail -n 30 "$w/make.out" >&2; die "libcurl build failed"; }
	finish_prefix "$CURL_PREFIX" "curl $ver"
}

build_libxml2() {
	local w=$DEPS/work/libxml2 ver
	apt_src_ready
	ver=$(fetch_source libxml2 "$w")
	apply_patches "$w"
	say "configuring libxml2 $ver"
	(cd "$w" && CFLAGS=$CFLAGS_DEPS ./configure --prefix="$XML_PREFIX.tmp" "${XML_CONFIGURE[@]}" \
		>configure.out 2>&1) || { tail -n 30 "$w/configure.out" >&2; die "libxml2 configure failed"; }
	say "building libxml2 $ver"
	(cd "$w" && make -j"$JOBS" libxml2.la >make.out 2>&1 &&
		make install-libLTLIBRARIES install-pkgconfigDATA >>make.out 2>&1 &&
		make -C include install >>make.out 2>&1) ||
		{ tail -n 30 "$w/make.out" >&2; die "libxml2 build failed"; }
	finish_prefix "$XML_PREFIX" "libxml2 $ver"
}

# finish_prefix PREFIX WHAT: the installed tree was built under PREFIX.tmp; its .pc file and
# libtool archive name that path, so they are rewritten before the tree is moved into place.
finish_prefix() {
	local p=$1
	find "$p.tmp" \( -name '*.pc' -o -name '*.la' -o -name '*-config' \) -type f \
		-exec sed -i "s|$p.tmp|$p|g" {} +
	printf '%s\n' "$2" >"$p.tmp/VERSION"
	rm -rf "$p"
	mv "$p.tmp" "$p"
	rm -rf "$DEPS/work" "$DEPS/src"
}

SECONDS=0
install_packages
mkdir -p "$DEPS"
if [ "$REFRESH" = 1 ]; then
	rm -rf "$DEPS"/curl-* "$DEPS"/libxml2-*
fi
if [ -f "$CURL_PREFIX/lib/libcurl.a" ]; then
	say "libcurl: cached $(cat "$CURL_PREFIX/VERSION") in ${CURL_PREFIX#"$ROOT"/}"
else
	build_curl
fi
if [ -f "$XML_PREFIX/lib/libxml2.a" ]; then
	say "libxml2: cached $(cat "$XML_PREFIX/VERSION") in ${XML_PREFIX#"$ROOT"/}"
else
	build_libxml2
fi
# Only the current recipes' trees are kept; the deb-src indexes (21 MB) are fetched again when
# a recipe changes.
for d in "$DEPS"/curl-* "$DEPS"/libxml2-*; do
	[ "$d" = "$CURL_PREFIX" ] || [ "$d" = "$XML_PREFIX" ] || rm -rf "$d"
done
rm -rf "$APT_DIR"

# mcache itself: the normal CMake build with MCACHE_STATIC=ON, which links every pkg-config
# module with `pkg-config --static` and -static; the rebuilt libraries come first on the path.
export PKG_CONFIG_PATH=$CURL_PREFIX/lib/pkgconfig:$XML_PREFIX/lib/pkgconfig
KEYS="$CURL_PREFIX $XML_PREFIX"
if [ "$(cat "$OUT/cmake/.deps" 2>/dev/null)" != "$KEYS" ]; then
	rm -rf "$OUT/cmake" # CMake caches pkg-config answers: new libraries, new build tree
fi
say "building mcache (static)"
cmake -S "$ROOT" -B "$OUT/cmake" -DCMAKE_BUILD_TYPE=Release -DMCACHE_STATIC=ON \
	-DMCACHE_TESTS=OFF >"$OUT/cmake.out" 2>&1 || { cat "$OUT/cmake.out" >&2; die "cmake failed"; }
printf '%s\n' "$KEYS" >"$OUT/cmake/.deps"
cmake --build "$OUT/cmake" -j "$JOBS" >"$OUT/build.out" 2>&1 ||
	{ tail -n 40 "$OUT/build.out" >&2; die "the static build of mcache failed"; }
# glibc warns that getaddrinfo, gethostbyname and dlopen in a static binary want its shared
# libraries at run time. Not so for name lookups since glibc 2.34: the files and dns backends
# are inside libc.a (packaging/README.md, "DNS"); gethostbyname is OpenSSL's BIO_lookup
# fallback. dlopen is OpenSSL's engine/provider loader and SQLite's load_extension, which
# mcache never uses. Shown here, once, so that a new one stands out.
grep -h 'warning: Using' "$OUT/build.out" | sed 's/.*warning: /build.sh: link warning (expected): /' |
	sort -u || true

cp "$OUT/cmake/mcache" "$OUT/mcache.tmp"
strip --strip-all "$OUT/mcache.tmp"
mv "$OUT/mcache.tmp" "$OUT/mcache"

desc=$(file -b "$OUT/mcache")
case $desc in *"statically linked"*) ;; *) die "build-static/mcache is not statically linked: $desc" ;; esac
if ldd "$OUT/mcache" >/dev/null 2>&1; then
	die "ldd finds dynamic dependencies in build-static/mcache: $(ldd "$OUT/mcache" 2>&1 | tr '\n' ' ')"
fi
"$OUT/mcache" --version >/dev/null || die "build-static/mcache --version failed"
say "$(file -b "$OUT/mcache" | cut -d, -f1-5)"
say "build-static/mcache: $(stat -c %s "$OUT/mcache") bytes, $("$OUT/mcache" --version | tr '\n' ' ')"
say "done"
