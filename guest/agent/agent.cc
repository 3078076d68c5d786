#include "guest/agent/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <vector>

#include "guest/agent/messages.h"
#include "guest/agent/spawn.h"

namespace vessel::agent {
namespace {

using guest::UniqueFd;

// Above this much unsent output a connection is neither read nor fed process output, so
// a host that stops reading its socket costs at most this (plus one frame) of agent memory.
constexpr std::size_t kConnHighWater = 1u << 20;
constexpr std::size_t kReadChunk = 64u << 10;
constexpr long long kShutdownFlushMs = 2000;

long long now_ms() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

enum class Kind : std::uint8_t { kWake, kListen, kConn, kPidfd, kStdin, kOutput };

struct Tag {
    Kind kind;
    std::uint64_t key;  // connection id or process id
    int stream;         // kOutput: 0 stdout, 1 stderr
};

struct Conn {
    std::uint64_t id = 0;
    UniqueFd fd;
    FrameReader reader;
    std::string out;
    std::size_t out_off = 0;
    bool hello = false;
    bool dead = false;
    std::size_t pending_waits = 0;

    std::size_t pending() const { return out.size() - out_off; }
};

struct OutStream {
    UniqueFd fd;
    std::uint32_t credit = 0;  // bytes the host will still accept
};

struct InStream {
    UniqueFd fd;
    std::string buf;
    std::size_t off = 0;
    std::uint32_t allowed = 0;     // credit the host holds
    std::uint32_t unreported = 0;  // written to the process, credit not yet returned
    bool eof_requested = false;
    bool closed = false;  // by EOF, by the process, or on detach; further data is dropped

    std::size_t pending() const { return buf.size() - off; }
};

struct Waiter {
    std::uint64_t conn;
    std::uint32_t request;
};

struct Process {
    std::uint32_t id = 0;
    pid_t pid = -1;
    UniqueFd pidfd;
    bool tty = false;
    bool kill_group = false;
    bool detachable = false;
    std::vector<std::string> argv;
    std::uint64_t owner = 0;  // connection carrying the streams; 0 once it is gone
    InStream in;
    OutStream out[2];  // stdout, stderr
    bool exited = false;
    ExitStatus status;
    bool waited = false;        // the status reached at least one wait request
    bool owner_waited = false;  // ... one from the connection carrying its streams
    std::vector<Waiter> waiters;
};

}  // namespace

struct Agent::Impl {
    AgentOptions opts;
    bool root_entered = false;
    UniqueFd wake;
    std::mutex mu;
    std::vector<UniqueFd> incoming;  // guarded by mu
    std::atomic<bool> stop_requested{false};

    std::map<std::uint64_t, Conn> conns;
    std::map<std::uint32_t, Process> procs;
    std::uint64_t next_conn = 1;
    std::uint32_t next_proc = 1;
    std::optional<int> shutdown_status;
    SpawnDefaults spawn_defaults;

    struct AtomicStats {
        std::atomic<std::uint64_t> connections{0}, protocol_errors{0}, bad_requests{0},
            ignored_frames{0}, processes_started{0}, processes_exited{0};
    } st;

    long long log_window_start = 0;
    int log_lines = 0;
    int log_suppressed = 0;

    explicit Impl(AgentOptions o) : opts(std::move(o)) {}

    // ---- logging -------------------------------------------------------------------------

    // At most 20 lines a second: a hostile host must not be able to flood the console.
    void log(const std::string& msg) {
        if (!opts.log_to_stderr) return;
        const long long t = now_ms();
        if (t - log_window_start >= 1000) {
            if (log_suppressed > 0) {
                const std::string s =
                    "vessel-agent: (" + std::to_string(log_suppressed) + " messages suppressed)\n";
                (void)!write(STDERR_FILENO, s.data(), s.size());
            }
            log_window_start = t;
            log_lines = 0;
            log_suppressed = 0;
        }
        if (++log_lines > 20) {
            ++log_suppressed;
            return;
        }
        const std::string s = "vessel-agent: " + msg + "\n";
        (void)!write(STDERR_FILENO, s.data(), s.size());
    }

    // ---- connection output ---------------------------------------------------------------

    Conn* conn(std::uint64_t id) {
        const auto it = conns.find(id);
        return it == conns.end() || it->second.dead ? nullptr : &it->second;
    }

    void respond(Conn& c, std::uint32_t request, const Json& body) {
        append_frame(c.out, FrameType::Response, 0, request, dump(body));
    }

