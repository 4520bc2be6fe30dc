# Packaging tests (label packaging), included from tests/CMakeLists.txt; script paths are
# relative to tests/.
# The Kubernetes packaging (Helm chart, Kustomize overlays, Flux objects, seccomp profile),
# rendered and checked offline: kubectl kustomize, python3-yaml, yamllint; no root, seconds.
mc_script_test(packaging.k8s packaging/pk_k8s.sh packaging 60)
