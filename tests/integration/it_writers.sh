#!/usr/bin/env bash
# Both writer backends land the same bytes: the same 4-shard pull into four fresh caches, with
# --writer io_uring, --writer pwrite, MCACHE_WRITER=pwrite and MCACHE_WRITER=io_uring. Every
# cache must hold byte-identical files and the same content-addressed blobs; when `pull --json`
# names the writer it used, it must be the one asked for.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
step "fixture: 4 x 32 MiB shards"
gen_model "$WWW/m" 128M 4 2
mapfile -t FILES < <(cd "$WWW/m" && ls)
nginx_start "$WWW"
URLS=()
for f in "${FILES[@]}"; do URLS+=("$NGINX_URL/m/$f"); done

URING_OK=1
if [ -r /proc/sys/kernel/io_uring_disabled ] && [ "$(cat /proc/sys/kernel/io_uring_disabled)" != 0 ]; then
	URING_OK=0
fi

# pull_with LABEL WANT_WRITER [ENV=VALUE] -- ARGS...: pulls into $MC_TMP/LABEL.
pull_with() {
	local label=$1 want=$2 envs=()
	shift 2
	while [ "$1" != -- ]; do
		envs+=("$1")
		shift
	done
	shift
	step "pull with $label"
	if [ ${#envs[@]} -gt 0 ]; then
		export "${envs[@]}"
	fi
	mc_expect 0 --cache-dir "$MC_TMP/$label" pull "${URLS[@]}" --name w --chunk-size 4M \
		--connections 8 --json "$@"
	unset MCACHE_WRITER
	local used
	used=$(json_find "$MC_STDOUT" writer)
	if [ -n "$used" ]; then
		assert_eq "$used" "$want" "writer reported by pull --json"
	else
		log "pull --json does not report the writer; not checked"
	fi
	assert_same_tree "$WWW/m" "$MC_TMP/$label/models/w" "${FILES[@]}"
	mc_expect 0 --cache-dir "$MC_TMP/$label" verify --deep
	(cd "$MC_TMP/$label" && find blobs -type f | sort) >"$MC_TMP/$label.blobs"
}

pull_with pwrite-opt pwrite -- --writer pwrite
pull_with pwrite-env pwrite MCACHE_WRITER=pwrite --
if [ "$URING_OK" = 1 ]; then
	pull_with uring-opt io_uring -- --writer io_uring
	pull_with uring-env io_uring MCACHE_WRITER=io_uring --
	# The option beats the environment.
	pull_with opt-over-env pwrite MCACHE_WRITER=io_uring -- --writer pwrite
else
	log "io_uring is disabled by /proc/sys/kernel/io_uring_disabled: io_uring cases not run"
fi

step "every cache holds the same blobs"
SETS=("$MC_TMP"/*.blobs)
for f in "${SETS[@]}"; do
	cmp -s "$MC_TMP/pwrite-opt.blobs" "$f" || fail "blob sets differ: pwrite-opt vs $(basename "$f" .blobs)"
done
log "$(wc -l <"$MC_TMP/pwrite-opt.blobs") blobs, identical names in ${#SETS[@]} caches"
if [ "$URING_OK" != 1 ]; then
	skip "pwrite checked; io_uring is disabled on this kernel, so its cases were skipped"
fi
