// NetDevice end to end on a real tap (in the test's own network namespace) and real virtqueues
// in guest memory, on both engines: frames the guest transmits come out of the tap, frames
// sent into the tap land in the guest's RX buffers.
#include <gtest/gtest.h>
#include <linux/if_tun.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <thread>

#include "tests/support/fake_virtqueue.h"
#include "tests/unit/net_test_util.h"
#include "virtio/net/device.h"

namespace vessel::virtio::net {
namespace {

using namespace feature;
using testing::PacketSocket;
using testing::test_frame;
using virtio::testing::Buf;
using virtio::testing::FakeVirtqueue;

class CountingIrq : public Interrupt {
  public:
    void signal_used() override { ++used; }
    void signal_config() override { ++config; }
    void signal_needs_reset() override { ++needs_reset; }
    std::atomic<int> used{0}, config{0}, needs_reset{0};
};

bool wait_for(const std::function<bool()>& pred,
              std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

std::vector<uint8_t> tx_hdr(uint8_t flags = 0, uint8_t gso = 0) {
    NetHdr h{};
    h.flags = flags;
    h.gso_type = gso;
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}

std::vector<uint8_t> cat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// A received frame as the guest sees it: header, frame, and which chains it took.
struct RxFrame {
    NetHdr hdr{};
    std::vector<uint8_t> frame;
    std::vector<uint32_t> lens;
};

class NetDeviceTest : public ::testing::TestWithParam<io::EnginePreference> {
  protected:
    static constexpr uint64_t kBase = kFeatureVersion1 | kFeatureEventIdx | kFeatureIndirectDesc;

    void SetUp() override {
        if (!testing::in_private_netns()) GTEST_SKIP() << testing::netns_error();
        if (GetParam() == io::EnginePreference::IoUring && !io::probe_io_uring().ok)
            GTEST_SKIP() << io::probe_io_uring().reason;
        NetDeviceOptions o;
        o.tap.name = "vnet0";
        o.vm_id = "test-vm";
        o.engine = GetParam();
        o.queue_size = 64;
        o.rx_reads = 4;
        o.log = [this](const std::string& l) {
            std::lock_guard g(log_mu);
            logs.push_back(l);
        };
        dev = std::make_unique<NetDevice>(o);
        testing::link_up(dev->tap_name());
        host = std::make_unique<PacketSocket>(dev->tap_name());
    }
    void TearDown() override {
        if (dev) dev->reset();
    }

    // Fresh rings (at `slot`, so a re-activation does not reuse the old ones) and activation.
    bool activate(uint64_t features, uint16_t rx_size = 64, int slot = 0) {
        const uint64_t off = 0x100000ull * slot;
        rxf = std::make_unique<FakeVirtqueue>(mem, rx_size, 0x10000 + off, 0x1000000 + 8 * off);
        txf = std::make_unique<FakeVirtqueue>(mem, 64, 0x20000 + off, 0x3000000 + 8 * off);
        rxq.reset();
        txq.reset();
        rxf->configure(rxq, features);
        txf->configure(txq, features);
        Queue* qs[] = {&rxq, &txq};
        return dev->activate(mem, qs, features, irq);
    }

    // Posts `n` RX chains of one `len`-byte writable buffer each.
    void post_rx(int n, uint32_t len) {
        for (int i = 0; i < n; ++i) {
            uint16_t head = rxf->add_chain({Buf::writable_len(len)});
            rx_addr[head] = rxf->desc(head).addr;
        }
    }

    // Reads the used RX entries from `from` on and rebuilds frames by num_buffers. `*upto`
    // (if given) gets the used index after the last complete frame.
    std::vector<RxFrame> rx_frames(uint16_t from = 0, uint16_t* upto = nullptr) {
        std::vector<RxFrame> out;
        const uint16_t end = rxf->used_idx();
        uint16_t i = from;
        while (i != end) {
            const uint16_t start = i;
            auto e = rxf->used(i++);
            RxFrame f;
            auto first = rxf->read(rx_addr.at(e.id), e.len);
            EXPECT_GE(e.len, kHdrSize);
            std::memcpy(&f.hdr, first.data(), kHdrSize);
            f.frame.assign(first.begin() + kHdrSize, first.end());
            f.lens.push_back(e.len);
            for (uint16_t k = 1; k < f.hdr.num_buffers && i != end; ++k) {
                auto more = rxf->used(i++);
                auto b = rxf->read(rx_addr.at(more.id), more.len);
                f.frame.insert(f.frame.end(), b.begin(), b.end());
                f.lens.push_back(more.len);
            }
            if (f.lens.size() < f.hdr.num_buffers) {  // the rest is not published yet
                i = start;
                break;
            }
            if (testing::is_test_frame(f.frame)) out.push_back(std::move(f));
        }
        if (upto) *upto = i;
        return out;
    }

    vmm::GuestMemory mem = vmm::GuestMemory::create(128 << 20);
    std::unique_ptr<NetDevice> dev;
    std::unique_ptr<PacketSocket> host;
    std::unique_ptr<FakeVirtqueue> rxf, txf;
    Queue rxq{64, "net rx"}, txq{64, "net tx"};
    CountingIrq irq;
    std::map<uint16_t, uint64_t> rx_addr;
    std::mutex log_mu;
    std::vector<std::string> logs;
};

TEST_P(NetDeviceTest, FeaturesConfigAndEngine) {
    EXPECT_EQ(dev->device_type(), 1u);
    EXPECT_EQ(dev->queue_max_sizes(), (std::vector<uint16_t>{64, 64}));
    uint64_t f = dev->device_features();
    EXPECT_EQ(f & kRingFeatures, kRingFeatures);
    for (unsigned b : {kMac, kStatus, kMtu, kMrgRxbuf, kCsum, kGuestCsum, kHostTso4})
        EXPECT_TRUE(f & bit(b)) << b;
    EXPECT_FALSE(f & bit(kCtrlVq));

    EXPECT_EQ(dev->mac(), mac_from_id("test-vm"));
    uint8_t cfg[16];
    dev->read_config(0, cfg);
    EXPECT_EQ(0, std::memcmp(cfg, dev->mac().data(), 6));
    EXPECT_EQ(cfg[6] | cfg[7] << 8, kStatusLinkUp);
    EXPECT_EQ(cfg[8] | cfg[9] << 8, 1);
    EXPECT_EQ(cfg[10] | cfg[11] << 8, 1500);
    EXPECT_EQ(cfg[12] | cfg[13] | cfg[14] | cfg[15], 0) << "past the end reads as zeros";
    uint8_t junk[6] = {1, 2, 3, 4, 5, 6};
    dev->write_config(0, junk);  // ignored
    dev->read_config(0, std::span<uint8_t>(cfg, 6));
    EXPECT_EQ(0, std::memcmp(cfg, dev->mac().data(), 6));

    const char* want = GetParam() == io::EnginePreference::IoUring ? "io_uring" : "sync";
    EXPECT_STREQ(dev->engine_name(), want);
    EXPECT_NE(dev->engine_reason().find("virtio-net vnet0: "), std::string::npos);
    EXPECT_NE(dev->engine_reason().find(want), std::string::npos) << dev->engine_reason();

    EXPECT_FALSE(activate(kFeatureEventIdx)) << "VERSION_1 is required";
    // Activation hands the tap what the driver took, nothing more.
    ASSERT_TRUE(activate(kBase | bit(kGuestCsum) | bit(kGuestTso4)));
    EXPECT_EQ(dev->tap().offloads(), unsigned{TUN_F_CSUM | TUN_F_TSO4});
    dev->reset();
    ASSERT_TRUE(activate(kBase, 64, 1));
    EXPECT_EQ(dev->tap().offloads(), 0u);
}

TEST_P(NetDeviceTest, TransmitsFramesToTheTap) {
    ASSERT_TRUE(activate(kBase | bit(kCsum)));
    auto f1 = test_frame(46, 1), f2 = test_frame(1500, 2), f3 = test_frame(300, 3);
    uint16_t h1 = txf->add_chain({Buf::readable(cat(tx_hdr(), f1))});
    // Header split, frame in pieces, all behind an indirect descriptor.
    auto h = tx_hdr();
    uint16_t h2 = txf->add_indirect_chain({Buf::readable({h.begin(), h.begin() + 4}),
                                           Buf::readable({h.begin() + 4, h.end()}),
                                           Buf::readable({f2.begin(), f2.begin() + 700}),
                                           Buf::readable({f2.begin() + 700, f2.end()})});
    uint16_t h3 = txf->add_chain({Buf::readable(tx_hdr()), Buf::readable(f3)});
    dev->notify(NetDevice::kTxQueue);

    for (const auto* want : {&f1, &f2, &f3}) {
        auto got = host->recv_test_frame();
        ASSERT_TRUE(got);
        EXPECT_EQ(*got, *want);
    }
    ASSERT_TRUE(wait_for([&] { return txf->used_idx() == 3; }));
    std::map<uint32_t, uint32_t> used;
    for (uint16_t i = 0; i < 3; ++i) used[txf->used(i).id] = txf->used(i).len;
    EXPECT_EQ(used, (std::map<uint32_t, uint32_t>{{h1, 0}, {h2, 0}, {h3, 0}}));
    EXPECT_TRUE(wait_for([&] { return irq.used.load() > 0; }));
    NetCounters c = dev->counters();
    EXPECT_EQ(c.tx_packets, 3u);
    EXPECT_EQ(c.tx_bytes, f1.size() + f2.size() + f3.size());
    EXPECT_EQ(c.tx_dropped, 0u);
    EXPECT_EQ(irq.needs_reset.load(), 0);
}

TEST_P(NetDeviceTest, MalformedTxChainsAreCountedAndCompleted) {
    ASSERT_TRUE(activate(kBase));
    txf->add_loop_chain(3);                                            // queue: a loop
    txf->add_chain({Buf::readable(tx_hdr()), Buf::writable_len(64)});  // wrong direction
    txf->add_chain({Buf::readable({1, 2, 3})});                        // short header
    txf->add_chain({Buf::readable(cat(tx_hdr(0, kGsoTcpV4), test_frame(100, 4)))});  // no TSO
    auto good = test_frame(80, 5);
    txf->add_chain({Buf::readable(cat(tx_hdr(), good))});
    dev->notify(NetDevice::kTxQueue);
    ASSERT_TRUE(wait_for([&] { return txf->used_idx() == 5; }));
    for (uint16_t i = 0; i < 5; ++i) EXPECT_EQ(txf->used(i).len, 0u);
    auto got = host->recv_test_frame();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, good) << "only the good frame reaches the tap";
    EXPECT_FALSE(host->recv_test_frame(std::chrono::milliseconds(200)));
    NetCounters c = dev->counters();
    EXPECT_EQ(c.bad_chains, 4u);
    EXPECT_EQ(c.tx_dropped, 4u);
    EXPECT_EQ(c.tx_packets, 1u);
    EXPECT_EQ(c.chain_errors[static_cast<size_t>(ChainError::Malformed)], 1u);
    EXPECT_EQ(c.chain_errors[static_cast<size_t>(ChainError::WrongDirection)], 1u);
    EXPECT_EQ(c.chain_errors[static_cast<size_t>(ChainError::ShortHeader)], 1u);
    EXPECT_EQ(c.chain_errors[static_cast<size_t>(ChainError::BadHeader)], 1u);
    EXPECT_EQ(irq.needs_reset.load(), 0);
    std::lock_guard g(log_mu);
    EXPECT_FALSE(logs.empty());
}

TEST_P(NetDeviceTest, ReceivesIntoMergeableBuffers) {
    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf)));
    post_rx(32, 512);
    dev->notify(NetDevice::kRxQueue);
    auto small = test_frame(46, 6), big = test_frame(1500, 7);
    host->send(small);
    host->send(big);
    std::vector<RxFrame> got;
    ASSERT_TRUE(wait_for([&] { return (got = rx_frames()).size() == 2; }));
    EXPECT_EQ(got[0].frame, small);
    EXPECT_EQ(got[0].hdr.num_buffers, 1);
    EXPECT_EQ(got[0].lens, (std::vector<uint32_t>{72}));
    EXPECT_EQ(got[1].frame, big);
    EXPECT_EQ(got[1].hdr.num_buffers, 3);  // 12 + 1514 = 512 + 512 + 502
    EXPECT_EQ(got[1].lens, (std::vector<uint32_t>{512, 512, 502}));
    EXPECT_EQ(got[1].hdr.gso_type, kGsoNone);
    EXPECT_TRUE(wait_for([&] { return irq.used.load() > 0; }));
    NetCounters c = dev->counters();
    EXPECT_GE(c.rx_packets, 2u);
    EXPECT_EQ(c.rx_dropped, 0u);
}

