#include "guest/agent/client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include <algorithm>
#include <limits>
#include <system_error>

#include "guest/agent/messages.h"

namespace vessel::agent {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 64u << 10;
// Bytes read per on_ready() call, so one busy connection cannot starve a caller's loop.
constexpr std::size_t kReadBudget = 1u << 20;

int out_index(Stream s) {
    if (s != kStdout && s != kStderr) throw std::invalid_argument("not an output stream");
    return s - kStdout;
}

[[noreturn]] void throw_agent_error(const Json& body) {
    const auto found = body.find("error");
    const Json e = found == body.end() ? Json() : *found;
    std::string code = "unknown", message = "agent error", stage;
    int err = 0;
    if (e.is_object()) {
        if (auto it = e.find("code"); it != e.end() && it->is_string()) code = *it;
        if (auto it = e.find("message"); it != e.end() && it->is_string()) message = *it;
        if (auto it = e.find("stage"); it != e.end() && it->is_string()) stage = *it;
        if (auto it = e.find("errno"); it != e.end() && it->is_number_integer())
            err = static_cast<int>(std::clamp<std::int64_t>(it->get<std::int64_t>(), 0, 4095));
    }
    throw AgentError(code, message, err, stage);
}

bool is_error(const Json& body) {
    return body.contains("error");
}

}  // namespace

Client::Client(UniqueFd conn, ClientOptions options) : conn_(std::move(conn)), opts_(options) {
    if (!conn_) throw std::invalid_argument("agent client needs a connected fd");
    if (opts_.output_window == 0 || opts_.output_window > kMaxWindow)
        throw std::invalid_argument("output_window must be 1.." + std::to_string(kMaxWindow));
    const int flags = fcntl(conn_.get(), F_GETFL);
    if (flags < 0 || fcntl(conn_.get(), F_SETFL, flags | O_NONBLOCK) < 0)
        throw_errno("making the agent connection non-blocking");
    const Json reply = call({{"op", "hello"},
                             {"protocol", kProtocolName},
                             {"versions", Json::array({kProtocolVersion})}});
    const auto v = reply.find("version");
    if (v == reply.end() || !v->is_number_unsigned() || v->get<std::uint64_t>() != kProtocolVersion)
        throw ProtocolError("agent chose an unsupported protocol version");
    version_ = kProtocolVersion;
}

Client::~Client() = default;

// ---- plumbing --------------------------------------------------------------------------

void Client::fail(const std::string& why) {
    if (broken_why_.empty()) broken_why_ = why;
}

void Client::check() const {
    if (!broken_why_.empty()) throw ProtocolError("agent connection: " + broken_why_);
}

Client::Proc& Client::proc(std::uint32_t id) {
    const auto it = procs_.find(id);
    if (it == procs_.end())
        throw std::invalid_argument("process " + std::to_string(id) + " unknown to this client");
    return it->second;
}

const Client::Proc& Client::proc(std::uint32_t id) const {
    return const_cast<Client*>(this)->proc(id);
}

std::uint32_t Client::send_request(const Json& request, PendingKind kind, std::uint32_t proc) {
    check();
    std::uint32_t rid = next_request_++;
    while (rid == 0 || pending_.count(rid)) rid = next_request_++;
    const std::string payload = dump(request);
    if (payload.size() > kMaxControlPayload)
        throw std::invalid_argument("request of " + std::to_string(payload.size()) +
                                    " bytes exceeds the protocol's " +
                                    std::to_string(kMaxControlPayload));
    append_frame(out_, FrameType::Request, 0, rid, payload);
    pending_[rid] = {kind, proc, std::nullopt};
    flush();
    return rid;
}

Json Client::call(const Json& request, bool with_timeout, PendingKind kind) {
    const std::uint32_t rid = send_request(request, kind);
    const auto deadline = Clock::now() + opts_.request_timeout;
    for (;;) {
        auto& p = pending_.at(rid);
        if (p.response) {
            const std::string payload = std::move(*p.response);
            pending_.erase(rid);
            std::string why;
            auto body = parse_object(payload, &why);
            if (!body) {
                fail("malformed response: " + why);
                check();
            }
            if (is_error(*body)) throw_agent_error(*body);
            return std::move(*body);
        }
        check();
        int wait_ms = -1;
        if (with_timeout) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) {
                p.kind = PendingKind::kIgnore;  // a late answer is dropped
                fail("request timed out after " + std::to_string(opts_.request_timeout.count()) +
                     " ms");
                check();
            }
            wait_ms = static_cast<int>(std::min<long long>(left.count(), 1 << 30));
        }
        pump(wait_ms);
    }
}

