# Unit tests of cache/: index and layout, the pull callbacks and publish protocol, verify,
# list and gc. They drive cache/pull.c's fetch callbacks directly (no network) through the internal
# header cache/cache_int.h. Included from tests/CMakeLists.txt, so paths are relative to tests/.
foreach(t test_cache_index test_cache_pull test_cache_verify test_cache_paths test_cache_gc)
  mc_unit_test(${t} unit/${t}.c mc_cache PkgConfig::SQLITE PkgConfig::XXHASH)
endforeach()
