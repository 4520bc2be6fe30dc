#!/usr/bin/env bash
# The main job end to end, from a fresh Debian 12 machine (README: "Try it"):
#   installs the dependencies, builds mcache, generates a 4-shard safetensors model (256 MiB),
#   serves it from nginx on 127.0.0.1, then `mcache pull`, `mcache ls`, `mcache verify --deep`
#   into a throwaway cache, and a second pull that finds everything cached.
# Options: --no-deps (skip apt), --keep (keep the temp dir with the cache to look at).
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS=1
KEEP=0
for a in "$@"; do
	case $a in
	--no-deps) DEPS=0 ;;
	--keep) KEEP=1 ;;
	*)
		echo "demo.sh: unknown option '$a'" >&2
		exit 2
		;;
	esac
done

[ "$DEPS" = 1 ] && bash tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

MC_TEST_NAME=demo
MCACHE_BIN=$PWD/build/mcache
export MCACHE_BIN
# shellcheck source=tests/lib/common.sh
. tests/lib/common.sh
# shellcheck source=tests/lib/nginx.sh
. tests/lib/nginx.sh
mc_setup
[ "$KEEP" = 1 ] && MC_KEEP_TMP=1

step "a 256 MiB model in 4 safetensors shards, served on 127.0.0.1"
gen_model "$MC_TMP/www/llama-demo" $((256 << 20)) 4 1
chmod -R a+rX "$MC_TMP/www"
nginx_start "$MC_TMP/www"
mapfile -t urls < <(cd "$MC_TMP/www" && find llama-demo -type f | sort | sed "s|^|$NGINX_URL/|")

run() {
	printf '\n$ mcache %s\n' "$*"
	"$MCACHE_BIN" --cache-dir "$MC_TMP/cache" "$@"
}
run pull "${urls[@]}" --name llama-demo
run ls
run verify --deep llama-demo
run pull "${urls[@]}" --name llama-demo
printf '\nThe model as a pod would read it: %s\n' "$MC_TMP/cache/models/llama-demo/"
ls -l "$MC_TMP/cache/models/llama-demo/"
