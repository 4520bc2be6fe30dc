# Unit tests of index recovery: the version sidecars (cache/sidecar.c) and rebuild-index
# (cache/rebuild.c), driving the pull callbacks directly like the other cache tests. Included
# from tests/CMakeLists.txt, so paths are relative to tests/.
mc_unit_test(test_cache_rebuild unit/test_cache_rebuild.c mc_cache PkgConfig::SQLITE
             PkgConfig::XXHASH PkgConfig::JANSSON)
