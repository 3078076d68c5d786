// VsockDevice end to end: a fake guest driver (tests/unit/vsock_test_util.h) on fake virtqueues
// in guest memory on one side, real Unix sockets on the other, the device's own I/O thread in
// between.
#include "virtio/vsock/device.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "tests/unit/vsock_test_util.h"

namespace vessel::virtio::vsock {
namespace {

using namespace std::chrono_literals;
using testing::Buf;
using testing::DriverOptions;
using testing::FakeDriver;
using testing::Fnv;
using testing::GuestSock;
using testing::TempDir;
using State = VsockDevice::State;

constexpr uint64_t kCid = 5;

std::vector<uint8_t> header_bytes(const PacketHeader& h) {
    std::vector<uint8_t> v(kHeaderSize);
    encode_header(h, v.data());
    return v;
}

class VsockDeviceTest : public ::testing::Test {
  protected:
    std::unique_ptr<VsockDevice> make(VsockOptions o = {}) {
        o.guest_cid = kCid;
        if (o.uds_path.empty()) o.uds_path = uds();
        o.log = [this](const std::string& l) {
            std::lock_guard lk(log_mu_);
            logs_.push_back(l);
        };
        return std::make_unique<VsockDevice>(std::move(o));
    }
    std::string uds() const { return dir_.path() + "/v.sock"; }
    std::vector<std::string> logs() {
        std::lock_guard lk(log_mu_);
        return logs_;
    }

    // A host client through the listener, answered by the guest (which must listen on port).
    UniqueFd host_connect(FakeDriver& d, uint32_t port, GuestSock** guest = nullptr) {
        UniqueFd fd = testing::connect_unix(uds());
        const std::string line = "CONNECT " + std::to_string(port) + "\n";
        testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>(line.data()), line.size());
        GuestSock* s = nullptr;
        // Ports are accepted one at a time per test, so the newest socket on `port` is ours.
        const size_t before = accepted_on(d, port);
        EXPECT_TRUE(d.wait([&] { return accepted_on(d, port) > before; }));
        s = newest_on(d, port);
        const std::string ok = testing::read_line(fd.get());
        EXPECT_TRUE(s);
        if (s) {
            EXPECT_EQ(ok, "OK " + std::to_string(s->peer_port) + "\n");
        }
        if (guest) *guest = s;
        return fd;
    }
    static size_t accepted_on(FakeDriver& d, uint32_t port) {
        size_t n = 0;
        for (uint32_t p = 1u << 30; p < (1u << 30) + 64; ++p) n += d.sock(port, p) != nullptr;
        return n;
    }
    static GuestSock* newest_on(FakeDriver& d, uint32_t port) {
        GuestSock* s = nullptr;
        for (uint32_t p = 1u << 30; p < (1u << 30) + 64; ++p)
            if (GuestSock* x = d.sock(port, p)) s = x;
        return s;
    }

    // Sends to_guest from the host socket and to_host from the guest socket at the same time,
    // then closes both sending sides; checks both streams arrived intact.
    void exchange(FakeDriver& d, GuestSock& s, int fd, const std::vector<uint8_t>& to_guest,
                  const std::vector<uint8_t>& to_host, std::chrono::seconds limit = 60s) {
        Fnv host_hash;
        uint64_t host_got = 0;
        std::thread writer([&] {
            testing::write_all(fd, to_guest.data(), to_guest.size());
            ::shutdown(fd, SHUT_WR);
        });
        std::thread reader([&] { host_got = testing::read_to_eof(fd, host_hash); });
        size_t sent = 0;
        bool shut = false;
        const auto end = std::chrono::steady_clock::now() + limit;
        while (!(shut && s.rx_bytes == to_guest.size() && (s.peer_shutdown & kShutdownSend))) {
            if (std::chrono::steady_clock::now() > end || s.state == GuestSock::kClosed) break;
            const size_t n = d.send_some(s, to_host.data() + sent, to_host.size() - sent);
            sent += n;
            if (sent == to_host.size() && !shut) {
                d.shutdown(s, kShutdownSend);
                shut = true;
            }
            d.poll();
            if (n == 0) d.irq().wait(1ms);
        }
        writer.join();
        reader.join();
        EXPECT_EQ(sent, to_host.size());
        EXPECT_EQ(s.rx_bytes, to_guest.size());
        EXPECT_EQ(s.hash.h, testing::fnv(to_guest));
        EXPECT_EQ(host_got, to_host.size());
        EXPECT_EQ(host_hash.h, testing::fnv(to_host));
        // Both directions closed: the device closed the host socket and reset the guest's.
        EXPECT_TRUE(d.wait([&] { return s.got_rst; }));
        EXPECT_EQ(d.credit_violations, 0u);
        EXPECT_EQ(d.bad_used_len, 0u);
        EXPECT_EQ(d.misaddressed, 0u);
        EXPECT_EQ(d.rx_out_of_order, 0u);
    }

