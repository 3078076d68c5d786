// End to end for snapshots (issue 7): a real guest is saved with `vessel snapshot create` and
// brought back with `vessel restore`; bad snapshots are refused with nothing left running.
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "snapshot/crc32c.h"
#include "snapshot/snapshot.h"
#include "tests/e2e/e2e_util.h"

using vessel::test::ProcOptions;
using vessel::test::ProcResult;
using vessel::test::run_process;
using vessel::test::TempDir;

namespace {

using SnapshotE2E = vessel::test::E2ETest;
using vessel::test::e2e_kernel;

// Counts to `n`, one line every 0.2 s, then exits with 7.
const char kCounter[] =
    "i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo tick=$i; sleep 0.2; done; exit 7";

std::vector<int> ticks(const std::string& out) {
    std::vector<int> v;
    size_t p = 0;
    while ((p = out.find("tick=", p)) != std::string::npos) {
        p += 5;
        v.push_back(std::atoi(out.c_str() + p));
    }
    return v;
}

std::string id_for(const char* what) {
    return std::string("e2e-") + what + "-" + std::to_string(::getpid());
}

// Boots `cmd` with a control socket and runs `vessel snapshot create [flags] ID DIR` once
// `marker` shows up on the console.
struct Booted {
    ProcResult boot, snap;
};
Booted boot_and_snapshot(const std::vector<std::string>& opts, const std::string& cmd,
                         const std::string& marker, const std::string& dir,
                         const std::vector<std::string>& snap_flags) {
    Booted b;
    const std::string id = id_for("snap");
    std::vector<std::string> argv = {VESSEL_BIN, "boot", "--kernel", e2e_kernel(), "--id", id};
    argv.insert(argv.end(), opts.begin(), opts.end());
    argv.insert(argv.end(), {"--", "sh", "-c", cmd});
    ProcOptions o;
    o.timeout_s = 600;
    o.marker = marker;
    o.on_marker = [&](pid_t) {
        std::vector<std::string> s = {VESSEL_BIN, "snapshot", "create"};
        s.insert(s.end(), snap_flags.begin(), snap_flags.end());
        s.insert(s.end(), {id, dir});
        b.snap = run_process(s, 300);
    };
    b.boot = run_process(argv, o);
    return b;
}

ProcResult restore(const std::string& dir, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {VESSEL_BIN, "restore"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(dir);
    return run_process(argv, 600);
}

// No process is left whose command line mentions `needle`.
bool nothing_running(const std::string& needle) {
    DIR* d = ::opendir("/proc");
    bool found = false;
    while (dirent* e = d ? ::readdir(d) : nullptr) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
        std::string c((std::istreambuf_iterator<char>(in)), {});
        if (c.find(needle) != std::string::npos) found = true;
    }
    if (d) ::closedir(d);
    return !found;
}

TEST_F(SnapshotE2E, CountingProcessContinuesAfterRestore) {
    TempDir tmp;
    const std::string dir = tmp / "snap";
    // Default: the VM goes on after the snapshot and finishes on its own.
    Booted b = boot_and_snapshot({"--memory", "128M"}, kCounter, "tick=5\n", dir, {});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    ASSERT_EQ(b.boot.status, 7) << b.boot.err;
    std::vector<int> orig = ticks(b.boot.out);
    ASSERT_EQ(orig.size(), 40u) << b.boot.out;

    ProcResult r = restore(dir, {"--timing"});
    EXPECT_EQ(r.status, 7) << r.err;
    std::vector<int> after = ticks(r.out);
    ASSERT_FALSE(after.empty()) << r.out << r.err;
    // It went on from where the snapshot was taken (after tick 5), not from the start, and
    // counted every number up to 40 exactly once.
    EXPECT_GE(after.front(), 5) << r.out;
    EXPECT_LT(after.front(), 40) << r.out;
    for (size_t i = 1; i < after.size(); ++i) EXPECT_EQ(after[i], after[i - 1] + 1) << r.out;
    EXPECT_EQ(after.back(), 40);
    EXPECT_NE(r.err.find("to first guest instruction"), std::string::npos) << r.err;
}

TEST_F(SnapshotE2E, StopThenRestoreLosesNothing) {
    TempDir tmp;
    const std::string dir = tmp / "snap";
    Booted b = boot_and_snapshot({}, kCounter, "tick=3\n", dir, {"--stop"});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    EXPECT_EQ(b.boot.status, 0) << b.boot.err;  // stopped by the snapshot
    // A clone takes its identity through the guest agent, which this VM does not run.
    ProcResult clone = restore(dir, {"--clone"});
    EXPECT_EQ(clone.status, 1);
    EXPECT_NE(clone.err.find("without the guest agent"), std::string::npos) << clone.err;
    ProcResult r = restore(dir);
    EXPECT_EQ(r.status, 7) << r.err;
    // The boot's console and the restore's together are 1..40, each once.
    std::vector<int> all = ticks(b.boot.out + r.out);
    ASSERT_EQ(all.size(), 40u) << b.boot.out << "\n---\n" << r.out;
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int>(i) + 1);
}

