// The host side of `vessel boot --agent` and `vessel restore --agent/--clone`: one thread that
// connects to the guest agent over the VM's vsock socket, gives a restored clone its own
// identity, then either runs a command with this process's stdio and shuts the VM down with
// its status, or says the agent is ready and leaves the VM running (a template to snapshot,
// a clone waiting for `vessel snapshot`/signals).
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "guest/agent/spec.h"
#include "vmm/machine.h"

namespace vessel::cli {

// Signals forwarded to the command instead of stopping the VM.
inline constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// Blocks kForwardedSignals and SIGWINCH in the calling thread. Call before any other thread
// exists, so that every thread inherits the mask and only the agent thread's signalfd sees
// them.
void block_forwarded_signals();

// The command of `--agent -- CMD`: argv, the default environment with --env on top, --cwd.
agent::ProcessSpec command_spec(const std::vector<std::string>& argv,
                                const std::vector<std::string>& env, const std::string& cwd,
                                bool tty);

struct AgentJob {
    std::string uds;  // the VM's vsock Unix socket
    std::optional<agent::Identity> identity;
    std::optional<agent::ProcessSpec> command;  // none: print "vessel: agent ready" and stay
    bool tty = false;
    std::chrono::seconds connect_timeout{120};
    // A restored VM: true once the guest has handled the vsock transport reset (earlier
    // connections would be reset under us). Empty: nothing to wait for.
    std::function<bool()> guest_ready{};
};

class AgentSession {
  public:
    // Starts the thread; the machine must outlive the session and be about to run.
    AgentSession(vmm::Machine& m, AgentJob job);
    ~AgentSession();
    AgentSession(const AgentSession&) = delete;
    AgentSession& operator=(const AgentSession&) = delete;

    // After Machine::run() returned: waits (2 s at most) for the thread. False when it is
    // still blocked on a connection the stopped VM will never answer; it is then detached and
    // the caller should _exit() rather than unwind under it.
    bool finish();

  private:
    void body(vmm::Machine& m, AgentJob job);

    std::thread thread_;
    std::atomic<bool> done_{false}, vm_done_{false};
};

}  // namespace vessel::cli
