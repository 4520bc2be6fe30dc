# Fault tests (issue 3): the binary against origins that misbehave, a connection-cutting proxy,
# a full disk, SIGKILL/SIGTERM at random points and failing allocations. Included from
# tests/CMakeLists.txt, so script paths are relative to tests/. Each test bounds its own time;
# under ASan (MCACHE_BIN in build-asan, or MC_ASAN=1) the heavy ones do less, see each script.
mc_script_test(fault.origin_faults fault/ft_origin_faults.sh fault 240)
mc_script_test(fault.proxy_cut fault/ft_proxy_cut.sh fault 180)
mc_script_test(fault.disk_full fault/ft_disk_full.sh fault 180)
mc_script_test(fault.kill_loop fault/ft_kill_loop.sh fault 480)
mc_script_test(fault.alloc_sweep fault/ft_alloc_sweep.sh fault 300)
