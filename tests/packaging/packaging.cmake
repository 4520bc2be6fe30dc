# Packaging tests (label packaging), included from tests/CMakeLists.txt; script paths are
# relative to tests/. CI runs them once, after the Release tests (.ci/run's packaging stage);
# `ctest -LE 'bench|packaging'` leaves them out of the everyday run.
# The static binary: packaging/static/build.sh, then the binary in an empty chroot; needs root
# and, on a first run, the Debian archive (about 70 s from scratch on 2 cores).
mc_script_test(packaging.static packaging/pk_static.sh packaging 900)
# The Kubernetes packaging (Helm chart, Kustomize overlays, Flux objects, seccomp profile),
# rendered and checked offline: kubectl kustomize, python3-yaml, yamllint; no root, seconds.
mc_script_test(packaging.k8s packaging/pk_k8s.sh packaging 60)