    void respond_error(Conn& c, std::uint32_t request, std::string_view code,
                       const std::string& message, int errnum = 0) {
        ++st.bad_requests;
        respond(c, request, error_json(code, message, errnum));
    }

    void flush(Conn& c) {
        while (c.pending() > 0) {
            const ssize_t n = send(c.fd.get(), c.out.data() + c.out_off, c.pending(),
                                   MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                c.dead = true;  // peer gone; nothing more can be delivered
                return;
            }
            c.out_off += static_cast<std::size_t>(n);
        }
        if (c.out_off == c.out.size()) {
            c.out.clear();
            c.out_off = 0;
        } else if (c.out_off >= (256u << 10)) {
            c.out.erase(0, c.out_off);
            c.out_off = 0;
        }
    }

    // Framing violations leave the stream unparseable: say why (best effort) and hang up.
    void protocol_error(Conn& c, const std::string& why) {
        ++st.protocol_errors;
        log("connection " + std::to_string(c.id) + ": protocol error: " + why);
        respond(c, 0, error_json(err::kProtocol, why));
        flush(c);
        c.dead = true;
    }

    // ---- processes -----------------------------------------------------------------------

    Process* owned(Conn& c, std::uint32_t id) {
        const auto it = procs.find(id);
        if (it == procs.end() || it->second.owner != c.id) {
            ++st.ignored_frames;
            return nullptr;
        }
        return &it->second;
    }

    void send_eof(Process& p, std::uint8_t stream) {
        if (Conn* c = conn(p.owner)) append_frame(c->out, FrameType::Eof, stream, p.id, {});
    }

    void close_stdin(Process& p, bool tell_host) {
        if (p.in.closed) return;
        p.in.closed = true;
        p.in.fd.reset();
        p.in.buf.clear();
        p.in.off = 0;
        if (tell_host) send_eof(p, kStdin);
    }

    void close_output(Process& p, int s, bool tell_host) {
        if (!p.out[s].fd) return;
        p.out[s].fd.reset();
        p.out[s].credit = 0;
        if (tell_host) send_eof(p, static_cast<std::uint8_t>(kStdout + s));
    }

    // The host side of a process is gone: its stdin ends, its output has no reader (a pty
    // hangs up), and its status waits for whoever asks.
    void detach(Process& p) {
        close_stdin(p, false);
        close_output(p, 0, false);
        close_output(p, 1, false);
        p.owner = 0;
    }

    // A detachable process's connection is gone (a restore resets every vsock connection):
    // its pipes stay open and unread, with no credit, until a connection attaches.
    void orphan(Process& p) {
        p.owner = 0;
        p.owner_waited = false;
        p.in.allowed = 0;
        p.in.unreported = 0;
        p.out[0].credit = 0;
        p.out[1].credit = 0;
    }

    void reap(Process& p) {
        siginfo_t info{};
        if (waitid(P_PID, static_cast<id_t>(p.pid), &info, WEXITED | WNOHANG) < 0) {
            if (errno == EINTR) return;
            log("waitid " + std::to_string(p.pid) + ": " + strerror(errno));
            info.si_pid = p.pid;  // cannot be waited for: report it as killed
            info.si_code = CLD_KILLED;
            info.si_status = SIGKILL;
        }
        if (info.si_pid != p.pid) return;  // not yet
        p.exited = true;
        p.status = exit_status_from_code(info.si_code, info.si_status);
        p.pidfd.reset();
        ++st.processes_exited;
        // The group id stays reserved while members live, so this cannot hit a stranger.
        if (p.kill_group) kill(-p.pid, SIGKILL);
        const Json body = exit_to_json(p.status);
        for (const auto& w : p.waiters) {
            if (Conn* c = conn(w.conn)) {
                respond(*c, w.request, body);
                --c->pending_waits;
                p.waited = true;
                p.owner_waited |= w.conn == p.owner;
            }
        }
        p.waiters.clear();
    }

    bool finished(const Process& p) const {
        // While the connection that started it is open, only its own wait releases it: another
        // connection's wait must not make the owner's later wait a not_found.
        return p.exited && !p.out[0].fd && !p.out[1].fd &&
               (p.owner_waited || (p.owner == 0 && p.waited));
    }

    // Frees one slot by dropping the oldest exited process nobody can stream from anymore.
    bool evict_one() {
        for (auto it = procs.begin(); it != procs.end(); ++it) {
            const Process& p = it->second;
            if (p.exited && p.owner == 0) {
                procs.erase(it);
                return true;
            }
        }
        return false;
    }