TEST_P(NetDeviceTest, ReceivesIntoOneBufferWithoutMergeable) {
    ASSERT_TRUE(activate(kBase));
    post_rx(8, 2048);
    auto f = test_frame(1000, 8);
    host->send(f);
    std::vector<RxFrame> got;
    ASSERT_TRUE(wait_for([&] { return (got = rx_frames()).size() == 1; }));
    EXPECT_EQ(got[0].frame, f);
    EXPECT_EQ(got[0].hdr.num_buffers, 1);
}

// No RX buffers: the frame waits (counted), and goes as soon as the driver adds some.
TEST_P(NetDeviceTest, FrameWaitsForRxBuffers) {
    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf)));
    auto f = test_frame(700, 9);
    host->send(f);
    ASSERT_TRUE(wait_for([&] { return dev->counters().rx_waits >= 1; }));
    EXPECT_EQ(rxf->used_idx(), 0);
    post_rx(4, 256);  // 12 + 714 = 256 + 256 + 214
    dev->notify(NetDevice::kRxQueue);
    std::vector<RxFrame> got;
    ASSERT_TRUE(wait_for([&] { return (got = rx_frames()).size() == 1; }));
    EXPECT_EQ(got[0].frame, f);
    EXPECT_EQ(got[0].hdr.num_buffers, 3);
    EXPECT_EQ(dev->counters().rx_dropped, 0u);
}

