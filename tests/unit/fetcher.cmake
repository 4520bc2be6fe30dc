# Unit tests of fetcher/: digest, writer backends, URL checks. Paths are relative to tests/.
mc_unit_test(test_fetch unit/test_fetch.c mc_fetcher PkgConfig::XXHASH)
