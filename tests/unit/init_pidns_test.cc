// Runs the real vessel-init as PID 1 of a fresh PID/mount/UTS/net namespace, chrooted into
// the extracted base initramfs. VESSEL_INIT_TEST_EXIT makes it exit with the status instead
// of touching the exit port. Needs root; skipped otherwise. The disk-root tests also need
// loop devices and e2fsprogs: the "disk" is an ext4 image attached with losetup.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>

#include "cpio_test_util.h"
#include "guest/initramfs/cpio.h"

namespace vessel::guest {
namespace {

namespace fs = std::filesystem;
using test::run_shell;
using test::sh_quote;
using test::TempDir;

constexpr const char* kUnshare = "unshare --fork --pid --mount --uts --net --propagation private";

struct Result {
    int status;
    std::string out;
    std::string err;
};

class InitPidNs : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (geteuid() != 0) return;
        if (run_shell(std::string(kUnshare) + " true >/dev/null 2>&1") != 0) return;
        root_ = std::make_unique<TempDir>();
        if (run_shell("cd " + sh_quote(root_->str()) + " && cpio -idm --quiet < " +
                      sh_quote(VESSEL_TEST_INITRAMFS)) != 0)
            root_.reset();
    }
    static void TearDownTestSuite() { root_.reset(); }

    void SetUp() override {
        if (!root_) GTEST_SKIP() << "needs root, unshare(1) and cpio";
        fs::remove_all(root_->path() / "vessel");
    }

    // Unpacks a run archive into the rootfs, as the kernel would after the base archive.
    void install_run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                     const std::string& cwd, const std::string& hostname = "",
                     const std::optional<RootFs>& rootfs = std::nullopt) {
        fs::remove_all(root_->path() / "vessel");  // each boot of a real VM starts clean
        const fs::path archive = io_.path() / "run.cpio";
        test::write_file(archive, initramfs::make_run_archive(argv, env, cwd, hostname, rootfs));
        ASSERT_EQ(run_shell("cd " + sh_quote(root_->str()) + " && cpio -idmu --quiet < " +
                            sh_quote(archive.string())),
                  0);
    }

    Result boot(const std::string& stdin_data = "") {
        const fs::path in = io_.path() / "in", out = io_.path() / "out", err = io_.path() / "err";
        test::write_file(in, stdin_data);
        const int status =
            run_shell("VESSEL_INIT_TEST_EXIT=1 " + std::string(kUnshare) + " chroot " +
                      sh_quote(root_->str()) + " /init < " + sh_quote(in.string()) + " > " +
                      sh_quote(out.string()) + " 2> " + sh_quote(err.string()));
        return {status, test::read_file(out), test::read_file(err)};
    }

    Result run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
               const std::string& cwd = "") {
        install_run(argv, env, cwd);
        return boot();
    }

    static std::unique_ptr<TempDir> root_;
    TempDir io_;
};

std::unique_ptr<TempDir> InitPidNs::root_;

TEST_F(InitPidNs, BusyboxRunsInChroot) {
    const fs::path out = io_.path() / "out";
    ASSERT_EQ(run_shell("chroot " + sh_quote(root_->str()) + " /bin/busybox sh -c 'echo ok' > " +
                        sh_quote(out.string())),
              0);
    EXPECT_EQ(test::read_file(out), "ok\n");
}

TEST_F(InitPidNs, ExitCodeAndOutput) {
    const Result r = run({"sh", "-c", "echo hello; echo oops >&2; exit 3"});
    EXPECT_EQ(r.status, 3) << r.err;
    EXPECT_EQ(r.out, "hello\n");
    EXPECT_EQ(r.err, "oops\n");
}

