#!/usr/bin/env bash
# The audit (issue 7) against a real nginx: verify, ls's last verify, metrics, --watch.
#   1. a model whose safetensors files are structurally broken (the last tensor runs past the
#      end; two tensors overlap) although their checksums are what the origin served: fast
#      verify is clean, verify --deep --json exits 1 naming exactly those files (kind
#      "safetensors", the tensor in expected/actual); the JSON document has every documented
#      field; gen_safetensors.py's own check agrees the files are broken
#   2. the acceptance case: a flipped byte (mtime kept), a truncated blob and a deleted tree
#      file: verify --deep --json names exactly those three and exits 1
#   3. fast verify of one model: a deleted tree file (missing), a stray file in the tree
#      (stray), a blob with a changed mtime (changed), exactly these
#   4. ls and ls --json show each model's last verify (time, findings, deep or fast)
#   5. metrics: the Prometheus text parses (every sample after its # TYPE, names
#      ^mcache_[a-z_]+, numbers), and says what the cache holds: models by state, bytes, the
#      last verify, pulls ok and failed, bytes downloaded
#   6. metrics --output --watch 1s: the file is replaced whole every round (a reader polling it
#      never sees a partial file, its inode changes), no temp file stays; SIGTERM ends it, 0
#   7. verify --json --watch 1s: one JSON line per round, findings do not stop it, SIGTERM while
#      it waits ends it with 0; usage errors for bad --watch, --threads and metrics --json
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/nginx.sh"
mc_setup

WWW=$MC_TMP/www
C=$MC_TMP/cache
GEN=$MC_LIB_DIR/gen_safetensors.py

# verify_findings FILE: the findings of a verify --json document as "kind path" lines, sorted.
verify_findings() {
	json "$1" '"\n".join(sorted(f["kind"] + " " + f["path"] for f in j["findings"]))'
}

step "fixture: models 'good' (3 shards + config), 'bad' (one valid, two broken shards), 'acc'"
gen_model "$WWW/good" 24M 3 11
mkdir -p "$WWW/bad"
python3 "$GEN" file "$WWW/bad/ok.safetensors" --size 9M --seed 21 >/dev/null
python3 "$GEN" file "$WWW/bad/past-end.safetensors" --size 9M --seed 22 --corrupt past-end >/dev/null
python3 "$GEN" file "$WWW/bad/overlap.safetensors" --size 9M --seed 23 --corrupt overlap >/dev/null
for f in past-end overlap; do
	python3 "$GEN" check "$WWW/bad/$f.safetensors" 2>/dev/null &&
		fail "gen_safetensors.py check accepts the broken '$f.safetensors'"