TEST_F(SnapshotE2E, VsockDeviceIsResetAndTheGuestGoesOn) {
    TempDir tmp;
    const std::string dir = tmp / "snap";
    // An active virtio-vsock device: its connections cannot survive, so the restore hands the
    // guest a transport-reset event before the device runs again.
    Booted b = boot_and_snapshot(
        {"--cid", "9", "--vsock-socket", tmp / "vm.vsock"},
        "grep -q 0x0013 /sys/bus/virtio/devices/*/device && echo vsock; " + std::string(kCounter),
        "tick=4\n", dir, {"--stop"});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    ASSERT_NE(b.boot.out.find("vsock\n"), std::string::npos) << b.boot.out;
    ProcResult r = restore(dir);
    EXPECT_EQ(r.status, 7) << r.err;
    std::vector<int> all = ticks(b.boot.out + r.out);
    ASSERT_EQ(all.size(), 40u) << r.out;
    EXPECT_EQ(all.back(), 40);
}

TEST_F(SnapshotE2E, FilesOnDiskAreIntactAfterRestore) {
    TempDir tmp;
    std::filesystem::create_directories(tmp / "empty");
    const std::string img = tmp / "fs.img";
    ASSERT_EQ(run_process({VESSEL_BIN, "mkimage", "--size", "64M", tmp / "empty", img}).status, 0);
    const std::string dir = tmp / "snap";
    // Written before the snapshot, checked after the restore (page cache dropped, so from
    // the disk), a second file written after it; then a fresh boot checks both.
    const std::string cmd =
        "mkdir -p /mnt && mount /dev/vda /mnt && "
        "dd if=/dev/urandom of=/mnt/before bs=1M count=4 2>/dev/null && sync && "
        "echo md5=$(md5sum /mnt/before | cut -c1-32) && echo written && "
        "i=0; while [ $i -lt 10 ]; do i=$((i+1)); sleep 0.2; done; "
        "echo 3 > /proc/sys/vm/drop_caches; "
        "echo after=$(md5sum /mnt/before | cut -c1-32); "
        "echo restored-data > /mnt/after && sync && umount /mnt && echo done";
    Booted b = boot_and_snapshot({"--disk", img}, cmd, "written\n", dir, {"--stop"});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    ASSERT_EQ(b.boot.status, 0) << b.boot.err;
    size_t p = b.boot.out.find("md5=");
    ASSERT_NE(p, std::string::npos) << b.boot.out;
    const std::string md5 = b.boot.out.substr(p + 4, 32);

    ProcResult r = restore(dir);
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("after=" + md5), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("done"), std::string::npos) << r.out;

    ProcResult check = run_process(
        {VESSEL_BIN, "boot", "--kernel", e2e_kernel(), "--disk", img, "--", "sh", "-c",
         "mkdir -p /mnt && mount /dev/vda /mnt && md5sum /mnt/before && cat /mnt/after"},
        300);
    ASSERT_EQ(check.status, 0) << check.err;
    EXPECT_NE(check.out.find(md5), std::string::npos) << check.out;
    EXPECT_NE(check.out.find("restored-data"), std::string::npos) << check.out;
}

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

