# virtio-net tests: features and config, the pure TX/RX chain logic, the shared I/O engines on
# datagram sockets, and the device end to end on real taps in a network namespace each test
# process creates for itself (tap tests skip when not root).
add_executable(net_tests
  unit/net_config_test.cc
  unit/net_device_test.cc
  unit/net_engine_test.cc
  unit/net_packet_test.cc
  unit/net_tap_test.cc
)
target_link_libraries(net_tests PRIVATE vessel_virtio_net GTest::gtest_main)
target_include_directories(net_tests PRIVATE ${PROJECT_SOURCE_DIR})
gtest_discover_tests(net_tests PROPERTIES LABELS unit)
