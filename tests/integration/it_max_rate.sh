#!/usr/bin/env bash
# --max-rate caps the whole pull, whatever the chunk size and connection count: 24 MiB at
# 8 MiB/s takes at least 0.8 x 3 s. Only a lower bound is asserted (a slow machine makes the
# pull longer, never shorter), so this checks the cap is honoured, not how fast mcache is.
# Small chunks with many connections are the case a per-transfer limit gets wrong: every new
# range starts at full speed.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
mkdir -p "$WWW/m"
python3 "$MC_LIB_DIR/gen_safetensors.py" file "$WWW/m/model.safetensors" --size 24M --seed 3 >/dev/null
chmod -R a+rX "$WWW"
nginx_start "$WWW"

for cfg in "1M 16" "4M 4" "16M 1"; do
	set -- $cfg
	step "--max-rate 8M with --chunk-size $1 --connections $2"
	t0=$(date +%s%N)
	mc_expect 0 --cache-dir "$MC_TMP/c-$1" pull "$NGINX_URL/m/model.safetensors" --name m \
		--max-rate 8M --chunk-size "$1" --connections "$2"
	ms=$((($(date +%s%N) - t0) / 1000000))
	log "24 MiB in $ms ms ($((24 * 1000 / (ms > 0 ? ms : 1))) MiB/s)"
	assert_ge "$ms" 2400 "milliseconds for 24 MiB at 8 MiB/s"
	assert_same_tree "$WWW/m" "$MC_TMP/c-$1/models/m" model.safetensors
done
