#include "runtime/container/hooks.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "vmm/fd.h"

extern char** environ;

namespace vessel::container {
namespace {

std::string describe(const oci::Hook& h, const std::string& stage, size_t i) {
    return stage + " hook #" + std::to_string(i) + " (" + h.path + ")";
}

void run_one(const oci::Hook& h, const std::string& state_json, const std::string& what) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("creating a pipe for " + what);
    UniqueFd rd(p[0]), wr(p[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, rd.get(), STDIN_FILENO);
    std::vector<std::string> args = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = h.env;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, h.path.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::system_error(rc, std::generic_category(), "running " + what);
    rd.reset();
    // A hook that does not read its stdin must not block us: the state is small, and a
    // failed write (EPIPE) is the hook's business.
    ::signal(SIGPIPE, SIG_IGN);
    size_t off = 0;
    while (off < state_json.size()) {
        ssize_t n = ::write(wr.get(), state_json.data() + off, state_json.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += static_cast<size_t>(n);
    }
    wr.reset();
    const auto deadline = h.timeout
                              ? std::chrono::steady_clock::now() + std::chrono::seconds(*h.timeout)
                              : std::chrono::steady_clock::time_point::max();
    int ws = 0;
    for (;;) {
        pid_t r = ::waitpid(pid, &ws, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) throw_errno("waiting for " + what);
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &ws, 0);
            throw std::runtime_error(what + ": timed out after " + std::to_string(*h.timeout) +
                                     "s (killed)");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) return;
    if (WIFSIGNALED(ws))
        throw std::runtime_error(what + ": killed by signal " + std::to_string(WTERMSIG(ws)));
    throw std::runtime_error(what + ": exit status " + std::to_string(WEXITSTATUS(ws)));
}

}  // namespace

void run_hooks(const std::vector<oci::Hook>& hooks, const std::string& state_json,
               const std::string& stage) {
    for (size_t i = 0; i < hooks.size(); ++i)
        run_one(hooks[i], state_json, describe(hooks[i], stage, i));
}

}  // namespace vessel::container
