# Integration tests: the real binary against a real nginx on 127.0.0.1 (tests/lib/nginx.sh).
# Included from tests/CMakeLists.txt, so script paths are relative to tests/. A test that needs
# nginx and cannot start it fails; it never skips silently.
mc_script_test(integration.cli integration/it_cli.sh integration 60)
mc_script_test(integration.pull_verify integration/it_pull_verify.sh integration 300)
mc_script_test(integration.writers integration/it_writers.sh integration 300)
mc_script_test(integration.https integration/it_https.sh integration 180)
mc_script_test(integration.secrets integration/it_secrets.sh integration 180)
mc_script_test(integration.repull integration/it_repull.sh integration 180)
mc_script_test(integration.bad_input integration/it_bad_input.sh integration 180)
mc_script_test(integration.small_files integration/it_small_files.sh integration 120)
mc_script_test(integration.hf integration/it_hf.sh integration 300)
mc_script_test(integration.max_rate integration/it_max_rate.sh integration 120)
mc_script_test(integration.s3 integration/it_s3.sh integration 300)
mc_script_test(integration.policy integration/it_policy.sh integration 120)
mc_script_test(integration.concurrent integration/it_concurrent.sh integration 300)
mc_script_test(integration.hostile integration/it_hostile.sh integration 300)
mc_script_test(integration.recover integration/it_recover.sh integration 300)
mc_script_test(integration.gc integration/it_gc.sh integration 300)
