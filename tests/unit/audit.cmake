# Unit tests of the audit: the safetensors structure check (cache/safetensors.c), pure functions
# on a buffer. Included from tests/CMakeLists.txt, so paths are relative to tests/.
mc_unit_test(test_safetensors unit/test_safetensors.c mc_cache PkgConfig::JANSSON)
