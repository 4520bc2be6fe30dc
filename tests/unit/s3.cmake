# Unit tests of the S3 source: SigV4 signing. Paths are relative to tests/.
mc_unit_test(test_sigv4 unit/test_sigv4.c mc_fetcher)
