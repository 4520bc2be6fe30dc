#!/usr/bin/env bash
# Installs every Debian 12 package needed to build mcache and run its tests:
#   bash tests/deps.sh            build + test (compilers, libraries, nginx, openssl, sqlite3, ...)
#   bash tests/deps.sh --bench    the same plus the benchmark's peers (aria2, wget, curl, time)
# Idempotent and quiet: packages already installed are not fetched again, and apt-get update
# runs only when something is missing. Needs root (or sudo). Installs start no services here.
set -euo pipefail

PKGS=(
	build-essential cmake pkg-config
	libcurl4-openssl-dev liburing-dev libxxhash-dev libsqlite3-dev libjansson-dev libxml2-dev libssl-dev libyaml-dev
	nginx openssl ca-certificates python3 sqlite3 curl
	clang-format shellcheck
	socat
	dpkg-dev file zlib1g-dev # packaging/static/build.sh (which also installs what it lacks)
	ceph-mon ceph-osd radosgw awscli # the S3 origin of the s3:// tests (tests/lib/rgw.sh)
	python3-yaml yamllint # tests/packaging/pk_k8s.sh (Kubernetes packaging)
	libarchive-dev tar gzip zstd # bundles (cache/bundle.c) and the archives of it_bundle.sh
)
BENCH_PKGS=(aria2 wget curl time)

want=("${PKGS[@]}")
# pk_k8s.sh renders the Kustomize overlays with `kubectl kustomize`: a kubectl already on the
# machine (any version) serves; else Debian's (1.20, Kustomize v2.0.3, which the overlays support).
command -v kubectl >/dev/null || want+=(kubernetes-client)
for a in "$@"; do
	case $a in
	--bench) want+=("${BENCH_PKGS[@]}") ;;
	-h | --help)
		sed -n '2,7p' "$0"
		exit 0
		;;
	*)
		echo "deps.sh: unknown option '$a'" >&2
		exit 2
		;;
	esac
done

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "deps.sh: all ${#want[@]} packages present"
	exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
	SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "deps.sh: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps.sh: done"
