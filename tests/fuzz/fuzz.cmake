# Fuzz targets (issue 9, in progress): built only with
#   cmake -S . -B build-fuzz -DMCACHE_FUZZ=ON -DCMAKE_C_COMPILER=clang
# which gives build-fuzz/fuzz_* (libFuzzer, ASan+UBSan). Run one for a bounded time with its
# seed corpus: build-fuzz/fuzz_manifest -max_total_time=60 tests/fuzz/corpus/manifest
# Included from tests/CMakeLists.txt, so paths are relative to tests/.
function(mc_fuzz_target name src)
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE ${ARGN})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/cache)
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
endfunction()

mc_fuzz_target(fuzz_safetensors fuzz/fuzz_safetensors.c mc_cache)
mc_fuzz_target(fuzz_manifest fuzz/fuzz_manifest.c mc_manifest)
mc_fuzz_target(fuzz_url fuzz/fuzz_url.c mc_fetcher)
