// Helpers for the agent tests: an Agent serving socketpairs from a thread of the test
// process, raw frame I/O for tests that speak the protocol by hand, and output collection.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "guest/agent/agent.h"
#include "guest/agent/client.h"
#include "guest/agent/messages.h"
#include "guest/agent/wire.h"

namespace vessel::agent::test {

struct TempPath {
    TempPath() {
        char tmpl[] = "/tmp/vessel-agent-test.XXXXXX";
        if (!mkdtemp(tmpl)) throw_errno("mkdtemp");
        path = tmpl;
    }
    ~TempPath() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string path;
};

inline AgentOptions quiet_options() {
    AgentOptions o;
    o.sync_on_shutdown = false;
    o.log_to_stderr = false;
    return o;
}

inline std::pair<UniqueFd, guest::UniqueFd> socket_pair() {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) throw_errno("socketpair");
    return {UniqueFd(sv[0]), guest::UniqueFd(sv[1])};
}

// The agent loop on its own thread of the test process.
class AgentThread {
  public:
    explicit AgentThread(AgentOptions opts = quiet_options()) : agent_(std::move(opts)) {
        thread_ = std::thread([this] { status_ = agent_.run(); });
    }
    ~AgentThread() {
        agent_.stop();
        if (thread_.joinable()) thread_.join();
    }

    UniqueFd connect_raw() {
        auto [host, guest] = socket_pair();
        agent_.add_connection(std::move(guest));
        return std::move(host);
    }
    std::unique_ptr<Client> client(ClientOptions o = {}) {
        return std::make_unique<Client>(connect_raw(), o);
    }
    // Waits for run() to return (after a shutdown request) and gives its status.
    int join() {
        thread_.join();
        return status_;
    }
    Agent& agent() { return agent_; }

  private:
    Agent agent_;
    std::thread thread_;
    int status_ = -2;
};

struct Output {
    std::string out;
    std::string err;
    ExitStatus status;
};

// Pumps one process until it has exited and both output streams have ended.
inline Output collect(Client& c, std::uint32_t id,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    Output o;
    c.wait_async(id);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    for (;;) {
        for (Stream s : {kStdout, kStderr}) {
            std::size_t n;
            while ((n = c.read_output(id, s, buf, sizeof buf)) > 0)
                (s == kStdout ? o.out : o.err).append(buf, n);
        }
        const auto st = c.exit_status(id);
        if (st && c.output_eof(id, kStdout) && c.output_eof(id, kStderr)) {
            o.status = *st;
            return o;
        }
        if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("timed out collecting process " + std::to_string(id) +
                                     "; stdout so far: " + o.out);
        c.pump(100);
        c.check();
    }
}

// Pumps until the process's stdout contains `what` (returned with everything before it).
inline std::string read_until(Client& c, std::uint32_t id, const std::string& what,
                              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (got.find(what) == std::string::npos) {
        std::size_t n;
        while ((n = c.read_output(id, kStdout, buf, sizeof buf)) > 0) got.append(buf, n);
        if (got.find(what) != std::string::npos) break;
        if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("timed out waiting for \"" + what + "\"; got: " + got);
        c.pump(50);
        c.check();
    }
    return got;
}

inline ProcessSpec sh(const std::string& script) {
    ProcessSpec s;
    s.argv = {"/bin/sh", "-c", script};
    return s;
}

// Speaks the protocol by hand, for tests that must send what a Client never would.
class RawConn {
  public:
    explicit RawConn(UniqueFd fd) : fd_(std::move(fd)) {}

    void send_bytes(std::string_view bytes) {
        std::size_t off = 0;
        while (off < bytes.size()) {
            const ssize_t n =
                ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                return;  // the agent may have hung up already: that is what some tests expect
            }
            off += static_cast<std::size_t>(n);
        }
    }
    void send_frame(FrameType t, std::uint8_t stream, std::uint32_t id, std::string_view payload) {
        std::string s;
        append_frame(s, t, stream, id, payload);
        send_bytes(s);
    }
    void request(std::uint32_t id, const Json& j) {
        send_frame(FrameType::Request, 0, id, j.dump());
    }
    void hello() {
        request(1, {{"op", "hello"}, {"protocol", "vessel-agent"}, {"versions", {1}}});
        const auto f = next();
        ASSERT_TRUE(f);
        ASSERT_EQ(f->header.type, FrameType::Response);
        ASSERT_FALSE(body(*f).contains("error")) << f->payload;
    }
    // Next frame, or nullopt on EOF / timeout.
    std::optional<Frame> next(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            Frame f;
            const auto st = reader_.next(f);
            if (st == FrameReader::Status::kFrame) return f;
            if (st == FrameReader::Status::kError) return std::nullopt;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd_.get(), POLLIN, 0};
            if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char buf[65536];
            const ssize_t n = recv(fd_.get(), buf, sizeof buf, 0);
            if (n <= 0) {
                eof_ = true;
                return std::nullopt;
            }
            reader_.feed(buf, static_cast<std::size_t>(n));
        }
    }
    // Next Response frame, skipping stream frames.
    std::optional<Frame> response(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        for (;;) {
            auto f = next(timeout);
            if (!f || f->header.type == FrameType::Response) return f;
        }
    }
    // True once the agent has closed the connection (reads until EOF, dropping frames).
    bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!eof_ && std::chrono::steady_clock::now() < deadline) next(timeout);
        return eof_;
    }
    static Json body(const Frame& f) { return Json::parse(f.payload); }
    static std::string error_code(const Frame& f) {
        const Json j = body(f);
        return j.contains("error") ? j["error"]["code"].get<std::string>() : "";
    }
    int fd() const { return fd_.get(); }

  private:
    UniqueFd fd_;
    FrameReader reader_;
    bool eof_ = false;
};

}  // namespace vessel::agent::test
