// The guest agent's core: serves the protocol of docs/agent-protocol.md on any number of
// connected stream sockets (vsock in the guest, socketpairs in tests) and owns the processes
// it starts. One thread, one poll() loop, every fd non-blocking: a host that stops reading
// stalls only the streams it has stopped granting credit for.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "guest/agent/spec.h"
#include "guest/agent/wire.h"
#include "guest/init/unique_fd.h"

namespace vessel::agent {

struct AgentOptions {
    guest::UniqueFd listen_fd{};  // optional listening socket; accepted sockets are served
    // Decides on each accepted peer address; refused connections are closed at once.
    std::function<bool(const sockaddr_storage&, socklen_t)> accept_filter{};
    bool sync_on_shutdown = true;  // sync() before acknowledging a shutdown request
    bool raise_nofile = false;     // raise our RLIMIT_NOFILE to the hard limit; children
                                   // still start with the original one
    bool log_to_stderr = true;     // rate-limited "vessel-agent: ..." lines
    std::size_t max_processes = kMaxProcesses;
    std::size_t max_connections = kMaxConnections;
    // Applies an "identity" request (already validated); returns "" or what failed, with
    // the errno in *err. Empty: such requests are refused. In the guest: apply_identity().
    std::function<std::string(const Identity&, int* err)> apply_identity{};
};

// The guest's implementation of AgentOptions::apply_identity: MAC and IPv4 address through
// SIOCSIF*/SIOCADDRT, sethostname(), the seed through RNDADDENTROPY then RNDRESEEDCRNG.
std::string apply_identity(const Identity& id, int* err);

struct AgentStats {
    std::uint64_t connections = 0;      // accepted or added
    std::uint64_t protocol_errors = 0;  // connections closed for breaking the framing rules
    std::uint64_t bad_requests = 0;     // error responses sent
    std::uint64_t ignored_frames = 0;   // stream frames for unknown or foreign processes
    std::uint64_t processes_started = 0;
    std::uint64_t processes_exited = 0;
};

class Agent {
  public:
    // Ignores SIGPIPE process-wide: the agent writes to pipes whose readers may be gone.
    explicit Agent(AgentOptions options = {});
    // SIGKILLs the process group of every process still running and reaps it.
    ~Agent();
    Agent(const Agent&) = delete;
    Agent& operator=(const Agent&) = delete;

    // Serves fd (a connected stream socket) as one more host connection. Thread-safe.
    void add_connection(guest::UniqueFd fd);
    // Makes run() return -1 soon. Thread-safe.
    void stop();
    // Serves until a shutdown request, whose status (0..255) it returns once the
    // acknowledgement is flushed (or after 2 s), or until stop() (-1). Call once.
    int run();

    AgentStats stats() const;  // thread-safe

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vessel::agent
