# virtio-vsock tests: the packet parser and connection state machine (pure), the Unix-socket
# backend and the device end to end with a fake guest driver, on real Unix sockets (no KVM).
add_executable(vsock_unit_tests
  unit/vsock_backend_test.cc
  unit/vsock_connection_test.cc
  unit/vsock_device_test.cc
  unit/vsock_packet_test.cc
)
target_link_libraries(vsock_unit_tests PRIVATE vessel_virtio_vsock GTest::gtest_main)
gtest_discover_tests(vsock_unit_tests PROPERTIES LABELS unit)
