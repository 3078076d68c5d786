// Host side of the agent protocol (docs/agent-protocol.md). A Client owns one connected
// stream socket: a vsock connection through the VMM (connect_vsock_uds) or, in tests, one
// end of a socketpair. Single-threaded: use one Client per thread. Everything the agent
// sends is untrusted; a misbehaving agent makes calls throw ProtocolError, never crash.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "guest/agent/spec.h"
#include "guest/agent/wire.h"
#include "vmm/fd.h"

namespace vessel::agent {

// The agent answered a request with an error response.
class AgentError : public std::runtime_error {
  public:
    AgentError(std::string code, const std::string& message, int err = 0, std::string stage = {})
        : std::runtime_error(message),
          code_(std::move(code)),
          err_(err),
          stage_(std::move(stage)) {}
    const std::string& code() const { return code_; }    // e.g. "not_found", "exec_failed"
    int error_number() const { return err_; }            // guest errno, 0 if none
    const std::string& stage() const { return stage_; }  // exec_failed: "exec", "chdir", ...

  private:
    std::string code_;
    int err_;
    std::string stage_;
};

// The connection is unusable: closed, timed out, or the agent broke the protocol.
class ProtocolError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct ClientOptions {
    std::chrono::milliseconds request_timeout{30000};  // every request except wait
    std::uint32_t output_window = 256u << 10;          // credit per stdout/stderr stream
};

struct Started {
    std::uint32_t id = 0;  // the agent's process id, used by every other call
    int pid = 0;           // guest pid, informational
};

class Client {
  public:
    // Takes ownership of a connected stream socket, makes it non-blocking and performs the
    // hello handshake. Throws ProtocolError, AgentError or std::system_error.
    explicit Client(UniqueFd conn, ClientOptions options = {});
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    std::uint32_t version() const { return version_; }
    int fd() const { return conn_.get(); }

    // Blocking requests. While waiting they keep reading the connection, buffering stream
    // data of every process (bounded by the credit this client grants). As with waitpid()
    // and an unread pipe, wait() on a process that writes more than the window without
    // anyone consuming or discarding its output blocks for good: use run() or wait_async().
    Started start(const ProcessSpec& spec);
    // Takes over the streams of a detachable process whose connection is gone (AgentError
    // "not_attachable" otherwise); its streams then work as after start().
    Started attach(std::uint32_t id);
    void signal(std::uint32_t id, int sig, bool group = false);
    void resize(std::uint32_t id, std::uint16_t rows, std::uint16_t cols);
    ExitStatus wait(std::uint32_t id);  // no timeout
    std::vector<ProcessInfo> list();
    // The agent syncs, acknowledges and exits; the VM then stops with `status`.
    void shutdown(int status);
    // A restored clone's own MAC/address, hostname and RNG seed (AgentError
    // "identity_failed" names the step that failed in the guest).
    void set_identity(const Identity& id);
    // Processes started from now on run in the filesystem on r.source (warm start).
    void enter_root(const RootRequest& r);

    // Streams of processes started by this client. Non-blocking.
    std::size_t stdin_room(std::uint32_t id) const;  // bytes the agent accepts now
    // Queues at most stdin_room() bytes; returns how many were taken.
    std::size_t write_stdin(std::uint32_t id, std::string_view data);
    void close_stdin(std::uint32_t id);
    // False once stdin was closed here or the agent reported the process's end gone.
    bool stdin_open(std::uint32_t id) const;
    // Buffered output of stdout or stderr; consuming it grants the agent more credit.
    std::string_view peek_output(std::uint32_t id, Stream s) const;
    void consume_output(std::uint32_t id, Stream s, std::size_t n);
    std::size_t read_output(std::uint32_t id, Stream s, char* buf, std::size_t len);
    // True once the stream has ended and everything buffered was consumed.
    bool output_eof(std::uint32_t id, Stream s) const;
    // Stops reading a stream: the agent closes it, so the process's writes fail (EPIPE).
    void discard_output(std::uint32_t id, Stream s);

