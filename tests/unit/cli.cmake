# Unit tests of cmd/'s option parsing. Included from tests/CMakeLists.txt, so paths are relative
# to tests/.
mc_unit_test(test_cli unit/test_cli.c mc_cli)
