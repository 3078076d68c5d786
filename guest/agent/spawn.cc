#include "guest/agent/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <vector>

#include "guest/init/proto.h"

extern char** environ;

namespace vessel::agent {
namespace {

using guest::UniqueFd;

// Failure stages of the child; indexes kStageNames.
enum Stage : int {
    kStageSetsid,
    kStageStdio,
    kStageTty,
    kStageRlimit,
    kStageHostname,
    kStageSetgroups,
    kStageSetgid,
    kStageSetuid,
    kStageChdir,
    kStageExec,
    kStageCount,
};
constexpr const char* kStageNames[kStageCount] = {
    "setsid",    "stdio",  "controlling tty", "setrlimit", "sethostname",
    "setgroups", "setgid", "setuid",          "chdir",     "exec",
};

struct ChildReport {
    int stage;
    int err;
};

// Everything the child needs, prepared before fork() so that the child itself makes only
// async-signal-safe calls (the agent core also runs inside multi-threaded test processes).
struct ChildPlan {
    int stdio[3];
    bool tty;
    const rlimit* nofile_default;
    std::vector<std::pair<int, rlimit>> rlimits;
    const char* hostname;
    std::size_t hostname_len;
    const User* user;
    const char* cwd;
    char** argv;
    char** envp;
    int report_fd;
};

[[noreturn]] void child_fail(const ChildPlan& p, int stage) {
    const ChildReport r{stage, errno};
    // Nothing else can be done if the report is lost; the parent then sees a short read.
    while (write(p.report_fd, &r, sizeof r) < 0 && errno == EINTR) {
    }
    _exit(127);
}

void mark_fds_cloexec_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, first, ~0u, 4 /* CLOSE_RANGE_CLOEXEC */) == 0) return;
#endif
    rlimit rl{};
    int max = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536u)
        max = static_cast<int>(rl.rlim_cur);
    for (int fd = first; fd < max; ++fd) {
        const int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

[[noreturn]] void child_main(const ChildPlan& p) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    // The agent ignores SIGPIPE; an ignored disposition would survive exec.
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);

    if (setsid() < 0) child_fail(p, kStageSetsid);
    // Lift the sources above 2 first so that no dup2() below overwrites a later source.
    int high[3];
    for (int i = 0; i < 3; ++i) {
        high[i] = fcntl(p.stdio[i], F_DUPFD_CLOEXEC, 3);
        if (high[i] < 0) child_fail(p, kStageStdio);
    }
    for (int i = 0; i < 3; ++i) {
        if (dup2(high[i], i) < 0) child_fail(p, kStageStdio);
    }
    if (p.tty && ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0) child_fail(p, kStageTty);
    mark_fds_cloexec_from(3);

    if (p.nofile_default && setrlimit(RLIMIT_NOFILE, p.nofile_default) < 0)
        child_fail(p, kStageRlimit);
    for (const auto& [resource, rl] : p.rlimits) {
        if (setrlimit(static_cast<__rlimit_resource_t>(resource), &rl) < 0)
            child_fail(p, kStageRlimit);
    }
    if (p.hostname_len > 0 && sethostname(p.hostname, p.hostname_len) < 0)
        child_fail(p, kStageHostname);
    if (p.user) {
        // Raw syscalls: this process has one thread, so glibc's all-threads setxid dance
        // is neither needed nor safe after fork() from a threaded parent.
        if (syscall(SYS_setgroups, p.user->groups.size(), p.user->groups.data()) < 0)
            child_fail(p, kStageSetgroups);
        if (syscall(SYS_setresgid, p.user->gid, p.user->gid, p.user->gid) < 0)
            child_fail(p, kStageSetgid);
        if (syscall(SYS_setresuid, p.user->uid, p.user->uid, p.user->uid) < 0)
            child_fail(p, kStageSetuid);
    }
    // After setuid, so that the directory must be reachable by the process's own user.
    if (chdir(p.cwd) < 0) child_fail(p, kStageChdir);
    // execvp() searches the caller's PATH, not envp's, so switch environments first.
    environ = p.envp;
    execvp(p.argv[0], p.argv);
    child_fail(p, kStageExec);
}

