// The virtio-net chain logic without I/O: TX chains to iovecs, frames into RX chains. Chains
// come from a real split virtqueue (FakeVirtqueue + Queue::pop) where the queue matters, and
// are crafted directly for what the queue lets through but the parser must refuse.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "tests/support/fake_virtqueue.h"
#include "virtio/net/config.h"
#include "virtio/net/packet.h"

namespace vessel::virtio::net {
namespace {

using virtio::testing::Buf;
using virtio::testing::FakeVirtqueue;
using namespace feature;

std::vector<uint8_t> hdr_bytes(uint8_t flags = 0, uint8_t gso = 0, uint16_t gso_size = 0) {
    NetHdr h{};
    h.flags = flags;
    h.gso_type = gso;
    h.gso_size = gso_size;
    h.csum_start = 34;
    h.csum_offset = 6;
    h.num_buffers = 0x7777;  // garbage the device must not pass on
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 13);
    return v;
}

std::vector<uint8_t> concat(std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

// Gathers what writev would send.
std::vector<uint8_t> gather(const TxFrame& f) {
    std::vector<uint8_t> out;
    for (const iovec& v : f.iov) {
        auto* p = static_cast<const uint8_t*>(v.iov_base);
        out.insert(out.end(), p, p + v.iov_len);
    }
    return out;
}

class PacketTest : public ::testing::Test {
  protected:
    DescriptorChain pop() {
        PopResult r = q.pop(mem);
        EXPECT_EQ(r.status, PopStatus::kChain) << to_string(r.error);
        return r.chain;
    }
    // A chain made of `bufs`, through a real queue.
    DescriptorChain chain(const std::vector<Buf>& bufs, bool indirect = false) {
        if (indirect)
            fq.add_indirect_chain(bufs);
        else
            fq.add_chain(bufs);
        return pop();
    }

    vmm::GuestMemory mem = vmm::GuestMemory::create(32 << 20);
    FakeVirtqueue fq{mem, 256};
    Queue q{256, "net test"};
    const uint64_t host_features = bit(kCsum) | bit(kHostTso4) | bit(kHostTso6) | bit(kHostEcn);

    void SetUp() override { fq.configure(q, kFeatureIndirectDesc); }
};

TEST_F(PacketTest, TxHeaderAndFrameInOneBuffer) {
    auto frame = pattern(1514, 1);
    DescriptorChain c = chain({Buf::readable(concat({hdr_bytes(), frame}))});
    TxFrame f;
    parse_tx(c, mem, 0, f);
    ASSERT_TRUE(f.ok()) << error_name(f.error);
    EXPECT_EQ(f.head, c.head);
    EXPECT_EQ(f.frame_len, 1514u);
    EXPECT_EQ(f.total_len(), 1526u);
    ASSERT_EQ(f.iov.size(), 2u);
    EXPECT_EQ(f.iov[0].iov_base, &f.hdr);  // the checked copy, not guest memory
    EXPECT_EQ(f.hdr.num_buffers, 0);
    auto sent = gather(f);
    EXPECT_EQ(std::vector<uint8_t>(sent.begin() + 12, sent.end()), frame);
}

TEST_F(PacketTest, TxHeaderSplitAcrossDescriptorsAndIndirect) {
    auto h = hdr_bytes(kHdrNeedsCsum);
    auto frame = pattern(600, 2);
    DescriptorChain c = chain(
        {Buf::readable({h.begin(), h.begin() + 5}), Buf::readable({h.begin() + 5, h.begin() + 11}),
         Buf::readable(concat({{h.begin() + 11, h.end()}, {frame.begin(), frame.begin() + 100}})),
         Buf::readable({frame.begin() + 100, frame.end()})},
        /*indirect=*/true);
    TxFrame f;
    parse_tx(c, mem, host_features, f);
    ASSERT_TRUE(f.ok()) << error_name(f.error);
    EXPECT_EQ(f.hdr.flags, kHdrNeedsCsum);
    EXPECT_EQ(f.hdr.csum_start, 34);
    EXPECT_EQ(f.frame_len, 600u);
    auto sent = gather(f);
    EXPECT_EQ(std::vector<uint8_t>(sent.begin() + 12, sent.end()), frame);
}

// The guest rewriting its header after the check cannot change what the tap gets.
TEST_F(PacketTest, TxHeaderIsCopiedOnce) {
    fq.add_chain({Buf::readable(concat({hdr_bytes(), pattern(100, 3)}))});
    DescriptorChain c = pop();
    TxFrame f;
    parse_tx(c, mem, 0, f);
    ASSERT_TRUE(f.ok());
    NetHdr evil{};
    evil.gso_type = kGsoTcpV4;
    ASSERT_TRUE(mem.write_obj(c.descs[0].addr, evil));
    EXPECT_EQ(f.hdr.gso_type, kGsoNone);
}

TEST_F(PacketTest, TxRejectsMalformedChains) {
    TxFrame f;
    auto check = [&](std::vector<Buf> bufs, ChainError want, uint64_t features = 0) {
        DescriptorChain c = chain(bufs);
        parse_tx(c, mem, features, f);
        EXPECT_EQ(f.error, want) << error_name(f.error) << " wanted " << error_name(want);
        EXPECT_FALSE(f.ok());
    };
    auto eth = pattern(60, 4);
    check({Buf::readable(hdr_bytes()), Buf::writable_len(60)}, ChainError::WrongDirection);
    check({Buf::readable(pattern(8, 1))}, ChainError::ShortHeader);
    check({Buf::readable(hdr_bytes()), Buf::readable(pattern(13, 1))}, ChainError::ShortFrame);
    check({Buf::readable(hdr_bytes())}, ChainError::ShortFrame);
    check({Buf::readable(hdr_bytes()), Buf::readable(pattern(kMaxFrame + 1, 1))},
          ChainError::TooLarge);
    // Offloads the driver did not negotiate (or nobody may use on TX).
    check({Buf::readable(hdr_bytes(kHdrNeedsCsum)), Buf::readable(eth)}, ChainError::BadHeader);
    check({Buf::readable(hdr_bytes(kHdrDataValid)), Buf::readable(eth)}, ChainError::BadHeader,
          host_features);
    check({Buf::readable(hdr_bytes(kHdrNeedsCsum, kGsoTcpV4, 1448)), Buf::readable(eth)},
          ChainError::BadHeader, bit(kCsum));
    check({Buf::readable(hdr_bytes(kHdrNeedsCsum, kGsoTcpV4, 0)), Buf::readable(eth)},
          ChainError::BadHeader, host_features);  // GSO with no segment size
    check({Buf::readable(hdr_bytes(kHdrNeedsCsum, kGsoTcpV6 | kGsoEcn, 1448)), Buf::readable(eth)},
          ChainError::BadHeader, bit(kCsum) | bit(kHostTso6));
    check({Buf::readable(hdr_bytes(kHdrNeedsCsum, kGsoUdp, 1448)), Buf::readable(eth)},
          ChainError::BadHeader, host_features);
    check({Buf::readable(hdr_bytes(0, kGsoEcn, 0)), Buf::readable(eth)}, ChainError::BadHeader,
          host_features);

    // ...and the same with the features negotiated passes.
    DescriptorChain c = chain(
        {Buf::readable(hdr_bytes(kHdrNeedsCsum, kGsoTcpV6 | kGsoEcn, 1448)), Buf::readable(eth)});
    parse_tx(c, mem, host_features, f);
    EXPECT_TRUE(f.ok()) << error_name(f.error);
}

TEST_F(PacketTest, TxTooManySegments) {
    std::vector<Buf> bufs = {Buf::readable(hdr_bytes())};
    for (int i = 0; i < 1100; ++i) bufs.push_back(Buf::readable(pattern(2, 1)));
    // Longer than the ring: only an indirect table holds it.
    DescriptorChain c = chain(bufs, /*indirect=*/true);
    TxFrame f;
    parse_tx(c, mem, 0, f);
    EXPECT_EQ(f.error, ChainError::TooManySegments);
}

// Chains the queue accepts but whose buffers do not resolve (the parser re-checks: it may be
// handed a chain from anywhere) and zero-length descriptors (skipped).
TEST_F(PacketTest, CraftedChains) {
    TxFrame f;
    DescriptorChain bad;
    bad.head = 3;
    bad.descs = {{0x1000, 12, false}, {mem.size() + 0x100000, 64, false}};
    parse_tx(bad, mem, 0, f);
    EXPECT_EQ(f.error, ChainError::BadAddress);

    auto bytes = concat({hdr_bytes(), pattern(64, 5)});
    ASSERT_TRUE(mem.write(0x2000, bytes.data(), bytes.size()));
    DescriptorChain zero;
    zero.descs = {{0x9000, 0, false}, {0x2000, 76, false}, {0x9000, 0, false}};
    parse_tx(zero, mem, 0, f);
    EXPECT_TRUE(f.ok());
    EXPECT_EQ(f.frame_len, 64u);

    RxBuffer b;
    DescriptorChain rx;
    rx.descs = {{mem.size() + 0x100000, 64, true}};
    EXPECT_EQ(parse_rx(rx, mem, b), ChainError::BadAddress);
}

TEST_F(PacketTest, RxChainParsing) {
    RxBuffer b;
    EXPECT_EQ(parse_rx(chain({Buf::readable(pattern(64, 1))}), mem, b), ChainError::WrongDirection);
    EXPECT_EQ(parse_rx(chain({Buf::writable_len(6), Buf::writable_len(5)}), mem, b),
              ChainError::ShortHeader);
    DescriptorChain c = chain({Buf::writable_len(6), Buf::writable_len(6), Buf::writable_len(500)});
    EXPECT_EQ(parse_rx(c, mem, b), ChainError::None);
    EXPECT_EQ(b.head, c.head);
    EXPECT_EQ(b.capacity, 512u);
    EXPECT_EQ(b.iov.size(), 3u);
}

// RX: frames into chains, with a ring of chains the fixture fills.
class RxPlaceTest : public PacketTest {
  protected:
    // Adds an RX chain of `lens` writable buffers (filled with 0xee) to `ring`.
    void add(RxBufferRing& ring, std::vector<uint32_t> lens) {
        std::vector<Buf> bufs;
        for (uint32_t l : lens) bufs.push_back(Buf::readable(std::vector<uint8_t>(l, 0xee)));
        uint16_t head = fq.write_chain(bufs);
        // Writable: patch the flags (Buf::readable was only used to pre-fill the memory).
        for (uint16_t i = head, n = 0; n < lens.size(); ++n) {
            auto d = fq.desc(i);
            d.flags |= kDescFWrite;
            fq.set_desc(i, d);
            i = d.next;
        }
        fq.publish(head);
        DescriptorChain c = pop();
        ASSERT_EQ(parse_rx(c, mem, ring.next()), ChainError::None);
        ring.push();
    }
    // What the guest sees in chain `head`: its buffers, concatenated.
    std::vector<uint8_t> contents(const RxBuffer& b, uint32_t len) {
        std::vector<uint8_t> out;
        for (const iovec& v : b.iov) {
            auto* p = static_cast<const uint8_t*>(v.iov_base);
            out.insert(out.end(), p, p + v.iov_len);
        }
        out.resize(len);
        return out;
    }
    static std::vector<uint8_t> packet(size_t frame_len, uint8_t seed) {
        auto h = hdr_bytes(0, 0, 0);
        h[10] = h[11] = 0x55;  // the tap does not write num_buffers: garbage
        return concat({h, pattern(frame_len, seed)});
    }
    static uint16_t num_buffers(const std::vector<uint8_t>& first) {
        return static_cast<uint16_t>(first[10] | first[11] << 8);
    }
};

TEST_F(RxPlaceTest, MergeableSpansChainsAndSetsNumBuffers) {
    RxBufferRing ring(8);
    // The first chain splits the header right inside num_buffers.
    add(ring, {11, 501});
    add(ring, {512});
    add(ring, {512});
    add(ring, {512});
    std::vector<RxBuffer> snapshot = {ring.at(0), ring.at(1), ring.at(2)};
    auto p = packet(1414, 7);  // 1426 bytes: 512 + 512 + 402
    std::vector<Used> used;
    ASSERT_EQ(place_rx(p, ring, true, used), RxPlace::Done);
    ASSERT_EQ(used.size(), 3u);
    EXPECT_EQ(used[0].len, 512u);
    EXPECT_EQ(used[1].len, 512u);
    EXPECT_EQ(used[2].len, 402u);
    EXPECT_EQ(ring.size(), 1u);
    std::vector<uint8_t> got;
    for (int i = 0; i < 3; ++i) {
        auto c = contents(snapshot[i], used[i].len);
        got.insert(got.end(), c.begin(), c.end());
    }
    EXPECT_EQ(num_buffers(got), 3);
    got[10] = p[10], got[11] = p[11];
    EXPECT_EQ(got, p);
    // The rest of the last chain is untouched.
    EXPECT_EQ(contents(snapshot[2], 512)[402], 0xee);
}

TEST_F(RxPlaceTest, MergeableWaitsForBuffersThenTooBig) {
    RxBufferRing ring(2);
    add(ring, {512});
    auto p = packet(1414, 8);
    std::vector<Used> used;
    EXPECT_EQ(place_rx(p, ring, true, used), RxPlace::NeedBuffers);
    EXPECT_TRUE(used.empty());
    EXPECT_EQ(ring.size(), 1u);
    EXPECT_EQ(contents(ring.at(0), 512), std::vector<uint8_t>(512, 0xee)) << "wrote anyway";
    add(ring, {512});
    // Every chain the queue can hold is here and 1024 bytes still do not take 1426.
    EXPECT_EQ(place_rx(p, ring, true, used), RxPlace::TooBig);
    EXPECT_EQ(ring.size(), 2u);
    // A frame that fits still goes.
    auto small = packet(60, 9);
    ASSERT_EQ(place_rx(small, ring, true, used), RxPlace::Done);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].len, 72u);
    EXPECT_EQ(ring.size(), 1u);
}

