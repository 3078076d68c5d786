// vessel run: create + start + wait (+ delete), or create + start with --detach.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/globals.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {
namespace {

volatile sig_atomic_t g_vmm = 0;
void relay(int sig) {
    if (g_vmm > 0) ::kill(static_cast<pid_t>(g_vmm), sig);
}

}  // namespace

int cmd_oci_run(Args args) {
    container::CreateOptions o;
    std::string preserve;
    bool detach = false, keep = false, no_pivot = false, no_new_keyring = false;
    auto pos = container::Flags("run")
                   .value({"bundle", "b"}, &o.bundle)
                   .value({"pid-file"}, &o.pid_file)
                   .value({"console-socket"}, &o.console_socket)
                   .value({"preserve-fds"}, &preserve)
                   .boolean({"detach", "d"}, &detach)
                   .boolean({"keep"}, &keep)
                   .boolean({"no-pivot"}, &no_pivot)
                   .boolean({"no-new-keyring"}, &no_new_keyring)
                   .parse(args);
    container::expect_args("run", pos, 1, 1);
    o.id = pos[0];
    o.foreground = !detach;
    // Signals for the container while we wait go to the VMM, which forwards them.
    struct sigaction sa {};
    sa.sa_handler = relay;
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) ::sigaction(s, &sa, nullptr);
    const pid_t pid = container::create_container(o);
    g_vmm = pid;
    try {
        container::start_container(o.id);
    } catch (...) {
        container::delete_container(o.id, true);
        throw;
    }
    if (detach) return 0;
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0) {
        if (errno != EINTR) {
            ws = 0x100;  // status 1: the VMM is not ours to wait for
            break;
        }
    }
    const int status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    if (!keep) {
        try {
            container::delete_container(o.id, true);
        } catch (const std::exception& e) {
            container::log_error(e.what());
        }
    }
    return status;
}

}  // namespace vessel::cli