short Client::poll_events() const {
    return static_cast<short>(POLLIN | (out_.size() > out_off_ ? POLLOUT : 0));
}

bool Client::pump(int timeout_ms) {
    if (broken()) return false;
    pollfd p{conn_.get(), poll_events(), 0};
    const int n = poll(&p, 1, timeout_ms);
    if (n < 0) {
        if (errno != EINTR) fail(std::string("poll: ") + strerror(errno));
        return false;
    }
    if (n == 0) return false;
    on_ready(p.revents);
    return true;
}

void Client::on_ready(short revents) {
    if (broken()) return;
    if (revents & POLLOUT) flush();
    if (revents & (POLLIN | POLLHUP | POLLERR)) read_available();
    if (!broken() && out_.size() > out_off_) flush();
}

void Client::flush() {
    while (!broken() && out_.size() > out_off_) {
        const ssize_t n = send(conn_.get(), out_.data() + out_off_, out_.size() - out_off_,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            fail(std::string("send: ") + strerror(errno));
            return;
        }
        out_off_ += static_cast<std::size_t>(n);
    }
    if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
    } else if (out_off_ >= (256u << 10)) {
        out_.erase(0, out_off_);
        out_off_ = 0;
    }
}

void Client::read_available() {
    char buf[kReadChunk];
    for (std::size_t total = 0; total < kReadBudget && !broken();) {
        const ssize_t n = recv(conn_.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) fail(std::string("recv: ") + strerror(errno));
            return;
        }
        if (n == 0) {
            fail(reader_.mid_frame() ? "agent closed the connection inside a frame"
                                     : "agent closed the connection");
            return;
        }
        total += static_cast<std::size_t>(n);
        reader_.feed(buf, static_cast<std::size_t>(n));
        Frame f;
        for (;;) {
            const auto st = reader_.next(f);
            if (st == FrameReader::Status::kNeedMore) break;
            if (st == FrameReader::Status::kError) {
                fail("bad frame from agent: " + reader_.error());
                return;
            }
            dispatch(f);
            if (broken()) return;
        }
    }
}

void Client::dispatch(const Frame& f) {
    const FrameHeader& h = f.header;
    switch (h.type) {
        case FrameType::Response: {
            if (h.id == 0) {
                std::string why;
                const auto body = parse_object(f.payload, &why);
                std::string msg = "agent reported a connection error";
                if (body && is_error(*body)) {
                    try {
                        throw_agent_error(*body);
                    } catch (const AgentError& e) {
                        msg += ": " + std::string(e.what());
                    }
                }
                return fail(msg);
            }
            const auto it = pending_.find(h.id);
            if (it == pending_.end())
                return fail("response to unknown request " + std::to_string(h.id));
            Pending& p = it->second;
            if (p.kind == PendingKind::kStart) register_started(f.payload);
            if (p.kind == PendingKind::kCall || p.kind == PendingKind::kStart) {
                p.response = f.payload;
                return;
            }
            if (p.kind == PendingKind::kWait) {
                const auto pr = procs_.find(p.proc);
                std::string why;
                const auto body = parse_object(f.payload, &why);
                if (!body) return fail("malformed wait response: " + why);
                if (pr != procs_.end()) {
                    if (is_error(*body)) {
                        try {
                            throw_agent_error(*body);
                        } catch (const AgentError& e) {
                            pr->second.wait_error = e;
                        }
                    } else {
                        auto st = exit_from_json(*body, &why);
                        if (!st) return fail("malformed wait response: " + why);
                        pr->second.exit = *st;
                    }
                }
            }
            pending_.erase(it);
            return;
        }
        case FrameType::Data: {
            if (h.stream == kStdin) return fail("agent sent data on stdin");
            const auto it = procs_.find(h.id);
            if (it == procs_.end()) return;  // forgotten
            OutBuf& o = it->second.out[h.stream - kStdout];
            if (f.payload.size() > o.granted) return fail("agent sent data beyond the credit");
            o.granted -= static_cast<std::uint32_t>(f.payload.size());
            if (o.discarded || o.eof) return;
            o.data += f.payload;
            return;
        }
        case FrameType::Credit: {
            if (h.stream != kStdin) return fail("agent sent credit for an output stream");
            const auto it = procs_.find(h.id);
            if (it == procs_.end()) return;
            const std::uint32_t n = *parse_credit(f.payload);
            Proc& p = it->second;
            if (n > kMaxWindow - std::min(p.stdin_credit, kMaxWindow))
                return fail("agent granted more than the maximum window");
            p.stdin_credit += n;
            return;
        }
        case FrameType::Eof: {
            const auto it = procs_.find(h.id);
            if (it == procs_.end()) return;
            if (h.stream == kStdin)
                it->second.stdin_closed = true;
            else
                it->second.out[h.stream - kStdout].eof = true;
            return;
        }
        default:
            return fail("unexpected frame type " + std::to_string(static_cast<int>(h.type)));
    }
}

