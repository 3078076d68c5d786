// virtio-vsock packet parsers (virtio/vsock/packet.h): header layout, every malformed TX chain,
// RX buffer checks, and header framing across descriptor boundaries.
#include "virtio/vsock/packet.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "tests/unit/vsock_test_util.h"

namespace vessel::virtio::vsock {
namespace {

constexpr uint64_t kCid = 42;

PacketHeader rw(uint32_t len) {
    PacketHeader h;
    h.src_cid = kCid;
    h.dst_cid = kHostCid;
    h.src_port = 1000;
    h.dst_port = 52;
    h.len = len;
    h.type = kTypeStream;
    h.op = op::kRw;
    h.buf_alloc = 262144;
    h.fwd_cnt = 17;
    return h;
}

std::vector<uint8_t> bytes(const PacketHeader& h) {
    std::vector<uint8_t> v(kHeaderSize);
    encode_header(h, v.data());
    return v;
}

// Descriptor chains over guest memory, from a bump pointer.
class Chains {
  public:
    explicit Chains(const vmm::GuestMemory& mem) : mem_(mem) {}
    Chains& readable(const std::vector<uint8_t>& data) {
        uint64_t a = alloc(data.size());
        if (!data.empty()) mem_.write(a, data.data(), data.size());
        c_.descs.push_back({a, static_cast<uint32_t>(data.size()), false});
        return *this;
    }
    Chains& writable(uint32_t len) {
        c_.descs.push_back({alloc(len), len, true});
        return *this;
    }
    Chains& raw(uint64_t addr, uint32_t len, bool w) {
        c_.descs.push_back({addr, len, w});
        return *this;
    }
    DescriptorChain take(uint16_t head = 7) {
        c_.head = head;
        DescriptorChain c = std::move(c_);
        c_ = {};
        return c;
    }

