// The virtio-vsock connection state machine (virtio/vsock/connection.h), with no sockets:
// connect/accept/refuse, shutdown in both directions, RST, timeouts, credit accounting both
// ways, credit updates as the host consumes, and never exceeding the guest's credit.
#include "virtio/vsock/connection.h"

#include <gtest/gtest.h>

namespace vessel::virtio::vsock {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kCid = 7;
constexpr uint32_t kHostPort = 1u << 30;
constexpr uint32_t kGuestPort = 1234;

ConnectionSettings settings(uint32_t buf_alloc = 64 << 10) {
    ConnectionSettings s;
    s.guest_cid = kCid;
    s.buf_alloc = buf_alloc;
    s.connect_timeout = 2s;
    s.close_timeout = 5s;
    return s;
}

// A packet from the guest on this connection.
PacketHeader from_guest(uint16_t o, uint32_t len = 0, uint32_t flags = 0,
                        uint32_t buf_alloc = 256 << 10, uint32_t fwd_cnt = 0) {
    PacketHeader h;
    h.src_cid = kCid;
    h.dst_cid = kHostCid;
    h.src_port = kGuestPort;
    h.dst_port = kHostPort;
    h.len = len;
    h.type = kTypeStream;
    h.op = o;
    h.flags = flags;
    h.buf_alloc = buf_alloc;
    h.fwd_cnt = fwd_cnt;
    return h;
}

class ConnectionTest : public ::testing::Test {
  protected:
    // Host-initiated and answered: streaming.
    Connection established(uint32_t buf_alloc = 64 << 10, uint32_t peer_buf = 256 << 10) {
        Connection c =
            Connection::connect_to_guest({kHostPort, kGuestPort}, settings(buf_alloc), t0);
        EXPECT_EQ(c.take_control().op, op::kRequest);
        EXPECT_EQ(c.on_packet(from_guest(op::kResponse, 0, 0, peer_buf), t0), Verdict::kOk);
        c.on_ok_sent();
        return c;
    }
    // Drains every owed control packet.
    std::vector<PacketHeader> drain(Connection& c) {
        std::vector<PacketHeader> v;
        while (c.has_control()) v.push_back(c.take_control());
        return v;
    }
    TimePoint t0 = Clock::now();
};

TEST_F(ConnectionTest, HostInitiatedConnect) {
    Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
    EXPECT_EQ(c.state().phase, Phase::kConnecting);
    EXPECT_TRUE(c.state().host_initiated);
    EXPECT_FALSE(c.can_send_data());
    EXPECT_EQ(c.deadline(), t0 + 2s);
    ASSERT_TRUE(c.has_control());
    PacketHeader r = c.take_control();
    EXPECT_EQ(r.op, op::kRequest);
    EXPECT_EQ(r.src_cid, kHostCid);
    EXPECT_EQ(r.dst_cid, kCid);
    EXPECT_EQ(r.src_port, kHostPort);
    EXPECT_EQ(r.dst_port, kGuestPort);
    EXPECT_EQ(r.type, kTypeStream);
    EXPECT_EQ(r.buf_alloc, 64u << 10);
    EXPECT_EQ(r.fwd_cnt, 0u);
    EXPECT_EQ(r.len, 0u);
    EXPECT_FALSE(c.has_control());

    EXPECT_EQ(c.on_packet(from_guest(op::kResponse, 0, 0, 100000, 0), t0), Verdict::kOk);
    EXPECT_EQ(c.state().phase, Phase::kEstablished);
    EXPECT_TRUE(c.ok_owed());
    EXPECT_FALSE(c.deadline());
    EXPECT_TRUE(c.can_send_data());
    EXPECT_EQ(c.send_credit(), 100000u);
    c.on_ok_sent();
    EXPECT_FALSE(c.ok_owed());
}

TEST_F(ConnectionTest, ResponseBeforeOurRequestWentOutIsAProtocolError) {
    Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
    EXPECT_EQ(c.on_packet(from_guest(op::kResponse), t0), Verdict::kProtocolError);
    EXPECT_TRUE(c.closed());
    // The guest never saw our REQUEST: nothing to reset.
    EXPECT_FALSE(c.has_control());
    EXPECT_TRUE(c.finished());
}

TEST_F(ConnectionTest, GuestRefusesOurRequest) {
    Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
    c.take_control();
    EXPECT_EQ(c.on_packet(from_guest(op::kRst), t0), Verdict::kReset);
    EXPECT_TRUE(c.closed());
    EXPECT_FALSE(c.ok_owed());
    EXPECT_TRUE(c.finished());  // no RST answers an RST
    // Anything later is ignored.
    EXPECT_EQ(c.on_packet(from_guest(op::kResponse), t0), Verdict::kIgnored);
}

TEST_F(ConnectionTest, RequestTimesOut) {
    Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
    c.take_control();
    EXPECT_FALSE(c.on_timer(t0 + 1999ms));
    EXPECT_FALSE(c.closed());
    EXPECT_TRUE(c.on_timer(t0 + 2s));
    EXPECT_TRUE(c.closed());
    EXPECT_FALSE(c.deadline());
    auto out = drain(c);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].op, op::kRst);
    EXPECT_EQ(out[0].dst_port, kGuestPort);
    EXPECT_TRUE(c.finished());

    // Timed out before the REQUEST even went out (no RX buffers): nothing owed.
    Connection d = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
    EXPECT_TRUE(d.on_timer(t0 + 3s));
    EXPECT_TRUE(d.finished());
}

