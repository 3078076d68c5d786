// A whole Machine with seccomp on (MachineConfig::seccomp), on this host's /dev/kvm with a
// freestanding guest: the vCPU and device-event threads run confined and the guest's output
// and exit status come through; VESSEL_SECCOMP_SELFTEST shows each of those threads really
// runs under its filter (the process dies by SIGSYS).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "vmm/fd.h"
#include "vmm/machine.h"

namespace {

using vessel::UniqueFd;
using vessel::vmm::Machine;
using vessel::vmm::MachineConfig;
using vessel::vmm::RunResult;

bool have_kvm() {
    return ::access("/dev/kvm", R_OK | W_OK) == 0;
}

// Boots the hello guest in a forked child with seccomp on; the child exits 0 when the guest
// printed its line and reported status 0.
int boot_confined(const char* selftest_role, uint32_t vcpus) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        if (selftest_role)
            ::setenv("VESSEL_SECCOMP_SELFTEST", selftest_role, 1);
        else
            ::unsetenv("VESSEL_SECCOMP_SELFTEST");
        ::unsetenv("VESSEL_SECCOMP_LOG");
        UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
        MachineConfig c;
        c.kernel = TEST_GUEST_HELLO;
        c.memory_mib = 64;
        c.vcpus = vcpus;
        c.console_fd = out.get();
        c.seccomp = true;
        RunResult r;
        {
            Machine m(std::move(c));
            r = m.run();
        }
        std::string console(256, '\0');
        ssize_t n = ::pread(out.get(), console.data(), console.size(), 0);
        console.resize(n > 0 ? static_cast<size_t>(n) : 0);
        bool ok = r.reason == RunResult::Reason::ExitStatus && r.status == 0 &&
                  console == "hello from a vessel test guest\n";
        std::_Exit(ok ? 0 : 20);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return st;
}

std::string describe(int st) {
    if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return "signal " + std::to_string(WTERMSIG(st));
    return "status " + std::to_string(st);
}

TEST(SeccompMachine, GuestRunsWithFiltersOn) {
    if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
    for (uint32_t vcpus : {1u, 2u}) {
        int st = boot_confined(nullptr, vcpus);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << vcpus << " vCPU: " << describe(st);
    }
}

TEST(SeccompMachine, ConfinedThreadsDieOnAForbiddenCall) {
    if (!have_kvm()) GTEST_SKIP() << "no usable /dev/kvm on this host";
    for (const char* role : {"vcpu", "device-events"}) {
        int st = boot_confined(role, 1);
        EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS) << role << ": " << describe(st);
    }
}

}  // namespace