  private:
    uint64_t alloc(uint64_t n) {
        uint64_t a = next_;
        next_ = (next_ + n + 63) & ~63ull;
        return a;
    }
    const vmm::GuestMemory& mem_;
    uint64_t next_ = 0x100000;
    DescriptorChain c_;
};

class PacketTest : public ::testing::Test {
  protected:
    TxPacket tx(const DescriptorChain& c) {
        TxPacket p;
        parse_tx(c, mem, kCid, p);
        return p;
    }
    std::vector<uint8_t> gather(const std::vector<iovec>& iov) {
        std::vector<uint8_t> v;
        for (const iovec& x : iov) {
            auto* p = static_cast<uint8_t*>(x.iov_base);
            v.insert(v.end(), p, p + x.iov_len);
        }
        return v;
    }
    vmm::GuestMemory mem = vmm::GuestMemory::create(4 << 20);
    Chains b{mem};
};

TEST(PacketHeaderTest, WireLayoutIsVirtioVsockHdr) {
    PacketHeader h{0x0102030405060708ull,
                   0x1112131415161718ull,
                   0x21222324,
                   0x31323334,
                   0x41424344,
                   0x5152,
                   0x6162,
                   0x71727374,
                   0x81828384,
                   0x91929394};
    uint8_t w[kHeaderSize];
    encode_header(h, w);
    auto le32 = [&](size_t off) {
        uint32_t v;
        std::memcpy(&v, w + off, 4);
        return v;
    };
    uint64_t src, dst;
    std::memcpy(&src, w, 8);
    std::memcpy(&dst, w + 8, 8);
    EXPECT_EQ(src, h.src_cid);
    EXPECT_EQ(dst, h.dst_cid);
    EXPECT_EQ(le32(16), h.src_port);
    EXPECT_EQ(le32(20), h.dst_port);
    EXPECT_EQ(le32(24), h.len);
    EXPECT_EQ(le32(28), 0x61625152u);  // type (lo), op (hi)
    EXPECT_EQ(le32(32), h.flags);
    EXPECT_EQ(le32(36), h.buf_alloc);
    EXPECT_EQ(le32(40), h.fwd_cnt);
    EXPECT_EQ(decode_header(w), h);
}

TEST_F(PacketTest, RwWithHeaderAndPayloadInTwoDescriptors) {
    auto data = testing::random_bytes(4096, 1);
    TxPacket p = tx(b.readable(bytes(rw(4096))).readable(data).take(9));
    ASSERT_TRUE(p.ok()) << error_name(p.error);
    EXPECT_EQ(p.head, 9);
    EXPECT_TRUE(p.has_header);
    EXPECT_EQ(p.hdr, rw(4096));
    EXPECT_EQ(gather(p.payload), data);
}

TEST_F(PacketTest, FramingIgnoresDescriptorBoundaries) {
    auto hdr = bytes(rw(100));
    auto data = testing::random_bytes(100, 2);
    // Header in three pieces, the last one sharing its descriptor with the payload's start,
    // an empty descriptor in the middle, and trailing bytes past len.
    std::vector<uint8_t> a(hdr.begin(), hdr.begin() + 10);
    std::vector<uint8_t> c(hdr.begin() + 10, hdr.begin() + 40);
    std::vector<uint8_t> d(hdr.begin() + 40, hdr.end());
    d.insert(d.end(), data.begin(), data.begin() + 30);
    std::vector<uint8_t> e(data.begin() + 30, data.end());
    e.resize(e.size() + 16, 0xaa);
    TxPacket p = tx(b.readable(a).readable(c).readable({}).readable(d).readable(e).take());
    ASSERT_TRUE(p.ok()) << error_name(p.error);
    EXPECT_EQ(p.hdr, rw(100));
    EXPECT_EQ(gather(p.payload), data);
    for (const iovec& v : p.payload) EXPECT_GT(v.iov_len, 0u);

    std::vector<uint8_t> one = hdr;
    one.insert(one.end(), data.begin(), data.end());
    p = tx(b.readable(one).take());
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(gather(p.payload), data);
}

TEST_F(PacketTest, ControlPacketsAndEmptyRw) {
    PacketHeader h = rw(0);
    for (uint16_t o = op::kRequest; o <= op::kCreditRequest; ++o) {
        h.op = o;
        TxPacket p = tx(b.readable(bytes(h)).take());
        EXPECT_TRUE(p.ok()) << op_name(o) << ": " << error_name(p.error);
        EXPECT_TRUE(p.payload.empty());
    }
    // The largest payload is accepted.
    auto big = testing::random_bytes(kMaxPayload, 3);
    TxPacket p = tx(b.readable(bytes(rw(kMaxPayload))).readable(big).take());
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(gather(p.payload).size(), kMaxPayload);
}

TEST_F(PacketTest, EveryMalformedTxChain) {
    auto expect = [&](const DescriptorChain& c, PacketError e, bool has_header) {
        TxPacket p = tx(c);
        EXPECT_EQ(p.error, e) << error_name(p.error) << " instead of " << error_name(e);
        EXPECT_EQ(p.has_header, has_header) << error_name(e);
        EXPECT_TRUE(p.payload.empty()) << error_name(e);
        EXPECT_FALSE(p.ok());
    };
    auto with = [&](auto&& change) {
        PacketHeader h = rw(0);
        change(h);
        return bytes(h);
    };

    expect(b.readable(bytes(rw(0))).writable(16).take(), PacketError::kWrongDirection, false);
    expect(b.writable(64).take(), PacketError::kWrongDirection, false);
    expect(b.take(), PacketError::kShortHeader, false);  // no descriptors at all
    auto hdr = bytes(rw(0));
    expect(b.readable({hdr.begin(), hdr.end() - 1}).take(), PacketError::kShortHeader, false);
    expect(b.raw(64ull << 20, 64, false).take(), PacketError::kBadAddress, false);

    expect(b.readable(with([](PacketHeader& h) { h.src_cid = 3; })).take(), PacketError::kBadSrcCid,
           true);
    expect(b.readable(with([](PacketHeader& h) { h.dst_cid = 1; })).take(), PacketError::kBadDstCid,
           true);
    expect(b.readable(with([](PacketHeader& h) { h.dst_cid = kCid; })).take(),
           PacketError::kBadDstCid, true);
    expect(b.readable(with([](PacketHeader& h) { h.type = 2; })).take(), PacketError::kBadType,
           true);
    expect(b.readable(with([](PacketHeader& h) { h.op = 0; })).take(), PacketError::kBadOp, true);
    expect(b.readable(with([](PacketHeader& h) { h.op = 8; })).take(), PacketError::kBadOp, true);
    expect(b.readable(with([](PacketHeader& h) { h.op = 0xffff; })).take(), PacketError::kBadOp,
           true);
    expect(b.readable(with([](PacketHeader& h) { h.len = kMaxPayload + 1; })).take(),
           PacketError::kTooLarge, true);
    expect(b.readable(with([](PacketHeader& h) { h.len = 0xffffffff; })).take(),
           PacketError::kTooLarge, true);
    expect(b.readable(with([](PacketHeader& h) {
                h.op = op::kRequest;
                h.len = 4;
            }))
               .readable({1, 2, 3, 4})
               .take(),
           PacketError::kUnexpectedPayload, true);
    expect(b.readable(bytes(rw(100))).readable(std::vector<uint8_t>(99)).take(),
           PacketError::kShortPayload, true);
    expect(b.readable(bytes(rw(1))).take(), PacketError::kShortPayload, true);
    // Payload whose descriptor does not map (the queue normally rejects it first).
    expect(b.readable(bytes(rw(16))).raw(64ull << 20, 16, false).take(), PacketError::kBadAddress,
           true);

    EXPECT_TRUE(answer_with_rst(PacketError::kBadType));
    EXPECT_TRUE(answer_with_rst(PacketError::kBadOp));
    EXPECT_FALSE(answer_with_rst(PacketError::kBadSrcCid));
    EXPECT_FALSE(answer_with_rst(PacketError::kBadDstCid));
    EXPECT_FALSE(answer_with_rst(PacketError::kTooLarge));
    for (size_t i = 0; i < kNumPacketErrors; ++i)
        EXPECT_NE(error_name(static_cast<PacketError>(i)), "?");
}

TEST_F(PacketTest, ReusedPacketIsCleared) {
    TxPacket p;
    auto data = testing::random_bytes(64, 4);
    parse_tx(b.readable(bytes(rw(64))).readable(data).take(1), mem, kCid, p);
    ASSERT_TRUE(p.ok());
    parse_tx(b.writable(64).take(2), mem, kCid, p);
    EXPECT_EQ(p.head, 2);
    EXPECT_FALSE(p.has_header);
    EXPECT_EQ(p.hdr, PacketHeader{});
    EXPECT_TRUE(p.payload.empty());
}

TEST_F(PacketTest, RxBuffers) {
    RxBuffer r;
    // Linux 6.1: header and payload in two descriptors.
    parse_rx_buffer(b.writable(kHeaderSize).writable(4096).take(3), mem, r);
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.head, 3);
    EXPECT_EQ(r.capacity, 4096u);
    // Header split oddly, payload sharing the last header descriptor.
    parse_rx_buffer(b.writable(20).writable(30).writable(100).take(), mem, r);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.capacity, 106u);
    EXPECT_EQ(r.header.size(), 2u);
    PacketHeader h = rw(106);
    h.src_cid = kHostCid;
    h.dst_cid = kCid;
    write_header(r, h);
    std::vector<uint8_t> got;
    for (const iovec& v : r.header) {
        auto* p = static_cast<uint8_t*>(v.iov_base);
        got.insert(got.end(), p, p + v.iov_len);
    }
    EXPECT_EQ(decode_header(got.data()), h);
    // Exactly a header: usable for control packets only.
    parse_rx_buffer(b.writable(kHeaderSize).take(), mem, r);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.capacity, 0u);
    EXPECT_TRUE(r.payload.empty());
    // Huge buffers are used up to the largest packet.
    parse_rx_buffer(b.writable(kHeaderSize + 200000).take(), mem, r);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.capacity, kMaxPayload);

    parse_rx_buffer(b.writable(kHeaderSize - 1).take(), mem, r);
    EXPECT_EQ(r.error, RxBufferError::kTooSmall);
    parse_rx_buffer(b.take(), mem, r);
    EXPECT_EQ(r.error, RxBufferError::kTooSmall);
    parse_rx_buffer(b.readable({1, 2, 3}).writable(4096).take(), mem, r);
    EXPECT_EQ(r.error, RxBufferError::kWrongDirection);
    parse_rx_buffer(b.raw(64ull << 20, 4096, true).take(), mem, r);
    EXPECT_EQ(r.error, RxBufferError::kBadAddress);
    EXPECT_TRUE(r.header.empty());
    EXPECT_EQ(r.capacity, 0u);
}

