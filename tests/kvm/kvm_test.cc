// Runs small freestanding guests on the host's own /dev/kvm (hardware KVM or PVM).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <system_error>

#include "vmm/boot.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

using vessel::UniqueFd;
using vessel::vmm::Machine;
using vessel::vmm::MachineConfig;
using vessel::vmm::RunResult;

namespace {

bool have_kvm() {
    return ::access("/dev/kvm", R_OK | W_OK) == 0;
}

struct GuestRun {
    RunResult result;
    std::string console;
};

// Boots `kernel` with the console captured in a memfd.
GuestRun boot(MachineConfig cfg) {
    UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
    cfg.console_fd = out.get();
    Machine m(std::move(cfg));
    GuestRun r{m.run(), {}};
    off_t len = ::lseek(out.get(), 0, SEEK_END);
    r.console.resize(static_cast<size_t>(len));
    EXPECT_EQ(::pread(out.get(), r.console.data(), r.console.size(), 0), len);
    return r;
}

MachineConfig config(const char* kernel) {
    MachineConfig c;
    c.kernel = kernel;
    c.memory_mib = 64;
    return c;
}

#define REQUIRE_KVM() \
    if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host"

TEST(KvmGuest, HelloWritesSerialAndReportsStatus) {
    REQUIRE_KVM();
    GuestRun r = boot(config(TEST_GUEST_HELLO));
    EXPECT_EQ(r.result.reason, RunResult::Reason::ExitStatus) << r.result.detail;
    EXPECT_EQ(r.result.status, 0);
    EXPECT_EQ(r.console, "hello from a vessel test guest\n");
}

TEST(KvmGuest, HelloWithSeveralVcpus) {
    REQUIRE_KVM();
    MachineConfig c = config(TEST_GUEST_HELLO);
    c.vcpus = 4;
    GuestRun r = boot(c);
    EXPECT_EQ(r.result.reason, RunResult::Reason::ExitStatus) << r.result.detail;
    EXPECT_EQ(r.console, "hello from a vessel test guest\n");
}

TEST(KvmGuest, BootParamsAreWhatTheGuestSees) {
    REQUIRE_KVM();
    MachineConfig c = config(TEST_GUEST_BOOTPARAMS);
    c.cmdline = "vessel-test console=ttyS0 answer=42";
    for (int i = 0; i < 10000; ++i) c.initrd.push_back(static_cast<uint8_t>(i));
    uint64_t expected_sum = 0;
    for (uint8_t b : c.initrd) expected_sum += b;
    GuestRun r = boot(c);
    EXPECT_EQ(r.result.reason, RunResult::Reason::ExitStatus) << r.result.detail;
    EXPECT_EQ(r.result.status, 0) << r.console;
    EXPECT_NE(r.console.find("cmdline=vessel-test console=ttyS0 answer=42\n"), std::string::npos);
    EXPECT_NE(r.console.find("size=10000 sum=" + std::to_string(expected_sum)), std::string::npos)
        << r.console;
    // 64 MiB minus the EBDA/BIOS hole below 1 MiB.
    EXPECT_NE(r.console.find("ram_kib=" + std::to_string(64 * 1024 - 385)), std::string::npos)
        << r.console;
    EXPECT_NE(r.console.find("bootparams: ok"), std::string::npos);
}

TEST(KvmGuest, CorruptedZeroPageIsDetectedByTheGuest) {
    REQUIRE_KVM();
    // Same guest, wrong command line: its own check must fail, proving the check is live.
    MachineConfig c = config(TEST_GUEST_BOOTPARAMS);
    c.cmdline = "something else";
    c.initrd.assign(4096, 7);
    GuestRun r = boot(c);
    EXPECT_EQ(r.result.reason, RunResult::Reason::ExitStatus);
    EXPECT_EQ(r.result.status & 8, 8);    // cmdline mismatch
    EXPECT_EQ(r.result.status & 16, 16);  // initrd pattern mismatch
    EXPECT_NE(r.console.find("bootparams: FAIL"), std::string::npos);
}

TEST(KvmGuest, I8042ResetStopsTheVm) {
    REQUIRE_KVM();
    GuestRun r = boot(config(TEST_GUEST_HALT));
    EXPECT_EQ(r.result.reason, RunResult::Reason::Reset) << r.result.detail;
    EXPECT_EQ(r.console, "resetting\n");
}

TEST(KvmErrors, MissingKvmDevice) {
    MachineConfig c = config(TEST_GUEST_HELLO);
    c.kvm_path = "/nonexistent/kvm";
    try {
        Machine m(c);
        FAIL() << "expected an error";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_NE(std::string(e.what()).find("KVM is not available"), std::string::npos);
    }
}

TEST(KvmErrors, MissingKernel) {
    REQUIRE_KVM();
    Machine m(config("/nonexistent/vmlinux"));
    try {
        m.run();
        FAIL() << "expected an error";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/vmlinux"), std::string::npos);
    }
}

TEST(KvmErrors, TruncatedKernel) {
    REQUIRE_KVM();
    std::ifstream in(TEST_GUEST_HELLO, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    char path[] = "/tmp/vessel-trunc-XXXXXX";
    UniqueFd fd(::mkstemp(path));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::write(fd.get(), bytes.data(), 100), 100);
    Machine m(config(path));
    EXPECT_THROW(m.run(), vessel::vmm::BootError);
    ::unlink(path);
}

TEST(KvmErrors, OutOfRangeSizes) {
    MachineConfig c = config(TEST_GUEST_HELLO);
    c.memory_mib = 1;
    EXPECT_THROW(vessel::vmm::validate(c), std::invalid_argument);
    c.memory_mib = 64;
    c.vcpus = 0;
    EXPECT_THROW(vessel::vmm::validate(c), std::invalid_argument);
    c.vcpus = 100000;
    EXPECT_THROW(vessel::vmm::validate(c), std::invalid_argument);
}

}  // namespace