    TempDir dir_;
    vmm::GuestMemory mem_ = vmm::GuestMemory::create(FakeDriver::kMemSize);
    std::mutex log_mu_;
    std::vector<std::string> logs_;
};

TEST_F(VsockDeviceTest, FeaturesConfigAndOptions) {
    auto dev = make();
    EXPECT_EQ(dev->device_type(), 19u);
    const uint64_t f = dev->device_features();
    EXPECT_TRUE(f & kFeatureStream);
    EXPECT_FALSE(f & (1ull << 1));  // no SEQPACKET
    EXPECT_EQ(f & kRingFeatures, kRingFeatures);
    EXPECT_EQ(dev->queue_max_sizes(), (std::vector<uint16_t>{256, 256, 256}));
    EXPECT_EQ(dev->guest_cid(), kCid);
    EXPECT_EQ(dev->uds_path(), uds());

    uint8_t cfg[8];
    dev->read_config(0, cfg);
    uint64_t cid;
    std::memcpy(&cid, cfg, 8);
    EXPECT_EQ(cid, kCid);
    uint32_t lo = 0xffffffff, hi = 0xffffffff;  // how Linux reads it: two 32-bit halves
    dev->read_config(0, std::span(reinterpret_cast<uint8_t*>(&lo), 4));
    dev->read_config(4, std::span(reinterpret_cast<uint8_t*>(&hi), 4));
    EXPECT_EQ(lo, kCid);
    EXPECT_EQ(hi, 0u);
    uint8_t past[4] = {1, 1, 1, 1};
    dev->read_config(6, past);
    EXPECT_EQ(past[2], 0);
    const uint8_t junk[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    dev->write_config(0, junk);  // read-only
    dev->read_config(0, cfg);
    EXPECT_EQ(cfg[0], kCid);

    State s = dev->state();
    EXPECT_EQ(s.guest_cid, kCid);
    EXPECT_EQ(s.uds_path, uds());
    EXPECT_TRUE(s.connections.empty());

    auto expect_errno = [&](VsockOptions o, int err) {
        try {
            make(std::move(o));
            ADD_FAILURE() << "accepted bad options";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), err) << e.what();
        }
    };
    VsockOptions o;
    o.uds_path = dir_.path() + "/other.sock";
    for (uint64_t bad : {0ull, 2ull, 0xffffffffull, 1ull << 32}) {
        VsockOptions b = o;
        b.guest_cid = bad;
        try {
            VsockDevice d(b);
            ADD_FAILURE() << bad;
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EINVAL);
        }
    }
    VsockOptions q = o;
    q.queue_size = 100;
    expect_errno(q, EINVAL);
    VsockOptions m = o;
    m.max_connections = 0;
    expect_errno(m, EINVAL);
    expect_errno(VsockOptions{}, EADDRINUSE);  // uds() is taken by dev
}

TEST_F(VsockDeviceTest, RefusesActivationWithoutVersion1OrQueues) {
    auto dev = make();
    DriverOptions o;
    o.features = kRingFeatures;  // no VERSION_1
    FakeDriver d(*dev, mem_, kCid, o);
    EXPECT_FALSE(d.activate());
    Queue rx(256), tx(256), ev(256);
    Queue* two[] = {&rx, &tx};
    testing::TestIrq irq;
    EXPECT_FALSE(dev->activate(mem_, two, kFeatureVersion1, irq));
    Queue* three[] = {&rx, &tx, &ev};  // not ready
    EXPECT_FALSE(dev->activate(mem_, three, kFeatureVersion1, irq));
}

struct Variant {
    const char* name;
    DriverOptions o;
};

class VsockTransferTest : public VsockDeviceTest, public ::testing::WithParamInterface<Variant> {};

// The host connects with "CONNECT 1234\n" and 16 MiB go each way at once, with checksums.
TEST_P(VsockTransferTest, HostInitiatedBothWays) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid, GetParam().o);
    d.listen(1234);
    ASSERT_TRUE(d.activate());
    GuestSock* s = nullptr;
    UniqueFd fd = host_connect(d, 1234, &s);
    ASSERT_TRUE(s);

    State st = dev->state();
    ASSERT_EQ(st.connections.size(), 1u);
    EXPECT_EQ(st.connections[0].peer_port, 1234u);
    EXPECT_EQ(st.connections[0].local_port, s->peer_port);
    EXPECT_EQ(st.connections[0].phase, Phase::kEstablished);
    EXPECT_TRUE(st.connections[0].host_initiated);

    const auto to_guest = testing::random_bytes(16 << 20, 1);
    const auto to_host = testing::random_bytes(16 << 20, 2);
    const auto t0 = std::chrono::steady_clock::now();
    exchange(d, *s, fd.get(), to_guest, to_host);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ %s ] 2 x 16 MiB in %.2f s; %llu interrupts, %llu kicks (%llu suppressed)\n",
                GetParam().name, secs, static_cast<unsigned long long>(d.irq().used()),
                static_cast<unsigned long long>(d.kicks()),
                static_cast<unsigned long long>(d.suppressed_kicks()));

    VsockCounters c = dev->counters();
    EXPECT_EQ(c.bytes_to_guest, to_guest.size());
    EXPECT_EQ(c.bytes_to_host, to_host.size());
    EXPECT_EQ(c.host_connects, 1u);
    EXPECT_EQ(c.credit_errors + c.protocol_errors + c.host_errors, 0u);
    EXPECT_EQ(d.irq().needs_reset.load(), 0u);
    EXPECT_TRUE(d.wait([&] { return dev->state().connections.empty(); }));
}