// ---- requests --------------------------------------------------------------------------

namespace {

std::optional<Started> parse_started(const Json& reply) {
    const auto id = reply.find("id");
    const auto pid = reply.find("pid");
    if (id == reply.end() || !id->is_number_unsigned() || id->get<std::uint64_t>() == 0 ||
        id->get<std::uint64_t>() > 0xffffffffu || pid == reply.end() || !pid->is_number_integer() ||
        pid->get<std::int64_t>() <= 0 || pid->get<std::int64_t>() > std::numeric_limits<int>::max())
        return std::nullopt;
    return Started{static_cast<std::uint32_t>(id->get<std::uint64_t>()),
                   static_cast<int>(pid->get<std::int64_t>())};
}

}  // namespace

// Runs while the response is dispatched: the process's first stream frames may follow it in
// the same read, and must find the process known.
void Client::register_started(const std::string& payload) {
    const auto body = parse_object(payload, nullptr);
    if (!body || is_error(*body)) return;  // call() reports it
    const auto s = parse_started(*body);
    if (!s) return;
    Proc& p = procs_[s->id];
    p = Proc{};
    for (int i = 0; i < 2; ++i) {
        p.out[i].granted = opts_.output_window;
        append_credit(out_, static_cast<std::uint8_t>(kStdout + i), s->id, opts_.output_window);
    }
}

Started Client::start(const ProcessSpec& spec) {
    const Json reply =
        call({{"op", "start"}, {"process", spec_to_json(spec)}}, true, PendingKind::kStart);
    const auto s = parse_started(reply);
    if (!s) {
        fail("malformed start response");
        check();
    }
    flush();
    return *s;
}

Started Client::attach(std::uint32_t id) {
    const Json reply = call({{"op", "attach"}, {"id", id}}, true, PendingKind::kStart);
    const auto s = parse_started(reply);
    if (!s || s->id != id) {
        fail("malformed attach response");
        check();
    }
    flush();
    return *s;
}

void Client::signal(std::uint32_t id, int sig, bool group) {
    call({{"op", "signal"}, {"id", id}, {"signal", sig}, {"group", group}});
}

void Client::resize(std::uint32_t id, std::uint16_t rows, std::uint16_t cols) {
    call({{"op", "resize"}, {"id", id}, {"rows", rows}, {"cols", cols}});
}

ExitStatus Client::wait(std::uint32_t id) {
    const Json reply = call({{"op", "wait"}, {"id", id}}, /*with_timeout=*/false);
    std::string why;
    auto st = exit_from_json(reply, &why);
    if (!st) {
        fail("malformed wait response: " + why);
        check();
    }
    if (auto it = procs_.find(id); it != procs_.end()) it->second.exit = *st;
    return *st;
}

std::vector<ProcessInfo> Client::list() {
    const Json reply = call({{"op", "list"}});
    const auto it = reply.find("processes");
    if (it == reply.end() || !it->is_array()) {
        fail("malformed list response");
        check();
    }
    std::vector<ProcessInfo> out;
    for (const auto& e : *it) {
        std::string why;
        auto info = info_from_json(e, &why);
        if (!info) {
            fail("malformed list response: " + why);
            check();
        }
        out.push_back(std::move(*info));
    }
    return out;
}

void Client::shutdown(int status) {
    if (status < 0 || status > 255) throw std::invalid_argument("shutdown status must be 0..255");
    call({{"op", "shutdown"}, {"status", status}});
}