TEST_F(ConnectionTest, GuestInitiatedAccept) {
    PacketHeader req = from_guest(op::kRequest, 0, 0, 50000, 0);
    req.dst_port = 5000;
    Connection c = Connection::accept_from_guest(req, settings());
    EXPECT_EQ(c.key(), (ConnKey{5000, kGuestPort}));
    EXPECT_FALSE(c.state().host_initiated);
    EXPECT_EQ(c.state().phase, Phase::kEstablished);
    EXPECT_FALSE(c.deadline());
    // RESPONSE first, data after.
    EXPECT_FALSE(c.can_send_data());
    PacketHeader r = c.take_control();
    EXPECT_EQ(r.op, op::kResponse);
    EXPECT_EQ(r.src_port, 5000u);
    EXPECT_EQ(r.dst_port, kGuestPort);
    EXPECT_TRUE(c.can_send_data());
    EXPECT_EQ(c.send_credit(), 50000u);
    EXPECT_FALSE(c.ok_owed());  // no OK line for guest-initiated connections
}

TEST_F(ConnectionTest, RefusedGuestRequestGetsRst) {
    PacketHeader req = from_guest(op::kRequest);
    PacketHeader r = rst_reply(req);
    EXPECT_EQ(r.op, op::kRst);
    EXPECT_EQ(r.src_cid, kHostCid);
    EXPECT_EQ(r.dst_cid, kCid);
    EXPECT_EQ(r.src_port, kHostPort);
    EXPECT_EQ(r.dst_port, kGuestPort);
    EXPECT_EQ(r.type, kTypeStream);
    EXPECT_EQ(r.len, 0u);
}

TEST_F(ConnectionTest, GuestDataWithinCreditAndCreditViolation) {
    Connection c = established(64 << 10);
    EXPECT_EQ(c.on_packet(from_guest(op::kRw, 40000), t0), Verdict::kData);
    EXPECT_EQ(c.buffered(), 40000u);
    c.on_forwarded(10000);
    EXPECT_EQ(c.buffered(), 30000u);
    EXPECT_EQ(c.state().fwd_cnt, 10000u);
    // 35,536 bytes free: one more byte than that is a lie about credit.
    EXPECT_EQ(c.on_packet(from_guest(op::kRw, 35536), t0), Verdict::kData);
    EXPECT_EQ(c.buffered(), 64u << 10);
    EXPECT_EQ(c.on_packet(from_guest(op::kRw, 1), t0), Verdict::kCreditError);
    EXPECT_TRUE(c.closed());
    auto out = drain(c);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].op, op::kRst);
}