INSTANTIATE_TEST_SUITE_P(Drivers, VsockTransferTest,
                         ::testing::Values(Variant{"linux-6.1", DriverOptions{}},
                                           Variant{"one-descriptor-rx-64k-tx-no-event-idx",
                                                   [] {
                                                       DriverOptions o;
                                                       o.features =
                                                           kFeatureVersion1 | kFeatureIndirectDesc;
                                                       o.split_rx = false;
                                                       o.rx_buf_size = 64 << 10;
                                                       o.tx_max = 64 << 10;
                                                       return o;
                                                   }()},
                                           Variant{"small-ring-small-credit",
                                                   [] {
                                                       DriverOptions o;
                                                       o.queue_size = 16;
                                                       o.buf_alloc = 16 << 10;
                                                       o.rx_buf_size = 1024;
                                                       return o;
                                                   }()}),
                         [](const ::testing::TestParamInfo<Variant>& i) {
                             std::string n = i.param.name;
                             for (char& ch : n)
                                 if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                             return n;
                         });

// 64 MiB each way, one direction at a time, Linux 6.1 buffer sizes.
TEST_F(VsockDeviceTest, Throughput64MiB) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(7);
    ASSERT_TRUE(d.activate());
    GuestSock* s = nullptr;
    UniqueFd fd = host_connect(d, 7, &s);
    ASSERT_TRUE(s);
    const auto data = testing::random_bytes(64 << 20, 3);

    auto t0 = std::chrono::steady_clock::now();
    std::thread writer([&] { testing::write_all(fd.get(), data.data(), data.size()); });
    EXPECT_TRUE(d.wait([&] { return s->rx_bytes == data.size(); }, 60000ms));
    writer.join();
    const double in = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(s->hash.h, testing::fnv(data));

    Fnv hash;
    uint64_t got = 0;
    t0 = std::chrono::steady_clock::now();
    std::thread reader([&] {
        std::vector<uint8_t> buf(1 << 20);
        while (got < data.size()) {
            ssize_t r = ::read(fd.get(), buf.data(), buf.size());
            if (r <= 0) break;
            hash.add(buf.data(), static_cast<size_t>(r));
            got += static_cast<uint64_t>(r);
        }
    });
    size_t sent = 0;
    const auto end = t0 + 60s;
    while (sent < data.size() && std::chrono::steady_clock::now() < end) {
        const size_t n = d.send_some(*s, data.data() + sent, data.size() - sent);
        sent += n;
        d.poll();
        if (n == 0) d.irq().wait(1ms);
    }
    reader.join();
    const double out = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(got, data.size());
    EXPECT_EQ(hash.h, testing::fnv(data));
    std::printf("[ throughput ] host->guest %.0f MiB/s, guest->host %.0f MiB/s\n", 64 / in,
                64 / out);
    EXPECT_LT(in, 30.0);
    EXPECT_LT(out, 30.0);
    EXPECT_EQ(d.credit_violations, 0u);
}

// A guest connect to host port 5000 reaches the socket listening on <uds>_5000.
TEST_F(VsockDeviceTest, GuestInitiatedReachesHostListener) {
    auto dev = make();
    UniqueFd server = testing::listen_unix(uds() + "_5000");
    FakeDriver d(*dev, mem_, kCid);
    ASSERT_TRUE(d.activate());
    GuestSock& s = d.connect(1025, 5000);
    ASSERT_TRUE(d.wait([&] { return s.state != GuestSock::kConnecting; }));
    EXPECT_EQ(s.state, GuestSock::kConnected);
    UniqueFd peer = testing::accept_within(server.get(), 2000ms);
    ASSERT_TRUE(peer);
    EXPECT_EQ(d.count_ops(op::kResponse), 1u);
    EXPECT_GT(s.peer_buf_alloc, 0u);
    State st = dev->state();
    ASSERT_EQ(st.connections.size(), 1u);
    EXPECT_EQ(st.connections[0].local_port, 5000u);
    EXPECT_EQ(st.connections[0].peer_port, 1025u);
    EXPECT_FALSE(st.connections[0].host_initiated);

    exchange(d, s, peer.get(), testing::random_bytes(4 << 20, 4),
             testing::random_bytes(4 << 20, 5));
    EXPECT_EQ(dev->counters().guest_connects, 1u);
}

TEST_F(VsockDeviceTest, GuestConnectToNothingGetsRst) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    ASSERT_TRUE(d.activate());
    GuestSock& a = d.connect(1025, 6000);  // no socket file at all
    ASSERT_TRUE(d.wait([&] { return a.got_rst; }));
    {
        UniqueFd dead = testing::listen_unix(uds() + "_6001");
    }  // socket file left, nobody accepting
    GuestSock& b = d.connect(1026, 6001);
    ASSERT_TRUE(d.wait([&] { return b.got_rst; }));
    EXPECT_EQ(d.count_ops(op::kResponse), 0u);
    EXPECT_EQ(dev->counters().guest_refused, 2u);
    EXPECT_TRUE(dev->state().connections.empty());
    EXPECT_TRUE(logs().empty());  // a refusal is routine
}

