# vessel's runc-compatible CLI (docs/runtime.md).
# Error paths and global flags without a guest.
add_test(NAME oci_cli COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/oci.sh $<TARGET_FILE:vessel>)
set_tests_properties(oci_cli PROPERTIES LABELS unit)
# The lifecycle against a busybox bundle, then podman with vessel and with runc. Needs root,
# a KVM that boots Linux (nested harness on PVM hosts) and podman; 77 = skipped.
add_test(NAME oci_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/harness/maybe-nested --
                 ${CMAKE_CURRENT_SOURCE_DIR}/e2e/podman/oci_e2e.sh $<TARGET_FILE:vessel>)
set_tests_properties(oci_e2e PROPERTIES LABELS "e2e;containers" SKIP_RETURN_CODE 77 TIMEOUT 1500)
# The debootstrapped Debian image the e2e tests import: made on the host (the harness has no
# network), cached in ${VESSEL_CACHE:-/var/cache/vessel}/images, reused when present.
add_test(NAME oci_debian_image COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/images/make-debian.sh)
set_tests_properties(oci_debian_image PROPERTIES LABELS "e2e;containers" SKIP_RETURN_CODE 77 TIMEOUT 900
                     FIXTURES_SETUP oci_debian_image)
set_tests_properties(oci_e2e PROPERTIES FIXTURES_REQUIRED oci_debian_image)
# The same checks through Docker: dockerd + containerd (its runc shim drives vessel) started in
# the harness, vessel under "runtimes" in daemon.json, each check also run with runc.
add_test(NAME docker_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/harness/maybe-nested --
                 ${CMAKE_CURRENT_SOURCE_DIR}/e2e/docker/docker_e2e.sh $<TARGET_FILE:vessel>)
set_tests_properties(docker_e2e PROPERTIES LABELS "e2e;containers" SKIP_RETURN_CODE 77 TIMEOUT 1800)
