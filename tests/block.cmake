# virtio-blk tests: real temp files and a real io_uring (no KVM, no mocks).
add_executable(virtio_block_tests
  unit/virtio_block_core_test.cc
  unit/virtio_block_device_test.cc
  unit/virtio_block_disk_test.cc
  unit/virtio_block_engine_test.cc
  unit/virtio_block_request_test.cc
)
target_link_libraries(virtio_block_tests PRIVATE vessel_virtio_block GTest::gtest_main)
gtest_discover_tests(virtio_block_tests PROPERTIES LABELS unit)

