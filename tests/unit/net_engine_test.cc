// The shared I/O engines on packet files: message reads wait for a datagram without blocking
// anyone, a short transfer is the result, and cancel_all() leaves nothing in the kernel.
// Datagram sockets stand in for a tap here (same semantics: one read, one packet); the device
// tests run the engines on a real tap.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "virtio/io/engine.h"
#include "virtio/io/sync_engine.h"
#include "virtio/io/uring_engine.h"
#include "vmm/fd.h"

namespace vessel::virtio::io {
namespace {

std::vector<Completion> reap_n(IoEngine& e, size_t n) {
    std::vector<Completion> out;
    e.commit();
    while (out.size() < n) {
        if (e.reap(out) > 0) continue;
        pollfd p{e.completion_fd(), POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) throw std::runtime_error("timed out waiting for I/O");
    }
    return out;
}

bool completion_fd_readable(IoEngine& e, int ms) {
    pollfd p{e.completion_fd(), POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
}

class MessageTest : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        const bool uring = GetParam().rfind("io_uring", 0) == 0;
        if (uring && !probe_io_uring().ok) GTEST_SKIP() << probe_io_uring().reason;
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        dev_ = UniqueFd(sv[0]);  // the engine's file
        peer_ = UniqueFd(sv[1]);
        // The tap is O_NONBLOCK: io_uring then hands -EAGAIN back instead of waiting itself.
        if (GetParam().ends_with("nonblock")) {
            ASSERT_EQ(::fcntl(dev_.get(), F_SETFL, O_RDWR | O_NONBLOCK), 0);
        }
        int fds[] = {dev_.get()};
        if (uring)
            engine_ = std::make_unique<UringEngine>(16, fds);
        else
            engine_ = std::make_unique<SyncEngine>(fds);
    }