    std::uint32_t allocate_id() {
        while (next_proc == 0 || procs.count(next_proc)) ++next_proc;
        return next_proc++;
    }

    void write_stdin(Process& p) {
        InStream& in = p.in;
        while (in.pending() > 0) {
            const ssize_t n = write(in.fd.get(), in.buf.data() + in.off, in.pending());
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                close_stdin(p, true);  // EPIPE: the process closed its stdin or died
                return;
            }
            in.off += static_cast<std::size_t>(n);
            in.unreported += static_cast<std::uint32_t>(n);
        }
        if (in.pending() == 0) {
            in.buf.clear();
            in.off = 0;
        } else if (in.off >= kStdinWindow / 2) {
            in.buf.erase(0, in.off);
            in.off = 0;
        }
        // Returned in batches so that a byte-at-a-time reader does not cost a frame per byte.
        if (in.unreported > 0 && (in.pending() == 0 || in.unreported >= kStdinWindow / 4)) {
            if (Conn* c = conn(p.owner)) append_credit(c->out, kStdin, p.id, in.unreported);
            in.allowed += in.unreported;
            in.unreported = 0;
        }
        if (in.pending() == 0 && in.eof_requested) close_stdin(p, false);
    }

    void read_output(Process& p, int s) {
        OutStream& o = p.out[s];
        Conn* c = conn(p.owner);
        if (!c) return;
        char buf[kMaxDataPayload];
        const std::size_t want = std::min<std::size_t>(o.credit, sizeof buf);
        const ssize_t n = read(o.fd.get(), buf, want);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) return;
            // EIO is how a pty master reports that every slave is closed: end of output.
            if (errno != EIO)
                log("reading output of process " + std::to_string(p.id) + ": " + strerror(errno));
            close_output(p, s, true);
            return;
        }
        if (n == 0) {
            close_output(p, s, true);
            return;
        }
        append_frame(c->out, FrameType::Data, static_cast<std::uint8_t>(kStdout + s), p.id,
                     std::string_view(buf, static_cast<std::size_t>(n)));
        o.credit -= static_cast<std::uint32_t>(n);
    }

    // ---- requests ------------------------------------------------------------------------

    std::optional<std::uint32_t> proc_id(Conn& c, std::uint32_t rid, const Json& req) {
        const auto it = req.find("id");
        if (it == req.end() || !it->is_number_unsigned() || it->get<std::uint64_t>() == 0 ||
            it->get<std::uint64_t>() > 0xffffffffu) {
            respond_error(c, rid, err::kBadRequest, "field \"id\" must be a process id");
            return std::nullopt;
        }
        return static_cast<std::uint32_t>(it->get<std::uint64_t>());
    }

    Process* find_proc(Conn& c, std::uint32_t rid, const Json& req) {
        const auto id = proc_id(c, rid, req);
        if (!id) return nullptr;
        const auto it = procs.find(*id);
        if (it == procs.end()) {
            respond_error(c, rid, err::kNotFound, "no process " + std::to_string(*id));
            return nullptr;
        }
        return &it->second;
    }

    void op_hello(Conn& c, std::uint32_t rid, const Json& req) {
        if (c.hello) {
            respond_error(c, rid, err::kBadRequest, "hello already done on this connection");
            return;
        }
        const auto proto = req.find("protocol");
        if (proto == req.end() || !proto->is_string() || *proto != kProtocolName) {
            respond_error(c, rid, err::kBadRequest,
                          "field \"protocol\" must be \"" + std::string(kProtocolName) + "\"");
            return;
        }
        const auto versions = req.find("versions");
        bool common = false;
        if (versions != req.end() && versions->is_array()) {
            for (const auto& v : *versions)
                if (v.is_number_unsigned() && v.get<std::uint64_t>() == kProtocolVersion)
                    common = true;
        }
        if (!common) {
            respond_error(c, rid, err::kUnsupportedVersion,
                          "this agent speaks version " + std::to_string(kProtocolVersion));
            return;
        }
        c.hello = true;
        respond(c, rid,
                {{"protocol", kProtocolName},
                 {"version", kProtocolVersion},
                 {"agent", "vessel-agent"},
                 {"limits",
                  {{"max_control_payload", kMaxControlPayload},
                   {"max_data_payload", kMaxDataPayload},
                   {"max_window", kMaxWindow},
                   {"stdin_window", kStdinWindow},
                   {"max_processes", opts.max_processes},
                   {"max_connections", opts.max_connections},
                   {"max_pending_waits", kMaxPendingWaits},
                   {"max_args", kMaxArgs},
                   {"max_env", kMaxEnv},
                   {"max_argv_env_bytes", kMaxArgvEnvBytes}}}});
    }

    void op_start(Conn& c, std::uint32_t rid, const Json& req) {
        const auto it = req.find("process");
        std::string why;
        const auto spec = it == req.end() ? std::nullopt : spec_from_json(*it, &why);
        if (!spec) {
            respond_error(c, rid, err::kBadRequest,
                          it == req.end() ? "field \"process\" is required" : why);
            return;
        }
        if (procs.size() >= opts.max_processes && !evict_one()) {
            respond_error(c, rid, err::kLimit,
                          "too many processes (" + std::to_string(opts.max_processes) +
                              " running or not yet waited for)");
            return;
        }
        SpawnError se;
        auto sp = spawn_process(*spec, spawn_defaults, se);
        if (!sp) {
            Json body =
                error_json(se.in_child ? err::kExecFailed : err::kSpawnFailed, se.message, se.err);
            body["error"]["stage"] = se.stage;
            ++st.bad_requests;
            respond(c, rid, body);
            return;
        }
        const std::uint32_t id = allocate_id();
        Process& p = procs[id];
        p.id = id;
        p.pid = sp->pid;
        p.pidfd = std::move(sp->pidfd);
        p.tty = spec->tty;
        p.kill_group = spec->kill_group_on_exit;
        p.detachable = spec->detachable;
        p.argv = spec->argv;
        p.owner = c.id;
        p.in.fd = std::move(sp->stdin_fd);
        p.out[0].fd = std::move(sp->stdout_fd);
        p.out[1].fd = std::move(sp->stderr_fd);
        ++st.processes_started;
        respond(c, rid, {{"id", id}, {"pid", sp->pid}});
        // The response goes first so that the host knows the id before any stream frame.
        if (p.in.fd) {
            p.in.allowed = kStdinWindow;
            append_credit(c.out, kStdin, id, kStdinWindow);
        } else {
            p.in.closed = true;
            append_frame(c.out, FrameType::Eof, kStdin, id, {});
        }
        for (int s = 0; s < 2; ++s)
            if (!p.out[s].fd)
                append_frame(c.out, FrameType::Eof, static_cast<std::uint8_t>(kStdout + s), id, {});
    }

    void op_signal(Conn& c, std::uint32_t rid, const Json& req) {
        Process* p = find_proc(c, rid, req);
        if (!p) return;
        const auto sig = req.find("signal");
        if (sig == req.end() || !sig->is_number_unsigned() || sig->get<std::uint64_t>() == 0 ||
            sig->get<std::uint64_t>() >= static_cast<std::uint64_t>(NSIG)) {
            respond_error(c, rid, err::kBadRequest,
                          "field \"signal\" must be 1.." + std::to_string(NSIG - 1));
            return;
        }
        const auto group = req.find("group");
        const bool to_group = group != req.end() && group->is_boolean() && group->get<bool>();
        if (p->exited) {
            respond_error(c, rid, err::kExited, "process " + std::to_string(p->id) + " has exited");
            return;
        }
        // Not yet reaped, so the pid (and group id) still belongs to this process.
        if (kill(to_group ? -p->pid : p->pid, static_cast<int>(sig->get<std::uint64_t>())) < 0) {
            const int e = errno;
            respond_error(c, rid, e == ESRCH ? err::kExited : err::kBadRequest,
                          std::string("kill: ") + strerror(e), e);
            return;
        }
        respond(c, rid, Json::object());
    }

    void op_wait(Conn& c, std::uint32_t rid, const Json& req) {
        Process* p = find_proc(c, rid, req);
        if (!p) return;
        if (p->exited) {
            respond(c, rid, exit_to_json(p->status));
            p->waited = true;
            p->owner_waited |= c.id == p->owner;
            return;
        }
        if (c.pending_waits >= kMaxPendingWaits) {
            respond_error(c, rid, err::kLimit, "too many pending waits on this connection");
            return;
        }
        ++c.pending_waits;
        p->waiters.push_back({c.id, rid});
    }

    void op_resize(Conn& c, std::uint32_t rid, const Json& req) {
        Process* p = find_proc(c, rid, req);
        if (!p) return;
        std::uint64_t dims[2] = {0, 0};
        const char* names[2] = {"rows", "cols"};
        for (int i = 0; i < 2; ++i) {
            const auto v = req.find(names[i]);
            if (v == req.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() > 0xffff) {
                respond_error(c, rid, err::kBadRequest,
                              std::string("field \"") + names[i] + "\" must be 0..65535");
                return;
            }
            dims[i] = v->get<std::uint64_t>();
        }
        if (!p->tty) {
            respond_error(c, rid, err::kNotTty, "process " + std::to_string(p->id) + " has no tty");
            return;
        }
        if (!p->out[0].fd) {
            respond_error(c, rid, err::kExited,
                          "the terminal of process " + std::to_string(p->id) + " is closed");
            return;
        }
        winsize ws{};
        ws.ws_row = static_cast<unsigned short>(dims[0]);
        ws.ws_col = static_cast<unsigned short>(dims[1]);
        // The kernel sends SIGWINCH to the terminal's foreground process group.
        if (ioctl(p->out[0].fd.get(), TIOCSWINSZ, &ws) < 0) {
            const int e = errno;
            respond_error(c, rid, err::kExited, std::string("TIOCSWINSZ: ") + strerror(e), e);
            return;
        }
        respond(c, rid, Json::object());
    }

    void op_list(Conn& c, std::uint32_t rid) {
        Json list = Json::array();
        for (const auto& [id, p] : procs) {
            ProcessInfo info{id, p.pid, p.argv, p.tty, !p.exited, std::nullopt};
            if (p.exited) info.exit = p.status;
            info.attachable = p.detachable && p.owner == 0;
            list.push_back(info_to_json(info));
        }
        respond(c, rid, {{"processes", std::move(list)}});
    }

    // This connection takes over the streams of a detachable process whose own connection is
    // gone; the host learns what each stream is like as after a start.
    void op_attach(Conn& c, std::uint32_t rid, const Json& req) {
        Process* p = find_proc(c, rid, req);
        if (!p) return;
        if (!p->detachable || p->owner != 0) {
            respond_error(c, rid, err::kNotAttachable,
                          "process " + std::to_string(p->id) +
                              (p->detachable ? " is attached to a connection"
                                             : " was not started detachable"));
            return;
        }
        p->owner = c.id;
        p->owner_waited = false;
        respond(c, rid, {{"id", p->id}, {"pid", p->pid}, {"tty", p->tty}});
        if (p->in.fd && !p->in.eof_requested) {
            p->in.allowed = kStdinWindow;
            append_credit(c.out, kStdin, p->id, kStdinWindow);
        } else {
            append_frame(c.out, FrameType::Eof, kStdin, p->id, {});
        }
        for (int s = 0; s < 2; ++s)
            if (!p->out[s].fd)
                append_frame(c.out, FrameType::Eof, static_cast<std::uint8_t>(kStdout + s), p->id,
                             {});
    }

    void op_identity(Conn& c, std::uint32_t rid, const Json& req) {
        std::string why;
        const auto id = identity_from_json(req, &why);
        if (!id) {
            respond_error(c, rid, err::kBadRequest, why);
            return;
        }
        if (!opts.apply_identity) {
            respond_error(c, rid, err::kIdentityFailed, "this agent cannot change the identity");
            return;
        }
        int e = 0;
        const std::string failed = opts.apply_identity(*id, &e);
        if (!failed.empty()) {
            respond_error(c, rid, err::kIdentityFailed, failed, e);
            return;
        }
        log("identity applied" + (id->hostname.empty() ? "" : " (hostname " + id->hostname + ")"));
        respond(c, rid, Json::object());
    }

    void op_root(Conn& c, std::uint32_t rid, const Json& req) {
        std::string why;
        const auto r = root_from_json(req, &why);
        if (!r) {
            respond_error(c, rid, err::kBadRequest, why);
            return;
        }
        if (!opts.enter_root) {
            respond_error(c, rid, err::kRootFailed, "this agent cannot change its root");
            return;
        }
        if (root_entered) {
            respond_error(c, rid, err::kRootFailed, "the root was already changed");
            return;
        }
        int e = 0;
        const std::string failed = opts.enter_root(*r, &e);
        if (!failed.empty()) {
            respond_error(c, rid, err::kRootFailed, failed, e);
            return;
        }
        root_entered = true;
        log("root is now " + r->source);
        respond(c, rid, Json::object());
    }

    void op_shutdown(Conn& c, std::uint32_t rid, const Json& req) {
        const auto s = req.find("status");
        if (s == req.end() || !s->is_number_unsigned() || s->get<std::uint64_t>() > 255) {
            respond_error(c, rid, err::kBadRequest, "field \"status\" must be 0..255");
            return;
        }
        // The acknowledgement promises that what the processes wrote is on disk.
        if (opts.sync_on_shutdown) sync();
        shutdown_status = static_cast<int>(s->get<std::uint64_t>());
        log("shutdown requested, status " + std::to_string(*shutdown_status));
        respond(c, rid, Json::object());
    }

    void handle_request(Conn& c, const Frame& f) {
        const std::uint32_t rid = f.header.id;
        if (rid == 0) {
            protocol_error(c, "request id 0 is reserved");
            return;
        }
        std::string why;
        const auto req = parse_object(f.payload, &why);
        if (!req) {
            respond_error(c, rid, err::kBadRequest, "request: " + why);
            return;
        }
        const auto op_it = req->find("op");
        if (op_it == req->end() || !op_it->is_string()) {
            respond_error(c, rid, err::kBadRequest, "field \"op\" must be a string");
            return;
        }
        const auto& op = op_it->get_ref<const std::string&>();
        if (op == "hello") return op_hello(c, rid, *req);
        if (!c.hello) {
            respond_error(c, rid, err::kHandshakeRequired, "send hello first");
            return;
        }
        if (shutdown_status) {
            respond_error(c, rid, err::kShuttingDown, "the VM is shutting down");
            return;
        }
        if (op == "start") return op_start(c, rid, *req);
        if (op == "signal") return op_signal(c, rid, *req);
        if (op == "wait") return op_wait(c, rid, *req);
        if (op == "resize") return op_resize(c, rid, *req);
        if (op == "list") return op_list(c, rid);
        if (op == "attach") return op_attach(c, rid, *req);
        if (op == "shutdown") return op_shutdown(c, rid, *req);
        if (op == "identity") return op_identity(c, rid, *req);
        if (op == "root") return op_root(c, rid, *req);
        respond_error(c, rid, err::kUnknownOp, "unknown op \"" + op.substr(0, 64) + "\"");
    }

    void handle_data(Conn& c, const Frame& f) {
        if (f.header.stream != kStdin) return protocol_error(c, "data frame for an output stream");
        Process* p = owned(c, f.header.id);
        if (!p || p->in.closed || p->in.eof_requested) return;  // in flight when it closed
        if (f.payload.size() > p->in.allowed)
            return protocol_error(c, "stdin data beyond the granted credit");
        p->in.allowed -= static_cast<std::uint32_t>(f.payload.size());
        p->in.buf += f.payload;
    }

    void handle_credit(Conn& c, const Frame& f) {
        if (f.header.stream == kStdin) return protocol_error(c, "credit frame for stdin");
        const auto n = parse_credit(f.payload);
        Process* p = owned(c, f.header.id);
        if (!p || !n) return;
        OutStream& o = p->out[f.header.stream - kStdout];
        if (!o.fd) return;
        if (*n > kMaxWindow - o.credit)
            return protocol_error(c, "credit beyond " + std::to_string(kMaxWindow) + " bytes");
        o.credit += *n;
    }

    void handle_eof(Conn& c, const Frame& f) {
        Process* p = owned(c, f.header.id);
        if (!p) return;
        if (f.header.stream == kStdin) {
            p->in.eof_requested = true;
            if (p->in.pending() == 0) close_stdin(*p, false);
        } else {
            // The host will not read this stream anymore: the writer gets EPIPE, as with any
            // pipe whose reader has gone. A pty hangs up, which needs its stdin twin closed too.
            close_output(*p, f.header.stream - kStdout, false);
            if (p->tty) close_stdin(*p, true);
        }
    }

    void handle_frame(Conn& c, const Frame& f) {
        if (f.header.type == FrameType::Request) return handle_request(c, f);
        if (!c.hello) return protocol_error(c, "stream frame before hello");
        switch (f.header.type) {
            case FrameType::Data:
                return handle_data(c, f);
            case FrameType::Credit:
                return handle_credit(c, f);
            case FrameType::Eof:
                return handle_eof(c, f);
            default:
                return protocol_error(
                    c, "unexpected frame type " + std::to_string(static_cast<int>(f.header.type)));
        }
    }

    // Frames stay in the reader while the connection's output is over the high-water mark.
    void process_frames(Conn& c) {
        Frame f;
        while (!c.dead && !shutdown_status && c.pending() < kConnHighWater) {
            const auto status = c.reader.next(f);
            if (status == FrameReader::Status::kNeedMore) return;
            if (status == FrameReader::Status::kError) return protocol_error(c, c.reader.error());
            handle_frame(c, f);
        }
    }

    void read_conn(Conn& c) {
        char buf[kReadChunk];
        const ssize_t n = recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) return;
            c.dead = true;
            return;
        }
        if (n == 0) {
            if (c.reader.mid_frame()) {
                ++st.protocol_errors;
                log("connection " + std::to_string(c.id) + ": closed inside a frame");
            }
            c.dead = true;  // a half-close ends the connection too
            return;
        }
        c.reader.feed(buf, static_cast<std::size_t>(n));
        process_frames(c);
    }

    void accept_conn() {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        UniqueFd fd(accept4(opts.listen_fd.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                            SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log(std::string("accept: ") + strerror(errno));
            return;
        }
        if (opts.accept_filter && !opts.accept_filter(peer, len)) {
            log("refused a connection from a peer that is not the host");
            return;
        }
        add(std::move(fd));
    }

    void add(UniqueFd fd) {
        const int flags = fcntl(fd.get(), F_GETFL);
        if (flags >= 0) fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
        std::size_t live = 0;
        for (const auto& [id, c] : conns) live += !c.dead;
        Conn c;
        c.id = next_conn++;
        c.fd = std::move(fd);
        ++st.connections;
        if (live >= opts.max_connections) {
            respond(c, 0, error_json(err::kLimit, "too many connections"));
            flush(c);
            return;  // closed by c's destructor
        }
        conns.emplace(c.id, std::move(c));
    }

    // Closes dead connections (detaching their processes) and drops finished processes.
    void sweep() {
        for (auto it = conns.begin(); it != conns.end();) {
            if (!it->second.dead) {
                ++it;
                continue;
            }
            const std::uint64_t id = it->first;
            for (auto& [pid, p] : procs) {
                if (p.owner == id) p.detachable ? orphan(p) : detach(p);
                std::erase_if(p.waiters, [id](const Waiter& w) { return w.conn == id; });
            }
            it = conns.erase(it);
        }
        std::erase_if(procs, [this](const auto& kv) { return finished(kv.second); });
    }

    void take_incoming() {
        std::uint64_t v;
        (void)!read(wake.get(), &v, sizeof v);
        std::vector<UniqueFd> fds;
        {
            std::lock_guard<std::mutex> lock(mu);
            fds.swap(incoming);
        }
        for (auto& fd : fds) add(std::move(fd));
    }

    // ---- the loop ------------------------------------------------------------------------

    int run() {
        std::vector<pollfd> pfds;
        std::vector<Tag> tags;
        auto watch = [&](int fd, short events, Tag tag) {
            pfds.push_back({fd, events, 0});
            tags.push_back(tag);
        };
        while (!stop_requested.load()) {
            if (shutdown_status) return finish_shutdown();
            pfds.clear();
            tags.clear();
            watch(wake.get(), POLLIN, {Kind::kWake, 0, 0});
            if (opts.listen_fd) watch(opts.listen_fd.get(), POLLIN, {Kind::kListen, 0, 0});
            for (auto& [id, c] : conns) {
                short ev = c.pending() < kConnHighWater ? POLLIN : 0;
                if (c.pending() > 0) ev |= POLLOUT;
                watch(c.fd.get(), ev, {Kind::kConn, id, 0});
            }
            for (auto& [id, p] : procs) {
                if (p.pidfd) watch(p.pidfd.get(), POLLIN, {Kind::kPidfd, id, 0});
                // Always watched: POLLERR/POLLHUP say the process has closed its stdin.
                if (p.in.fd)
                    watch(p.in.fd.get(), p.in.pending() > 0 ? POLLOUT : 0, {Kind::kStdin, id, 0});
                const Conn* c = conn(p.owner);
                // Unwatched without credit: a hung-up pipe would otherwise spin poll().
                for (int s = 0; s < 2; ++s) {
                    if (p.out[s].fd && p.out[s].credit > 0 && c && c->pending() < kConnHighWater)
                        watch(p.out[s].fd.get(), POLLIN, {Kind::kOutput, id, s});
                }
            }
            if (poll(pfds.data(), pfds.size(), -1) < 0) {
                if (errno == EINTR) continue;
                log(std::string("poll: ") + strerror(errno));
                return -1;
            }
            for (std::size_t i = 0; i < pfds.size(); ++i) {
                const short re = pfds[i].revents;
                if (re == 0) continue;
                dispatch(tags[i], re);
            }
            sweep();
        }
        return -1;
    }

    void dispatch(const Tag& t, short re) {
        switch (t.kind) {
            case Kind::kWake:
                return take_incoming();
            case Kind::kListen:
                return accept_conn();
            case Kind::kConn: {
                Conn* c = conn(t.key);
                if (!c) return;
                if (re & POLLOUT) flush(*c);
                if (!c->dead && (re & (POLLIN | POLLHUP | POLLERR))) {
                    if (c->pending() < kConnHighWater)
                        read_conn(*c);
                    else if (re & (POLLHUP | POLLERR))
                        c->dead = true;
                }
                // Frames held back by the high-water mark run as soon as output drains;
                // nothing else would wake us for bytes already in the reader.
                while (!c->dead) {
                    flush(*c);
                    const std::size_t before = c->reader.buffered();
                    process_frames(*c);
                    if (c->reader.buffered() == before) break;
                }
                return;
            }
            default:
                break;
        }
        const auto it = procs.find(static_cast<std::uint32_t>(t.key));
        if (it == procs.end()) return;
        Process& p = it->second;
        switch (t.kind) {
            case Kind::kPidfd:
                if (p.pidfd) reap(p);
                return;
            case Kind::kStdin:
                if (!p.in.fd) return;
                if (re & POLLOUT)
                    write_stdin(p);
                else if (re & (POLLERR | POLLHUP))
                    close_stdin(p, true);
                return;
            case Kind::kOutput:
                if (p.out[t.stream].fd && p.out[t.stream].credit > 0) read_output(p, t.stream);
                return;
            default:
                return;
        }
    }

    int finish_shutdown() {
        const long long deadline = now_ms() + kShutdownFlushMs;
        for (;;) {
            std::vector<pollfd> pfds;
            for (auto& [id, c] : conns)
                if (!c.dead && c.pending() > 0) pfds.push_back({c.fd.get(), POLLOUT, 0});
            const long long left = deadline - now_ms();
            if (pfds.empty() || left <= 0) break;
            if (poll(pfds.data(), pfds.size(), static_cast<int>(left)) < 0 && errno != EINTR) break;
            for (auto& [id, c] : conns)
                if (!c.dead && c.pending() > 0) flush(c);
        }
        // Hang up now rather than when the Agent is destroyed: hosts see the end at once.
        for (auto& [id, p] : procs) detach(p);
        conns.clear();
        opts.listen_fd.reset();
        return *shutdown_status;
    }
};