// A ring whose every buffer together is too small for a frame: that frame is dropped and
// counted, the next one still arrives.
TEST_P(NetDeviceTest, FrameTooBigForTheWholeRingIsDropped) {
    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf), /*rx_size=*/4));
    post_rx(4, 64);  // 256 bytes in all
    host->send(test_frame(1000, 10));
    auto small = test_frame(50, 11);  // 12 + 64 = 64 + 12
    host->send(small);
    std::vector<RxFrame> got;
    ASSERT_TRUE(wait_for([&] { return (got = rx_frames()).size() == 1; }));
    EXPECT_EQ(got[0].frame, small);
    EXPECT_EQ(got[0].hdr.num_buffers, 2);
    EXPECT_EQ(dev->counters().rx_dropped, 1u);
    std::lock_guard g(log_mu);
    bool logged = false;
    for (const auto& l : logs) logged |= l.find("cannot hold it") != std::string::npos;
    EXPECT_TRUE(logged);
}

// Reads pending at reset are cancelled: nothing touches the old buffers, no frame is eaten by
// a dead read, and the next activation receives it.
TEST_P(NetDeviceTest, ResetCancelsPendingReads) {
    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf)));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // reads armed on the tap
    auto t0 = std::chrono::steady_clock::now();
    dev->reset();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
    auto f = test_frame(200, 12);
    host->send(f);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));

    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf), 64, 1));
    post_rx(8, 1024);
    dev->notify(NetDevice::kRxQueue);
    std::vector<RxFrame> got;
    ASSERT_TRUE(wait_for([&] { return (got = rx_frames()).size() == 1; }));
    EXPECT_EQ(got[0].frame, f);

    // Frames read but not delivered (no RX buffers left after these) are dropped at reset.
    for (int i = 0; i < 20; ++i) host->send(test_frame(900, static_cast<uint8_t>(i)));
    ASSERT_TRUE(wait_for([&] { return dev->counters().rx_waits >= 1; }));
    dev->reset();
    EXPECT_GE(dev->counters().rx_dropped, 1u);
    // The device (and its engine) can be destroyed with reads in flight after a re-activation.
    ASSERT_TRUE(activate(kBase, 64, 2));
    dev.reset();
}