    void send(const std::vector<uint8_t>& d) {
        ASSERT_EQ(::send(peer_.get(), d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
    }
    static std::vector<uint8_t> dgram(size_t n, uint8_t seed) {
        std::vector<uint8_t> d(n);
        for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(seed + i);
        return d;
    }
    Op read_op(iovec& v) {
        Op op;
        op.kind = OpKind::Read;
        op.iov = {&v, 1};
        op.len = v.iov_len;
        op.message = true;
        return op;
    }

    UniqueFd dev_, peer_;
    std::unique_ptr<IoEngine> engine_;
};

TEST_P(MessageTest, ReadWaitsForADatagramAndReturnsItsLength) {
    std::vector<uint8_t> buf(2048, 0xee);
    iovec v{buf.data(), buf.size()};
    auto t0 = std::chrono::steady_clock::now();
    engine_->submit(read_op(v), 7);
    engine_->commit();
    std::vector<Completion> out;
    EXPECT_EQ(engine_->reap(out), 0u);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
    EXPECT_FALSE(completion_fd_readable(*engine_, 50)) << "completion without a datagram";
    EXPECT_EQ(engine_->in_flight(), 1u);

    auto d = dgram(100, 3);
    send(d);
    auto c = reap_n(*engine_, 1);
    EXPECT_EQ(c[0].cookie, 7u);
    EXPECT_EQ(c[0].result, 100);  // short: that is the datagram, not resubmitted
    EXPECT_EQ(0, std::memcmp(buf.data(), d.data(), d.size()));
    EXPECT_EQ(buf[100], 0xee);
    EXPECT_EQ(engine_->in_flight(), 0u);
}

TEST_P(MessageTest, SeveralReadsInFlightEachGetOneDatagram) {
    constexpr int kReads = 8;
    std::vector<std::vector<uint8_t>> bufs(kReads, std::vector<uint8_t>(4096));
    std::vector<iovec> iov(kReads);
    for (int i = 0; i < kReads; ++i) {
        iov[i] = {bufs[i].data(), bufs[i].size()};
        engine_->submit(read_op(iov[i]), i);
    }
    engine_->commit();
    for (int i = 0; i < kReads; ++i) send(dgram(100 + 10 * i, static_cast<uint8_t>(i)));
    auto done = reap_n(*engine_, kReads);
    std::vector<int> seen(kReads, 0);
    for (const Completion& c : done) {
        ASSERT_GE(c.result, 100);
        const int which = static_cast<int>((c.result - 100) / 10);
        ASSERT_LT(which, kReads);
        ++seen[which];
        EXPECT_EQ(bufs[c.cookie][0], static_cast<uint8_t>(which));  // the buffer holds it
    }
    for (int i = 0; i < kReads; ++i) EXPECT_EQ(seen[i], 1) << i;
    // Nothing pending: a datagram arriving now wakes nobody.
    send(dgram(50, 9));
    EXPECT_FALSE(completion_fd_readable(*engine_, 50));
}

TEST_P(MessageTest, WriteSendsOneDatagramFromSeveralBuffers) {
    auto a = dgram(12, 1), b = dgram(300, 2), c = dgram(5, 3);
    iovec v[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
    Op op;
    op.kind = OpKind::Write;
    op.iov = v;
    op.len = 317;
    op.message = true;
    op.offset = 12345;  // ignored
    engine_->submit(op, 1);
    auto done = reap_n(*engine_, 1);
    EXPECT_EQ(done[0].result, 317);
    std::vector<uint8_t> got(1000);
    ssize_t n = ::recv(peer_.get(), got.data(), got.size(), MSG_DONTWAIT);
    ASSERT_EQ(n, 317);
    got.resize(317);
    std::vector<uint8_t> want = a;
    want.insert(want.end(), b.begin(), b.end());
    want.insert(want.end(), c.begin(), c.end());
    EXPECT_EQ(got, want);
}

// After cancel_all() nothing pending can consume a datagram or write a buffer, and the engine
// keeps working.
TEST_P(MessageTest, CancelAllDropsPendingReads) {
    constexpr int kReads = 6;
    std::vector<std::vector<uint8_t>> bufs(kReads, std::vector<uint8_t>(256, 0xee));
    std::vector<iovec> iov(kReads);
    for (int i = 0; i < kReads; ++i) {
        iov[i] = {bufs[i].data(), bufs[i].size()};
        engine_->submit(read_op(iov[i]), i);
    }
    engine_->commit();
    EXPECT_EQ(engine_->in_flight(), static_cast<size_t>(kReads));
    engine_->cancel_all();
    EXPECT_EQ(engine_->in_flight(), 0u);
    if (auto* u = dynamic_cast<UringEngine*>(engine_.get())) {
        EXPECT_EQ(u->counters().cancelled, static_cast<uint64_t>(kReads));
    }

    auto d = dgram(64, 5);
    send(d);
    std::vector<Completion> out;
    EXPECT_FALSE(completion_fd_readable(*engine_, 50));
    EXPECT_EQ(engine_->reap(out), 0u);
    for (auto& b : bufs) EXPECT_EQ(b, std::vector<uint8_t>(256, 0xee));
    // The datagram is still queued on the socket; a new read gets it.
    std::vector<uint8_t> buf(256);
    iovec v{buf.data(), buf.size()};
    engine_->submit(read_op(v), 99);
    auto c = reap_n(*engine_, 1);
    EXPECT_EQ(c[0].cookie, 99u);
    EXPECT_EQ(c[0].result, 64);
    EXPECT_EQ(0, std::memcmp(buf.data(), d.data(), 64));
}

// Destroying an engine with reads waiting for packets returns (it cancels them).
TEST_P(MessageTest, DestructorCancelsPendingReads) {
    std::vector<uint8_t> buf(256);
    iovec v{buf.data(), buf.size()};
    for (int i = 0; i < 4; ++i) engine_->submit(read_op(v), i);
    engine_->commit();
    auto t0 = std::chrono::steady_clock::now();
    engine_.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

// Reads that find no datagram keep waiting in the kernel: datagrams trickling in one at a time
// long after the submit are each read once, with no new submit.
TEST_P(MessageTest, ReadsThatMissADatagramKeepWaiting) {
    constexpr int kReads = 4;
    std::vector<std::vector<uint8_t>> bufs(kReads, std::vector<uint8_t>(256));
    std::vector<iovec> iov(kReads);
    for (int i = 0; i < kReads; ++i) {
        iov[i] = {bufs[i].data(), bufs[i].size()};
        engine_->submit(read_op(iov[i]), i);
    }
    engine_->commit();
    std::vector<Completion> all;
    for (int i = 0; i < kReads; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        EXPECT_EQ(engine_->in_flight(), static_cast<size_t>(kReads - i));
        send(dgram(40 + i, static_cast<uint8_t>(i)));
        auto c = reap_n(*engine_, 1);
        ASSERT_EQ(c.size(), 1u);
        EXPECT_EQ(c[0].result, 40 + i);
        all.push_back(c[0]);
    }
    EXPECT_EQ(engine_->in_flight(), 0u);
    std::vector<int> cookies;
    for (const Completion& c : all) cookies.push_back(static_cast<int>(c.cookie));
    std::sort(cookies.begin(), cookies.end());
    EXPECT_EQ(cookies, (std::vector<int>{0, 1, 2, 3}));
}

// After reads that found data, the engine sends the next reads straight to the file; those
// that find nothing must still wait for the next datagram, and a burst keeps its order.
TEST_P(MessageTest, ReadsAfterABurstStillWaitAndKeepOrder) {
    constexpr int kBurst = 6;
    std::vector<std::vector<uint8_t>> bufs(kBurst, std::vector<uint8_t>(256));
    std::vector<iovec> iov(kBurst);
    for (int i = 0; i < kBurst; ++i) send(dgram(30 + i, static_cast<uint8_t>(i)));
    for (int i = 0; i < kBurst; ++i) {
        iov[i] = {bufs[i].data(), bufs[i].size()};
        engine_->submit(read_op(iov[i]), i);
        engine_->commit();
        auto c = reap_n(*engine_, 1);
        ASSERT_EQ(c.size(), 1u);
        EXPECT_EQ(c[0].cookie, static_cast<uint64_t>(i));
        EXPECT_EQ(c[0].result, 30 + i);  // datagram i, in order
        EXPECT_EQ(bufs[i][0], static_cast<uint8_t>(i));
    }
    // The file is empty now: two more reads wait, one datagram each.
    for (int i = 0; i < 2; ++i) engine_->submit(read_op(iov[i]), 100 + i);
    engine_->commit();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::vector<Completion> none;
    engine_->reap(none);
    EXPECT_TRUE(none.empty());
    EXPECT_EQ(engine_->in_flight(), 2u);
    send(dgram(50, 7));
    auto c = reap_n(*engine_, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].result, 50);
    send(dgram(51, 8));
    c = reap_n(*engine_, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].result, 51);
    EXPECT_EQ(engine_->in_flight(), 0u);
}

// Errors are results: a write to a socket whose peer is gone.
TEST_P(MessageTest, ErrorsAreCompletions) {
    peer_.reset();
    std::vector<uint8_t> d = dgram(20, 1);
    iovec v{d.data(), d.size()};
    Op op;
    op.kind = OpKind::Write;
    op.iov = {&v, 1};
    op.len = d.size();
    op.message = true;
    engine_->submit(op, 3);
    auto c = reap_n(*engine_, 1);
    EXPECT_LT(c[0].result, 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, MessageTest,
                         ::testing::Values("io_uring", "sync", "io_uring-nonblock",
                                           "sync-nonblock"),
                         [](const auto& info) {
                             std::string n =
                                 info.param.rfind("io_uring", 0) == 0 ? "Uring" : "Sync";
                             return info.param.ends_with("nonblock") ? n + "NonBlocking" : n;
                         });

// The probe covers the cancel opcode, so a ring that passes it can always cancel.
TEST(UringOpcodes, IncludeAsyncCancel) {
    bool found = false;
    for (const UringOpcode& op : kUringOpcodes) found |= op.op == IORING_OP_ASYNC_CANCEL;
    EXPECT_TRUE(found);
}

}  // namespace
}  // namespace vessel::virtio::io
