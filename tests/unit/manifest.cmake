# Unit tests of manifest/. Included from tests/CMakeLists.txt, so paths are relative to tests/.
mc_unit_test(test_manifest unit/test_manifest.c mc_manifest)
