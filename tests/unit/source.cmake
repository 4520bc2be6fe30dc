# Unit tests of fetcher/'s sources (source*.c). Included from tests/CMakeLists.txt, so paths are
# relative to tests/.
mc_unit_test(test_source_hf unit/test_source_hf.c mc_fetcher)
