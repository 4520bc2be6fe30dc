#!/usr/bin/env bash
# The command line's fixed points: --help and --version exit 0 and say what they should, every
# command has --help, global options work before and after the command, MCACHE_DIR picks the
# cache, and an empty cache lists as an empty "models" array.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
mc_setup

C=$MC_TMP/cache

step "--help and --version"
mc_expect 0 --help
for cmd in pull ls verify; do
	grep -qw "$cmd" "$MC_STDOUT" || fail "--help does not list '$cmd'"
done
mc_expect 0 --version
grep -q 'mcache' "$MC_STDOUT" || fail "--version does not say 'mcache'"
grep -Eq '[0-9]+\.[0-9]+\.[0-9]+' "$MC_STDOUT" || fail "--version has no version number"
log "version: $(head -n1 "$MC_STDOUT")"
for cmd in pull ls verify; do
	mc_expect 0 "$cmd" --help
	grep -qi usage "$MC_STDOUT" || fail "'$cmd --help' has no usage line"
done
mc_expect 0 pull -h

step "an empty cache: ls --json is {\"models\": []}"
mc_expect 0 --cache-dir "$C" ls --json
assert_eq "$(json "$MC_STDOUT" 'j["models"]')" "[]" "models of an empty cache"
mc_expect 0 ls --cache-dir "$C" --json
assert_eq "$(json "$MC_STDOUT" 'j["models"]')" "[]" "ls with global options after the command"
mc_expect 0 ls --json --cache-dir="$C"
MCACHE_DIR=$MC_TMP/envcache mc_expect 0 ls --json
[ -d "$MC_TMP/envcache" ] || fail "MCACHE_DIR did not choose the cache directory"
MCACHE_DIR=$MC_TMP/envcache mc_expect 0 --cache-dir "$C" -q verify
mc_expect 0 --cache-dir "$C" verify --json
json "$MC_STDOUT" 'j' >/dev/null
