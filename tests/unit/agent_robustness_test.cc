// Hostile input on both sides: the agent fed malformed, truncated, oversized and random
// frames by a raw connection, and the client fed the same by a fake agent. Neither may
// crash (the Asan build makes memory errors fatal); each answers with an error or hangs up.
#include <gtest/gtest.h>
#include <signal.h>

#include <random>
#include <thread>

#include "agent_test_util.h"

namespace vessel::agent {
namespace {

using namespace std::chrono_literals;
using test::AgentThread;
using test::RawConn;

// The agent still serves a fresh connection properly.
void expect_agent_alive(AgentThread& a) {
    auto c = a.client();
    const Started p = c->start(test::sh("echo alive"));
    EXPECT_EQ(test::collect(*c, p.id).out, "alive\n");
}

std::string header(std::uint32_t len, std::uint8_t type, std::uint8_t stream, std::uint16_t flags,
                   std::uint32_t id) {
    char h[kHeaderSize];
    encode_header({len, static_cast<FrameType>(type), stream, flags, id}, h);
    return std::string(h, kHeaderSize);
}

TEST(AgentRobustness, ProtocolErrorsCloseTheConnection) {
    AgentThread a;
    const std::vector<std::pair<const char*, std::string>> cases = {
        {"garbage", "this is not a frame at all, just some text"},
        {"oversized length", header(0xffffffffu, 1, 0, 0, 1)},
        {"oversized data", header(kMaxDataPayload + 1, 3, 0, 0, 1)},
        {"unknown type", header(0, 99, 0, 0, 1)},
        {"type zero", header(0, 0, 0, 0, 1)},
        {"flags", header(2, 1, 0, 1, 1) + "{}"},
        {"bad stream", header(0, 5, 7, 0, 1)},
        {"short credit", header(2, 4, 1, 0, 1) + "xx"},
        {"request id 0", header(2, 1, 0, 0, 0) + "{}"},
        {"response from host", header(2, 2, 0, 0, 5) + "{}"},
        {"data before hello", header(3, 3, 0, 0, 1) + "abc"},
    };
    for (const auto& [name, bytes] : cases) {
        SCOPED_TRACE(name);
        RawConn r(a.connect_raw());
        r.send_bytes(bytes);
        const auto f = r.next();
        if (f) {  // an explanation first, if the agent could send one
            EXPECT_EQ(f->header.type, FrameType::Response);
            EXPECT_EQ(f->header.id, 0u);
            EXPECT_EQ(RawConn::error_code(*f), "protocol");
        }
        EXPECT_TRUE(r.closed_by_peer());
    }
    EXPECT_GE(a.agent().stats().protocol_errors, cases.size());
    expect_agent_alive(a);
}

TEST(AgentRobustness, TruncatedFramesAreDropped) {
    AgentThread a;
    for (std::size_t cut : {std::size_t{1}, std::size_t{5}, kHeaderSize, kHeaderSize + 3}) {
        RawConn r(a.connect_raw());
        std::string s;
        append_frame(s, FrameType::Request, 0, 1, R"({"op":"hello","protocol":"vessel-agent"})");
        r.send_bytes(s.substr(0, cut));
    }  // closed mid-frame
    std::this_thread::sleep_for(50ms);
    expect_agent_alive(a);
}

TEST(AgentRobustness, BadRequestsGetErrorsAndTheConnectionSurvives) {
    AgentThread a;
    RawConn r(a.connect_raw());
    r.request(7, {{"op", "list"}});
    auto f = r.response();
    ASSERT_TRUE(f);
    EXPECT_EQ(f->header.id, 7u);
    EXPECT_EQ(RawConn::error_code(*f), "handshake_required");

    r.request(8, {{"op", "hello"}, {"protocol", "vessel-agent"}, {"versions", {99}}});
    f = r.response();
    ASSERT_TRUE(f);
    EXPECT_EQ(RawConn::error_code(*f), "unsupported_version");
    r.request(9, {{"op", "hello"}, {"protocol", "other"}, {"versions", {1}}});
    EXPECT_EQ(RawConn::error_code(*r.response()), "bad_request");
    r.hello();

    const std::vector<std::pair<std::string, std::string>> cases = {
        {"not json", "bad_request"},
        {"[1,2,3]", "bad_request"},
        {std::string(10000, '[') + std::string(10000, ']'), "bad_request"},
        {R"({"op":42})", "bad_request"},
        {R"({"no_op":true})", "bad_request"},
        {R"({"op":"frobnicate"})", "unknown_op"},
        {R"({"op":"start"})", "bad_request"},
        {R"({"op":"start","process":{"argv":"sh"}})", "bad_request"},
        {R"({"op":"start","process":{"argv":[]}})", "bad_request"},
        {R"({"op":"start","process":{"argv":["true"],"user":{"uid":-5,"gid":0}}})", "bad_request"},
        {R"({"op":"start","process":{"argv":["true"],"rlimits":[{"type":"X","soft":1,"hard":1}]}})",
         "bad_request"},
        {R"({"op":"signal","id":1})", "not_found"},
        {R"({"op":"signal","id":"one","signal":9})", "bad_request"},
        {R"({"op":"wait","id":0})", "bad_request"},
        {R"({"op":"wait","id":99999999999})", "bad_request"},
        {R"({"op":"resize","id":1,"rows":1})", "not_found"},
        {R"({"op":"shutdown","status":256})", "bad_request"},
        {R"({"op":"shutdown"})", "bad_request"},
        {R"({"op":"hello","protocol":"vessel-agent","versions":[1]})", "bad_request"},
        {std::string("{\"op\":\"list\"}\0", 14), "bad_request"},
        {"{\"op\":\"\xff\xfe\"}", "bad_request"},
    };
    std::uint32_t id = 100;
    for (const auto& [payload, code] : cases) {
        SCOPED_TRACE(payload.substr(0, 80));
        r.send_frame(FrameType::Request, 0, ++id, payload);
        const auto resp = r.response();
        ASSERT_TRUE(resp);
        EXPECT_EQ(resp->header.id, id);
        EXPECT_EQ(RawConn::error_code(*resp), code) << resp->payload;
    }
    // Still usable afterwards.
    r.request(++id, {{"op", "list"}});
    const auto resp = r.response();
    ASSERT_TRUE(resp);
    EXPECT_EQ(RawConn::body(*resp), Json({{"processes", Json::array()}}));
}

TEST(AgentRobustness, StreamFramesForUnknownProcessesAreIgnored) {
    AgentThread a;
    RawConn r(a.connect_raw());
    r.hello();
    r.send_frame(FrameType::Data, kStdin, 4242, "data");
    std::string credit;
    append_credit(credit, kStdout, 4242, 100);
    r.send_bytes(credit);
    r.send_frame(FrameType::Eof, kStdin, 4242, "");
    r.request(2, {{"op", "list"}});
    const auto f = r.response();
    ASSERT_TRUE(f);
    EXPECT_EQ(RawConn::error_code(*f), "");
    EXPECT_GE(a.agent().stats().ignored_frames, 3u);
}

TEST(AgentRobustness, CreditViolationsCloseTheConnection) {
    AgentThread a;
    for (int variant = 0; variant < 3; ++variant) {
        SCOPED_TRACE(variant);
        RawConn r(a.connect_raw());
        r.hello();
        // sleep never reads stdin, so the agent cannot pass on more than a pipe's worth.
        r.request(2, {{"op", "start"}, {"process", {{"argv", {"sleep", "100"}}}}});
        const auto started = r.response();
        ASSERT_TRUE(started);
        const std::uint32_t id = RawConn::body(*started)["id"];
        if (variant == 0) {
            // Far more stdin than the agent granted (kStdinWindow plus what it passed on).
            const std::string chunk(kMaxDataPayload, 'x');
            for (std::uint32_t sent = 0; sent <= 4 * kStdinWindow; sent += kMaxDataPayload)
                r.send_frame(FrameType::Data, kStdin, id, chunk);
        } else if (variant == 1) {
            std::string c;
            append_credit(c, kStdout, id, kMaxWindow);
            append_credit(c, kStdout, id, 1);
            r.send_bytes(c);
        } else {
            r.send_frame(FrameType::Data, kStdout, id, "wrong direction");
        }
        EXPECT_TRUE(r.closed_by_peer());
    }
    expect_agent_alive(a);
}

TEST(AgentRobustness, RandomFramesNeverCrashTheAgent) {
    AgentThread a;
    std::mt19937 rng(1234);
    auto rnd = [&](std::uint32_t n) { return static_cast<std::uint32_t>(rng() % n); };
    const std::vector<std::string> requests = {
        R"({"op":"list"})",
        R"({"op":"start","process":{"argv":["true"]}})",
        R"({"op":"start","process":{"argv":["cat"],"tty":true}})",
        R"({"op":"wait","id":1})",
        R"({"op":"signal","id":2,"signal":9})",
        R"({"op":"resize","id":3,"rows":10,"cols":10})",
    };
    for (int round = 0; round < 60; ++round) {
        RawConn r(a.connect_raw());
        if (round % 2 == 0) r.hello();
        std::string bytes;
        for (int i = 0; i < 40; ++i) {
            const std::uint32_t kind = rnd(6);
            std::string payload;
            if (kind == 0) {
                payload = requests[rnd(requests.size())];
                if (rnd(3) == 0) payload.resize(rnd(payload.size() + 1));  // cut JSON
                append_frame(bytes, FrameType::Request, 0, 1 + rnd(5), payload);
            } else if (kind == 1) {
                payload.resize(rnd(2000));
                for (auto& ch : payload) ch = static_cast<char>(rng());
                append_frame(bytes, FrameType::Data, kStdin, 1 + rnd(4), payload);
            } else if (kind == 2) {
                append_credit(bytes, static_cast<std::uint8_t>(1 + rnd(2)), 1 + rnd(4), rnd(70000));
            } else if (kind == 3) {
                append_frame(bytes, FrameType::Eof, static_cast<std::uint8_t>(rnd(3)), 1 + rnd(4),
                             "");
            } else if (kind == 4) {
                std::string h = header(rnd(100), static_cast<std::uint8_t>(rnd(8)),
                                       static_cast<std::uint8_t>(rnd(4)),
                                       static_cast<std::uint16_t>(rnd(2)), rnd(5));
                bytes += h + std::string(rnd(100), 'z');
            } else {
                for (std::uint32_t k = rnd(50); k > 0; --k) bytes += static_cast<char>(rng());
            }
        }
        r.send_bytes(bytes);
        r.next(20ms);
    }
    expect_agent_alive(a);
    // Clean up whatever the random requests left running.
    auto c = a.client();
    for (const auto& p : c->list())
        if (p.running) c->signal_async(p.id, SIGKILL);
    c->list();
}

TEST(AgentRobustness, HostThatStopsReadingCostsBoundedMemory) {
    AgentThread a;
    RawConn r(a.connect_raw());
    r.hello();
    // A flood of list requests whose answers are never read: the agent stops reading this
    // connection once its unsent output passes the high-water mark, instead of buffering.
    std::string s;
    for (int i = 0; i < 200000; ++i)
        append_frame(s, FrameType::Request, 0, 2 + static_cast<std::uint32_t>(i),
                     R"({"op":"list"})");
    std::thread flood([&] { r.send_bytes(s); });
    std::this_thread::sleep_for(300ms);
    expect_agent_alive(a);
    shutdown(r.fd(), SHUT_RDWR);
    flood.join();
}

// ---- the client against a hostile agent ---------------------------------------------------

// Plays the agent: answers the hello with `hello_reply` bytes (raw), then `after` bytes.
class FakeAgent {
  public:
    FakeAgent(std::string hello_reply, std::string after = {}) {
        auto [host, guest] = test::socket_pair();
        host_ = std::move(host);
        thread_ = std::thread([fd = std::move(guest), hello_reply, after]() mutable {
            FrameReader reader;
            char buf[65536];
            Frame f;
            bool replied = false;
            for (;;) {
                const ssize_t n = read(fd.get(), buf, sizeof buf);
                if (n <= 0) return;
                reader.feed(buf, static_cast<std::size_t>(n));
                while (reader.next(f) == FrameReader::Status::kFrame) {
                    if (!replied) {
                        (void)!write(fd.get(), hello_reply.data(), hello_reply.size());
                        replied = true;
                    } else if (!after.empty()) {
                        (void)!write(fd.get(), after.data(), after.size());
                        after.clear();
                    }
                }
            }
        });
    }
    ~FakeAgent() {
        if (thread_.joinable()) thread_.join();
    }
    UniqueFd take() { return std::move(host_); }