TEST(PacketPrefixTest, TakePrefix) {
    uint8_t a[10], c[10];
    std::vector<iovec> iov{{a, 10}, {c, 10}}, out;
    take_prefix(iov, 15, out);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[1].iov_len, 5u);
    take_prefix(iov, 0, out);
    EXPECT_TRUE(out.empty());
}

// Random descriptor chains over random memory: the parser answers something for each and
// never reads outside guest memory (ASan would say so).
TEST_F(PacketTest, RandomChainsNeverCrash) {
    std::mt19937_64 rng(5);
    auto junk = testing::random_bytes(1 << 20, 6);
    mem.write(0x100000, junk.data(), junk.size());
    TxPacket p;
    RxBuffer r;
    size_t ok = 0;
    for (int i = 0; i < 20000; ++i) {
        DescriptorChain c;
        c.head = static_cast<uint16_t>(rng());
        const int n = static_cast<int>(rng() % 5);
        bool w = false;
        for (int k = 0; k < n; ++k) {
            w = w || rng() % 4 == 0;
            uint64_t addr = 0x100000 + rng() % (1 << 20);
            uint32_t len = static_cast<uint32_t>(rng() % 200);
            if (rng() % 50 == 0) addr = rng();
            c.descs.push_back({addr, len, w});
        }
        if (i % 3 == 0 && !c.descs.empty()) {
            // A plausible header now and then, so the later checks run too.
            PacketHeader h = rw(static_cast<uint32_t>(rng() % 300));
            h.op = static_cast<uint16_t>(rng() % 9);
            auto hb = bytes(h);
            mem.write(0x100000, hb.data(), hb.size());
            c.descs[0] = {0x100000, static_cast<uint32_t>(kHeaderSize + rng() % 400), false};
        }
        parse_tx(c, mem, kCid, p);
        parse_rx_buffer(c, mem, r);
        ok += p.ok();
        if (p.ok()) {
            size_t total = 0;
            for (const iovec& v : p.payload) total += v.iov_len;
            EXPECT_EQ(total, p.hdr.len);
        }
    }
    EXPECT_GT(ok, 0u);
}

}  // namespace
}  // namespace vessel::virtio::vsock