TEST_F(RxPlaceTest, NonMergeableUsesOneChain) {
    RxBufferRing ring(4);
    std::vector<Used> used;
    auto p = packet(1000, 10);
    EXPECT_EQ(place_rx(p, ring, false, used), RxPlace::NeedBuffers);
    add(ring, {800});
    add(ring, {2048});
    EXPECT_EQ(place_rx(p, ring, false, used), RxPlace::TooBig);  // the first is too small
    EXPECT_EQ(ring.size(), 2u);
    ring.pop_front(1);  // (the device drops the frame; here: skip the small chain)
    RxBuffer first = ring.at(0);
    ASSERT_EQ(place_rx(p, ring, false, used), RxPlace::Done);
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].len, 1012u);
    auto got = contents(first, 1012);
    EXPECT_EQ(num_buffers(got), 1);
    EXPECT_EQ(std::vector<uint8_t>(got.begin() + 12, got.end()),
              std::vector<uint8_t>(p.begin() + 12, p.end()));
    EXPECT_EQ(ring.size(), 0u);
}

TEST(RxBufferRing, WrapsAroundAndTracksCapacity) {
    RxBufferRing ring(3);
    uint16_t next_head = 0, first_head = 0;
    for (int round = 0; round < 10; ++round) {
        while (!ring.full()) {
            RxBuffer& b = ring.next();
            b.head = next_head++;
            b.capacity = 100 + b.head;
            ring.push();
        }
        uint64_t cap = 0;
        for (size_t i = 0; i < ring.size(); ++i) {
            EXPECT_EQ(ring.at(i).head, first_head + i);
            cap += ring.at(i).capacity;
        }
        EXPECT_EQ(ring.total_capacity(), cap);
        ring.pop_front(2);
        first_head += 2;
        EXPECT_EQ(ring.size(), 1u);
    }
    ring.clear();
    EXPECT_EQ(ring.size(), 0u);
    EXPECT_EQ(ring.total_capacity(), 0u);
}

}  // namespace
}  // namespace vessel::virtio::net
