# Host-side networking (runtime/network): addresses, --net specs, IPAM and its state store.
add_executable(network_unit_tests
  unit/network_addr_test.cc
  unit/network_ipam_test.cc
  unit/network_spec_test.cc
)
target_link_libraries(network_unit_tests PRIVATE vessel_network GTest::gtest_main)
gtest_discover_tests(network_unit_tests PROPERTIES LABELS unit)

# The real kernel: bridges, nft tables, taps, tc redirects and frames through them. The binary
# moves into a network namespace of its own first (root; skipped otherwise), so the host's
# network is never touched.
add_executable(network_netns_tests unit/network_netns_test.cc)
target_link_libraries(network_netns_tests PRIVATE vessel_network GTest::gtest)
gtest_discover_tests(network_netns_tests PROPERTIES LABELS unit)

# `vessel network` error paths and clean-up, inside `unshare -n` with a temporary state dir.
add_test(NAME cli_network
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/network.sh $<TARGET_FILE:vessel>)
set_tests_properties(cli_network PROPERTIES LABELS unit SKIP_RETURN_CODE 77)