TEST_F(ConnectionTest, CreditUpdateWhenTheGuestsViewRunsLow) {
    Connection c = established(64 << 10);
    drain(c);
    // 10 KiB sent and forwarded: the guest still believes 54 KiB are free.
    c.on_packet(from_guest(op::kRw, 10 << 10), t0);
    c.on_forwarded(10 << 10);
    EXPECT_FALSE(c.has_control());
    // 30 KiB more: the guest believes only 24 KiB are free, below half: tell it.
    c.on_packet(from_guest(op::kRw, 30 << 10), t0);
    EXPECT_FALSE(c.has_control());  // nothing forwarded since: no news to give
    c.on_forwarded(30 << 10);
    ASSERT_TRUE(c.has_control());
    PacketHeader u = c.take_control();
    EXPECT_EQ(u.op, op::kCreditUpdate);
    EXPECT_EQ(u.fwd_cnt, 40u << 10);
    EXPECT_EQ(u.buf_alloc, 64u << 10);
    EXPECT_EQ(c.state().last_sent_fwd_cnt, 40u << 10);
    EXPECT_FALSE(c.has_control());

    // A data packet carries the counters too, and replaces an owed update.
    c.on_packet(from_guest(op::kRw, 40 << 10), t0);
    c.on_forwarded(40 << 10);
    ASSERT_TRUE(c.has_control());
    PacketHeader d = c.data_header(100);
    EXPECT_EQ(d.op, op::kRw);
    EXPECT_EQ(d.len, 100u);
    EXPECT_EQ(d.fwd_cnt, 80u << 10);
    EXPECT_FALSE(c.has_control());

    // CREDIT_REQUEST is answered even with nothing new.
    c.on_packet(from_guest(op::kCreditRequest), t0);
    auto out = drain(c);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].op, op::kCreditUpdate);
}

TEST_F(ConnectionTest, NeverMoreThanThePeersCredit) {
    Connection c = established(64 << 10, 10000);
    EXPECT_EQ(c.send_credit(), 10000u);
    c.data_header(6000);
    EXPECT_EQ(c.send_credit(), 4000u);
    c.data_header(4000);
    EXPECT_EQ(c.send_credit(), 0u);
    // The guest consumed 6000 bytes.
    c.on_packet(from_guest(op::kCreditUpdate, 0, 0, 10000, 6000), t0);
    EXPECT_EQ(c.send_credit(), 6000u);
    // The guest shrinks its buffer below what is in flight: no credit, not a wrapped one.
    c.on_packet(from_guest(op::kCreditUpdate, 0, 0, 3000, 6000), t0);
    EXPECT_EQ(c.send_credit(), 0u);
    // A lying fwd_cnt (ahead of what we ever sent) gives nothing either.
    c.on_packet(from_guest(op::kCreditUpdate, 0, 0, 10000, 50000), t0);
    EXPECT_EQ(c.send_credit(), 0u);
    c.on_packet(from_guest(op::kCreditUpdate, 0, 0, 0xffffffff, 10000), t0);
    EXPECT_EQ(c.send_credit(), 0xffffffffu);
    EXPECT_EQ(c.state().tx_cnt, 10000u);
}

TEST_F(ConnectionTest, CountersWrapAround) {
    Connection c = established(64 << 10, 1 << 20);
    // 4 GiB and a bit through both directions, 64 KiB at a time.
    uint32_t guest_fwd = 0;
    for (uint64_t sent = 0; sent < (4ull << 30) + (1 << 20); sent += 64 << 10) {
        ASSERT_EQ(c.send_credit(), 1u << 20) << sent;
        c.data_header(64 << 10);
        guest_fwd += 64 << 10;
        c.on_packet(from_guest(op::kCreditUpdate, 0, 0, 1 << 20, guest_fwd), t0);
        ASSERT_EQ(c.on_packet(from_guest(op::kRw, 64 << 10, 0, 1 << 20, guest_fwd), t0),
                  Verdict::kData)
            << sent;
        c.on_forwarded(64 << 10);
        drain(c);
    }
    EXPECT_EQ(c.buffered(), 0u);
    EXPECT_FALSE(c.closed());
}

TEST_F(ConnectionTest, GuestShutsSendThenHostEof) {
    Connection c = established();
    drain(c);
    c.on_packet(from_guest(op::kRw, 100), t0);
    EXPECT_EQ(c.on_packet(from_guest(op::kShutdown, 0, kShutdownSend), t0), Verdict::kOk);
    // SHUT_WR on the host socket once its bytes are out.
    EXPECT_TRUE(c.wants_host_shut_wr());
    c.on_forwarded(100);
    c.on_host_shut_wr();
    EXPECT_FALSE(c.wants_host_shut_wr());
    EXPECT_EQ(c.state().phase, Phase::kEstablished);
    // The host can still send.
    EXPECT_TRUE(c.can_send_data());
    // The guest cannot.
    EXPECT_EQ(c.on_packet(from_guest(op::kRw, 1), t0), Verdict::kProtocolError);
    EXPECT_TRUE(c.closed());
}

