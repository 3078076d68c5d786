// Runs the real vessel-init as PID 1 of a fresh PID/mount/UTS/net namespace, chrooted into
// the extracted base initramfs. VESSEL_INIT_TEST_EXIT makes it exit with the status instead
// of touching the exit port. Needs root; skipped otherwise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>

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
                     const std::string& cwd, const std::string& hostname = "") {
        fs::remove_all(root_->path() / "vessel");  // each boot of a real VM starts clean
        const fs::path archive = io_.path() / "run.cpio";
        test::write_file(archive, initramfs::make_run_archive(argv, env, cwd, hostname));
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

TEST_F(InitPidNs, RefusesToRunWhenNotPid1) {
    // Inside a namespace anyway, so a broken guard cannot harm the host.
    const fs::path out = io_.path() / "out";
    const int status = run_shell(std::string(kUnshare) + " sh -c " +
                                 sh_quote(std::string(VESSEL_TEST_INIT) + " 2>&1; echo rc=$?") +
                                 " > " + sh_quote(out.string()));
    EXPECT_EQ(status, 0);
    EXPECT_EQ(test::read_file(out), "vessel-init: must run as PID 1\nrc=1\n");
}

}  // namespace
}  // namespace vessel::guest