bool set_nonblocking(int fd) {
    const int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (auto& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

bool fail(SpawnError& error, const char* stage, int err) {
    error.in_child = false;
    error.stage = stage;
    error.err = err;
    error.message = std::string(stage) + ": " + strerror(err);
    return false;
}

// One stream's two ends: ours (parent) and the child's.
struct Ends {
    UniqueFd parent;
    UniqueFd child;
};

bool make_stream(StdioMode mode, bool child_reads, Ends& ends, SpawnError& error) {
    if (mode == StdioMode::kNull) {
        ends.child.reset(open("/dev/null", O_RDWR | O_CLOEXEC));
        return ends.child ? true : fail(error, "open /dev/null", errno);
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return fail(error, "pipe", errno);
    UniqueFd r(fds[0]), w(fds[1]);
    ends.parent = child_reads ? std::move(w) : std::move(r);
    ends.child = child_reads ? std::move(r) : std::move(w);
    return set_nonblocking(ends.parent.get()) ? true : fail(error, "fcntl", errno);
}

bool make_pty(const ProcessSpec& spec, UniqueFd& master, UniqueFd& slave, SpawnError& error) {
    master.reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) return fail(error, "posix_openpt", errno);
    if (unlockpt(master.get()) < 0) return fail(error, "unlockpt", errno);
    if (spec.rows != 0 || spec.cols != 0) {
        winsize ws{};
        ws.ws_row = spec.rows;
        ws.ws_col = spec.cols;
        if (ioctl(master.get(), TIOCSWINSZ, &ws) < 0) return fail(error, "TIOCSWINSZ", errno);
    }
    // TIOCGPTPEER opens the peer of this very master, independent of /dev/pts lookups.
    slave.reset(ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) {
        char name[64];
        if (ptsname_r(master.get(), name, sizeof name) != 0) return fail(error, "ptsname", errno);
        slave.reset(open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) return fail(error, "open pty", errno);
    }
    return set_nonblocking(master.get()) ? true : fail(error, "fcntl", errno);
}

}  // namespace

std::optional<SpawnedProcess> spawn_process(const ProcessSpec& spec, const SpawnDefaults& defaults,
                                            SpawnError& error) {
    std::vector<std::string> argv = spec.argv;
    std::vector<std::string> env = spec.env.empty() ? guest::default_env() : spec.env;
    std::vector<char*> argv_c = c_strings(argv);
    std::vector<char*> env_c = c_strings(env);
    if (argv.empty()) {
        fail(error, "argv", EINVAL);
        return std::nullopt;
    }

    SpawnedProcess out;
    UniqueFd child_stdio[3];
    if (spec.tty) {
        UniqueFd master, slave;
        if (!make_pty(spec, master, slave, error)) return std::nullopt;
        out.stdin_fd.reset(fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
        if (!out.stdin_fd) {
            fail(error, "dup", errno);
            return std::nullopt;
        }
        out.stdout_fd = std::move(master);
        child_stdio[0] = std::move(slave);
    } else {
        Ends in, outs, errs;
        if (!make_stream(spec.stdin_mode, true, in, error) ||
            !make_stream(spec.stdout_mode, false, outs, error) ||
            !make_stream(spec.stderr_mode, false, errs, error))
            return std::nullopt;
        out.stdin_fd = std::move(in.parent);
        out.stdout_fd = std::move(outs.parent);
        out.stderr_fd = std::move(errs.parent);
        child_stdio[0] = std::move(in.child);
        child_stdio[1] = std::move(outs.child);
        child_stdio[2] = std::move(errs.child);
    }

    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) {
        fail(error, "pipe", errno);
        return std::nullopt;
    }
    UniqueFd report_r(report[0]), report_w(report[1]);

    ChildPlan plan{};
    for (int i = 0; i < 3; ++i)
        plan.stdio[i] = spec.tty ? child_stdio[0].get() : child_stdio[i].get();
    plan.tty = spec.tty;
    plan.nofile_default = defaults.nofile ? &*defaults.nofile : nullptr;
    for (const auto& r : spec.rlimits) plan.rlimits.push_back({r.resource, rlimit{r.soft, r.hard}});
    plan.hostname = spec.hostname.c_str();
    plan.hostname_len = spec.hostname.size();
    plan.user = spec.user ? &*spec.user : nullptr;
    plan.cwd = spec.cwd.empty() ? "/" : spec.cwd.c_str();
    plan.argv = argv_c.data();
    plan.envp = env_c.data();
    plan.report_fd = report_w.get();

    const pid_t pid = fork();
    if (pid < 0) {
        fail(error, "fork", errno);
        return std::nullopt;
    }
    if (pid == 0) child_main(plan);

    for (auto& fd : child_stdio) fd.reset();
    report_w.reset();
    ChildReport r{};
    ssize_t n;
    while ((n = read(report_r.get(), &r, sizeof r)) < 0 && errno == EINTR) {
    }
    if (n != 0) {
        // A report (or a garbled one): the child did not exec and exits by itself.
        while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        error.in_child = true;
        if (n != static_cast<ssize_t>(sizeof r) || r.stage < 0 || r.stage >= kStageCount) {
            error.stage = "setup";
            error.err = n < 0 ? errno : EIO;
            error.message = "process set-up failed";
            return std::nullopt;
        }
        error.stage = kStageNames[r.stage];
        error.err = r.err;
        if (r.stage == kStageExec)
            error.message = spec.argv[0] + ": " + strerror(r.err);
        else if (r.stage == kStageChdir)
            error.message = "chdir " + std::string(plan.cwd) + ": " + strerror(r.err);
        else
            error.message = error.stage + ": " + strerror(r.err);
        return std::nullopt;
    }

    out.pid = pid;
    out.pidfd.reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (!out.pidfd) {
        const int err = errno;
        kill(pid, SIGKILL);
        while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
        fail(error, "pidfd_open", err);
        return std::nullopt;
    }
    return out;
}

}  // namespace vessel::agent