void Client::set_identity(const Identity& id) {
    Json req = identity_to_json(id);
    req["op"] = "identity";
    call(req);
}

void Client::enter_root(const RootRequest& r) {
    Json req = root_to_json(r);
    req["op"] = "root";
    call(req);
}

void Client::wait_async(std::uint32_t id) {
    proc(id);
    send_request({{"op", "wait"}, {"id", id}}, PendingKind::kWait, id);
}

std::optional<ExitStatus> Client::exit_status(std::uint32_t id) const {
    const Proc& p = proc(id);
    if (p.wait_error) throw *p.wait_error;
    return p.exit;
}

void Client::signal_async(std::uint32_t id, int sig, bool group) {
    send_request({{"op", "signal"}, {"id", id}, {"signal", sig}, {"group", group}},
                 PendingKind::kIgnore);
}

void Client::resize_async(std::uint32_t id, std::uint16_t rows, std::uint16_t cols) {
    send_request({{"op", "resize"}, {"id", id}, {"rows", rows}, {"cols", cols}},
                 PendingKind::kIgnore);
}

void Client::forget(std::uint32_t id) {
    procs_.erase(id);
}

// ---- streams ---------------------------------------------------------------------------

std::size_t Client::stdin_room(std::uint32_t id) const {
    const Proc& p = proc(id);
    return p.stdin_closed ? 0 : p.stdin_credit;
}

bool Client::stdin_open(std::uint32_t id) const {
    return !proc(id).stdin_closed;
}

std::size_t Client::write_stdin(std::uint32_t id, std::string_view data) {
    check();
    Proc& p = proc(id);
    if (p.stdin_closed) return 0;
    const std::size_t n = std::min<std::size_t>(data.size(), p.stdin_credit);
    for (std::size_t off = 0; off < n; off += kMaxDataPayload) {
        append_frame(out_, FrameType::Data, kStdin, id,
                     data.substr(off, std::min<std::size_t>(kMaxDataPayload, n - off)));
    }
    p.stdin_credit -= static_cast<std::uint32_t>(n);
    flush();
    return n;
}

void Client::close_stdin(std::uint32_t id) {
    Proc& p = proc(id);
    if (p.stdin_closed) return;
    p.stdin_closed = true;
    if (broken()) return;
    append_frame(out_, FrameType::Eof, kStdin, id, {});
    flush();
}

std::string_view Client::peek_output(std::uint32_t id, Stream s) const {
    const OutBuf& o = proc(id).out[out_index(s)];
    return std::string_view(o.data).substr(o.off);
}

void Client::consume_output(std::uint32_t id, Stream s, std::size_t n) {
    OutBuf& o = proc(id).out[out_index(s)];
    n = std::min(n, o.data.size() - o.off);
    o.off += n;
    o.consumed += static_cast<std::uint32_t>(n);
    if (o.off == o.data.size()) {
        o.data.clear();
        o.off = 0;
    } else if (o.off >= o.data.size() / 2) {
        o.data.erase(0, o.off);
        o.off = 0;
    }
    // Batched: a quarter window per Credit frame keeps the agent busy without a frame per read.
    if (!o.eof && !broken() && o.consumed > 0 && o.consumed >= opts_.output_window / 4) {
        append_credit(out_, static_cast<std::uint8_t>(s), id, o.consumed);
        o.granted += o.consumed;
        o.consumed = 0;
        flush();
    }
}

std::size_t Client::read_output(std::uint32_t id, Stream s, char* buf, std::size_t len) {
    const std::string_view avail = peek_output(id, s);
    const std::size_t n = std::min(len, avail.size());
    std::copy_n(avail.data(), n, buf);
    consume_output(id, s, n);
    return n;
}

bool Client::output_eof(std::uint32_t id, Stream s) const {
    const OutBuf& o = proc(id).out[out_index(s)];
    return (o.eof || o.discarded) && o.off == o.data.size();
}

void Client::discard_output(std::uint32_t id, Stream s) {
    OutBuf& o = proc(id).out[out_index(s)];
    if (o.discarded) return;
    o.discarded = true;
    o.data.clear();
    o.off = 0;
    if (o.eof || broken()) return;
    append_frame(out_, FrameType::Eof, static_cast<std::uint8_t>(s), id, {});
    flush();
}

}  // namespace vessel::agent