done
python3 "$GEN" check "$WWW/bad/ok.safetensors" || fail "the valid fixture does not check"
gen_model "$WWW/acc" 12M 3 31
nginx_start "$WWW"
for m in good bad acc; do
	URLS=()
	for f in "$WWW/$m"/*; do URLS+=("$NGINX_URL/$m/$(basename "$f")"); done
	mc_expect 0 --cache-dir "$C" pull "${URLS[@]}" --name "$m" -q
done
TOTAL=$(find "$WWW/good" "$WWW/bad" "$WWW/acc" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
NFILES=$(find "$WWW/good" "$WWW/bad" "$WWW/acc" -type f | wc -l)

step "1. broken safetensors: fast verify is clean, verify --deep reports exactly the two files"
mc_expect 0 --cache-dir "$C" verify
mc_expect 1 --cache-dir "$C" verify --deep --json
cp "$MC_STDOUT" "$MC_TMP/deep.json"
assert_eq "$(verify_findings "$MC_TMP/deep.json")" "$(printf 'safetensors overlap.safetensors\nsafetensors past-end.safetensors')" "deep findings"
# The tensor and the numbers are named precisely; both values are filled.
python3 - "$MC_TMP/deep.json" <<'PY' || fail "safetensors findings are not precise"
import json, re, sys
j = json.load(open(sys.argv[1]))
by = {f["path"]: f for f in j["findings"]}
p, o = by["past-end.safetensors"], by["overlap.safetensors"]
assert p["model"] == o["model"] == "bad", (p, o)
assert re.fullmatch(r"tensor '[^']+' within the \d+ data bytes", p["expected"]), p
assert re.fullmatch(r"tensor '[^']+' ends at \d+, 2 bytes past the end of the file", p["actual"]), p
assert re.fullmatch(r"tensor '[^']+' to begin at \d+, where '[^']+' ends", o["expected"]), o
assert re.fullmatch(r"tensor '[^']+' begins at \d+ \(overlaps '[^']+' by 2 bytes\)", o["actual"]), o
print("   " + p["actual"] + " / " + o["actual"])
PY
# The schema of verify --json (mcache.1, OUTPUT).
python3 - "$MC_TMP/deep.json" "$TOTAL" "$NFILES" <<'PY' || fail "verify --json does not follow its schema"
import json, sys
j = json.load(open(sys.argv[1]))
want = {"schema": int, "ok": bool, "deep": bool, "verified_at": int, "models": int, "files": int,
        "findings_count": int, "seconds": (int, float), "bytes_read": int,
        "read_seconds": (int, float), "read_mb_per_s": (int, float), "threads": int,
        "findings": list}
for k, t in want.items():
    assert isinstance(j.get(k), t) and not (t is int and isinstance(j[k], bool)), (k, j.get(k))
assert j["schema"] == 1 and j["ok"] is False and j["deep"] is True, j
assert j["models"] == 3 and j["files"] == int(sys.argv[3]), j
assert j["findings_count"] == len(j["findings"]) == 2, j
assert j["bytes_read"] == int(sys.argv[2]), (j["bytes_read"], sys.argv[2])
assert j["threads"] >= 1, j
for f in j["findings"]:
    assert sorted(f) == ["actual", "expected", "kind", "model", "path"], f
    assert all(isinstance(v, str) for v in f.values()), f
print("   deep verify read %d bytes in %.3f s: %.0f MB/s, %d threads"
      % (j["bytes_read"], j["read_seconds"], j["read_mb_per_s"], j["threads"]))
PY
# The human form says the same, and summarises the reading.
mc_expect 1 --cache-dir "$C" verify bad --deep
grep -q '^bad: past-end.safetensors: safetensors (expected tensor ' "$MC_STDOUT" ||
	fail "human verify does not name past-end.safetensors"
grep -q '^verify: 2 findings; read .* MB/s, [0-9]* threads\?)$' "$MC_STDOUT" ||
	fail "human summary: $(tail -n1 "$MC_STDOUT")"

step "2. acceptance: a flipped byte, a truncated blob, a deleted file: exactly those three"
mapfile -t ACC < <(cd "$WWW/acc" && ls -- *.safetensors)
B0=$(blob_of "$C" "$C/models/acc/${ACC[0]}")
B1=$(blob_of "$C" "$C/models/acc/${ACC[1]}")
chmod u+w "$B0" "$B1"
python3 - "$B0" <<'PY'
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.seek(st.st_size - 1000)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0x10]))
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
PY
truncate -s -4096 "$B1"
chmod 0444 "$B0" "$B1"
rm -f "$C/models/acc/${ACC[2]}"
mc_expect 1 --cache-dir "$C" verify acc --deep --json
assert_eq "$(verify_findings "$MC_STDOUT")" "$(printf 'digest %s\nmissing %s\nsize %s' "${ACC[0]}" "${ACC[2]}" "${ACC[1]}")" "acceptance findings"

step "3. fast verify: deleted tree file, stray file, blob with a changed mtime"
rm -f "$C/models/good/config.json"
echo stray >"$C/models/good/notes.txt"
G1=$(blob_of "$C" "$C/models/good/model-00001-of-00003.safetensors")
touch -m -d '2001-02-03 04:05:06' "$G1"
mc_expect 1 --cache-dir "$C" verify good --json
cp "$MC_STDOUT" "$MC_TMP/fast.json"
assert_eq "$(verify_findings "$MC_TMP/fast.json")" "$(printf 'changed model-00001-of-00003.safetensors\nmissing config.json\nstray notes.txt')" "fast findings"
assert_eq "$(json "$MC_TMP/fast.json" '[f["actual"] for f in j["findings"] if f["kind"] == "stray"][0]')" "file of 6 bytes" "stray actual"
json "$MC_TMP/fast.json" '[f for f in j["findings"] if f["kind"] == "changed"][0]["actual"]' |
	grep -q "mtime_ns 981173106000000000$" || fail "changed: the new mtime is not reported"
assert_eq "$(json "$MC_TMP/fast.json" 'j["deep"]')" false "fast verify deep"
assert_eq "$(json "$MC_TMP/fast.json" 'j["bytes_read"]')" 0 "fast verify reads nothing"

step "4. ls shows each model's last verify"
mc_expect 0 --cache-dir "$C" ls --json
cp "$MC_STDOUT" "$MC_TMP/ls.json"
NOW=$(date +%s)
python3 - "$MC_TMP/ls.json" "$NOW" <<'PY' || fail "ls --json last_verify"
import json, sys
j = json.load(open(sys.argv[1]))
now = int(sys.argv[2])
m = {x["name"]: x for x in j["models"]}
want = {"good": (3, False), "bad": (2, True), "acc": (3, True)}
for name, (findings, deep) in want.items():
    v = m[name]["last_verify"]
    assert v["findings"] == findings and v["deep"] is deep and v["ok"] is False, (name, v)
    assert now - 600 <= v["at"] <= now, (name, v)
    assert m[name]["state"] == "complete", m[name]
print("   " + ", ".join("%s: %s" % (k, m[k]["last_verify"]) for k in sorted(m)))
PY
mc_expect 0 --cache-dir "$C" ls
head -n1 "$MC_STDOUT" | grep -q 'LAST VERIFIED$' || fail "ls header: $(head -n1 "$MC_STDOUT")"
grep -Eq '^good .* [0-9-]{10} [0-9:]{5} 3 findings \(fast\)$' "$MC_STDOUT" || fail "ls row of good: $(grep '^good' "$MC_STDOUT")"
grep -Eq '^bad .* 2 findings \(deep\)$' "$MC_STDOUT" || fail "ls row of bad: $(grep '^bad' "$MC_STDOUT")"

step "5. metrics: the text format parses and says what the cache holds"
# One failed pull, counted as a download error.
mc_expect 3 --cache-dir "$C" pull "$NGINX_URL/nope/missing.safetensors" --name nope -q
mc_expect 1 --cache-dir "$C" verify --deep -q
mc_expect 0 --cache-dir "$C" metrics
cp "$MC_STDOUT" "$MC_TMP/metrics.prom"
cat >"$MC_TMP/promcheck.py" <<'PY'
"""Checks Prometheus text exposition: # HELP/# TYPE before samples, names, labels, numbers.
Prints the samples as JSON {"name{labels}": value} for the test to query."""
import json, math, re, sys
NAME = re.compile(r"^mcache_[a-z_]+$")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
typed, helped, samples, seen_done = {}, set(), {}, set()
current = None
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "no final newline"
for n, line in enumerate(text.split("\n")[:-1], 1):
    if line.startswith("# HELP "):
        name = line.split(" ")[2]
        assert NAME.match(name), (n, name)
        assert name not in helped, (n, "second HELP", name)
        helped.add(name)
        continue
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ")
        assert NAME.match(name) and kind in ("counter", "gauge"), (n, line)
        assert name in helped and name not in typed, (n, line)
        if current:
            seen_done.add(current)
        typed[name], current = kind, name
        continue
    assert not line.startswith("#") and line.strip(), (n, "stray line", line)
    m = SAMPLE.match(line)
    assert m, (n, "not a sample", line)
    name, labels, value = m.group(1), m.group(3), m.group(4)
    assert NAME.match(name), (n, name)
    assert name == current, (n, "sample outside its family (no # TYPE before it)", line)
    assert name in typed, (n, "no # TYPE", name)
    if typed[name] == "counter":
        assert name.endswith("_total"), (n, name)
    if labels is not None:
        pos = 0
        for lm in LABEL.finditer(labels):
            assert lm.start() == pos, (n, "bad labels", labels)
            pos = lm.end()
        assert pos == len(labels), (n, "bad labels", labels)
    v = float(value)
    assert not math.isnan(v), (n, line)
    key = name + ("{" + labels + "}" if labels else "")
    assert key not in samples, (n, "duplicate sample", key)
    samples[key] = v
assert samples, "no samples"
print(json.dumps(samples))
PY
python3 "$MC_TMP/promcheck.py" "$MC_TMP/metrics.prom" >"$MC_TMP/samples.json" ||
	{ cat "$MC_TMP/metrics.prom" >&2; fail "metrics output is not valid Prometheus text"; }
log "$(wc -l <"$MC_TMP/metrics.prom") lines, $(json "$MC_TMP/samples.json" 'len(j)') samples"
S() { json "$MC_TMP/samples.json" "int(j['$1'])"; }
assert_eq "$(S 'mcache_models{state="complete"}')" 3 "complete models"
assert_eq "$(S 'mcache_models{state="failed"}')" 1 "failed models"
assert_eq "$(S 'mcache_pulls_total{result="ok"}')" 3 "pulls ok"
assert_eq "$(S 'mcache_download_errors_total')" 1 "download errors"
assert_ge "$(S 'mcache_download_bytes_total')" "$TOTAL" "bytes downloaded"
assert_ge "$(S 'mcache_download_requests_total')" 11 "requests"
assert_eq "$(S 'mcache_blobs')" "$(find "$C/blobs" -type f | wc -l)" "blobs"
# What the index recorded: the truncated blob still counts its recorded size.
assert_eq "$(S 'mcache_blob_bytes')" "$TOTAL" "blob bytes"
assert_eq "$(S 'mcache_last_verify_findings')" 8 "last verify findings (2 + 3 + 3)"
assert_eq "$(S 'mcache_last_verify_ok')" 0 "last verify ok"
assert_eq "$(S 'mcache_last_verify_deep')" 1 "last verify deep"
assert_ge "$(S 'mcache_last_verify_timestamp_seconds')" $((NOW - 600)) "last verify time"
assert_eq "$(S 'mcache_model_last_verify_findings{model="bad"}')" 2 "bad's findings"
assert_eq "$(S 'mcache_model_bytes{model="bad"}')" "$(find "$WWW/bad" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')" "bad's bytes"
grep -q '^mcache_budget_bytes' "$MC_TMP/metrics.prom" && fail "a budget metric without a budget"
MCACHE_MAX_BYTES=1G mc_expect 0 --cache-dir "$C" metrics
grep -qx 'mcache_budget_bytes 1073741824' "$MC_STDOUT" || fail "no budget metric with MCACHE_MAX_BYTES=1G"

step "6. metrics --output FILE --watch 1s: replaced whole each round; SIGTERM ends it"
OUT=$MC_TMP/textfile/mcache.prom
mkdir -p "$MC_TMP/textfile"
"$MCACHE_BIN" --cache-dir "$C" metrics --output "$OUT" --watch 1s >"$MC_TMP/w.out" 2>"$MC_TMP/w.err" &
WPID=$!
mc_at_exit "kill $WPID 2>/dev/null || true"
# A reader like the textfile collector: every read is a whole file; count distinct inodes.
python3 - "$OUT" "$MC_TMP/promcheck.py" <<'PY' || fail "a reader saw a partial metrics file"
import os, subprocess, sys, time
path, check = sys.argv[1], sys.argv[2]
inodes, reads, deadline = set(), 0, time.time() + 10
while len(inodes) < 3 and time.time() < deadline:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        time.sleep(0.01)
        continue
    ino = os.fstat(fd).st_ino
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    reads += 1
    assert data.endswith(b"\n") and b"mcache_download_retries_total " in data, data[-200:]
    if ino not in inodes:
        open(path + ".check", "wb").write(data)
        subprocess.run([sys.executable, check, path + ".check"], check=True, stdout=subprocess.DEVNULL)
        inodes.add(ino)
    time.sleep(0.005)
assert len(inodes) >= 3, "the file was replaced %d times in 10 s" % (len(inodes) - 1)
os.unlink(path + ".check")
print("   %d reads, all whole; %d versions of the file" % (reads, len(inodes)))
PY
kill -TERM "$WPID"
RC=0
timeout 5 tail --pid="$WPID" -f /dev/null || fail "metrics --watch did not stop within 5 s of SIGTERM"
wait "$WPID" || RC=$?
assert_eq "$RC" 0 "metrics --watch exit status after SIGTERM"
[ ! -s "$MC_TMP/w.err" ] || fail "metrics --watch wrote to stderr: $(head -c 300 "$MC_TMP/w.err")"
assert_eq "$(ls -A "$MC_TMP/textfile")" "mcache.prom" "files in the textfile directory"

step "7. verify --json --watch 1s: a JSON line per round, findings do not stop it; SIGTERM: 0"
"$MCACHE_BIN" --cache-dir "$C" verify good --json --watch 1s >"$MC_TMP/v.out" 2>"$MC_TMP/v.err" &
VPID=$!
mc_at_exit "kill $VPID 2>/dev/null || true"
for _ in $(seq 100); do
	[ "$(wc -l <"$MC_TMP/v.out")" -ge 2 ] && break
	sleep 0.1
done
kill -TERM "$VPID"
RC=0
timeout 5 tail --pid="$VPID" -f /dev/null || fail "verify --watch did not stop within 5 s of SIGTERM"
wait "$VPID" || RC=$?
assert_eq "$RC" 0 "verify --watch exit status after SIGTERM while waiting"
python3 - "$MC_TMP/v.out" <<'PY' || fail "verify --watch output"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) >= 2, lines
docs = [json.loads(l) for l in lines]
for d in docs:
    assert d["schema"] == 1 and d["ok"] is False and d["findings_count"] == 3, d
assert docs[-1]["verified_at"] >= docs[0]["verified_at"] + 1, [d["verified_at"] for d in docs]
print("   %d rounds, each with its 3 findings" % len(docs))
PY
[ ! -s "$MC_TMP/v.err" ] || fail "verify --watch wrote to stderr: $(head -c 300 "$MC_TMP/v.err")"

step "usage errors: one line, exit 2"
mc_expect 2 --cache-dir "$C" verify --watch 0
assert_one_error_line
mc_expect 2 --cache-dir "$C" verify --watch 5x
assert_one_error_line
mc_expect 2 --cache-dir "$C" verify --deep --threads 0
assert_one_error_line
mc_expect 2 --cache-dir "$C" --json metrics
assert_one_error_line
mc_expect 2 --cache-dir "$C" metrics extra
assert_one_error_line
mc_expect 6 --cache-dir "$C" metrics --output "$MC_TMP/no/such/dir/m.prom"
assert_one_error_line
