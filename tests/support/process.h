// Runs a command and collects its stdout, stderr and exit status (tests and benchmarks).
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "vmm/fd.h"

namespace vessel::test {

struct ProcResult {
    std::string out, err;
    int status = -1;  // exit code, or 128+signal
    double seconds = 0;
    double marker_seconds = -1;  // when `marker` first appeared on stdout; -1 if never
};

struct ProcOptions {
    int timeout_s = 600;
    std::string stdin_data;
    std::string marker;                    // watched for on stdout
    std::function<void(pid_t)> on_marker;  // called once, while the process still runs
    bool kill_after_marker = false;        // stop the process once the marker was seen
};

inline ProcResult run_process(const std::vector<std::string>& argv, const ProcOptions& opt) {
    const int timeout_s = opt.timeout_s;
    const std::string& stdin_data = opt.stdin_data;
    int outp[2], errp[2], inp[2];
    if (::pipe2(outp, O_CLOEXEC) || ::pipe2(errp, O_CLOEXEC) || ::pipe2(inp, O_CLOEXEC))
        throw_errno("pipe");
    UniqueFd out_r(outp[0]), out_w(outp[1]), err_r(errp[0]), err_w(errp[1]), in_r(inp[0]),
        in_w(inp[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_r.get(), 0);
    posix_spawn_file_actions_adddup2(&fa, out_w.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid;
    int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw_errno("spawning " + argv[0], rc);
    out_w.reset();
    err_w.reset();
    in_r.reset();
    if (!stdin_data.empty()) {
        [[maybe_unused]] ssize_t n = ::write(in_w.get(), stdin_data.data(), stdin_data.size());
    }
    in_w.reset();

    ProcResult r;
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    int open_fds = 2;
    auto deadline = t0 + std::chrono::seconds(timeout_s);
    while (open_fds > 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) {
            ::kill(pid, SIGKILL);
            r.err += "\n[test: timed out after " + std::to_string(timeout_s) + " s]";
            break;
        }
        if (::poll(fds, 2, static_cast<int>(left)) < 0) continue;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
            char buf[4096];
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                fds[i].fd = -1;
                --open_fds;
            } else {
                (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
                if (i == 0 && r.marker_seconds < 0 && !opt.marker.empty() &&
                    r.out.find(opt.marker) != std::string::npos) {
                    r.marker_seconds =
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                            .count();
                    if (opt.on_marker) opt.on_marker(pid);
                    if (opt.kill_after_marker) ::kill(pid, SIGKILL);
                }
            }
        }
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

inline ProcResult run_process(const std::vector<std::string>& argv, int timeout_s = 600) {
    ProcOptions o;
    o.timeout_s = timeout_s;
    return run_process(argv, o);
}

}  // namespace vessel::test
