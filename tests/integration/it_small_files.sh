#!/usr/bin/env bash
# Sizes at the edges of the range plan. A file smaller than the chunk size is fetched with a
# single request; files of 0 and 1 bytes, a hash block (1 MiB) +/- 1, exactly one chunk and a
# chunk + 1 all arrive byte-identical, and the number of requests stays near ceil(size/chunk).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
CHUNK=$((4 << 20))
GEN=$MC_LIB_DIR/gen_safetensors.py
mkdir -p "$WWW/s"

step "a 100 KiB file and config.json, chunk size 4M: one request each"
python3 "$GEN" file "$WWW/s/small.safetensors" --size 100K --seed 7 >/dev/null
printf '{"model_type": "llama", "hidden_size": 64}\n' >"$WWW/s/config.json"
chmod 0644 "$WWW/s"/*
nginx_start "$WWW"
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "$NGINX_URL/s/small.safetensors" "$NGINX_URL/s/config.json" \
	--name small --chunk-size 4M --connections 8
assert_same_tree "$WWW/s" "$C/models/small" small.safetensors config.json
nginx_log_summary "$MARK" >"$MC_TMP/log.json"
log "origin: $(json "$MC_TMP/log.json" 'j["per_uri"]')"
assert_eq "$(json "$MC_TMP/log.json" 'j["per_uri"]["/s/small.safetensors"]["requests"]')" 1 \
	"requests for a file smaller than a chunk"
assert_eq "$(json "$MC_TMP/log.json" 'j["per_uri"]["/s/config.json"]["requests"]')" 1 \
	"requests for config.json"
assert_eq "$(json "$MC_TMP/log.json" 'j["per_uri"]["/s/small.safetensors"]["bytes"]')" $((100 << 10)) \
	"bytes sent for the small file"

step "edge sizes: 0, 1, 1 MiB - 1, 1 MiB, 1 MiB + 1, one chunk, one chunk + 1, 2.5 chunks"
mkdir -p "$WWW/e"
SIZES=(0 1 $((1 << 20)) $(((1 << 20) - 1)) $(((1 << 20) + 1)) "$CHUNK" $((CHUNK + 1)) $((CHUNK * 5 / 2)))
NAMES=()
for s in "${SIZES[@]}"; do
	f="f$s.bin"
	python3 -c 'import random, sys; n = int(sys.argv[1]); sys.stdout.buffer.write(random.Random(n).randbytes(n))' "$s" >"$WWW/e/$f"
	NAMES+=("$f")
done
chmod 0644 "$WWW/e"/*
URLS=()
for f in "${NAMES[@]}"; do URLS+=("$NGINX_URL/e/$f"); done
MARK=$(nginx_log_mark)
mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name edges --chunk-size 4M --connections 4 --json
assert_same_tree "$WWW/e" "$C/models/edges" "${NAMES[@]}"
nginx_log_summary "$MARK" >"$MC_TMP/log.json"
python3 - "$MC_TMP/log.json" "$CHUNK" "${SIZES[@]}" <<'PY' || fail "request counts do not match the sizes"
import json, sys
log = json.load(open(sys.argv[1]))
chunk = int(sys.argv[2])
for s in map(int, sys.argv[3:]):
    u = log["per_uri"].get("/e/f%d.bin" % s)
    if not u:
        sys.exit("no request for f%d.bin" % s)
    want = max(1, -(-s // chunk))
    # A probe, a retry or a stolen tail may add a request or two on a busy machine, and the
    # origin counts what it pushed before the client hung up (up to a chunk); a second
    # download of the file fits neither bound.
    if not want <= u["requests"] <= want + 2:
        sys.exit("f%d.bin: %d requests, want %d (up to %d with probes and retries)"
                 % (s, u["requests"], want, want + 2))
    if u["bytes"] > s + min(s, chunk) + 65536:
        sys.exit("f%d.bin: %d bytes sent for %d" % (s, u["bytes"], s))
    print("   f%d.bin: %d request(s), %d bytes" % (s, u["requests"], u["bytes"]))
PY
mc_expect 0 --cache-dir "$C" verify --deep
mc_expect 0 --cache-dir "$C" ls --json
ls_model "$MC_STDOUT" edges >"$MC_TMP/edges.json"
assert_eq "$(json "$MC_TMP/edges.json" 'j["bytes"]')" "$(files_bytes "$WWW/e" "${NAMES[@]}")" "ls bytes"
