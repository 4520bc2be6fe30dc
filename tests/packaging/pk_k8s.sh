#!/usr/bin/env bash
# packaging.k8s: the Kubernetes packaging holds together, offline, in seconds.
#   1. `kubectl kustomize` renders packaging/kustomize/base, overlays/staging,
#      overlays/production and packaging/flux; stderr may only carry Kustomize v5's deprecation
#      notes for `bases`/`patchesStrategicMerge` (kept so that Debian's kubectl 1.20 renders too)
#   2. pk_k8s_check.py: the rendered objects, the chart (Chart.yaml, values.yaml, the .Values
#      paths its templates use), the example, the seccomp profile (see its docstring)
#   3. yamllint with packaging/.yamllint over every non-template YAML file in packaging/
# Needs kubectl, python3-yaml and yamllint (tests/deps.sh installs them). KUBECTL=PATH picks
# another kubectl (e.g. Debian's 1.20, whose Kustomize is v2.0.3).
set -euo pipefail
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

KUBECTL=${KUBECTL:-kubectl}
PK=$MCACHE_SRC/packaging
for tool in "$KUBECTL" python3 yamllint; do
	command -v "$tool" >/dev/null || fail "'$tool' is required (run tests/deps.sh)"
done
python3 -c 'import yaml' 2>/dev/null || fail "python3-yaml is required (run tests/deps.sh)"

trap mc_run_exit_hooks EXIT
MC_TMP=$(mktemp -d "${TMPDIR:-/tmp}/mcache-pk_k8s.XXXXXX")
mc_at_exit "rm -rf '$MC_TMP'"

step "kubectl kustomize ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"
# kubectl 1.14-1.20 embed Kustomize v2.0.3; 1.21 and later v4/v5.
minor=$("$KUBECTL" version --client -o json 2>/dev/null |
	python3 -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["clientVersion"]["minor"] if c.isdigit())))')
V2=()
[ "$minor" -lt 21 ] && V2=(--kustomize-v2)
for pair in base:kustomize/base staging:kustomize/overlays/staging \
	production:kustomize/overlays/production flux:flux; do
	label=${pair%%:*}
	dir=$PK/${pair#*:}
	t0=$(date +%s%N)
	rc=0
	"$KUBECTL" kustomize "$dir" >"$MC_TMP/$label.yaml" 2>"$MC_TMP/$label.err" || rc=$?
	if [ "$rc" -ne 0 ]; then
		cat "$MC_TMP/$label.err" >&2
		fail "kubectl kustomize ${pair#*:} exited $rc"
	fi
	if grep -v -E "^# Warning: '(bases|patchesStrategicMerge)' is deprecated" "$MC_TMP/$label.err" |
		grep -q .; then
		cat "$MC_TMP/$label.err" >&2
		fail "kubectl kustomize ${pair#*:} printed more than deprecation notes"
	fi
	log "${pair#*:}: $(grep -c '^kind:' "$MC_TMP/$label.yaml") objects, $((($(date +%s%N) - t0) / 1000000)) ms"
done

step "rendered objects, chart, example, seccomp profile"
python3 "$MCACHE_SRC/tests/packaging/pk_k8s_check.py" "${V2[@]}" "$MCACHE_SRC" "$MC_TMP" ||
	fail "pk_k8s_check.py found problems (above)"

step "yamllint"
(cd "$PK" && yamllint -s -c .yamllint .) || fail "yamllint found problems (above)"
log "clean"
