# Seccomp filters and io_uring restrictions (vmm/seccomp.h, virtio/io/uring_engine.h): each
# role's filter in a forked child (forbidden calls die by SIGSYS, allowed ones work), real
# restricted rings, and a freestanding guest on /dev/kvm with the filters on.
add_executable(seccomp_tests unit/seccomp_test.cc unit/seccomp_uring_test.cc)
target_link_libraries(seccomp_tests PRIVATE vessel_vmm vessel_virtio_io GTest::gtest_main)
target_include_directories(seccomp_tests PRIVATE ${PROJECT_SOURCE_DIR})
gtest_discover_tests(seccomp_tests PROPERTIES LABELS unit)

add_executable(seccomp_kvm_tests unit/seccomp_machine_test.cc)
target_link_libraries(seccomp_kvm_tests PRIVATE vessel_vmm GTest::gtest_main)
target_include_directories(seccomp_kvm_tests PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_definitions(seccomp_kvm_tests PRIVATE
  TEST_GUEST_HELLO="$<TARGET_FILE:test_guest_hello>")
add_dependencies(seccomp_kvm_tests test_guest_hello)
gtest_discover_tests(seccomp_kvm_tests PROPERTIES LABELS kvm)
