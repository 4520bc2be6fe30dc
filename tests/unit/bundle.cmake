# Unit tests of tar bundles (cache/bundle.c): archives built with libarchive's writer, pulled
# through cache/pull.c's callbacks. Included from tests/CMakeLists.txt, so paths are relative to
# tests/.
mc_unit_test(test_bundle unit/test_bundle.c mc_cache PkgConfig::SQLITE PkgConfig::XXHASH
             PkgConfig::ARCHIVE)
