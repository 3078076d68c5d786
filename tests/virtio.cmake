# virtio transport tests: the split virtqueue and the virtio-mmio registers (no KVM), plus the
# virtqueue fuzzer, which tests/fuzz/run.sh builds with clang++ (skipped without it).
add_executable(virtio_unit_tests
  unit/virtio_mmio_test.cc
  unit/virtio_queue_test.cc
)
target_link_libraries(virtio_unit_tests PRIVATE vessel_virtio GTest::gtest_main)
gtest_discover_tests(virtio_unit_tests PROPERTIES LABELS unit)

add_test(NAME fuzz_queue COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/run.sh 20)
set_tests_properties(fuzz_queue PROPERTIES LABELS fuzz SKIP_RETURN_CODE 77 TIMEOUT 300)
