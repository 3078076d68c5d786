#include "runtime/vm_agent.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <iterator>
#include <memory>

#include "guest/agent/client.h"
#include "guest/init/proto.h"
#include "guest/init/protocol.h"
#include "vmm/seccomp.h"

namespace vessel::cli {

void block_forwarded_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : kForwardedSignals) sigaddset(&set, sig);
    sigaddset(&set, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

agent::ProcessSpec command_spec(const std::vector<std::string>& argv,
                                const std::vector<std::string>& env, const std::string& cwd,
                                bool tty) {
    agent::ProcessSpec spec;
    spec.argv = argv;
    spec.env = guest::merge_env(guest::default_env(), env);
    spec.cwd = cwd;
    spec.tty = tty;
    return spec;
}

AgentSession::AgentSession(vmm::Machine& m, AgentJob job)
    : thread_([this, &m, job = std::move(job)]() mutable { body(m, std::move(job)); }) {}

AgentSession::~AgentSession() {
    if (thread_.joinable()) thread_.detach();  // finish() not called: the process is exiting
}

void AgentSession::body(vmm::Machine& m, AgentJob job) {
    vmm::seccomp::enter(vmm::seccomp::Role::AgentControl);
    std::string step = "connecting";
    try {
        const auto deadline = std::chrono::steady_clock::now() + job.connect_timeout;
        if (job.guest_ready)
            while (!job.guest_ready() && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::unique_ptr<agent::Client> client;
        // Connecting, the handshake and the identity can be repeated: if a restored guest
        // still resets the connection (a transport reset handled late), try again.
        for (int attempt = 1;; ++attempt) {
            try {
                step = "connecting";
                UniqueFd conn = agent::connect_vsock_uds(job.uds, guest::kDefaultAgentPort,
                                                         job.connect_timeout);
                client = std::make_unique<agent::Client>(std::move(conn));
                if (job.identity) {
                    step = "identity";
                    client->set_identity(*job.identity);
                }
                break;
            } catch (const agent::ProtocolError&) {
                if (attempt >= 5 || std::chrono::steady_clock::now() >= deadline) throw;
                std::this_thread::sleep_for(std::chrono::milliseconds(20 * attempt));
            }
        }
        if (!job.command) {
            // On stdout, where a VM without a command has nothing else to say: scripts wait
            // for this line before `vessel snapshot create`.
            std::fputs("vessel: agent ready\n", stdout);
            std::fflush(stdout);
            done_ = true;
            return;  // the connection closes; the agent keeps listening
        }
        step = "running the command";
        agent::RunOptions ro;
        ro.forward_signals.assign(std::begin(kForwardedSignals), std::end(kForwardedSignals));
        if (job.tty && ::isatty(STDIN_FILENO)) ro.winsize_fd = STDIN_FILENO;
        agent::ExitStatus es =
            agent::run(*client, *job.command, STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, ro);
        client->shutdown(es.status);  // the VM stops with this status
    } catch (const std::exception& e) {
        // Someone else may have shut the VM down through the agent (the connection then
        // closes under us): let the guest's own exit status win if it comes.
        for (int i = 0; i < 300 && !vm_done_; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        m.stop({vmm::RunResult::Reason::Error, 0,
                "guest agent (" + step + "): " + std::string(e.what())});
    }
    done_ = true;
}

bool AgentSession::finish() {
    vm_done_ = true;
    for (int waited = 0; !done_ && waited < 2000; waited += 10)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!done_) {
        thread_.detach();
        return false;
    }
    thread_.join();
    return true;
}

}  // namespace vessel::cli