    // For callers that multiplex the connection with their own fds in a poll loop.
    void wait_async(std::uint32_t id);
    // Set once the wait_async() answer arrived; throws AgentError if the wait failed.
    std::optional<ExitStatus> exit_status(std::uint32_t id) const;
    // Fire and forget: errors (e.g. the process has exited) are dropped.
    void signal_async(std::uint32_t id, int sig, bool group = false);
    void resize_async(std::uint32_t id, std::uint16_t rows, std::uint16_t cols);
    short poll_events() const;     // POLLIN, plus POLLOUT while frames are queued
    void on_ready(short revents);  // reads and dispatches, writes queued frames
    bool pump(int timeout_ms);     // one poll() + on_ready(); false on timeout
    void check() const;            // throws ProtocolError if the connection is broken
    bool broken() const { return !broken_why_.empty(); }
    void forget(std::uint32_t id);  // drops local state of a finished process

  private:
    struct OutBuf {
        std::string data;
        std::size_t off = 0;
        bool eof = false;
        bool discarded = false;
        std::uint32_t granted = 0;   // credit the agent still holds
        std::uint32_t consumed = 0;  // consumed since the last grant
    };
    struct Proc {
        OutBuf out[2];
        std::uint32_t stdin_credit = 0;
        bool stdin_closed = false;
        std::optional<ExitStatus> exit;
        std::optional<AgentError> wait_error;
    };
    enum class PendingKind { kCall, kStart, kIgnore, kWait };
    struct Pending {
        PendingKind kind = PendingKind::kCall;
        std::uint32_t proc = 0;
        std::optional<std::string> response;
    };

    nlohmann::json call(const nlohmann::json& request, bool with_timeout = true,
                        PendingKind kind = PendingKind::kCall);
    void register_started(const std::string& payload);
    std::uint32_t send_request(const nlohmann::json& request, PendingKind kind,
                               std::uint32_t proc = 0);
    void flush();
    void read_available();
    void dispatch(const Frame& f);
    void fail(const std::string& why);
    Proc& proc(std::uint32_t id);
    const Proc& proc(std::uint32_t id) const;

    UniqueFd conn_;
    ClientOptions opts_;
    std::uint32_t version_ = 0;
    FrameReader reader_;
    std::string out_;
    std::size_t out_off_ = 0;
    std::uint32_t next_request_ = 1;
    std::map<std::uint32_t, Pending> pending_;
    std::map<std::uint32_t, Proc> procs_;
    std::string broken_why_;
};

struct RunOptions {
    // Signals caught while run() runs and delivered to the process. They are blocked in the
    // calling thread and read from a signalfd, so other threads should block them too.
    std::vector<int> forward_signals{};
    bool signal_group = false;  // deliver to the process group instead
    // tty mode: the initial size and each SIGWINCH's new size are read from this terminal.
    int winsize_fd = -1;
    std::string error_prefix = "vessel: ";  // for the exec failure message on err_fd
    // Called once the agent has started the process, before any stdio is relayed.
    std::function<void()> on_started{};
    // Non-zero: attach to this detachable process instead of starting `spec` (its argv, tty
    // and window size still say how to relay it).
    std::uint32_t attach_id = 0;
    // Exec failures throw the agent's AgentError ("exec_failed") instead of being reported
    // as status 127/126 (the container runtime's `start` fails instead, as runc's does).
    bool throw_exec_failure = false;
};

// Starts spec and pumps in_fd -> stdin, stdout -> out_fd, stderr -> err_fd until the
// process has exited and both output streams have ended. Negative fds: no stdin (EOF at
// once) / output dropped. A write to out_fd or err_fd failing with EPIPE stops that stream
// (the process sees EPIPE too). Exec failures in the guest are reported like a shell does:
// a message on err_fd and status 127 (not found) or 126. Throws on protocol errors.
ExitStatus run(Client& client, const ProcessSpec& spec, int in_fd, int out_fd, int err_fd,
               const RunOptions& options = {});

// Connects to a guest vsock port through the VMM's Unix socket ("CONNECT <port>\n" ->
// "OK <n>\n"). While the guest boots its port may not be listening yet, so refusals and
// resets are retried until `timeout` has passed; then std::system_error(ETIMEDOUT).
UniqueFd connect_vsock_uds(const std::string& uds_path, std::uint32_t port,
                           std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace vessel::agent