TEST_F(VsockDeviceTest, GuestRefusesHostConnect) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);  // listens on nothing: answers REQUEST with RST
    ASSERT_TRUE(d.activate());
    UniqueFd fd = testing::connect_unix(uds());
    testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>("CONNECT 99\n"), 11);
    ASSERT_TRUE(d.wait([&] { return d.count_ops(op::kRequest) > 0; }));
    EXPECT_EQ(testing::read_line(fd.get()), "");  // closed, no OK
    EXPECT_EQ(d.count_ops(op::kRequest), 1u);
    EXPECT_EQ(dev->counters().host_refused, 1u);
    EXPECT_TRUE(dev->state().connections.empty());
}

TEST_F(VsockDeviceTest, UnansweredRequestAndSilentClientsTimeOut) {
    VsockOptions o;
    o.connect_timeout = 300ms;
    auto dev = make(o);
    DriverOptions dopt;
    dopt.answer_requests = false;
    FakeDriver d(*dev, mem_, kCid, dopt);
    ASSERT_TRUE(d.activate());
    UniqueFd silent = testing::connect_unix(uds());  // never sends its line
    UniqueFd fd = testing::connect_unix(uds());
    testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>("CONNECT 80\n"), 11);
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(d.wait([&] { return d.count_ops(op::kRst) > 0; }, 3000ms));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
    EXPECT_EQ(d.count_ops(op::kRequest), 1u);
    EXPECT_TRUE(testing::wait_closed(fd.get()));
    EXPECT_TRUE(testing::wait_closed(silent.get()));
    EXPECT_EQ(dev->counters().timeouts, 2u);
    EXPECT_TRUE(dev->state().connections.empty());
}

TEST_F(VsockDeviceTest, BadHandshakes) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    ASSERT_TRUE(d.activate());
    for (std::string line : {std::string("HELLO\n"), std::string("CONNECT 4294967295\n"),
                             std::string(100, 'x'), std::string("CONNECT 1")}) {
        UniqueFd fd = testing::connect_unix(uds());
        testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>(line.data()), line.size());
        if (line == "CONNECT 1") ::shutdown(fd.get(), SHUT_WR);  // EOF before the newline
        EXPECT_TRUE(testing::wait_closed(fd.get())) << line;
    }
    EXPECT_EQ(dev->counters().bad_handshakes, 4u);
    EXPECT_EQ(d.count_ops(op::kRequest), 0u);
    // The line may arrive in pieces, with stream bytes right behind it.
    UniqueFd fd = testing::connect_unix(uds());
    testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>("CONN"), 4);
    std::this_thread::sleep_for(20ms);
    testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>("ECT 1\nearly"), 11);
    ASSERT_TRUE(d.wait([&] { return d.accepted(1) && d.accepted(1)->rx_bytes == 5; }));
    EXPECT_EQ(testing::read_line(fd.get()),
              "OK " + std::to_string(d.accepted(1)->peer_port) + "\n");
}

// A host reader that stops reading one connection does not stop another, and the device
// buffers no more than the credit it gave for it.
TEST_F(VsockDeviceTest, StalledHostReaderDoesNotBlockOtherConnections) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    d.listen(2);
    ASSERT_TRUE(d.activate());
    GuestSock *a = nullptr, *b = nullptr;
    UniqueFd fa = host_connect(d, 1, &a);
    UniqueFd fb = host_connect(d, 2, &b);
    ASSERT_TRUE(a && b);

    // The guest writes to A until A's credit is gone: nobody reads A on the host.
    const auto data_a = testing::random_bytes(8 << 20, 6);
    size_t sent_a = 0;
    auto stalled = std::chrono::steady_clock::now();
    const auto give_up = stalled + 20s;
    while ((a->credit() > 0 || std::chrono::steady_clock::now() - stalled < 300ms) &&
           std::chrono::steady_clock::now() < give_up) {
        size_t n = d.send_some(*a, data_a.data() + sent_a, data_a.size() - sent_a);
        sent_a += n;
        d.poll();
        if (n) stalled = std::chrono::steady_clock::now();
        d.irq().wait(1ms);
    }
    EXPECT_EQ(a->credit(), 0u);
    EXPECT_LT(sent_a, data_a.size());
    State st = dev->state();
    for (const ConnectionState& c : st.connections)
        if (c.peer_port == 1) {
            EXPECT_LE(c.rx_cnt - c.fwd_cnt, c.buf_alloc);
        }

    // B still works both ways.
    exchange(d, *b, fb.get(), testing::random_bytes(4 << 20, 7), testing::random_bytes(4 << 20, 8));

    // A's host reader wakes up: everything arrives in order.
    Fnv hash;
    uint64_t got = 0;
    std::thread reader([&] {
        std::vector<uint8_t> buf(1 << 16);
        while (got < data_a.size()) {
            ssize_t r = ::read(fa.get(), buf.data(), buf.size());
            if (r <= 0) break;
            hash.add(buf.data(), static_cast<size_t>(r));
            got += static_cast<uint64_t>(r);
        }
    });
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (sent_a < data_a.size() && std::chrono::steady_clock::now() < end) {
        size_t n = d.send_some(*a, data_a.data() + sent_a, data_a.size() - sent_a);
        sent_a += n;
        d.poll();
        if (!n) d.irq().wait(1ms);
    }
    reader.join();
    EXPECT_EQ(got, data_a.size());
    EXPECT_EQ(hash.h, testing::fnv(data_a));
    EXPECT_EQ(dev->counters().credit_errors, 0u);
}