TEST_F(InitPidNs, RunsAsPid1AndCommandIsSessionLeader) {
    // Field 6 of /proc/PID/stat is the session id.
    const Result r =
        run({"sh", "-c", "echo $$ $PPID; cat /proc/1/comm; cut -d' ' -f6 /proc/$$/stat"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "2 1\ninit\n2\n");
}

TEST_F(InitPidNs, EnvironmentDefaultsAndOverrides) {
    const Result r =
        run({"sh", "-c", "echo $FOO; echo $PATH; echo $HOME $TERM"}, {"FOO=bar baz", "TERM=xterm"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out,
              "bar baz\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
              "/root xterm\n");
}

TEST_F(InitPidNs, PathLookupUsesCommandEnv) {
    ASSERT_EQ(run_shell("mkdir -p " + sh_quote(root_->str() + "/opt/x") + " && printf '" +
                        "#!/bin/sh\\necho custom\\n' > " + sh_quote(root_->str() + "/opt/x/tool") +
                        " && chmod 755 " + sh_quote(root_->str() + "/opt/x/tool")),
              0);
    const Result r = run({"tool"}, {"PATH=/opt/x:/bin"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "custom\n");
}

TEST_F(InitPidNs, WorkingDirectory) {
    EXPECT_EQ(run({"pwd"}, {}, "/etc").out, "/etc\n");
    EXPECT_EQ(run({"pwd"}).out, "/\n");
    const Result r = run({"pwd"}, {}, "/does/not/exist");
    EXPECT_EQ(r.status, 126);
    EXPECT_NE(r.err.find("vessel-init: chdir /does/not/exist: No such file or directory"),
              std::string::npos)
        << r.err;
}

TEST_F(InitPidNs, ExecFailures) {
    Result r = run({"no-such-command", "arg"});
    EXPECT_EQ(r.status, 127);
    EXPECT_EQ(r.err, "vessel-init: no-such-command: No such file or directory\n");
    r = run({"/etc/passwd"});
    EXPECT_EQ(r.status, 126);
    EXPECT_EQ(r.err, "vessel-init: /etc/passwd: Permission denied\n");
}

TEST_F(InitPidNs, KilledBySignal) {
    EXPECT_EQ(run({"sh", "-c", "kill -KILL $$"}).status, 137);
    EXPECT_EQ(run({"sh", "-c", "kill -TERM $$"}).status, 143);
}

TEST_F(InitPidNs, OrphansAreKilledAfterCommandExits) {
    const auto start = std::chrono::steady_clock::now();
    const Result r = run({"sh", "-c", "sleep 100 & exit 4"});
    EXPECT_EQ(r.status, 4) << r.err;
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(InitPidNs, SigtermIgnoringOrphansGetSigkill) {
    const auto start = std::chrono::steady_clock::now();
    // Wait until the subshell ignores SIGTERM before leaving it behind.
    const Result r = run({"sh", "-c",
                          "(trap '' TERM; touch /tmp/ready; exec sleep 101) & "
                          "while [ ! -e /tmp/ready ]; do sleep 0.01; done; exit 4"});
    const auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status, 4) << r.err;
    // Init's SIGTERM grace period is 500 ms; the sleep only dies from the SIGKILL after it.
    EXPECT_GE(elapsed, std::chrono::milliseconds(450));
    EXPECT_LT(elapsed, std::chrono::seconds(5));
}

TEST_F(InitPidNs, DefaultsToShellReadingStdin) {
    install_run({}, {}, "");
    const Result r = boot("echo from-sh; exit 5\n");
    EXPECT_EQ(r.status, 5) << r.err;
    EXPECT_EQ(r.out, "from-sh\n");
}

TEST_F(InitPidNs, Hostname) {
    EXPECT_EQ(run({"hostname"}).out, "vessel\n");
    install_run({"hostname"}, {}, "", "box1");
    EXPECT_EQ(boot().out, "box1\n");
}

TEST_F(InitPidNs, MountsFilesystems) {
    const Result r = run({"sh", "-c", "cut -d' ' -f2,3 /proc/mounts"});
    EXPECT_EQ(r.status, 0) << r.err;
    for (const char* m : {"/proc proc", "/sys sysfs", "/dev devtmpfs", "/dev/pts devpts",
                          "/dev/shm tmpfs", "/tmp tmpfs", "/run tmpfs"})
        EXPECT_NE(r.out.find(m), std::string::npos) << m << " missing in\n" << r.out;
    EXPECT_EQ(r.err, "");
}

TEST_F(InitPidNs, InvalidRootFsFileFailsWithoutRunning) {
    install_run({"sh", "-c", "echo ran"}, {}, "");
    test::write_file(root_->path() / "vessel/rootfs", "source=/dev/vda\nbogus\n");
    const Result r = boot();
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "vessel-init: /vessel/rootfs: line 2: expected key=value\n");
}

TEST_F(InitPidNs, RefusesToRunWhenNotPid1) {
    // Inside a namespace anyway, so a broken guard cannot harm the host.
    const fs::path out = io_.path() / "out";
    const int status = run_shell(std::string(kUnshare) + " sh -c " +
                                 sh_quote(std::string(VESSEL_TEST_INIT) + " 2>&1; echo rc=$?") +
                                 " > " + sh_quote(out.string()));
    EXPECT_EQ(status, 0);
    EXPECT_EQ(test::read_file(out), "vessel-init: must run as PID 1\nrc=1\n");
}

// Stdout of a shell command and its exit code.
std::pair<int, std::string> capture(const std::string& cmd, const fs::path& scratch) {
    const fs::path out = scratch / "capture.out";
    const int rc = run_shell("{ " + cmd + "; } > " + sh_quote(out.string()));
    return {rc, test::read_file(out)};
}

std::string chomp(std::string s) {
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

// Init with /vessel/rootfs pointing at a loop device backed by an ext4 image, standing in for
// the VM's virtio disk.
class InitDiskRoot : public InitPidNs {
  protected:
    static void SetUpTestSuite() {
        InitPidNs::SetUpTestSuite();
        if (!root_) return;
        // Probes that loop devices really work here (containers often lack them).
        TempDir probe;
        const std::string img = (probe.path() / "probe.img").string();
        const std::string dev = (probe.path() / "dev").string();
        loop_ok_ =
            run_shell(
                "for t in losetup mkfs.ext4 debugfs e2fsck; do command -v $t "
                ">/dev/null || exit 1; done; mkfs.ext4 -q " +
                sh_quote(img) + " 4M >/dev/null && losetup --find --show " + sh_quote(img) + " > " +
                sh_quote(dev) + " && losetup -d \"$(cat " + sh_quote(dev) + ")\"") == 0;
    }

    void SetUp() override {
        InitPidNs::SetUp();
        if (IsSkipped()) return;
        if (!loop_ok_) GTEST_SKIP() << "needs losetup with working loop devices and e2fsprogs";
    }

    void TearDown() override {
        for (auto it = host_mounts_.rbegin(); it != host_mounts_.rend(); ++it)
            EXPECT_EQ(umount(it->c_str()), 0) << *it;
        for (const auto& dev : loops_)
            EXPECT_EQ(run_shell("losetup -d " + sh_quote(dev)), 0) << dev;
        for (const auto& node : nodes_) EXPECT_EQ(unlink(node.c_str()), 0) << node;
    }

    // A tiny distro: busybox with applet links in /bin, /marker, and /usr/bin/disk-tool (in
    // PATH only on the disk). mount_points are created as empty directories, then extra_sh
    // runs with $D set to the image's contents.
    fs::path make_image(const std::vector<std::string>& mount_points = {},
                        const std::string& extra_sh = "") {
        const std::string n = std::to_string(images_++);
        const fs::path dir = io_.path() / ("disk" + n), img = io_.path() / ("disk" + n + ".img");
        std::string cmd =
            "set -e; D=" + sh_quote(dir.string()) + "; mkdir -p $D/bin $D/usr/bin " +
            "$D/srv; cp " + sh_quote(root_->str() + "/bin/busybox") + " $D/bin/; " +
            "for a in $($D/bin/busybox --list); do [ -e $D/bin/$a ] || ln -s busybox " +
            "$D/bin/$a; done; echo on-disk > $D/marker; printf '#!/bin/sh\\necho " +
            "disk-tool\\n' > $D/usr/bin/disk-tool; chmod 755 $D/usr/bin/disk-tool";
        for (const auto& mp : mount_points) cmd += "; mkdir -p $D" + mp;
        if (!extra_sh.empty()) cmd += "; " + extra_sh;
        cmd += "; mkfs.ext4 -q -d $D " + sh_quote(img.string()) + " 32M >/dev/null";
        EXPECT_EQ(run_shell(cmd), 0) << cmd;
        return img;
    }

    std::string attach(const fs::path& img) {
        auto [rc, out] = capture("losetup --find --show " + sh_quote(img.string()), io_.path());
        EXPECT_EQ(rc, 0);
        const std::string dev = chomp(out);
        if (!dev.empty()) loops_.push_back(dev);
        return dev;
    }

    std::string read_from_image(const fs::path& img, const std::string& path) {
        return capture("debugfs -R " + sh_quote("cat " + path) + " " + sh_quote(img.string()) +
                           " 2>/dev/null",
                       io_.path())
            .second;
    }

    // e2fsck -n exits 0 only if the filesystem is clean (journal included).
    void expect_clean(const fs::path& img) {
        auto [rc, out] = capture("e2fsck -fn " + sh_quote(img.string()) + " 2>&1", io_.path());
        EXPECT_EQ(rc, 0) << out;
    }

    Result run_on(const RootFs& rootfs, const std::vector<std::string>& argv,
                  const std::string& cwd = "", const std::string& hostname = "") {
        install_run(argv, {}, cwd, hostname, rootfs);
        return boot();
    }

    static inline bool loop_ok_ = false;
    std::vector<std::string> loops_;
    std::vector<std::string> nodes_;  // created in the host /dev
    std::vector<std::string> host_mounts_;
    int images_ = 0;
};

TEST_F(InitDiskRoot, CommandRunsFromDiskAndWritesPersist) {
    const fs::path img = make_image();  // no mountpoints: init creates them
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    const Result r =
        run_on({.source = dev},
               {"sh", "-c",
                "disk-tool; cat /marker; pwd; hostname; [ -e /vessel ] || echo no-vessel; "
                "echo persisted > /srv/out; echo scratch > /tmp/t; cat /tmp/t; "
                "cut -d' ' -f2,3 /proc/mounts"},
               "/srv", "diskbox");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    const std::string head = "disk-tool\non-disk\n/srv\ndiskbox\nno-vessel\nscratch\n";
    EXPECT_EQ(r.out.substr(0, head.size()), head) << r.out;
    for (const char* m :
         {"\n/ ext4\n", "\n/proc proc\n", "\n/sys sysfs\n", "\n/dev devtmpfs\n",
          "\n/dev/pts devpts\n", "\n/dev/shm tmpfs\n", "\n/tmp tmpfs\n", "\n/run tmpfs\n"})
        EXPECT_NE(r.out.find(m), std::string::npos) << m << " missing in\n" << r.out;
    EXPECT_EQ(r.out.find("/mnt/root"), std::string::npos) << r.out;

    EXPECT_EQ(read_from_image(img, "/srv/out"), "persisted\n");
    const std::string root_dir =
        capture("debugfs -R 'ls -l /' " + sh_quote(img.string()) + " 2>/dev/null", io_.path())
            .second;
    for (const char* mp : {" proc\n", " sys\n", " dev\n", " tmp\n", " run\n"})
        EXPECT_NE(root_dir.find(mp), std::string::npos) << mp << " not created in\n" << root_dir;
    EXPECT_NE(root_dir.find("41777"), std::string::npos) << "/tmp must be 1777:\n" << root_dir;
    expect_clean(img);
}

// What the VM e2e test does: the second boot sees what the first one wrote.
TEST_F(InitDiskRoot, SecondBootSeesFirstBootsFiles) {
    const fs::path img = make_image({"/proc", "/sys", "/dev", "/tmp", "/run"});
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    Result r = run_on({.source = dev}, {"sh", "-c", "echo boot1 > /root-file"});
    EXPECT_EQ(r.status, 0) << r.err;
    r = run_on({.source = dev}, {"cat", "/root-file"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "boot1\n");
    expect_clean(img);
}

// The guest's own remount is what makes a VM's disk clean; here the namespace teardown would
// unmount it anyway, so watch the shared superblock through a host mount of the same device.
TEST_F(InitDiskRoot, RemountsRootReadOnlyAtShutdown) {
    const fs::path img = make_image({"/proc", "/sys", "/dev", "/tmp", "/run"});
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    const fs::path host_view = io_.path() / "host-view";
    fs::create_directory(host_view);
    ASSERT_EQ(mount(dev.c_str(), host_view.c_str(), "ext4", 0, nullptr), 0) << strerror(errno);
    host_mounts_.push_back(host_view.string());

    const Result r = run_on({.source = dev}, {"sh", "-c", "echo from-guest > /guest-file"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(test::read_file(host_view / "guest-file"), "from-guest\n");
    struct statvfs st;
    ASSERT_EQ(statvfs(host_view.c_str(), &st), 0);
    EXPECT_TRUE(st.f_flag & ST_RDONLY) << "init left the root filesystem writable";
}

TEST_F(InitDiskRoot, ReadOnlyRoot) {
    const fs::path img = make_image({"/proc", "/sys", "/dev", "/tmp", "/run"});
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    const Result r =
        run_on({dev, "ext4", true, "noload"},
               {"sh", "-c",
                "cat /marker; touch /x 2>/dev/null || echo ro; echo t > /tmp/t; "
                "cat /tmp/t; grep ' / ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "on-disk\nro\nt\next4 ro\n");
    EXPECT_EQ(r.err, "");
    expect_clean(img);
}

TEST_F(InitDiskRoot, ReadOnlyRootWithoutMountPointFails) {
    const fs::path img = make_image({"/proc", "/sys", "/dev", "/tmp"});
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    const Result r = run_on({.source = dev, .readonly = true}, {"sh", "-c", "echo ran"});
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "vessel-init: root " + dev +
                         " is read-only and has no /run; create it in the image\n");
    expect_clean(img);
}

TEST_F(InitDiskRoot, MountPointThatIsNotADirectoryFails) {
    const fs::path img = make_image({"/proc", "/sys", "/tmp", "/run"}, "ln -s /proc $D/dev");
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    const Result r = run_on({.source = dev}, {"sh", "-c", "echo ran"});
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "vessel-init: root " + dev + ": /dev is not a directory\n");
    expect_clean(img);  // unmounted again after the failure
}

TEST_F(InitDiskRoot, MountFailuresReportStatus125) {
    const fs::path blank = io_.path() / "blank.img";  // an unformatted disk
    ASSERT_EQ(run_shell("truncate -s 8M " + sh_quote(blank.string())), 0);
    const std::string dev = attach(blank);
    ASSERT_FALSE(dev.empty());
    Result r = run_on({.source = dev}, {"sh", "-c", "echo ran"});
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "vessel-init: mounting root " + dev + " (ext4): Invalid argument\n");

    r = run_on({.source = dev, .fstype = "no-such-fs"}, {"sh", "-c", "echo ran"});
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.err, "vessel-init: mounting root " + dev + " (no-such-fs): No such device\n");

    r = run_on({.source = "/dev/null"}, {"sh", "-c", "echo ran"});
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.err, "vessel-init: mounting root /dev/null (ext4): Block device required\n");
}

TEST_F(InitDiskRoot, MissingDeviceFailsAfterWaiting) {
    const auto start = std::chrono::steady_clock::now();
    const Result r = run_on({.source = "/dev/vessel-no-such-disk"}, {"sh", "-c", "echo ran"});
    const auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status, kStatusInitFailure);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err,
              "vessel-init: mounting root /dev/vessel-no-such-disk (ext4): No such file or "
              "directory\n");
    EXPECT_GE(elapsed, std::chrono::milliseconds(4900));
    EXPECT_LT(elapsed, std::chrono::seconds(10));
}

TEST_F(InitDiskRoot, WaitsForLateDevice) {
    const fs::path img = make_image({"/proc", "/sys", "/dev", "/tmp", "/run"});
    const std::string dev = attach(img);
    ASSERT_FALSE(dev.empty());
    struct stat st;
    ASSERT_EQ(stat(dev.c_str(), &st), 0);
    // Init mounts its own devtmpfs, which is the host's /dev: a node made there after 1 s
    // plays a virtio disk that is probed late.
    const std::string late = "/dev/vessel-test-late-" + std::to_string(getpid());
    nodes_.push_back(late);
    ASSERT_EQ(
        run_shell("(sleep 1; mknod " + sh_quote(late) + " b " + std::to_string(major(st.st_rdev)) +
                  " " + std::to_string(minor(st.st_rdev)) + ") >/dev/null 2>&1 &"),
        0);
    const auto start = std::chrono::steady_clock::now();
    const Result r = run_on({.source = late}, {"cat", "/marker"});
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "on-disk\n");
    expect_clean(img);
    // Had init not waited, the node must still not outlive TearDown's unlink.
    for (int i = 0; i < 300 && !fs::exists(late); ++i) usleep(10000);
}

}  // namespace
}  // namespace vessel::guest
