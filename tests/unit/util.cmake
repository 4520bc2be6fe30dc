# Unit tests of util/. Included from tests/CMakeLists.txt, so paths are relative to tests/.
mc_unit_test(test_util unit/test_util.c mc_util)