// A guest that stops reading one connection stops that host socket only (the host writer
// sees EAGAIN), the device never exceeds the guest's credit, and reading again resumes it.
TEST_F(VsockDeviceTest, GuestNotReadingStopsOnlyItsHostSocket) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    d.listen(2);
    ASSERT_TRUE(d.activate());
    GuestSock *a = nullptr, *b = nullptr;
    UniqueFd fa = host_connect(d, 1, &a);
    UniqueFd fb = host_connect(d, 2, &b);
    ASSERT_TRUE(a && b);
    a->auto_consume = false;

    ASSERT_EQ(::fcntl(fa.get(), F_SETFL, O_NONBLOCK), 0);
    const auto data = testing::random_bytes(16 << 20, 9);
    size_t written = 0;
    auto last = std::chrono::steady_clock::now();
    const auto give_up = last + 20s;
    while ((a->rx_bytes < a->buf_alloc || std::chrono::steady_clock::now() - last < 300ms) &&
           std::chrono::steady_clock::now() < give_up) {
        ssize_t r = ::send(fa.get(), data.data() + written, data.size() - written, MSG_NOSIGNAL);
        if (r > 0) {
            written += static_cast<size_t>(r);
            last = std::chrono::steady_clock::now();
        } else {
            ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
        }
        d.poll();
        d.irq().wait(1ms);
    }
    ASSERT_LT(written, data.size()) << "the host writer never blocked";
    EXPECT_EQ(a->rx_bytes, a->buf_alloc);  // exactly the credit it gave
    EXPECT_EQ(d.credit_violations, 0u);

    exchange(d, *b, fb.get(), testing::random_bytes(2 << 20, 10),
             testing::random_bytes(2 << 20, 11));

    // The guest application reads again.
    ASSERT_EQ(::fcntl(fa.get(), F_SETFL, 0), 0);
    a->auto_consume = true;
    d.consume(*a, a->unread);
    std::thread writer(
        [&] { testing::write_all(fa.get(), data.data() + written, data.size() - written); });
    EXPECT_TRUE(d.wait([&] { return a->rx_bytes == data.size(); }, 30000ms));
    writer.join();
    EXPECT_EQ(a->hash.h, testing::fnv(data));
    EXPECT_EQ(d.credit_violations, 0u);
}

TEST_F(VsockDeviceTest, HalfCloseBothWays) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    d.listen(2);
    ASSERT_TRUE(d.activate());
    const auto data = testing::random_bytes(100000, 12);

    // Host shuts its write side first: the guest hears SHUTDOWN(SEND) and can still send.
    GuestSock* a = nullptr;
    UniqueFd fa = host_connect(d, 1, &a);
    ASSERT_TRUE(a);
    ::shutdown(fa.get(), SHUT_WR);
    ASSERT_TRUE(d.wait([&] { return (a->peer_shutdown & kShutdownSend) != 0; }));
    EXPECT_FALSE(a->got_rst);
    size_t sent = 0;
    ASSERT_TRUE(d.wait([&] {
        sent += d.send_some(*a, data.data() + sent, data.size() - sent);
        return sent == data.size();
    }));
    std::vector<uint8_t> back(data.size());
    size_t got = 0;
    while (got < back.size() && testing::wait_fd(fa.get(), POLLIN, 3000ms)) {
        ssize_t r = ::read(fa.get(), back.data() + got, back.size() - got);
        if (r <= 0) break;
        got += static_cast<size_t>(r);
        d.poll();
    }
    EXPECT_EQ(back, data);
    d.shutdown(*a, kShutdownSend);
    EXPECT_TRUE(testing::wait_closed(fa.get()));
    EXPECT_TRUE(d.wait([&] { return a->got_rst; }));

    // The guest shuts its send side first: the host reads EOF and can still send.
    GuestSock* b = nullptr;
    UniqueFd fb = host_connect(d, 2, &b);
    ASSERT_TRUE(b);
    d.shutdown(*b, kShutdownSend);
    d.poll();
    char c;
    ASSERT_TRUE(testing::wait_fd(fb.get(), POLLIN, 3000ms));
    EXPECT_EQ(::read(fb.get(), &c, 1), 0);
    testing::write_all(fb.get(), data.data(), data.size());
    ASSERT_TRUE(d.wait([&] { return b->rx_bytes == data.size(); }));
    EXPECT_EQ(b->hash.h, testing::fnv(data));
    EXPECT_FALSE(b->got_rst);
    ::shutdown(fb.get(), SHUT_WR);
    // Nothing flows either way any more: closed and reset.
    EXPECT_TRUE(d.wait([&] { return b->got_rst; }));
    EXPECT_TRUE(d.wait([&] { return dev->state().connections.empty(); }));
}