Agent::Agent(AgentOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
    signal(SIGPIPE, SIG_IGN);
    impl_->wake.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!impl_->wake) {
        throw std::system_error(errno, std::generic_category(), "creating the agent's eventfd");
    }
    if (impl_->opts.listen_fd) {
        const int flags = fcntl(impl_->opts.listen_fd.get(), F_GETFL);
        if (flags >= 0) fcntl(impl_->opts.listen_fd.get(), F_SETFL, flags | O_NONBLOCK);
    }
    if (impl_->opts.raise_nofile) {
        rlimit rl{};
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rlimit raised = rl;
            raised.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &raised) == 0) impl_->spawn_defaults.nofile = rl;
        }
    }
}

Agent::~Agent() {
    for (auto& [id, p] : impl_->procs) {
        if (p.exited) continue;
        kill(-p.pid, SIGKILL);
        kill(p.pid, SIGKILL);  // in case it left its own group
        while (waitpid(p.pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
}

void Agent::add_connection(guest::UniqueFd fd) {
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        impl_->incoming.push_back(std::move(fd));
    }
    const std::uint64_t one = 1;
    (void)!write(impl_->wake.get(), &one, sizeof one);
}

void Agent::stop() {
    impl_->stop_requested.store(true);
    const std::uint64_t one = 1;
    (void)!write(impl_->wake.get(), &one, sizeof one);
}

int Agent::run() {
    return impl_->run();
}

AgentStats Agent::stats() const {
    const auto& s = impl_->st;
    return {s.connections.load(),    s.protocol_errors.load(),   s.bad_requests.load(),
            s.ignored_frames.load(), s.processes_started.load(), s.processes_exited.load()};
}

}  // namespace vessel::agent