TEST_F(ConnectionTest, HostEofThenGuestCloses) {
    Connection c = established();
    drain(c);
    c.on_host_eof(t0);
    EXPECT_FALSE(c.can_send_data());
    auto out = drain(c);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].op, op::kShutdown);
    EXPECT_EQ(out[0].flags, kShutdownSend);
    // The guest may still send to the host.
    EXPECT_EQ(c.on_packet(from_guest(op::kRw, 10), t0), Verdict::kData);
    c.on_forwarded(10);
    // Its close: both directions done, drain then RST.
    c.on_packet(from_guest(op::kShutdown, 0, kShutdownBoth), t0 + 1s);
    EXPECT_TRUE(c.draining());
    EXPECT_EQ(c.deadline(), t0 + 6s);
    EXPECT_FALSE(c.wants_host_shut_wr());  // closing the socket says it all
    c.on_drained();
    EXPECT_TRUE(c.closed());
    out = drain(c);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].op, op::kRst);
    EXPECT_TRUE(c.finished());
}

TEST_F(ConnectionTest, GuestShutsBothAndTheDrainTimesOut) {
    Connection c = established();
    drain(c);
    c.on_packet(from_guest(op::kRw, 1000), t0);
    c.on_packet(from_guest(op::kShutdown, 0, kShutdownRcv), t0);
    EXPECT_FALSE(c.can_send_data());
    EXPECT_FALSE(c.draining());
    c.on_packet(from_guest(op::kShutdown, 0, kShutdownSend), t0);
    EXPECT_TRUE(c.draining());
    EXPECT_FALSE(c.on_timer(t0 + 4s));
    EXPECT_TRUE(c.on_timer(t0 + 5s));
    EXPECT_TRUE(c.closed());
    EXPECT_EQ(drain(c).at(0).op, op::kRst);
}

TEST_F(ConnectionTest, RstReplacesEverythingOwed) {
    Connection c = established();
    c.on_host_eof(t0);
    c.on_packet(from_guest(op::kCreditRequest), t0);
    ASSERT_TRUE(c.has_control());
    c.on_host_error();
    auto out = drain(c);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].op, op::kRst);
    EXPECT_FALSE(c.can_send_data());
}

TEST_F(ConnectionTest, OpsThePhaseDoesNotAllow) {
    {
        Connection c = established();
        EXPECT_EQ(c.on_packet(from_guest(op::kRequest), t0), Verdict::kProtocolError);
    }
    {
        Connection c = established();
        EXPECT_EQ(c.on_packet(from_guest(op::kResponse), t0), Verdict::kProtocolError);
    }
    {
        Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
        c.take_control();
        EXPECT_EQ(c.on_packet(from_guest(op::kShutdown, 0, kShutdownSend), t0),
                  Verdict::kProtocolError);
    }
    {
        Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
        c.take_control();
        EXPECT_EQ(c.on_packet(from_guest(op::kRw, 5), t0), Verdict::kProtocolError);
        EXPECT_EQ(drain(c).at(0).op, op::kRst);
    }
    {
        // A credit update while connecting is harmless.
        Connection c = Connection::connect_to_guest({kHostPort, kGuestPort}, settings(), t0);
        c.take_control();
        EXPECT_EQ(c.on_packet(from_guest(op::kCreditUpdate), t0), Verdict::kOk);
        EXPECT_FALSE(c.closed());
    }
    {
        Connection c = established();
        EXPECT_EQ(c.on_packet(from_guest(0x99), t0), Verdict::kProtocolError);
    }
}

TEST_F(ConnectionTest, GuestRstOnEstablished) {
    Connection c = established();
    c.on_packet(from_guest(op::kRw, 500), t0);
    EXPECT_EQ(c.on_packet(from_guest(op::kRst), t0), Verdict::kReset);
    EXPECT_TRUE(c.finished());
    c.abort();  // no-op once closed
    EXPECT_FALSE(c.has_control());
}

}  // namespace
}  // namespace vessel::virtio::vsock