TEST_F(VsockDeviceTest, GuestRstClosesTheHostSocket) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    ASSERT_TRUE(d.activate());
    GuestSock* a = nullptr;
    UniqueFd fa = host_connect(d, 1, &a);
    ASSERT_TRUE(a);
    d.rst(*a);
    d.poll();
    EXPECT_TRUE(testing::wait_closed(fa.get()));
    EXPECT_TRUE(d.wait([&] { return dev->state().connections.empty(); }));
}

TEST_F(VsockDeviceTest, DeviceResetClosesEveryHostSocket) {
    auto dev = make();
    UniqueFd server = testing::listen_unix(uds() + "_5000");
    UniqueFd fa, fb, fc, peer;
    {
        FakeDriver d(*dev, mem_, kCid);
        d.listen(1);
        ASSERT_TRUE(d.activate());
        fa = host_connect(d, 1);
        GuestSock& g = d.connect(1025, 5000);
        ASSERT_TRUE(d.wait([&] { return g.state == GuestSock::kConnected; }));
        peer = testing::accept_within(server.get(), 2000ms);
        ASSERT_TRUE(peer);
        fb = testing::connect_unix(uds());  // still in its handshake
        fc = testing::connect_unix(uds());
        testing::write_all(fc.get(), reinterpret_cast<const uint8_t*>("CONNECT 1\n"), 10);
        ASSERT_TRUE(d.wait([&] { return dev->state().connections.size() == 3; }));
        d.reset();
        EXPECT_TRUE(dev->state().connections.empty());
    }
    EXPECT_TRUE(testing::wait_closed(fa.get(), 1000ms));
    EXPECT_TRUE(testing::wait_closed(peer.get(), 1000ms));
    EXPECT_TRUE(testing::wait_closed(fb.get(), 1000ms));
    EXPECT_TRUE(testing::wait_closed(fc.get(), 1000ms));

    // The listener survives the reset: a new driver serves new connections.
    FakeDriver d2(*dev, mem_, kCid);
    d2.listen(1);
    ASSERT_TRUE(d2.activate());
    GuestSock* s = nullptr;
    UniqueFd f = host_connect(d2, 1, &s);
    ASSERT_TRUE(s);
    exchange(d2, *s, f.get(), testing::random_bytes(1 << 20, 13),
             testing::random_bytes(1 << 20, 14));
}

TEST_F(VsockDeviceTest, ConnectionLimit) {
    VsockOptions o;
    o.max_connections = 2;
    auto dev = make(o);
    UniqueFd server = testing::listen_unix(uds() + "_5000");
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    ASSERT_TRUE(d.activate());
    GuestSock* ga = nullptr;
    UniqueFd a = host_connect(d, 1, &ga);
    UniqueFd b = host_connect(d, 1);
    ASSERT_TRUE(ga);
    UniqueFd c = testing::connect_unix(uds());
    EXPECT_TRUE(testing::wait_closed(c.get()));
    GuestSock& g = d.connect(1025, 5000);
    ASSERT_TRUE(d.wait([&] { return g.state != GuestSock::kConnecting; }));
    EXPECT_TRUE(g.got_rst);
    EXPECT_EQ(dev->counters().over_limit, 2u);
    // Room again once one closes (the host end, then the guest's).
    a.reset();
    ASSERT_TRUE(d.wait([&] { return (ga->peer_shutdown & kShutdownSend) != 0; }));
    d.shutdown(*ga, kShutdownBoth);
    ASSERT_TRUE(d.wait([&] { return dev->state().connections.size() == 1; }));
    GuestSock& h = d.connect(1026, 5000);
    ASSERT_TRUE(d.wait([&] { return h.state != GuestSock::kConnecting; }));
    EXPECT_EQ(h.state, GuestSock::kConnected);
}

// Posting no RX buffers holds everything back; posting them lets it through.
TEST_F(VsockDeviceTest, WaitsForRxBuffers) {
    auto dev = make();
    DriverOptions o;
    o.auto_repost = false;
    FakeDriver d(*dev, mem_, kCid, o);
    d.listen(1);
    ASSERT_TRUE(d.activate(false));
    UniqueFd fd = testing::connect_unix(uds());
    testing::write_all(fd.get(), reinterpret_cast<const uint8_t*>("CONNECT 1\n"), 10);
    std::this_thread::sleep_for(100ms);
    d.poll();
    EXPECT_TRUE(d.control.empty());
    const auto data = testing::random_bytes(256 << 10, 15);
    std::thread writer([&] {
        testing::read_line(fd.get());
        testing::write_all(fd.get(), data.data(), data.size());
    });
    // A few buffers at a time.
    EXPECT_TRUE(d.wait([&] {
        d.post_rx_buffers(3);
        return d.accepted(1) && d.accepted(1)->rx_bytes == data.size();
    }));
    writer.join();
    EXPECT_EQ(d.accepted(1)->hash.h, testing::fnv(data));
}

