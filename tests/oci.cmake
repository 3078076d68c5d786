# OCI library tests: config.json parsing, the VM plan and mount policy (against real files,
# a real tmpfs and real sockets), the state store (forked writers on real files), signals,
# features. No KVM.
add_executable(oci_tests
  unit/oci_features_test.cc
  unit/oci_signals_test.cc
  unit/oci_spec_test.cc
  unit/oci_state_test.cc
  unit/oci_vm_plan_test.cc
)
target_link_libraries(oci_tests PRIVATE vessel_oci GTest::gtest_main)
target_compile_definitions(oci_tests PRIVATE
  OCI_TEST_DATA="${CMAKE_CURRENT_SOURCE_DIR}/unit/data/oci"
  VESSEL_VERSION_FOR_TEST="${PROJECT_VERSION}")
gtest_discover_tests(oci_tests PROPERTIES LABELS unit)
