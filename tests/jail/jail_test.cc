// The jailer on the host: no KVM needed. A forked child enters a real jail (namespaces,
// pivot_root, cgroup, uid drop) and reports what it sees; the test checks it and that nothing
// is left afterwards. Needs root; skipped otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "runtime/jail/internal.h"
#include "runtime/jail/jail.h"

namespace vessel::jail {
namespace {

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool exists(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
}

std::string ns_of(const std::string& pid, const char* ns) {
    char buf[128] = {};
    ssize_t n = ::readlink(("/proc/" + pid + "/ns/" + ns).c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Mount points of this (the host's) mount namespace.
std::string host_mounts() {
    return read_text("/proc/self/mountinfo");
}

class JailTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "the jail needs root";
        }
        char tmpl[] = "/tmp/jailtest-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        // Files the VM "needs" and one next to it that it does not get.
        std::ofstream(dir_ + "/kernel") << "kernel-bytes";
        std::ofstream(dir_ + "/disk.img") << "disk";
        std::ofstream(dir_ + "/secret") << "host secret";
        // World-writable, so that only the read-only mount can refuse a write.
        ::chmod((dir_ + "/kernel").c_str(), 0666);
        opts_ = default_options("jailtest-" + std::to_string(::getpid()) + "-" +
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        opts_.mount_point = dir_ + "/mnt";  // the per-VM root's mount point
        opts_.uid = 61234;
        opts_.gid = 61235;
        mounts_before_ = host_mounts();
    }
    void TearDown() override {
        if (dir_.empty()) return;
        for (const char* f : {"kernel", "disk.img", "secret"}) ::unlink((dir_ + "/" + f).c_str());
        ::rmdir((dir_ + "/mnt").c_str());
        ::rmdir(dir_.c_str());
    }
    std::vector<Exposure> exposures() const {
        std::vector<Exposure> e = {{.path = dir_ + "/kernel"},
                                   {.path = dir_ + "/disk.img", .writable = true, .owned = true}};
        for (const Exposure& d : device_exposures()) e.push_back({d.path, false, false, true});
        return e;
    }
    // Nothing of the jail is left on the host: no mount, no cgroup, an empty mount point.
    void expect_nothing_left(const Options& o) {
        EXPECT_EQ(host_mounts().find(o.mount_point), std::string::npos) << host_mounts();
        const CgroupLayout lay = detect_cgroups();
        for (const auto& [c, mnt] : lay.v1)
            EXPECT_FALSE(exists(mnt + "/" + o.cgroup_parent + "/" + o.name)) << c;
        if (!lay.v2_root.empty()) {
            EXPECT_FALSE(exists(lay.v2_root + "/" + o.cgroup_parent + "/" + o.name));
        }
        EXPECT_EQ(::rmdir(o.mount_point.c_str()), 0) << "mount point not empty or missing";
    }

    std::string dir_;
    Options opts_;
    std::string mounts_before_;
};

TEST(JailOptions, ParsesTheSpec) {
    Options o = default_options("x");
    apply_spec(o, "uid=1234,gid=4321,mem=512,cpus=1.5,pids=77,cgroup=a/b,nofile=100,fsize=1G");
    EXPECT_EQ(o.uid, 1234u);
    EXPECT_EQ(o.gid, 4321u);
    EXPECT_EQ(o.limits.memory_bytes, 512ull << 20);
    EXPECT_DOUBLE_EQ(o.limits.cpus, 1.5);
    EXPECT_EQ(o.limits.pids, 77u);
    EXPECT_EQ(o.cgroup_parent, "a/b");
    EXPECT_EQ(o.nofile, 100u);
    EXPECT_EQ(*o.fsize, 1ull << 30);
    apply_spec(o, "uid=root,mem=64K");  // a user name brings its group
    EXPECT_EQ(o.uid, 0u);
    EXPECT_EQ(o.gid, 0u);
    EXPECT_EQ(o.limits.memory_bytes, 64ull << 10);
}

TEST(JailOptions, RejectsBadSpecsByName) {
    auto err = [](const std::string& spec) {
        Options o = default_options("x");
        try {
            apply_spec(o, spec);
        } catch (const std::invalid_argument& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(err("uid=no-such-user-here").find("no such user"), std::string::npos);
    EXPECT_NE(err("gid=no-such-group-here").find("no such group"), std::string::npos);
    EXPECT_NE(err("mem=lots").find("mem='lots'"), std::string::npos);
    EXPECT_NE(err("cpus=-1").find("cpus"), std::string::npos);
    EXPECT_NE(err("cgroup=../escape").find("cgroup"), std::string::npos);
    EXPECT_NE(err("colour=blue").find("unknown option 'colour'"), std::string::npos);
    EXPECT_NE(err("uid").find("KEY=VALUE"), std::string::npos);
}

TEST(JailOptions, ValidateRefusesRootAndBadNames) {
    Options o = default_options("ok");
    o.uid = 0;
    EXPECT_THROW(validate(o), std::runtime_error);
    o = default_options("../x");
    EXPECT_THROW(validate(o), std::runtime_error);
}

TEST(JailOptions, ContainerAnnotation) {
    EXPECT_FALSE(container_options("c1", {{kAnnotation, "off"}}, 256, 2));
    auto o = container_options("c1", {}, 256, 2);
    ASSERT_TRUE(o);
    EXPECT_EQ(o->name, "c1");
    EXPECT_EQ(o->limits.memory_bytes, (256ull + kVmmOverheadMiB) << 20);
    EXPECT_DOUBLE_EQ(o->limits.cpus, 3.0);
    o = container_options("c1", {{kAnnotation, "mem=100,pids=9"}}, 256, 2);
    ASSERT_TRUE(o);
    EXPECT_EQ(o->limits.memory_bytes, 100ull << 20);
    EXPECT_EQ(o->limits.pids, 9u);
    EXPECT_THROW(container_options("c1", {{kAnnotation, "bogus=1"}}, 256, 2), std::runtime_error);
}

// The child's view from inside the jail, as KEY=VALUE lines.
std::map<std::string, std::string> parse_report(const std::string& text) {
    std::map<std::string, std::string> m;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
        if (size_t eq = line.find('='); eq != std::string::npos)
            m[line.substr(0, eq)] = line.substr(eq + 1);
    return m;
}

std::string errno_of(int rc) {
    return rc == 0 ? "ok" : std::strerror(errno);
}

TEST_F(JailTest, InsideOnlyTheVmsFilesAsAnUnprivilegedUidInNewNamespaces) {
    opts_.limits = {64ull << 20, 0.5, 64};
    Cgroup cg = Cgroup::create(opts_.cgroup_parent, opts_.name, opts_.limits);
    int report[2], go[2];
    ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
    ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
    // An fd the child inherits without needing it: close_inherited_fds must close it.
    const int stray = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC, as if inherited
    ASSERT_GE(stray, 3);
    const pid_t pid = fork_in_new_pid_ns();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::string r;
        try {
            cg.add(0);
            cg.release();
            close_inherited_fds({report[1], go[0]});
            ::setenv("JAIL_TEST_SECRET", "leak", 1);
            enter(opts_, exposures());
            auto line = [&](const std::string& k, const std::string& v) {
                r += k + "=" + v + "\n";
            };
            line("pid", std::to_string(::getpid()));
            line("uid", std::to_string(::getuid()) + "/" + std::to_string(::geteuid()));
            line("gid", std::to_string(::getgid()) + "/" + std::to_string(::getegid()));
            line("nnp", std::to_string(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)));
            line("passwd", errno_of(::access("/etc/passwd", F_OK)));
            line("work", errno_of(::access("/work", F_OK)));
            line("proc", errno_of(::access("/proc/self", F_OK)));
            line("secret", errno_of(::access((dir_ + "/secret").c_str(), F_OK)));
            line("stray_fd", errno_of(::fcntl(stray, F_GETFD) < 0 ? -1 : 0));
            std::ifstream k(dir_ + "/kernel");
            std::string kernel;
            k >> kernel;
            line("kernel", kernel);
            line("kernel_write", errno_of(::access((dir_ + "/kernel").c_str(), W_OK)));
            const int d = ::open((dir_ + "/disk.img").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
            line("disk_write", d >= 0 && ::write(d, "x", 1) == 1 ? "ok" : std::strerror(errno));
            if (d >= 0) ::close(d);
            line("dev_null", errno_of(::access("/dev/null", W_OK)));
            line("mkdir_root", errno_of(::mkdir("/newdir", 0700)));
            line("setuid0", errno_of(::setuid(0)));
            line("env", std::getenv("JAIL_TEST_SECRET") ? "leaked" : "clean");
            rlimit core{}, nofile{};
            ::getrlimit(RLIMIT_CORE, &core);
            ::getrlimit(RLIMIT_NOFILE, &nofile);
            line("core", std::to_string(core.rlim_max));
            line("nofile", std::to_string(nofile.rlim_cur));
        } catch (const std::exception& e) {
            r += std::string("error=") + e.what() + "\n";
        }
        r += "end=1\n";
        (void)!::write(report[1], r.data(), r.size());
        ::close(report[1]);
        char c;
        (void)!::read(go[0], &c, 1);  // stay alive while the parent looks at /proc/PID
        ::_exit(0);
    }
    ::close(stray);
    ::close(report[1]);
    ::close(go[0]);
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(report[0], buf, sizeof buf)) > 0;) {
        text.append(buf, static_cast<size_t>(n));
        if (text.find("end=1\n") != std::string::npos) break;
    }
    auto r = parse_report(text);
    ASSERT_EQ(r.count("error"), 0u) << r["error"];
    EXPECT_EQ(r["pid"], "1");
    EXPECT_EQ(r["uid"], "61234/61234");
    EXPECT_EQ(r["gid"], "61235/61235");
    EXPECT_EQ(r["nnp"], "1");
    EXPECT_EQ(r["passwd"], std::strerror(ENOENT));
    EXPECT_EQ(r["work"], std::strerror(ENOENT));
    EXPECT_EQ(r["proc"], std::strerror(ENOENT));
    EXPECT_EQ(r["secret"], std::strerror(ENOENT));
    EXPECT_EQ(r["stray_fd"], std::strerror(EBADF));
    EXPECT_EQ(r["kernel"], "kernel-bytes");
    EXPECT_EQ(r["kernel_write"], std::strerror(EROFS));
    EXPECT_EQ(r["disk_write"], "ok");
    EXPECT_EQ(r["dev_null"], "ok");
    EXPECT_EQ(r["mkdir_root"], std::strerror(EROFS));
    EXPECT_EQ(r["setuid0"], std::strerror(EPERM));
    EXPECT_EQ(r["env"], "clean");
    EXPECT_EQ(r["core"], "0");
    EXPECT_EQ(r["nofile"], std::to_string(opts_.nofile));

    // From outside: other namespaces, the cgroup, no_new_privs.
    const std::string p = std::to_string(pid);
    for (const char* ns : {"mnt", "pid", "ipc"}) EXPECT_NE(ns_of(p, ns), ns_of("self", ns)) << ns;
    EXPECT_EQ(ns_of(p, "net"), ns_of("self", "net"));  // the network is the caller's business
    const std::string status = read_text("/proc/" + p + "/status");
    EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos) << status;
    EXPECT_NE(status.find("CapEff:\t0000000000000000"), std::string::npos) << status;
    const std::string cgs = read_text("/proc/" + p + "/cgroup");
    EXPECT_NE(cgs.find(opts_.cgroup_parent + "/" + opts_.name), std::string::npos) << cgs;
    // The disk was chowned so that the unprivileged VMM can use it.
    struct stat st;
    ASSERT_EQ(::stat((dir_ + "/disk.img").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 61234u);
    // The jail's root is not in the host's mount table even while the VMM runs.
    EXPECT_EQ(host_mounts().find(opts_.mount_point), std::string::npos);

    ::close(go[1]);
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
    ::close(report[0]);
    EXPECT_EQ(cg.remove(), "");
    expect_nothing_left(opts_);
}

// A process of the jail's cgroup that allocates beyond the memory limit is OOM-killed.
TEST_F(JailTest, MemoryLimitIsEnforced) {
    opts_.limits = {32ull << 20, 0, 0};
    Cgroup cg = Cgroup::create(opts_.cgroup_parent, opts_.name, opts_.limits);
    const pid_t pid = fork_in_new_pid_ns();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        try {
            cg.add(0);
            cg.release();
            enter(opts_, exposures());
        } catch (...) {
            ::_exit(3);
        }
        // 128 MiB touched page by page: four times the limit.
        const size_t len = 128u << 20;
        auto* p = static_cast<char*>(
            ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (p == MAP_FAILED) ::_exit(4);
        for (size_t i = 0; i < len; i += 4096) p[i] = 1;
        ::_exit(0);  // survived: the limit did not hold
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(ws)) << "exit status " << WEXITSTATUS(ws);
    EXPECT_EQ(WTERMSIG(ws), SIGKILL);
    // The kernel says why: an OOM kill in this cgroup.
    const std::string events = cg.v2() ? read_text(cg.memory_dir() + "/memory.events")
                                       : read_text(cg.memory_dir() + "/memory.oom_control");
    const size_t at = events.find("oom_kill ");
    ASSERT_NE(at, std::string::npos) << events;
    EXPECT_GE(std::atoi(events.c_str() + at + 9), 1) << events;
    EXPECT_EQ(cg.remove(), "");
    expect_nothing_left(opts_);
}

// The supervisor of `vessel boot --jail`: the child is PID 1 of its namespace, in the cgroup;
// a signal sent to the parent reaches it; its status is the parent's; the cgroup goes.
TEST_F(JailTest, RunJailedChildForwardsSignalsAndCleansUp) {
    opts_.limits = {128ull << 20, 1, 32};
    int ready[2];
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    const pid_t sup = ::fork();
    ASSERT_GE(sup, 0);
    if (sup == 0) {
        std::optional<int> st;
        try {
            st = run_jailed_child(opts_);
        } catch (...) {
            ::_exit(90);
        }
        if (st) ::_exit(*st);  // the supervisor
        // The jailed child: waits for SIGTERM (PID 1 ignores what it does not handle).
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        ::sigprocmask(SIG_BLOCK, &set, nullptr);
        try {
            enter(opts_, exposures());
        } catch (...) {
            ::_exit(91);
        }
        const char ok = ::getpid() == 1 ? '1' : '0';
        (void)!::write(ready[1], &ok, 1);
        int sig = 0;
        ::sigwait(&set, &sig);
        ::_exit(sig == SIGTERM ? 42 : 43);
    }
    ::close(ready[1]);
    char ok = 0;
    ASSERT_EQ(::read(ready[0], &ok, 1), 1);
    EXPECT_EQ(ok, '1');
    // The cgroup exists while the child runs, and holds it.
    const CgroupLayout lay = detect_cgroups();
    const std::string mem = lay.use_v1({"memory"}) ? lay.v1.at("memory") : lay.v2_root;
    const std::string procs =
        read_text(mem + "/" + opts_.cgroup_parent + "/" + opts_.name + "/cgroup.procs");
    EXPECT_FALSE(procs.empty());
    ASSERT_EQ(::kill(sup, SIGTERM), 0);
    int ws = 0;
    ASSERT_EQ(::waitpid(sup, &ws, 0), sup);
    ASSERT_TRUE(WIFEXITED(ws)) << ws;
    EXPECT_EQ(WEXITSTATUS(ws), 42);
    ::close(ready[0]);
    expect_nothing_left(opts_);
}

// Bad configuration: a clear error, and no cgroup (or parent of one) left behind.
TEST_F(JailTest, FailedCgroupSetupLeavesNothing) {
    opts_.cgroup_parent = "vessel-jailtest-" + std::to_string(::getpid());
    opts_.limits = {64ull << 20, 0.00001, 16};  // a CPU quota below the kernel's minimum
    try {
        Cgroup::create(opts_.cgroup_parent, opts_.name, opts_.limits);
        FAIL() << "a 1 us CPU quota was accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
    }
    const CgroupLayout lay = detect_cgroups();
    for (const auto& [c, mnt] : lay.v1) EXPECT_FALSE(exists(mnt + "/" + opts_.cgroup_parent)) << c;
    if (!lay.v2_root.empty()) {
        EXPECT_FALSE(exists(lay.v2_root + "/" + opts_.cgroup_parent));
    }
}

TEST_F(JailTest, EnterRefusesAProcessWithThreads) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        std::thread t([] { ::pause(); });
        t.detach();
        try {
            enter(opts_, exposures());
        } catch (const std::runtime_error& e) {
            ::_exit(std::string(e.what()).find("threads") != std::string::npos ? 0 : 1);
        }
        ::_exit(2);
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
    EXPECT_EQ(::rmdir(opts_.mount_point.c_str()) == 0 || errno == ENOENT, true);
}

// A directory fd kept across enter() would let openat() walk the host's tree: it becomes
// /dev/null under the same number.
TEST_F(JailTest, EnterNeutralisesOpenDirectories) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        const int d = ::open("/etc", O_PATH | O_DIRECTORY | O_CLOEXEC);
        try {
            enter(opts_, exposures());
        } catch (...) {
            ::_exit(1);
        }
        struct stat st;
        if (d < 0 || ::fstat(d, &st) != 0 || S_ISDIR(st.st_mode)) ::_exit(2);
        if (::openat(d, "passwd", O_RDONLY | O_CLOEXEC) >= 0 || errno != ENOTDIR) ::_exit(3);
        ::_exit(0);
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
}

}  // namespace
}  // namespace vessel::jail
