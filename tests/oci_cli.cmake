# vessel's runc-compatible CLI (docs/runtime.md).
# Error paths and global flags without a guest.
add_test(NAME oci_cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/oci.sh $<TARGET_FILE:vessel>)
set_tests_properties(oci_cli PROPERTIES LABELS unit)
# The lifecycle against a busybox bundle, then podman with vessel and with runc. Needs root,
# a KVM that boots Linux (nested harness on PVM hosts) and podman; 77 = skipped.
add_test(NAME oci_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/harness/maybe-nested --
                 ${CMAKE_CURRENT_SOURCE_DIR}/e2e/podman/oci_e2e.sh $<TARGET_FILE:vessel>)
set_tests_properties(oci_e2e PROPERTIES LABELS e2e SKIP_RETURN_CODE 77 TIMEOUT 1500)
