# The jailer (runtime/jail): namespaces, pivot_root, cgroups, uid drop, nothing left behind.
# On the host (cgroup v1 here) directly: no KVM needed. Needs root, else each test skips.
add_executable(jail_tests jail/jail_test.cc)
target_link_libraries(jail_tests PRIVATE vessel_jail GTest::gtest_main)
gtest_discover_tests(jail_tests PROPERTIES LABELS unit)
# The same tests inside the nested harness's level-1 VM, whose cgroups are v2.
add_test(NAME jail_cgroup_v2
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/harness/maybe-nested --
                 $<TARGET_FILE:jail_tests> --gtest_color=no)
set_tests_properties(jail_cgroup_v2 PROPERTIES LABELS e2e SKIP_RETURN_CODE 77 TIMEOUT 900)
# vessel boot --jail and the CLI's jail errors, booting Linux (nested harness on PVM).
add_test(NAME jail_boot_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/harness/maybe-nested --
                 ${CMAKE_CURRENT_SOURCE_DIR}/jail/boot_jail_e2e.sh $<TARGET_FILE:vessel>)
set_tests_properties(jail_boot_e2e PROPERTIES LABELS e2e SKIP_RETURN_CODE 77 TIMEOUT 1200)