// RX buffers are used in the order the driver posted them, even when a read takes more buffers
// than the host socket fills: a snapshot hands the unused ones back by rewinding the queue to
// its used count, which is only right if the used ones are the first ones posted.
TEST_F(VsockDeviceTest, RxBuffersAreUsedInPostOrder) {
    auto dev = make();
    FakeDriver d(*dev, mem_, kCid);
    d.listen(7);
    ASSERT_TRUE(d.activate());
    GuestSock* s = nullptr;
    UniqueFd fd = host_connect(d, 7, &s);
    ASSERT_TRUE(s);
    const auto data = testing::random_bytes(100, 21);
    for (int i = 1; i <= 20; ++i) {
        testing::write_all(fd.get(), data.data(), data.size());
        ASSERT_TRUE(d.wait([&] { return s->rx_bytes == i * data.size(); })) << i;
    }
    EXPECT_EQ(d.rx_out_of_order, 0u);
    EXPECT_EQ(d.bad_used_len, 0u);
}

// Everything a broken or hostile driver can put in the queues: counted, logged (rate-limited),
// answered with RST where the spec says so, and the device keeps serving.
TEST_F(VsockDeviceTest, MalformedGuestInputIsContained) {
    VsockOptions vo;
    vo.buf_alloc = 16 << 10;
    auto dev = make(vo);
    FakeDriver d(*dev, mem_, kCid);
    d.listen(1);
    // Bad RX buffers first: handed back empty.
    ASSERT_TRUE(d.activate(false));
    d.post_rx_chain({{16, false}, {4096, true}});  // device-readable part
    d.post_rx_chain({{20, true}});                 // shorter than a header
    d.post_rx_buffers();

    PacketHeader good;
    good.src_cid = kCid;
    good.dst_cid = kHostCid;
    good.src_port = 3000;
    good.dst_port = 77;
    good.type = kTypeStream;
    good.op = op::kCreditUpdate;
    auto with = [&](auto&& change) {
        PacketHeader h = good;
        change(h);
        return h;
    };

    d.send_chain({Buf::readable(std::vector<uint8_t>(20, 1))});                         // short
    d.send_chain({Buf::readable(header_bytes(good)), Buf::writable_len(8)});            // writable
    d.send_chain({Buf::readable(header_bytes(good)), Buf::readable({})}, false, true);  // loop
    d.send_raw(with([](PacketHeader& h) { h.src_cid = 9; }));                           // spoofed
    d.send_raw(with([](PacketHeader& h) { h.dst_cid = 1; }));
    d.send_raw(with([](PacketHeader& h) { h.type = 2; }));  // seqpacket: RST
    d.send_raw(with([](PacketHeader& h) { h.op = 0; }));    // RST
    d.send_raw(with([](PacketHeader& h) { h.op = 42; }));   // RST
    d.send_raw(with([](PacketHeader& h) {
        h.op = op::kRw;
        h.len = 1 << 20;
    }));
    d.send_raw(with([](PacketHeader& h) {
                   h.op = op::kRw;
                   h.len = 100;
               }),
               std::vector<uint8_t>(50));  // short payload
    d.send_raw(with([](PacketHeader& h) {
                   h.op = op::kShutdown;
                   h.len = 4;
               }),
               std::vector<uint8_t>(4));
    d.send_raw(with([](PacketHeader& h) {
                   h.op = op::kRw;
                   h.len = 10;
               }),
               std::vector<uint8_t>(10));                             // no connection: RST
    d.send_raw(good);                                                 // no connection: RST
    d.send_raw(with([](PacketHeader& h) { h.op = op::kRst; }));       // no connection: quiet
    d.send_raw(with([](PacketHeader& h) { h.op = op::kResponse; }));  // no connection: RST
    d.send_chain({Buf::readable(header_bytes(with([](PacketHeader& h) { h.type = 3; })))},
                 true);  // indirect, bad type: RST

    ASSERT_TRUE(d.wait([&] {
        VsockCounters c = dev->counters();
        return c.unknown_connection == 3 && d.count_ops(op::kRst) == 7 && d.empty_rx == 2;
    })) << d.count_ops(op::kRst)
        << " RSTs";
    VsockCounters c = dev->counters();
    EXPECT_EQ(c.count(PacketError::kShortHeader), 1u);
    EXPECT_EQ(c.count(PacketError::kWrongDirection), 1u);
    EXPECT_EQ(c.count(PacketError::kBadSrcCid), 1u);
    EXPECT_EQ(c.count(PacketError::kBadDstCid), 1u);
    EXPECT_EQ(c.count(PacketError::kBadType), 2u);
    EXPECT_EQ(c.count(PacketError::kBadOp), 2u);
    EXPECT_EQ(c.count(PacketError::kTooLarge), 1u);
    EXPECT_EQ(c.count(PacketError::kShortPayload), 1u);
    EXPECT_EQ(c.count(PacketError::kUnexpectedPayload), 1u);
    EXPECT_EQ(c.bad_chains, 1u);  // the loop
    EXPECT_EQ(c.bad_rx_buffers[static_cast<size_t>(RxBufferError::kWrongDirection)], 1u);
    EXPECT_EQ(c.bad_rx_buffers[static_cast<size_t>(RxBufferError::kTooSmall)], 1u);
    for (const PacketHeader& h : d.control) {
        EXPECT_EQ(h.op, op::kRst);
        EXPECT_EQ(h.src_port, 77u);
        EXPECT_EQ(h.dst_port, 3000u);
    }
    EXPECT_FALSE(logs().empty());
    EXPECT_EQ(d.irq().needs_reset.load(), 0u);

    // A credit lie on a real connection: reset, host socket closed.
    GuestSock* a = nullptr;
    UniqueFd fa = host_connect(d, 1, &a);
    ASSERT_TRUE(a);
    d.send_unchecked(*a, testing::random_bytes(20000, 16));  // the device gave 16 KiB
    ASSERT_TRUE(d.wait([&] { return a->got_rst; }));
    EXPECT_TRUE(testing::wait_closed(fa.get()));
    EXPECT_EQ(dev->counters().credit_errors, 1u);

    // A protocol error: a second REQUEST on a live connection.
    GuestSock* b = nullptr;
    UniqueFd fb = host_connect(d, 1, &b);
    ASSERT_TRUE(b);
    d.send_ctl(*b, op::kRequest);
    ASSERT_TRUE(d.wait([&] { return b->got_rst; }));
    EXPECT_TRUE(testing::wait_closed(fb.get()));
    EXPECT_EQ(dev->counters().protocol_errors, 1u);

    // Still serving.
    GuestSock* s = nullptr;
    UniqueFd f = host_connect(d, 1, &s);
    ASSERT_TRUE(s);
    exchange(d, *s, f.get(), testing::random_bytes(256 << 10, 17),
             testing::random_bytes(256 << 10, 18));
    EXPECT_EQ(d.irq().needs_reset.load(), 0u);
}