TEST_P(NetDeviceTest, LinkDownDropsBothWaysAndSignalsConfig) {
    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf) | bit(kStatus)));
    post_rx(16, 2048);
    dev->set_link(false);
    EXPECT_FALSE(dev->link_up());
    EXPECT_EQ(irq.config.load(), 1);
    uint8_t st[2];
    dev->read_config(6, st);
    EXPECT_EQ(st[0] | st[1] << 8, 0);
    EXPECT_EQ(dev->state().link_up, false);

    txf->add_chain({Buf::readable(cat(tx_hdr(), test_frame(60, 13)))});
    dev->notify(NetDevice::kTxQueue);
    ASSERT_TRUE(wait_for([&] { return txf->used_idx() == 1; }));
    EXPECT_FALSE(host->recv_test_frame(std::chrono::milliseconds(200)));
    EXPECT_EQ(dev->counters().tx_dropped, 1u);

    dev->set_link(true);
    EXPECT_EQ(irq.config.load(), 2);
    dev->read_config(6, st);
    EXPECT_EQ(st[0] | st[1] << 8, kStatusLinkUp);
    auto f = test_frame(60, 14);
    txf->add_chain({Buf::readable(cat(tx_hdr(), f))});
    dev->notify(NetDevice::kTxQueue);
    auto got = host->recv_test_frame();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, f);
}