uint64_t allocated(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}
// restore --uffd twice: the first records the pages it touches in DIR/memory.ws, the second
// installs them before the vCPUs start. Both go on counting from the snapshot.
TEST_F(SnapshotE2E, UffdRestoreRecordsThenPrefetchesTheWorkingSet) {
    TempDir tmp;
    const std::string dir = tmp / "snap", ws = dir + "/memory.ws";
    Booted b = boot_and_snapshot({"--memory", "128M"}, kCounter, "tick=3\n", dir, {"--stop"});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    EXPECT_EQ(b.boot.status, 0) << b.boot.err;
    std::vector<int> before = ticks(b.boot.out);
    ASSERT_FALSE(before.empty());
    auto goes_on = [&](const ProcResult& r) {
        EXPECT_EQ(r.status, 7) << r.err;
        std::vector<int> all = ticks(b.boot.out + r.out);
        ASSERT_EQ(all.size(), 40u) << b.boot.out << "\n---\n" << r.out << r.err;
        for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int>(i) + 1);
    };
    ASSERT_FALSE(std::filesystem::exists(ws));
    // Recording for a second at most: the guest runs for several more.
    ProcResult first = restore(dir, {"--uffd", "--ws-record-ms", "1000", "--timing"});
    goes_on(first);
    EXPECT_NE(first.err.find("recorded a working set of"), std::string::npos) << first.err;
    EXPECT_NE(first.err.find("0 pages prefetched"), std::string::npos) << first.err;
    ASSERT_TRUE(std::filesystem::exists(ws)) << first.err;
    EXPECT_GT(std::filesystem::file_size(ws), 64u + 100 * 4096) << "a guest touches more";

    ProcResult second = restore(dir, {"--uffd", "--timing"});
    goes_on(second);
    const size_t at = second.err.find("pages prefetched");
    ASSERT_NE(at, std::string::npos) << second.err;
    const size_t num = second.err.rfind(", ", at);
    EXPECT_GT(std::atoll(second.err.c_str() + num + 2), 100) << second.err;
    EXPECT_EQ(second.err.find("recorded a working set"), std::string::npos) << second.err;

    // A damaged working set is ignored with a warning; the restore still goes on.
    {
        std::fstream f(ws, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(70);
        f.put('\x5a');
    }
    ProcResult third = restore(dir, {"--uffd", "--ws-record-ms", "0"});
    goes_on(third);
    EXPECT_NE(third.err.find("ignoring working set"), std::string::npos) << third.err;
}

