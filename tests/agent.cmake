# Guest agent and host client (guest/agent, docs/agent-protocol.md): the agent core runs in
# the test process (or a forked child) and talks to the client over socketpairs; real
# processes (/bin/sh, cat) are started on the host. The init tests boot the real vessel-init
# in a PID namespace with the agent on a Unix socket (root only, skipped otherwise).
add_executable(agent_unit_tests
  unit/agent_wire_test.cc
  unit/agent_messages_test.cc
  unit/agent_core_test.cc
  unit/agent_run_test.cc
  unit/agent_robustness_test.cc
  unit/agent_init_test.cc
)
target_link_libraries(agent_unit_tests PRIVATE vessel_agent_core vessel_agent_client
                                               vessel_initramfs GTest::gtest_main)
target_include_directories(agent_unit_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/unit)
target_compile_definitions(agent_unit_tests PRIVATE VESSEL_TEST_INITRAMFS="${VESSEL_INITRAMFS}")
add_dependencies(agent_unit_tests vessel-initramfs)
gtest_discover_tests(agent_unit_tests TEST_PREFIX "agent." PROPERTIES LABELS unit)
