# Snapshots (issue 7): machine state capture/restore on freestanding guests (kvm label), the
# snapshot file format and userfaultfd-restored memory with its working set (unit label).
add_executable(snapshot_kvm_tests kvm/snapshot_kvm_test.cc)
target_link_libraries(snapshot_kvm_tests PRIVATE vessel_snapshot vessel_vmm GTest::gtest_main)
target_compile_definitions(snapshot_kvm_tests PRIVATE
  TEST_GUEST_COUNTER="$<TARGET_FILE:test_guest_counter>")
add_dependencies(snapshot_kvm_tests test_guest_counter)
gtest_discover_tests(snapshot_kvm_tests PROPERTIES LABELS kvm)

add_executable(snapshot_unit_tests unit/snapshot_format_test.cc unit/snapshot_memory_test.cc
               unit/snapshot_disk_test.cc unit/uffd_memory_test.cc)
target_link_libraries(snapshot_unit_tests PRIVATE vessel_snapshot GTest::gtest_main)
gtest_discover_tests(snapshot_unit_tests PROPERTIES LABELS unit)

# CLI error paths of snapshot/restore (no guest needed).
add_test(NAME cli_snapshot_errors
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/snapshot.sh $<TARGET_FILE:vessel>)
set_tests_properties(cli_snapshot_errors PROPERTIES LABELS unit)
