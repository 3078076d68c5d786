// Pause, capture and restore of whole machines, with a freestanding guest that counts in a
// register, an SSE register and memory (guests/counter.c) on this host's /dev/kvm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <thread>

#include "snapshot/control.h"
#include "snapshot/snapshot.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

using vessel::UniqueFd;
using vessel::vmm::Machine;
using vessel::vmm::MachineConfig;
using vessel::vmm::MachineState;
using vessel::vmm::RestoreSource;
using vessel::vmm::RunResult;

namespace {

constexpr uint64_t kCounterAddr = 0x3000000;
constexpr uint64_t kCounterLimit = 20000000;

#define REQUIRE_KVM() \
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm on this host"

std::string read_all(int fd) {
    off_t len = ::lseek(fd, 0, SEEK_END);
    std::string s(static_cast<size_t>(len), '\0');
    EXPECT_EQ(::pread(fd, s.data(), s.size(), 0), len);
    return s;
}

uint64_t counter(const Machine& m) {
    uint64_t v = 0;
    EXPECT_TRUE(m.memory().read_obj(kCounterAddr, v));
    return v;
}

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char t[] = "/tmp/vessel-snap-XXXXXX";
        path = ::mkdtemp(t);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

// Waits until the guest has counted past `at_least` (or gives up after 60 s).
bool wait_for_count(const Machine& m, uint64_t at_least) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (counter(m) < at_least) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

struct Captured {
    MachineState state;
    uint64_t count = 0;
    std::string console;
};

// Boots the counter guest, pauses it mid-count, captures it and saves its memory to `mem`.
Captured boot_and_capture(uint32_t vcpus, const std::string& mem) {
    Captured c;
    UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
    MachineConfig cfg;
    cfg.kernel = TEST_GUEST_COUNTER;
    cfg.memory_mib = 64;
    cfg.vcpus = vcpus;
    cfg.console_fd = out.get();
    cfg.stop_on_signals = false;
    Machine m(cfg);
    auto run = std::async(std::launch::async, [&] { return m.run(); });
    EXPECT_TRUE(wait_for_count(m, 1000));
    EXPECT_TRUE(m.pause());
    c.count = counter(m);
    c.state = m.capture();
    EXPECT_GT(m.save_memory(mem), 0u);
    // Paused means paused: the count does not move.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(counter(m), c.count);
    m.stop({RunResult::Reason::Signal, 0, {}});
    run.get();
    c.console = read_all(out.get());
    return c;
}

TEST(Snapshot, PausedMachineStaysPutAndResumes) {
    REQUIRE_KVM();
    UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
    MachineConfig cfg;
    cfg.kernel = TEST_GUEST_COUNTER;
    cfg.memory_mib = 64;
    cfg.console_fd = out.get();
    cfg.stop_on_signals = false;
    Machine m(cfg);
    EXPECT_FALSE(m.pause()) << "pause before run() must refuse";
    EXPECT_THROW(m.capture(), std::logic_error);
    auto run = std::async(std::launch::async, [&] { return m.run(); });
    ASSERT_TRUE(wait_for_count(m, 1000));
    for (int round = 0; round < 3; ++round) {
        ASSERT_TRUE(m.pause());
        uint64_t v = counter(m);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        EXPECT_EQ(counter(m), v) << "round " << round;
        m.resume();
        ASSERT_TRUE(wait_for_count(m, v + 1));
    }
    RunResult r = run.get();
    EXPECT_EQ(r.reason, RunResult::Reason::ExitStatus) << r.detail;
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(read_all(out.get()),
              "counter: start\ncounter: done " + std::to_string(kCounterLimit) + "\n");
}

TEST(Snapshot, CaptureHoldsTheWholeMachine) {
    REQUIRE_KVM();
    TempDir dir;
    Captured c = boot_and_capture(2, dir.path / "mem");
    ASSERT_EQ(c.state.vcpus, 2u);
    ASSERT_EQ(c.state.vcpu.size(), 2u);
    EXPECT_EQ(c.state.memory_size, 64ull << 20);
    const auto& v0 = c.state.vcpu[0];
    // vCPU 0 is in the guest's code at 16 MiB, in long mode, with SSE on.
    EXPECT_GE(v0.regs.rip, 0x1000000u);
    EXPECT_LT(v0.regs.rip, 0x1100000u);
    EXPECT_TRUE(v0.sregs.efer & (1u << 10));
    EXPECT_TRUE(v0.sregs.cr4 & 0x200);
    EXPECT_FALSE(v0.cpuid.empty());
    EXPECT_FALSE(v0.msrs.empty());
    bool has_tsc = false;
    for (auto m : v0.msrs) has_tsc |= m.index == 0x10;
    EXPECT_TRUE(has_tsc) << "IA32_TSC missing from the saved MSRs";
    EXPECT_EQ(v0.mp_state.mp_state, static_cast<uint32_t>(KVM_MP_STATE_RUNNABLE));
    // The application processor never got INIT/SIPI.
    EXPECT_NE(c.state.vcpu[1].mp_state.mp_state, static_cast<uint32_t>(KVM_MP_STATE_RUNNABLE));
    // The memory file is sparse and the counter's page holds the captured count.
    struct stat st {};
    ASSERT_EQ(::stat((dir.path / "mem").c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 64ull << 20);
    EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 8ull << 20);
    UniqueFd f(::open((dir.path / "mem").c_str(), O_RDONLY | O_CLOEXEC));
    uint64_t saved = 0;
    ASSERT_EQ(::pread(f.get(), &saved, sizeof saved, kCounterAddr), 8);
    EXPECT_EQ(saved, c.count);
}

TEST(Snapshot, RestoredMachineContinuesFromTheSameCount) {
    REQUIRE_KVM();
    TempDir dir;
    for (uint32_t vcpus : {1u, 2u}) {
        SCOPED_TRACE("vcpus=" + std::to_string(vcpus));
        Captured c = boot_and_capture(vcpus, dir.path / "mem");
        ASSERT_GT(c.count, 0u);
        ASSERT_LT(c.count, kCounterLimit) << "guest finished before the pause";
        EXPECT_EQ(c.console, "counter: start\n");

        UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
        MachineConfig cfg;
        cfg.console_fd = out.get();
        cfg.stop_on_signals = false;
        Machine m(cfg, RestoreSource{c.state, dir.path / "mem"});
        EXPECT_EQ(counter(m), c.count) << "memory not restored before the first instruction";
        RunResult r = m.run();
        EXPECT_EQ(r.reason, RunResult::Reason::ExitStatus) << r.detail;
        EXPECT_EQ(r.status, 0) << read_all(out.get());
        // No second "start": the guest went on where it was, with its registers and xmm0.
        EXPECT_EQ(read_all(out.get()), "counter: done " + std::to_string(kCounterLimit) + "\n");
        EXPECT_EQ(counter(m), kCounterLimit);
        EXPECT_GT(m.restore_apply_ns(), 0u);
        // The restore wrote nothing back: the file still holds the captured count.
        UniqueFd f(::open((dir.path / "mem").c_str(), O_RDONLY | O_CLOEXEC));
        uint64_t saved = 0;
        ASSERT_EQ(::pread(f.get(), &saved, sizeof saved, kCounterAddr), 8);
        EXPECT_EQ(saved, c.count);
    }
}

TEST(Snapshot, TwoClonesFromOneSnapshotRunAtOnce) {
    REQUIRE_KVM();
    TempDir dir;
    Captured c = boot_and_capture(1, dir.path / "mem");
    std::vector<std::unique_ptr<Machine>> clones;
    std::vector<UniqueFd> outs;
    for (int i = 0; i < 2; ++i) {
        outs.emplace_back(::memfd_create("console", MFD_CLOEXEC));
        MachineConfig cfg;
        cfg.console_fd = outs.back().get();
        cfg.stop_on_signals = false;
        clones.push_back(std::make_unique<Machine>(cfg, RestoreSource{c.state, dir.path / "mem"}));
    }
    std::vector<std::future<RunResult>> runs;
    for (auto& m : clones)
        runs.push_back(std::async(std::launch::async, [&m] { return m->run(); }));
    for (size_t i = 0; i < clones.size(); ++i) {
        RunResult r = runs[i].get();
        EXPECT_EQ(r.reason, RunResult::Reason::ExitStatus) << r.detail;
        EXPECT_EQ(r.status, 0);
        EXPECT_EQ(counter(*clones[i]), kCounterLimit);
    }
}

TEST(Snapshot, ResnapshotOfARestoredMachine) {
    REQUIRE_KVM();
    TempDir dir;
    Captured c = boot_and_capture(1, dir.path / "mem1");
    MachineConfig cfg;
    UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
    cfg.console_fd = out.get();
    cfg.stop_on_signals = false;
    MachineState second;
    uint64_t count2 = 0;
    {
        Machine m(cfg, RestoreSource{c.state, dir.path / "mem1"});
        auto run = std::async(std::launch::async, [&] { return m.run(); });
        ASSERT_TRUE(wait_for_count(m, c.count + 1000));
        ASSERT_TRUE(m.pause());
        count2 = counter(m);
        second = m.capture();
        m.save_memory(dir.path / "mem2");
        m.stop({RunResult::Reason::Signal, 0, {}});
        run.get();
    }
    ASSERT_GT(count2, c.count);
    Machine m(cfg, RestoreSource{second, dir.path / "mem2"});
    EXPECT_EQ(counter(m), count2);
    RunResult r = m.run();
    EXPECT_EQ(r.reason, RunResult::Reason::ExitStatus) << r.detail;
    EXPECT_EQ(r.status, 0);
}

TEST(Snapshot, ControlSocketSnapshotThenRestoreFromFiles) {
    REQUIRE_KVM();
    TempDir dir;
    const std::string sock = dir.path / "vm.sock", snap = dir.path / "snap";
    UniqueFd out(::memfd_create("console", MFD_CLOEXEC));
    MachineConfig cfg;
    cfg.kernel = TEST_GUEST_COUNTER;
    cfg.memory_mib = 64;
    cfg.console_fd = out.get();
    cfg.stop_on_signals = false;
    uint64_t at_least = 0;
    {
        Machine m(cfg);
        vessel::snapshot::ControlServer ctl(sock, m, {}, {{"cmdline", "test"}});
        auto run = std::async(std::launch::async, [&] { return m.run(); });
        ASSERT_TRUE(wait_for_count(m, 1000));
        at_least = counter(m);
        auto bad =
            vessel::snapshot::control_call(sock, {{"op", "snapshot"}}, std::chrono::seconds(30));
        EXPECT_FALSE(bad.value("ok", true));
        EXPECT_EQ(bad.value("error", ""), "snapshot: no \"dir\"");
        auto r = vessel::snapshot::control_call(
            sock, {{"op", "snapshot"}, {"dir", snap}, {"after", "stop"}}, std::chrono::seconds(60));
        ASSERT_TRUE(r.value("ok", false)) << r.dump();
        EXPECT_GT(r.value("memory_bytes", 0ull), 0u);
        RunResult rr = run.get();
        EXPECT_EQ(rr.reason, RunResult::Reason::ExitStatus);
        EXPECT_EQ(rr.detail, "snapshot");
    }
    EXPECT_FALSE(vessel::snapshot::socket_is_live(sock));
    vessel::snapshot::Snapshot s = vessel::snapshot::load(snap);
    EXPECT_EQ(s.meta.value("cmdline", ""), "test");
    uint64_t saved = 0;
    {
        UniqueFd f(::open((snap + "/memory").c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_EQ(::pread(f.get(), &saved, 8, kCounterAddr), 8);
    }
    EXPECT_GE(saved, at_least);
    UniqueFd out2(::memfd_create("console", MFD_CLOEXEC));
    MachineConfig rc;
    rc.console_fd = out2.get();
    rc.stop_on_signals = false;
    Machine m(rc, RestoreSource{s.machine, vessel::snapshot::memory_path(snap, s)});
    EXPECT_EQ(counter(m), saved);
    RunResult r = m.run();
    EXPECT_EQ(r.reason, RunResult::Reason::ExitStatus) << r.detail;
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(read_all(out2.get()), "counter: done " + std::to_string(kCounterLimit) + "\n");
}

TEST(Snapshot, ShortMemoryFileIsRefused) {
    REQUIRE_KVM();
    TempDir dir;
    Captured c = boot_and_capture(1, dir.path / "mem");
    ASSERT_EQ(::truncate((dir.path / "mem").c_str(), 32 << 20), 0);
    MachineConfig cfg;
    try {
        Machine m(cfg, RestoreSource{c.state, dir.path / "mem"});
        FAIL() << "a short memory file was accepted";
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("the snapshot says"), std::string::npos) << e.what();
    }
    try {
        Machine m(cfg, RestoreSource{c.state, dir.path / "missing"});
        FAIL() << "a missing memory file was accepted";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
    }
}

}  // namespace
