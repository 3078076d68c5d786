#include "runtime/network/command.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <stdexcept>

#include "vmm/fd.h"

extern char** environ;

namespace vessel::network {

std::string find_program(const std::string& name) {
    if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
    // Tools such as nft and tc live in sbin, which a non-login PATH often lacks.
    const char* env = std::getenv("PATH");
    std::string dirs = std::string(env ? env : "") + ":/usr/sbin:/sbin:/usr/bin:/bin";
    size_t pos = 0;
    while (pos <= dirs.size()) {
        size_t end = dirs.find(':', pos);
        if (end == std::string::npos) end = dirs.size();
        std::string dir = dirs.substr(pos, end - pos);
        pos = end + 1;
        if (dir.empty()) continue;
        std::string p = dir + "/" + name;
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    return "";
}

CommandResult run_command(const std::vector<std::string>& argv, const CommandOptions& opt) {
    if (argv.empty()) throw std::invalid_argument("run_command: empty argv");
    std::string path = find_program(argv[0]);
    if (path.empty())
        throw std::system_error(ENOENT, std::generic_category(),
                                "running " + argv[0] + " (not found in PATH; install it)");
    // Everything the child touches is prepared before fork: after fork in a threaded process
    // only async-signal-safe calls are allowed.
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int inp[2], outp[2], errp[2], excp[2];
    // stdin is a socket so that writing to a child that already exited fails with EPIPE
    // (MSG_NOSIGNAL) instead of raising SIGPIPE in the VMM.
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, inp) < 0) throw_errno("socketpair");
    UniqueFd in_r(inp[0]), in_w(inp[1]);
    if (::pipe2(outp, O_CLOEXEC) < 0) throw_errno("pipe");
    UniqueFd out_r(outp[0]), out_w(outp[1]);
    if (::pipe2(errp, O_CLOEXEC) < 0) throw_errno("pipe");
    UniqueFd err_r(errp[0]), err_w(errp[1]);
    // Reports a failed setns/exec to the parent: the child writes errno and a stage byte.
    if (::pipe2(excp, O_CLOEXEC) < 0) throw_errno("pipe");
    UniqueFd exc_r(excp[0]), exc_w(excp[1]);

    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork for " + argv[0]);
    if (pid == 0) {
        int stage = 0;
        // The VMM blocks signals it reads through a signalfd; exec keeps the mask.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (opt.netns_fd >= 0 && ::setns(opt.netns_fd, CLONE_NEWNET) < 0) {
            stage = 1;
        } else if (::dup2(in_r.get(), 0) < 0 || ::dup2(out_w.get(), 1) < 0 ||
                   ::dup2(err_w.get(), 2) < 0) {
            stage = 2;
        } else {
            ::execve(path.c_str(), args.data(), environ);
            stage = 3;
        }
        int report[2] = {stage, errno};
        [[maybe_unused]] ssize_t n = ::write(exc_w.get(), report, sizeof report);
        ::_exit(127);
    }
    in_r.reset();
    out_w.reset();
    err_w.reset();
    exc_w.reset();

    // Tool input (an nft ruleset) is far below the pipe's capacity, so writing it before
    // reading any output cannot deadlock.
    const char* p = opt.stdin_data.data();
    size_t left = opt.stdin_data.size();
    while (left > 0) {
        ssize_t n = ::send(in_w.get(), p, left, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        p += n;
        left -= static_cast<size_t>(n);
    }
    in_w.reset();

    CommandResult r;
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    int open_fds = 2;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(opt.timeout_s);
    bool timed_out = false;
    while (open_fds > 0) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
        if (ms <= 0) {
            ::kill(pid, SIGKILL);
            timed_out = true;
            break;
        }
        int n = ::poll(fds, 2, static_cast<int>(ms));
        if (n < 0 && errno != EINTR) break;
        for (auto& f : fds) {
            if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t got = ::read(f.fd, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                f.fd = -1;
                --open_fds;
            } else {
                (&f == &fds[0] ? r.out : r.err).append(buf, static_cast<size_t>(got));
            }
        }
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0) {
        // ECHILD: SIGCHLD is ignored somewhere and the status is lost; never guess success.
        if (errno != EINTR) throw_errno("waiting for " + argv[0]);
    }
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);

    int report[2];
    if (::read(exc_r.get(), report, sizeof report) == sizeof report) {
        const char* what = report[0] == 1   ? "joining the network namespace for "
                           : report[0] == 2 ? "redirecting output of "
                                            : "executing ";
        throw std::system_error(report[1], std::generic_category(), what + path);
    }
    if (timed_out)
        r.err += "(killed after " + std::to_string(opt.timeout_s) + " s without finishing)";
    return r;
}

CommandResult check_command(const std::string& what, const std::vector<std::string>& argv,
                            const CommandOptions& opt) {
    CommandResult r = run_command(argv, opt);
    if (r.status != 0) {
        std::string cmd;
        for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
        std::string err = r.err;
        while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
        throw std::runtime_error(what + ": '" + cmd + "' failed (exit " + std::to_string(r.status) +
                                 ")" + (err.empty() ? "" : ": " + err));
    }
    return r;
}

}  // namespace vessel::network