  private:
    UniqueFd host_;
    std::thread thread_;
};

std::string response(std::uint32_t id, std::string_view body) {
    std::string s;
    append_frame(s, FrameType::Response, 0, id, body);
    return s;
}

const std::string kGoodHello = response(1, R"({"protocol":"vessel-agent","version":1})");

TEST(AgentRobustness, ClientRejectsBadHandshakes) {
    const std::vector<std::string> replies = {
        "garbage garbage garbage",
        header(0xffffffffu, 2, 0, 0, 1),
        response(1, "not json"),
        response(1, R"({"version":7})"),
        response(1, R"({"version":"1"})"),
        response(2, R"({"version":1})"),  // answer to a request never made
        response(0, R"({"error":{"code":"limit","message":"too many connections"}})"),
        response(1, R"({"error":"not an object"})"),
        "",  // never answers: the request times out
    };
    for (const auto& reply : replies) {
        SCOPED_TRACE(reply.substr(0, 40));
        std::optional<FakeAgent> fake;
        fake.emplace(reply);
        UniqueFd fd = fake->take();
        ClientOptions o;
        o.request_timeout = 2s;
        try {
            Client c(std::move(fd), o);
            ADD_FAILURE() << "handshake accepted";
        } catch (const ProtocolError&) {
        } catch (const AgentError&) {
        }
        fake.reset();
    }
}

TEST(AgentRobustness, ClientRejectsBadTrafficAfterHandshake) {
    const std::vector<std::pair<const char*, std::string>> cases = {
        {"start reply without id", response(2, R"({"pid":5})")},
        {"start reply with huge id", response(2, R"({"id":99999999999,"pid":5})")},
        {"credit beyond max",
         [] {
             std::string s = response(2, R"({"id":1,"pid":5})");
             append_credit(s, kStdin, 1, kMaxWindow);
             append_credit(s, kStdin, 1, kMaxWindow);
             return s;
         }()},
        {"data beyond credit",
         [] {
             std::string s = response(2, R"({"id":1,"pid":5})");
             // The client grants 1 KiB below; 2 KiB arrive.
             append_frame(s, FrameType::Data, kStdout, 1, std::string(2048, 'x'));
             return s;
         }()},
        {"data on stdin",
         [] {
             std::string s = response(2, R"({"id":1,"pid":5})");
             append_frame(s, FrameType::Data, kStdin, 1, "x");
             return s;
         }()},
        {"request from agent",
         [] {
             std::string s = response(2, R"({"id":1,"pid":5})");
             append_frame(s, FrameType::Request, 0, 9, "{}");
             return s;
         }()},
        {"truncated", response(2, R"({"id":1,"pid":5})").substr(0, 15)},
    };
    for (const auto& [name, after] : cases) {
        SCOPED_TRACE(name);
        FakeAgent fake(kGoodHello, after);
        ClientOptions o;
        o.request_timeout = 1s;
        o.output_window = 1024;
        Client c(fake.take(), o);
        try {
            const Started s = c.start(ProcessSpec{.argv = {"x"}});
            // Some violations only show once the following frames are read.
            const auto deadline = std::chrono::steady_clock::now() + 2s;
            while (!c.broken() && std::chrono::steady_clock::now() < deadline) c.pump(50);
            c.check();
            ADD_FAILURE() << "accepted; process " << s.id;
        } catch (const ProtocolError& e) {
            EXPECT_NE(std::string(e.what()), "");
        }
    }
}

TEST(AgentRobustness, ClientSurvivesRandomReplies) {
    std::mt19937 rng(99);
    for (int round = 0; round < 50; ++round) {
        std::string after = response(2, R"({"id":1,"pid":5})");
        for (int i = 0; i < 20; ++i) {
            const int kind = static_cast<int>(rng() % 4);
            if (kind == 0)
                append_frame(after, FrameType::Data, static_cast<std::uint8_t>(rng() % 3), 1,
                             std::string(rng() % 300, 'd'));
            else if (kind == 1)
                append_credit(after, static_cast<std::uint8_t>(rng() % 3), rng() % 3,
                              static_cast<std::uint32_t>(rng()));
            else if (kind == 2)
                append_frame(after, FrameType::Eof, static_cast<std::uint8_t>(rng() % 3), 1, "");
            else
                for (int k = static_cast<int>(rng() % 30); k > 0; --k)
                    after += static_cast<char>(rng());
        }
        FakeAgent fake(kGoodHello, after);
        ClientOptions o;
        o.request_timeout = 500ms;
        try {
            Client c(fake.take(), o);
            c.start(ProcessSpec{.argv = {"x"}});
            for (int i = 0; i < 5 && !c.broken(); ++i) c.pump(20);
            char buf[512];
            if (!c.broken()) c.read_output(1, kStdout, buf, sizeof buf);
        } catch (const std::exception&) {
            // Any clean error is fine; crashing or hanging is not.
        }
    }
}

}  // namespace
}  // namespace vessel::agent