// EVENT_IDX: no interrupt while the driver's used_event says it does not want one.
TEST_P(NetDeviceTest, EventIdxSuppressesInterrupts) {
    ASSERT_TRUE(activate(kBase));
    // First completion: the device has no history, so it signals once.
    txf->add_chain({Buf::readable(cat(tx_hdr(), test_frame(60, 15)))});
    dev->notify(NetDevice::kTxQueue);
    ASSERT_TRUE(wait_for([&] { return txf->used_idx() == 1 && irq.used.load() == 1; }));
    txf->set_used_event(1000);  // "interrupt me at used idx 1001"
    for (int i = 0; i < 5; ++i) txf->add_chain({Buf::readable(cat(tx_hdr(), test_frame(60, 16)))});
    dev->notify(NetDevice::kTxQueue);
    ASSERT_TRUE(wait_for([&] { return txf->used_idx() == 6; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(irq.used.load(), 1);
    txf->set_used_event(6);  // wants one at the next completion
    txf->add_chain({Buf::readable(cat(tx_hdr(), test_frame(60, 17)))});
    dev->notify(NetDevice::kTxQueue);
    EXPECT_TRUE(wait_for([&] { return irq.used.load() == 2; }));
    // The device asked to be notified: avail_event tracks what it consumed.
    EXPECT_EQ(txf->avail_event(), 7);
}

TEST_P(NetDeviceTest, StateRoundTrip) {
    NetDevice::State s = dev->state();
    EXPECT_EQ(s.mac, mac_from_id("test-vm"));
    EXPECT_TRUE(s.link_up);
    s.mac = Mac{0x02, 1, 2, 3, 4, 5};
    s.link_up = false;
    dev->restore(s);
    EXPECT_EQ(dev->state(), s);
    uint8_t cfg[8];
    dev->read_config(0, cfg);
    EXPECT_EQ(0, std::memcmp(cfg, s.mac.data(), 6));
    EXPECT_EQ(cfg[6] | cfg[7] << 8, 0);
}

// Many frames both ways at once, more than the queues hold: nothing lost on TX, RX in order.
TEST_P(NetDeviceTest, SustainedTrafficBothWays) {
    ASSERT_TRUE(activate(kBase | bit(kMrgRxbuf)));
    constexpr int kFrames = 300;
    std::atomic<bool> stop{false};
    // The guest's RX side: keeps the ring stocked, like a driver refilling after NAPI.
    int received = 0;
    uint16_t seen = 0;
    post_rx(60, 1600);
    dev->notify(NetDevice::kRxQueue);
    std::thread sender([&] {
        for (int i = 0; i < kFrames; ++i) {
            host->send(test_frame(1000, static_cast<uint8_t>(i)));
            if (i % 16 == 15) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    int next = 0;
    bool ordered = true;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (received < kFrames && std::chrono::steady_clock::now() < deadline) {
        uint16_t now;
        auto frames = rx_frames(seen, &now);
        for (auto& f : frames) {
            ordered &= f.frame == test_frame(1000, static_cast<uint8_t>(next));
            ++next;
            ++received;
        }
        const int consumed = static_cast<uint16_t>(now - seen);
        seen = now;
        if (consumed > 0) {
            post_rx(consumed, 1600);
            dev->notify(NetDevice::kRxQueue);
        }
        // And transmit one frame per round.
        if (txf->avail_idx() - txf->used_idx() < 32)
            txf->add_chain({Buf::readable(cat(tx_hdr(), test_frame(200, 99)))});
        dev->notify(NetDevice::kTxQueue);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    stop = true;
    sender.join();
    NetCounters c = dev->counters();
    EXPECT_EQ(received, kFrames) << "rx_packets " << c.rx_packets << " waits " << c.rx_waits
                                 << " dropped " << c.rx_dropped << " errors " << c.rx_errors;
    EXPECT_TRUE(ordered);
    EXPECT_EQ(c.rx_dropped, 0u);
    EXPECT_EQ(c.rx_errors, 0u);
    EXPECT_EQ(c.tx_errors, 0u);
    EXPECT_GT(c.tx_packets, 0u);
    EXPECT_EQ(irq.needs_reset.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, NetDeviceTest,
                         ::testing::Values(io::EnginePreference::IoUring,
                                           io::EnginePreference::Sync),
                         [](const auto& info) {
                             return info.param == io::EnginePreference::IoUring ? "Uring" : "Sync";
                         });

}  // namespace
}  // namespace vessel::virtio::net