// A full snapshot, then a diff (left paused) and a full one of that same moment: the diff
// holds a fraction of the pages, base + diff merged is the full one, and a restore of the
// diff (through its parent) goes on from there.
// `snapshot create --disks` keeps a copy of each writable disk; `restore --revert-disks`
// puts it back first (virsh snapshot-revert), a plain restore takes the disk as it is now.
// The guest reads its disk with O_DIRECT, so what it prints is the disk's, not its cache's.
TEST_F(SnapshotE2E, RevertDisksPutsTheDiskBackAsItWasAtTheSnapshot) {
    TempDir tmp;
    const std::string img = tmp / "raw.img", dir = tmp / "snap";
    { std::ofstream(img, std::ios::binary) << std::string(1 << 20, '\0'); }
    const std::string cmd =
        "echo one | dd of=/dev/vda conv=fsync 2>/dev/null && echo written; sleep 2; "
        "echo disk=$(dd if=/dev/vda bs=4096 count=1 iflag=direct 2>/dev/null | head -c 3); "
        "echo two | dd of=/dev/vda conv=fsync 2>/dev/null; echo end";
    Booted b = boot_and_snapshot({"--disk", img}, cmd, "written\n", dir, {"--disks"});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    ASSERT_EQ(b.boot.status, 0) << b.boot.err;
    EXPECT_NE(b.boot.out.find("disk=one"), std::string::npos) << b.boot.out;
    EXPECT_EQ(file_bytes(img).substr(0, 3), "two");  // the VM went on after the snapshot
    EXPECT_EQ(file_bytes(dir + "/disk-0.img").substr(0, 3), "one");

    ProcResult as_is = restore(dir);
    EXPECT_EQ(as_is.status, 0) << as_is.err;
    EXPECT_NE(as_is.out.find("disk=two"), std::string::npos) << as_is.out;

    {
        // While a VM holds the disk, nothing is reverted and nothing runs.
        vessel::UniqueFd held(::open(img.c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_EQ(::flock(held.get(), LOCK_EX | LOCK_NB), 0);
        ProcResult busy = restore(dir, {"--revert-disks"});
        EXPECT_EQ(busy.status, 1);
        EXPECT_NE(busy.err.find("in use by a running VM"), std::string::npos) << busy.err;
        EXPECT_EQ(file_bytes(img).substr(0, 3), "two");
    }

    ProcResult reverted = restore(dir, {"--revert-disks"});
    EXPECT_EQ(reverted.status, 0) << reverted.err;
    EXPECT_NE(reverted.out.find("disk=one"), std::string::npos) << reverted.out;
    EXPECT_NE(reverted.out.find("end"), std::string::npos) << reverted.out;

    // A snapshot without --disks has nothing to revert to: refused before anything changes.
    const std::string plain = tmp / "plain";
    Booted p = boot_and_snapshot({"--disk", img}, cmd, "written\n", plain, {"--stop"});
    ASSERT_EQ(p.snap.status, 0) << p.snap.err;
    ProcResult none = restore(plain, {"--revert-disks"});
    EXPECT_EQ(none.status, 1);
    EXPECT_NE(none.err.find("holds no copy of disk"), std::string::npos) << none.err;
    EXPECT_TRUE(nothing_running(plain));
}

TEST_F(SnapshotE2E, BasePlusDiffEqualsAFullSnapshotOfTheSameMoment) {
    TempDir tmp;
    const std::string base = tmp / "base", diff = tmp / "diff", full = tmp / "full",
                      merged = tmp / "merged", id = id_for("diff");
    ProcResult early, s0, s1, s2;
    ProcOptions o;
    o.timeout_s = 600;
    o.marker = "tick=3\n";
    o.on_marker = [&](pid_t) {
        // No earlier snapshot of this VM: nothing a diff could be of.
        early = run_process({VESSEL_BIN, "snapshot", "create", "--diff", id, tmp / "early"}, 300);
        s0 = run_process({VESSEL_BIN, "snapshot", "create", id, base}, 300);
        ::usleep(1500 * 1000);
        s1 = run_process({VESSEL_BIN, "snapshot", "create", "--diff", "--leave-paused", id, diff},
                         300);
        s2 = run_process({VESSEL_BIN, "snapshot", "create", "--stop", id, full}, 300);
    };
    ProcResult b = run_process({VESSEL_BIN, "boot", "--kernel", e2e_kernel(), "--id", id,
                                "--memory", "256M", "--track-dirty", "--", "sh", "-c", kCounter},
                               o);
    EXPECT_EQ(early.status, 1);
    EXPECT_NE(early.err.find("needs an earlier snapshot"), std::string::npos) << early.err;
    EXPECT_FALSE(std::filesystem::exists(tmp / "early"));
    ASSERT_EQ(s0.status, 0) << s0.err;
    ASSERT_EQ(s1.status, 0) << s1.err;
    ASSERT_EQ(s2.status, 0) << s2.err;
    EXPECT_EQ(b.status, 0) << b.err;  // stopped by the last snapshot

    // The diff holds what changed in 1.5 s, not the guest's whole footprint.
    const uint64_t base_bytes = allocated(base + "/memory"),
                   diff_bytes = allocated(diff + "/memory");
    EXPECT_GT(diff_bytes, 0u);
    EXPECT_LT(diff_bytes * 4, base_bytes) << diff_bytes << " vs " << base_bytes;

    ProcResult m = run_process({VESSEL_BIN, "snapshot", "merge", diff, merged}, 300);
    ASSERT_EQ(m.status, 0) << m.err;
    // Same memory, byte for byte, and the same vCPU and device state. (Not every byte of
    // the state: the TSC, the LAPIC timer's count and the PIT go on counting between two
    // captures of one paused moment; the guest clock does not.)
    EXPECT_TRUE(file_bytes(merged + "/memory") == file_bytes(full + "/memory"));
    namespace snap = vessel::snapshot;
    snap::Snapshot a = snap::load(merged), f = snap::load(full);
    ASSERT_EQ(a.machine.vcpu.size(), f.machine.vcpu.size());
    for (size_t i = 0; i < a.machine.vcpu.size(); ++i) {
        const auto &x = a.machine.vcpu[i], &y = f.machine.vcpu[i];
        EXPECT_EQ(std::memcmp(&x.regs, &y.regs, sizeof x.regs), 0) << "vCPU " << i;
        EXPECT_EQ(std::memcmp(&x.sregs, &y.sregs, sizeof x.sregs), 0) << "vCPU " << i;
        EXPECT_TRUE(x.xsave == y.xsave) << "vCPU " << i;
        EXPECT_EQ(x.mp_state.mp_state, y.mp_state.mp_state);
    }
    EXPECT_EQ(std::memcmp(&a.machine.vm.clock, &f.machine.vm.clock, sizeof a.machine.vm.clock), 0);
    ASSERT_EQ(a.devices.size(), f.devices.size());
    for (size_t i = 0; i < a.devices.size(); ++i) {
        EXPECT_EQ(snap::transport_to_json(a.devices[i].transport),
                  snap::transport_to_json(f.devices[i].transport));
        EXPECT_EQ(a.devices[i].state, f.devices[i].state);
    }
    EXPECT_FALSE(a.meta.contains("diff"));
    EXPECT_TRUE(a.meta.contains("merged_from"));

    // The diff restored (through its parent) and tracking again: a diff of it, whose parent
    // is the first diff, stops it two ticks later; that chain of three restores last.
    const std::string id2 = id_for("diff2"), diff2 = tmp / "diff2";
    ProcResult s3;
    ProcOptions o2;
    o2.timeout_s = 600;
    std::vector<int> seen = ticks(b.out);
    ASSERT_FALSE(seen.empty());
    o2.marker = "tick=" + std::to_string(seen.back() + 2) + "\n";
    o2.on_marker = [&](pid_t) {
        s3 = run_process({VESSEL_BIN, "snapshot", "create", "--diff", "--stop", id2, diff2}, 300);
    };
    ProcResult r1 = run_process({VESSEL_BIN, "restore", "--id", id2, "--track-dirty", diff}, o2);
    ASSERT_EQ(s3.status, 0) << s3.err << r1.err;
    EXPECT_EQ(r1.status, 0) << r1.err;
    ProcResult r = restore(diff2);
    EXPECT_EQ(r.status, 7) << r.err;
    // The three consoles together count 1..40, each once.
    std::vector<int> all = ticks(b.out + r1.out + r.out);
    ASSERT_EQ(all.size(), 40u) << b.out << "\n---\n" << r1.out << "\n---\n" << r.out;
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int>(i) + 1);
    // The same chain through a userfaultfd: each page from the newest diff holding it.
    ProcResult u = restore(diff2, {"--uffd", "--ws-record-ms", "0"});
    EXPECT_EQ(u.status, 7) << u.err;
    EXPECT_EQ(ticks(u.out), ticks(r.out)) << u.out << u.err;

    // A diff whose parent is gone is refused before anything runs.
    std::filesystem::remove_all(base);
    ProcResult gone = restore(diff);
    EXPECT_EQ(gone.status, 1);
    EXPECT_NE(gone.err.find("parent"), std::string::npos) << gone.err;
}

TEST_F(SnapshotE2E, BadSnapshotsAreRefusedAndNothingRuns) {
    TempDir tmp;
    const std::string good = tmp / "good";
    Booted b = boot_and_snapshot({}, "echo ready; sleep 1000", "ready\n", good, {"--stop"});
    ASSERT_EQ(b.snap.status, 0) << b.snap.err;
    ASSERT_EQ(b.boot.status, 0);

    auto copy = [&](const std::string& name) {
        std::string d = tmp / name;
        std::filesystem::create_directories(d);
        std::filesystem::copy_file(good + "/state.vsnap", d + "/state.vsnap");
        // Sparse-aware copy of the memory file.
        EXPECT_EQ(run_process({"cp", "--sparse=always", good + "/memory", d + "/memory"}).status,
                  0);
        return d;
    };
    auto state_bytes = [](const std::string& d) {
        std::ifstream in(d + "/state.vsnap", std::ios::binary);
        return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), {});
    };
    auto put = [](const std::string& d, const std::vector<uint8_t>& b) {
        std::ofstream(d + "/state.vsnap", std::ios::binary | std::ios::trunc)
            .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    };

    struct Case {
        std::string dir, expect;
    };
    std::vector<Case> cases;
    {
        std::string d = copy("corrupted");
        auto s = state_bytes(d);
        s[s.size() / 2] ^= 0x5a;
        put(d, s);
        cases.push_back({d, "corrupted (checksum)"});
    }
    {
        std::string d = copy("truncated");
        auto s = state_bytes(d);
        s.resize(s.size() / 3);
        put(d, s);
        cases.push_back({d, "truncated"});
    }
    {
        std::string d = copy("version");
        auto s = state_bytes(d);
        uint32_t v = 99;
        std::memcpy(s.data() + 8, &v, 4);
        uint32_t crc = vessel::snapshot::crc32c({s.data(), 28});
        std::memcpy(s.data() + 28, &crc, 4);
        put(d, s);
        cases.push_back({d, "unsupported snapshot format version 99"});
    }
    {
        std::string d = copy("short-memory");
        std::filesystem::resize_file(d + "/memory", 4096);
        cases.push_back({d, "memory file"});
    }
    for (const Case& c : cases) {
        SCOPED_TRACE(c.dir);
        const std::string id = id_for("bad");
        ProcResult r = restore(c.dir, {"--id", id});
        EXPECT_EQ(r.status, 1) << r.out << r.err;
        EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
        EXPECT_TRUE(r.out.empty()) << "the guest ran: " << r.out;
        EXPECT_LT(r.seconds, 10.0);
        EXPECT_TRUE(nothing_running(c.dir));
        ProcResult snap = run_process({VESSEL_BIN, "snapshot", "create", id, tmp / "x"}, 30);
        EXPECT_NE(snap.status, 0) << "a VM answered on " << id;
    }
    // The store listing marks a damaged snapshot instead of failing.
    ProcResult ls =
        run_process({"env", "VESSEL_SNAPSHOT_DIR=" + tmp.path(), VESSEL_BIN, "snapshot", "ls"}, 30);
    EXPECT_EQ(ls.status, 0) << ls.err;
    EXPECT_NE(ls.out.find("good "), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("invalid"), std::string::npos) << ls.out;
}

}  // namespace