// Garbage in the TX queue at volume, with nothing posted on RX: the device answers what it can
// and leaves the rest in the ring instead of queueing without bound.
TEST_F(VsockDeviceTest, RstFloodWithoutRxBuffersIsBounded) {
    auto dev = make();
    DriverOptions o;
    o.auto_repost = false;
    FakeDriver d(*dev, mem_, kCid, o);
    ASSERT_TRUE(d.activate(false));
    PacketHeader h;
    h.src_cid = kCid;
    h.dst_cid = kHostCid;
    h.type = kTypeStream;
    h.op = op::kCreditUpdate;
    const int kFlood = 2000;
    auto send = [&](int i) {
        h.src_port = 10000 + static_cast<uint32_t>(i);
        d.send_raw(h);  // waits for TX descriptors as the device consumes them
    };
    // The device answers up to its backlog bound, then leaves the TX ring full.
    for (int i = 0; i < 512; ++i) send(i);
    std::this_thread::sleep_for(100ms);
    d.poll();
    EXPECT_EQ(dev->counters().unknown_connection, 256u);
    EXPECT_EQ(d.count_ops(op::kRst), 0u);
    // RX buffers let it go on.
    d.set_auto_repost(true);
    d.post_rx_buffers();
    for (int i = 512; i < kFlood; ++i) send(i);
    EXPECT_TRUE(d.wait([&] {
        d.post_rx_buffers();
        return d.count_ops(op::kRst) == static_cast<size_t>(kFlood);
    }));
    EXPECT_EQ(dev->counters().rst_dropped, 0u);
}

// Connections the guest opens and resets while it posts no RX buffers: their RESPONSEs are
// never sent, and nothing is left behind.
TEST_F(VsockDeviceTest, RequestResetChurnWithoutRxBuffers) {
    auto dev = make();
    UniqueFd server = testing::listen_unix(uds() + "_5000", 4096);
    std::atomic<bool> stop{false};
    std::thread acceptor([&] {
        while (!stop) {
            UniqueFd c = testing::accept_within(server.get(), 10ms);
        }
    });
    DriverOptions o;
    o.auto_repost = false;
    FakeDriver d(*dev, mem_, kCid, o);
    ASSERT_TRUE(d.activate(false));
    constexpr uint32_t kN = 3000;
    for (uint32_t i = 0; i < kN; ++i) {
        GuestSock& s = d.connect(2000 + i, 5000);
        d.rst(s);
    }
    EXPECT_TRUE(d.wait(
        [&] { return dev->counters().guest_connects + dev->counters().guest_refused == kN; }));
    EXPECT_TRUE(d.wait([&] { return dev->state().connections.empty(); }));
    stop = true;
    acceptor.join();
    d.set_auto_repost(true);
    d.post_rx_buffers();
    std::this_thread::sleep_for(50ms);
    d.poll();
    // Only refusals (a full backlog) may have earned an RST; no RESPONSE for a dead connection.
    EXPECT_EQ(d.count_ops(op::kResponse), 0u);
    EXPECT_EQ(d.control.size(), d.count_ops(op::kRst));
    EXPECT_EQ(d.count_ops(op::kRst), dev->counters().guest_refused);
}

}  // namespace
}  // namespace vessel::virtio::vsock
