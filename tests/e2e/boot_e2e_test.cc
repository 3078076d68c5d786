// End to end: the real vessel binary boots the real guest kernel with vessel-init.
// Needs a KVM that boots Linux (hardware KVM, or the nested harness on PVM hosts).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "tests/e2e/e2e_util.h"

using vessel::test::ProcResult;
using vessel::test::run_process;

namespace {

using BootE2E = vessel::test::E2ETest;
using vessel::test::e2e_kernel;

TEST_F(BootE2E, EchoOutputArrives) {
    ProcResult r = boot({}, {"echo", "hello from the guest"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "hello from the guest\n") << r.err;
}

TEST_F(BootE2E, ExitStatusPropagates) {
    ProcResult r = boot({}, {"sh", "-c", "exit 3"});
    EXPECT_EQ(r.status, 3) << r.out << r.err;
}

TEST_F(BootE2E, KilledBySignalIs128PlusN) {
    ProcResult r = boot({}, {"sh", "-c", "kill -TERM $$"});
    EXPECT_EQ(r.status, 128 + 15) << r.out << r.err;
}

TEST_F(BootE2E, CommandNotFoundIs127) {
    ProcResult r = boot({}, {"/no/such/command"});
    EXPECT_EQ(r.status, 127) << r.out << r.err;
    EXPECT_NE((r.out + r.err).find("/no/such/command"), std::string::npos);
}

TEST_F(BootE2E, TwoCpusAreVisible) {
    ProcResult r = boot({"--cpus", "2"}, {"sh", "-c", "grep -c ^processor /proc/cpuinfo"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "2\n") << r.err;
}

TEST_F(BootE2E, MemorySizeIsVisible) {
    ProcResult r = boot({"--memory", "512"}, {"sh", "-c", "head -1 /proc/meminfo"});
    ASSERT_EQ(r.status, 0) << r.err;
    // MemTotal excludes what the kernel reserves for itself: expect 90-100% of 512 MiB.
    long kib = 0;
    ASSERT_EQ(std::sscanf(r.out.c_str(), "MemTotal: %ld kB", &kib), 1) << r.out;
    EXPECT_GT(kib, 512L * 1024 * 90 / 100) << r.out;
    EXPECT_LE(kib, 512L * 1024) << r.out;
}

TEST_F(BootE2E, ArgumentsEnvAndCwdReachTheCommand) {
    ProcResult r =
        boot({"--env", "GREETING=hi there", "--cwd", "/tmp"},
             {"sh", "-c", "printf '%s|%s|%s' \"$GREETING\" \"$(pwd)\" \"$1\"", "sh", "two words"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "hi there|/tmp|two words");
}

TEST_F(BootE2E, BzImageBootsToo) {
    std::string k = e2e_kernel();
    std::string bz = k.substr(0, k.rfind('/')) + "/bzImage";
    ASSERT_EQ(::access(bz.c_str(), R_OK), 0) << "no bzImage next to " << k;
    std::vector<std::string> argv = {VESSEL_BIN, "boot", "--kernel", bz, "--", "echo", "bz"};
    ProcResult r = run_process(argv, 300);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "bz\n");
}

}  // namespace
