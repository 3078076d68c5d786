// Split virtqueue, device side (virtio/queue.h): chain walking, indirect tables, every
// malformed-chain rule, used ring publication, interrupt suppression and snapshots.
#include "virtio/queue.h"

#include <gtest/gtest.h>

#include <cstring>
#include <system_error>
#include <vector>

#include "tests/support/fake_virtqueue.h"
#include "virtio/device.h"

namespace vessel::virtio {
namespace {

using testing::Buf;
using testing::FakeVirtqueue;
using testing::RawDesc;

constexpr uint64_t kMem = 4 << 20;
constexpr uint16_t kSize = 16;

class QueueTest : public ::testing::Test {
  protected:
    void SetUp() override { vq_.configure(q_, kRingFeatures); }

    DescriptorChain pop_chain() {
        PopResult r = q_.pop(mem_);
        EXPECT_EQ(r.status, PopStatus::kChain) << to_string(r.error);
        return r.chain;
    }

    // A malformed chain is consumed, reported with its head and counted, and the queue goes
    // on: the next well-formed chain pops normally.
    void expect_bad_chain(QueueError e, uint16_t head) {
        const uint64_t errors = q_.error_count();
        const uint16_t next = q_.next_avail();
        PopResult r = q_.pop(mem_);
        EXPECT_EQ(r.status, PopStatus::kBadChain);
        EXPECT_EQ(r.error, e) << to_string(r.error);
        EXPECT_EQ(r.chain.head, head);
        EXPECT_TRUE(r.chain.descs.empty());
        EXPECT_EQ(q_.error_count(), errors + 1);
        EXPECT_EQ(q_.next_avail(), static_cast<uint16_t>(next + 1));
        EXPECT_FALSE(q_.broken());

        uint16_t good = vq_.add_chain({Buf::readable({7})});
        DescriptorChain c = pop_chain();
        EXPECT_EQ(c.head, good);
        EXPECT_EQ(c.descs.size(), 1u);
    }

    vmm::GuestMemory mem_ = vmm::GuestMemory::create(kMem);
    FakeVirtqueue vq_{mem_, kSize};
    Queue q_{256, "test q"};
};

TEST(QueueConstructTest, MaxSizeMustBeAPowerOfTwoUpTo32768) {
    EXPECT_THROW(Queue(0), std::invalid_argument);
    EXPECT_THROW(Queue(3), std::invalid_argument);
    EXPECT_THROW(Queue(48), std::invalid_argument);
    EXPECT_THROW(Queue(65535), std::invalid_argument);
    EXPECT_NO_THROW(Queue(1));
    EXPECT_NO_THROW(Queue(32768));
    Queue q(128);
    EXPECT_EQ(q.max_size(), 128);
    EXPECT_EQ(q.size(), 128);  // QueueNum defaults to the maximum
    EXPECT_FALSE(q.ready());
}

TEST_F(QueueTest, IsValidChecksSizeAlignmentAndPlacement) {
    EXPECT_TRUE(q_.is_valid(mem_));
    for (uint16_t bad : {0, 3, 12, 512}) {  // zero, not a power of two, above max_size
        q_.set_size(bad);
        EXPECT_FALSE(q_.is_valid(mem_)) << bad;
    }
    q_.set_size(kSize);
    q_.set_desc_addr(vq_.desc_addr() + 8);
    EXPECT_FALSE(q_.is_valid(mem_));
    q_.set_desc_addr(vq_.desc_addr());
    q_.set_avail_addr(vq_.avail_addr() + 1);
    EXPECT_FALSE(q_.is_valid(mem_));
    q_.set_avail_addr(vq_.avail_addr());
    q_.set_used_addr(vq_.used_addr() + 2);
    EXPECT_FALSE(q_.is_valid(mem_));
    q_.set_used_addr(vq_.used_addr());
    EXPECT_TRUE(q_.is_valid(mem_));

    // Rings flush with the end of RAM are fine; one byte further is not.
    const uint64_t used_len = 6 + 8 * kSize;
    q_.set_used_addr(kMem - ((used_len + 3) & ~3ull));
    EXPECT_TRUE(q_.is_valid(mem_));
    q_.set_used_addr(kMem - 4);
    EXPECT_FALSE(q_.is_valid(mem_));
    q_.set_used_addr(vq_.used_addr());
    q_.set_desc_addr(kMem - 16 * kSize);
    EXPECT_TRUE(q_.is_valid(mem_));
    q_.set_desc_addr(kMem - 16 * kSize + 16);
    EXPECT_FALSE(q_.is_valid(mem_));
    q_.set_desc_addr(~0ull & ~15ull);  // wraps around the address space
    EXPECT_FALSE(q_.is_valid(mem_));
}

TEST_F(QueueTest, EmptyAndNotReadyPopNothing) {
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    vq_.add_chain({Buf::readable({1})});
    q_.set_ready(false);
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    EXPECT_FALSE(q_.add_used(mem_, 0, 0));
    q_.set_ready(true);
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kChain);
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    EXPECT_EQ(q_.error_count(), 0u);
}

TEST_F(QueueTest, PopsAChainAndPublishesItsCompletion) {
    uint16_t head =
        vq_.add_chain({Buf::readable({1, 2, 3}), Buf::readable({4, 5}), Buf::writable_len(100)});
    DescriptorChain c = pop_chain();
    EXPECT_EQ(c.head, head);
    ASSERT_EQ(c.descs.size(), 3u);
    EXPECT_EQ(c.descs[0].len, 3u);
    EXPECT_FALSE(c.descs[0].device_writable);
    EXPECT_EQ(vq_.read(c.descs[0].addr, 3), (std::vector<uint8_t>{1, 2, 3}));
    EXPECT_EQ(vq_.read(c.descs[1].addr, 2), (std::vector<uint8_t>{4, 5}));
    EXPECT_EQ(c.descs[2].len, 100u);
    EXPECT_TRUE(c.descs[2].device_writable);
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);

    EXPECT_EQ(vq_.used_idx(), 0);
    EXPECT_TRUE(q_.add_used(mem_, head, 42));
    EXPECT_EQ(vq_.used_idx(), 1);
    EXPECT_EQ(vq_.used(0).id, head);
    EXPECT_EQ(vq_.used(0).len, 42u);
    EXPECT_EQ(q_.next_used(), 1);
}

// Diff snapshots: a popped chain's device-writable buffers are dirty at once and again when
// the chain is used (a device may hold it across a snapshot), as is the used ring.
TEST_F(QueueTest, DirtyTrackingMarksWritableBuffersAgainWhenUsed) {
    mem_.enable_dirty_tracking();
    uint16_t head = vq_.add_chain({Buf::readable({1, 2, 3}), Buf::writable_len(5000)});
    mem_.take_dirty();  // forget the driver's own writes
    DescriptorChain c = pop_chain();
    const Descriptor w = c.descs[1];
    auto covered = [&](const std::vector<uint64_t>& b, uint64_t addr, uint64_t len) {
        for (uint64_t p = addr / 4096; p <= (addr + len - 1) / 4096; ++p)
            if (!(b[p / 64] >> (p % 64) & 1)) return false;
        return true;
    };
    EXPECT_TRUE(covered(mem_.take_dirty(), w.addr, w.len));
    ASSERT_TRUE(q_.add_used(mem_, head, 5000));
    std::vector<uint64_t> b = mem_.take_dirty();
    EXPECT_TRUE(covered(b, w.addr, w.len));
    EXPECT_TRUE(covered(b, vq_.used_addr(), 4));  // flags and idx
}

TEST_F(QueueTest, ChainOfExactlyQueueSizeIsValid) {
    std::vector<Buf> bufs(kSize, Buf::readable({9}));
    uint16_t head = vq_.add_chain(bufs);
    DescriptorChain c = pop_chain();
    EXPECT_EQ(c.head, head);
    EXPECT_EQ(c.descs.size(), kSize);
}

TEST_F(QueueTest, ZeroLengthBuffersAreAccepted) {
    vq_.add_chain({Buf::readable({}), Buf::writable_len(0)});
    EXPECT_EQ(pop_chain().descs.size(), 2u);
}

TEST_F(QueueTest, ChainsComeInOrderAcrossRingSlotWraparound) {
    uint16_t used = 0;
    for (int round = 0; round < 5; ++round) {
        std::vector<uint16_t> heads;
        for (int i = 0; i < 11; ++i)
            heads.push_back(vq_.add_chain({Buf::readable({static_cast<uint8_t>(i)})}));
        for (uint16_t h : heads) {
            DescriptorChain c = pop_chain();
            EXPECT_EQ(c.head, h);
            ASSERT_TRUE(q_.add_used(mem_, c.head, c.descs[0].len));
            EXPECT_EQ(vq_.used(used).id, h);
            ++used;
        }
        EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    }
    EXPECT_EQ(vq_.used_idx(), 55);
}

TEST_F(QueueTest, SixteenBitIndicesWrapAround) {
    Queue::State s = q_.state();
    s.next_avail = s.next_used = 65530;
    q_.restore(s);
    vq_.set_avail_idx(65530);
    std::vector<uint16_t> heads;
    for (int i = 0; i < 12; ++i) heads.push_back(vq_.add_chain({Buf::writable_len(8)}));
    EXPECT_EQ(vq_.avail_idx(), 6);  // wrapped
    for (uint16_t h : heads) {
        DescriptorChain c = pop_chain();
        EXPECT_EQ(c.head, h);
        ASSERT_TRUE(q_.add_used(mem_, c.head, 8));
    }
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    EXPECT_EQ(q_.next_avail(), 6);
    EXPECT_EQ(vq_.used_idx(), 6);
    for (uint16_t i = 0; i < 12; ++i)
        EXPECT_EQ(vq_.used(static_cast<uint16_t>(65530 + i)).id, heads[i]);
}

TEST_F(QueueTest, AFullRingOfPendingChainsIsNotAJump) {
    for (int i = 0; i < kSize; ++i) vq_.add_chain({Buf::readable({1})});
    for (int i = 0; i < kSize; ++i) pop_chain();
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    EXPECT_EQ(q_.error_count(), 0u);
}

TEST_F(QueueTest, IndirectTableIsExpanded) {
    uint16_t head = vq_.add_indirect_chain(
        {Buf::readable({1, 2}), Buf::readable({3}), Buf::writable_len(64), Buf::writable_len(1)});
    DescriptorChain c = pop_chain();
    EXPECT_EQ(c.head, head);
    ASSERT_EQ(c.descs.size(), 4u);
    EXPECT_EQ(vq_.read(c.descs[0].addr, 2), (std::vector<uint8_t>{1, 2}));
    EXPECT_EQ(vq_.read(c.descs[1].addr, 1), (std::vector<uint8_t>{3}));
    EXPECT_FALSE(c.descs[1].device_writable);
    EXPECT_TRUE(c.descs[2].device_writable);
    EXPECT_EQ(c.descs[2].len, 64u);
    EXPECT_EQ(c.descs[3].len, 1u);
}

TEST_F(QueueTest, IndirectChainFollowsNextFromEntryZero) {
    // Table order [b, c, a] chained 0 -> 2 -> 1: the chain order counts, not the table's.
    uint64_t a = vq_.put({0xa}), b = vq_.put({0xb}), c = vq_.put({0xc});
    uint16_t head = vq_.add_indirect_raw(
        {{b, 1, kDescFNext, 2}, {c, 1, kDescFWrite, 0}, {a, 1, kDescFNext, 1}});
    DescriptorChain ch = pop_chain();
    EXPECT_EQ(ch.head, head);
    ASSERT_EQ(ch.descs.size(), 3u);
    EXPECT_EQ(ch.descs[0].addr, b);
    EXPECT_EQ(ch.descs[1].addr, a);
    EXPECT_EQ(ch.descs[2].addr, c);
    EXPECT_TRUE(ch.descs[2].device_writable);
}

TEST_F(QueueTest, DirectDescriptorsMayLeadIntoAnIndirectTable) {
    uint16_t head = vq_.take_slot();
    uint16_t ind = vq_.take_slot();
    uint64_t hdr = vq_.put({1, 2, 3, 4});
    uint64_t table = vq_.write_table(vq_.table_for({Buf::readable({5}), Buf::writable_len(16)}));
    vq_.set_desc(head, {hdr, 4, kDescFNext, ind});
    // The WRITE flag of a descriptor that refers to a table is ignored.
    vq_.set_desc(ind, {table, 32, kDescFIndirect | kDescFWrite, 0});
    vq_.publish(head);
    DescriptorChain c = pop_chain();
    EXPECT_EQ(c.head, head);
    ASSERT_EQ(c.descs.size(), 3u);
    EXPECT_EQ(c.descs[0].addr, hdr);
    EXPECT_FALSE(c.descs[1].device_writable);
    EXPECT_TRUE(c.descs[2].device_writable);
}

// --- malformed chains ---

TEST_F(QueueTest, HeadOutOfRange) {
    vq_.set_avail_ring(0, kSize);
    vq_.set_avail_idx(1);
    expect_bad_chain(QueueError::kHeadOutOfRange, kSize);
    // Completing it is refused rather than handing the driver a bogus id.
    EXPECT_FALSE(q_.add_used(mem_, kSize, 0));
    EXPECT_EQ(vq_.used_idx(), 0);
}

TEST_F(QueueTest, NextOutOfRange) {
    uint16_t h = vq_.add_bad_next_chain();
    expect_bad_chain(QueueError::kNextOutOfRange, h);
}

TEST_F(QueueTest, LoopsAreDetected) {
    for (uint16_t n : std::initializer_list<uint16_t>{1, 2, 5, kSize}) {
        uint16_t h = vq_.add_loop_chain(n);
        expect_bad_chain(QueueError::kChainTooLong, h);
    }
}

TEST_F(QueueTest, BufferOutsideGuestMemory) {
    struct Case {
        uint64_t addr;
        uint32_t len;
    };
    for (Case c : {Case{kMem, 1}, Case{kMem - 8, 16}, Case{~0ull - 7, 16}, Case{1ull << 40, 4},
                   Case{0, 0xffffffff}}) {
        uint16_t h = vq_.add_raw({c.addr, c.len, 0, 0});
        expect_bad_chain(QueueError::kDescOutOfRange, h);
    }
    // The last bytes of RAM are fine.
    vq_.add_raw({kMem - 16, 16, kDescFWrite, 0});
    EXPECT_EQ(pop_chain().descs.at(0).addr, kMem - 16);
}

TEST_F(QueueTest, BadBufferLaterInTheChain) {
    uint16_t a = vq_.take_slot(), b = vq_.take_slot();
    vq_.set_desc(a, {vq_.alloc(16), 16, kDescFNext, b});
    vq_.set_desc(b, {kMem, 16, kDescFWrite, 0});
    vq_.publish(a);
    expect_bad_chain(QueueError::kDescOutOfRange, a);
}

TEST_F(QueueTest, ReadableAfterWritable) {
    uint16_t h = vq_.add_chain({Buf::writable_len(4), Buf::readable({1})});
    expect_bad_chain(QueueError::kReadableAfterWritable, h);
}

TEST_F(QueueTest, TotalLengthAbove4GiB) {
    // 1025 entries each covering all 4 MiB of RAM add up to more than a u32 holds.
    std::vector<RawDesc> t(1025);
    for (uint16_t i = 0; i < t.size(); ++i)
        t[i] = {0, static_cast<uint32_t>(kMem), kDescFNext, static_cast<uint16_t>(i + 1)};
    t.back().flags = 0;
    uint16_t h = vq_.add_indirect_raw(t);
    expect_bad_chain(QueueError::kTotalLengthTooLarge, h);
}

TEST_F(QueueTest, IndirectWithoutTheFeature) {
    vq_.configure(q_, 0);
    uint16_t h = vq_.add_indirect_chain({Buf::readable({1})});
    expect_bad_chain(QueueError::kIndirectNotNegotiated, h);
}

TEST_F(QueueTest, IndirectWithNext) {
    uint16_t h = vq_.add_indirect_raw(vq_.table_for({Buf::readable({1})}), kDescFNext);
    expect_bad_chain(QueueError::kIndirectWithNext, h);
}

TEST_F(QueueTest, NestedIndirect) {
    uint16_t h = vq_.add_nested_indirect_chain();
    expect_bad_chain(QueueError::kNestedIndirect, h);
}

TEST_F(QueueTest, IndirectTableLength) {
    uint64_t table = vq_.write_table(vq_.table_for({Buf::readable({1}), Buf::readable({2})}));
    for (uint32_t len : {0u, 8u, 24u, 16u * (Queue::kMaxIndirectEntries + 1)}) {
        uint16_t h = vq_.add_raw({table, len, kDescFIndirect, 0});
        expect_bad_chain(QueueError::kIndirectBadLength, h);
    }
}

TEST_F(QueueTest, IndirectTableOutsideGuestMemory) {
    for (uint64_t addr : std::initializer_list<uint64_t>{kMem - 16, kMem, ~0ull - 15}) {
        uint16_t h = vq_.add_raw({addr, 32, kDescFIndirect, 0});
        expect_bad_chain(QueueError::kIndirectOutOfRange, h);
    }
}

TEST_F(QueueTest, LoopInsideAnIndirectTable) {
    uint64_t a = vq_.alloc(8);
    uint16_t h = vq_.add_indirect_raw({{a, 8, kDescFNext, 1}, {a, 8, kDescFNext, 0}});
    expect_bad_chain(QueueError::kChainTooLong, h);
}

TEST_F(QueueTest, IndirectNextBeyondTheTable) {
    // Index 2 exists in the ring's table but not in this two-entry indirect table.
    uint64_t a = vq_.alloc(8);
    uint16_t h = vq_.add_indirect_raw({{a, 8, kDescFNext, 1}, {a, 8, kDescFNext, 2}});
    expect_bad_chain(QueueError::kNextOutOfRange, h);
}

TEST_F(QueueTest, IndirectEntryOutsideGuestMemory) {
    uint16_t h = vq_.add_indirect_raw({{vq_.alloc(8), 8, kDescFNext, 1}, {kMem - 4, 8, 0, 0}});
    expect_bad_chain(QueueError::kDescOutOfRange, h);
}

TEST_F(QueueTest, GuestRewritingADescriptorAfterPopDoesNotChangeTheChain) {
    uint16_t h = vq_.add_chain({Buf::readable({1, 2, 3, 4})});
    DescriptorChain c = pop_chain();
    vq_.set_desc(h, {kMem + 4096, 0xffffffff, kDescFNext, 999});
    EXPECT_EQ(c.descs.at(0).len, 4u);
    EXPECT_LT(c.descs[0].addr + c.descs[0].len, kMem);
}

TEST_F(QueueTest, MalformedChainsWriteNothingOutsideTheUsedRing) {
    // Fill RAM with a pattern, feed every kind of broken chain, complete each one, and check
    // that only the used ring (and avail_event at its end) changed.
    std::vector<uint8_t> pattern(kMem);
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 7 + 3);
    ASSERT_TRUE(mem_.write(0, pattern.data(), pattern.size()));
    FakeVirtqueue vq(mem_, kSize, 0x10000, 0x200000);
    Queue q(kSize);
    vq.configure(q, kRingFeatures);
    vq.add_loop_chain(3);
    vq.add_bad_next_chain();
    vq.add_nested_indirect_chain();
    vq.add_raw({kMem - 1, 2, 0, 0});
    vq.add_raw({kMem - 16, 64, kDescFIndirect, 0});
    vq.add_indirect_raw({{0, 8, kDescFNext, 7}});
    std::vector<uint8_t> before(kMem);
    ASSERT_TRUE(mem_.read(0, before.data(), before.size()));

    int bad = 0;
    for (PopResult r = q.pop(mem_); r.status != PopStatus::kEmpty; r = q.pop(mem_)) {
        ASSERT_EQ(r.status, PopStatus::kBadChain);
        EXPECT_TRUE(q.add_used(mem_, r.chain.head, 0));
        ++bad;
    }
    EXPECT_EQ(bad, 6);
    EXPECT_EQ(q.error_count(), 6u);

    std::vector<uint8_t> after(kMem);
    ASSERT_TRUE(mem_.read(0, after.data(), after.size()));
    const uint64_t used_end = vq.used_addr() + 6 + 8 * kSize;
    for (uint64_t i = 0; i < kMem; ++i) {
        if (i >= vq.used_addr() && i < used_end) continue;
        ASSERT_EQ(after[i], before[i]) << "byte at 0x" << std::hex << i;
    }
}

// --- queue-level errors ---

TEST_F(QueueTest, AvailIdxJumpingBreaksTheQueue) {
    vq_.set_avail_idx(kSize + 1);
    PopResult r = q_.pop(mem_);
    EXPECT_EQ(r.status, PopStatus::kBroken);
    EXPECT_EQ(r.error, QueueError::kAvailIdxJump);
    EXPECT_TRUE(q_.broken());
    EXPECT_EQ(q_.error_count(), 1u);
    // Stays broken without counting again, even if the driver repairs the index.
    vq_.set_avail_idx(0);
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kBroken);
    EXPECT_EQ(q_.error_count(), 1u);
    // A reset (and reconfiguration) brings it back.
    q_.reset();
    EXPECT_FALSE(q_.broken());
    vq_.configure(q_, kRingFeatures);
    vq_.add_chain({Buf::readable({1})});
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kChain);
}

TEST_F(QueueTest, AvailIdxBehindUsIsAJumpToo) {
    vq_.add_chain({Buf::readable({1})});
    pop_chain();
    vq_.set_avail_idx(0);  // moved backwards: 0 - 1 = 65535 pending
    EXPECT_EQ(q_.pop(mem_).error, QueueError::kAvailIdxJump);
}

TEST_F(QueueTest, RingsOutsideGuestMemoryBreakTheQueueInsteadOfFaulting) {
    Queue q(kSize);
    q.set_size(kSize);
    q.set_desc_addr(0x1000);
    q.set_avail_addr(kMem);  // not validated: pop must still cope
    q.set_used_addr(0x3000);
    q.set_ready(true);
    EXPECT_EQ(q.pop(mem_).error, QueueError::kRingOutOfRange);

    Queue q2(kSize);
    q2.set_size(kSize);
    q2.set_desc_addr(kMem - 16 * 4);  // table cut off by the end of RAM
    q2.set_avail_addr(0x2000);
    q2.set_used_addr(0x3000);
    q2.set_ready(true);
    ASSERT_TRUE(mem_.write_obj<uint16_t>(0x2002, 1));
    EXPECT_EQ(q2.pop(mem_).error, QueueError::kRingOutOfRange);

    Queue q3(kSize);
    q3.set_size(kSize);
    q3.set_desc_addr(0x1000);
    q3.set_avail_addr(0x2000);
    q3.set_used_addr(kMem - 8);
    q3.set_ready(true);
    EXPECT_FALSE(q3.add_used(mem_, 0, 0));
}

TEST_F(QueueTest, InvalidLayoutBreaksTheQueue) {
    q_.set_size(6);
    vq_.add_chain({Buf::readable({1})});
    EXPECT_EQ(q_.pop(mem_).error, QueueError::kInvalidLayout);
    EXPECT_FALSE(q_.add_used(mem_, 0, 0));
}

// --- notification suppression ---

TEST_F(QueueTest, EventIdxPublishesAvailEvent) {
    vq_.add_chain({Buf::readable({1})});
    vq_.add_chain({Buf::readable({1})});
    pop_chain();
    EXPECT_EQ(vq_.avail_event(), 1);
    pop_chain();
    EXPECT_EQ(vq_.avail_event(), 2);
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    EXPECT_EQ(vq_.avail_event(), 2);  // "notify me when entry 2 is published"
}

TEST_F(QueueTest, WithoutEventIdxAvailEventIsNotWritten) {
    vq_.configure(q_, 0);
    vq_.add_chain({Buf::readable({1})});
    pop_chain();
    EXPECT_EQ(q_.pop(mem_).status, PopStatus::kEmpty);
    EXPECT_EQ(vq_.avail_event(), 0);
}

TEST_F(QueueTest, EventIdxSuppressesInterruptsUntilUsedEventIsPassed) {
    auto complete = [&](int n) {
        for (int i = 0; i < n; ++i) {
            vq_.add_chain({Buf::writable_len(1)});
            DescriptorChain c = pop_chain();
            ASSERT_TRUE(q_.add_used(mem_, c.head, 1));
        }
    };
    complete(1);
    EXPECT_TRUE(q_.needs_interrupt(mem_));   // first decision: nothing to compare with
    EXPECT_FALSE(q_.needs_interrupt(mem_));  // nothing new since

    vq_.set_used_event(5);  // driver: interrupt once entry 5 is used (idx goes past 5)
    for (int idx = 2; idx <= 5; ++idx) {
        complete(1);
        EXPECT_FALSE(q_.needs_interrupt(mem_)) << idx;
    }
    complete(1);  // used idx 6: entry 5 is in
    EXPECT_TRUE(q_.needs_interrupt(mem_));

    // A batch that jumps over used_event still interrupts once.
    vq_.set_used_event(7);
    complete(3);  // 6 -> 9
    EXPECT_TRUE(q_.needs_interrupt(mem_));
    // used_event already behind: no interrupt.
    complete(2);
    EXPECT_FALSE(q_.needs_interrupt(mem_));
}

TEST_F(QueueTest, EventIdxAcrossWraparound) {
    Queue::State s = q_.state();
    s.next_avail = s.next_used = 65533;
    q_.restore(s);
    vq_.set_avail_idx(65533);
    auto complete_one = [&] {
        vq_.add_chain({Buf::writable_len(1)});
        DescriptorChain c = pop_chain();
        ASSERT_TRUE(q_.add_used(mem_, c.head, 1));
    };
    vq_.set_used_event(65535);
    EXPECT_TRUE(q_.needs_interrupt(mem_));  // first after restore
    complete_one();                         // 65534
    EXPECT_FALSE(q_.needs_interrupt(mem_));
    complete_one();  // 65535
    EXPECT_FALSE(q_.needs_interrupt(mem_));
    complete_one();  // 0: entry 65535 is used
    EXPECT_EQ(vq_.used_idx(), 0);
    EXPECT_TRUE(q_.needs_interrupt(mem_));
    vq_.set_used_event(1);
    complete_one();
    complete_one();  // 0 -> 2 covers entry 1
    EXPECT_TRUE(q_.needs_interrupt(mem_));
    vq_.set_used_event(65534);  // long behind
    complete_one();
    EXPECT_FALSE(q_.needs_interrupt(mem_));
}

TEST_F(QueueTest, NoInterruptFlagWithoutEventIdx) {
    vq_.configure(q_, 0);
    vq_.add_chain({Buf::writable_len(1)});
    DescriptorChain c = pop_chain();
    ASSERT_TRUE(q_.add_used(mem_, c.head, 1));
    EXPECT_TRUE(q_.needs_interrupt(mem_));
    vq_.set_avail_flags(kAvailFNoInterrupt);
    EXPECT_FALSE(q_.needs_interrupt(mem_));
    vq_.set_avail_flags(0);
    EXPECT_TRUE(q_.needs_interrupt(mem_));
    // The flag means nothing under EVENT_IDX.
    vq_.configure(q_, kFeatureEventIdx);
    vq_.set_avail_flags(kAvailFNoInterrupt);
    EXPECT_TRUE(q_.needs_interrupt(mem_));
}

TEST_F(QueueTest, AddUsedBatchPublishesAllAtOnce) {
    for (int i = 0; i < 3; ++i) vq_.add_chain({Buf::writable_len(64)});
    std::vector<Queue::UsedElem> used;
    for (uint32_t i = 0; i < 3; ++i) used.push_back({pop_chain().head, 10u + i});
    // A bad head anywhere: nothing written, nothing published.
    std::vector<Queue::UsedElem> bad = used;
    bad[1].head = kSize;
    EXPECT_FALSE(q_.add_used_batch(mem_, bad));
    EXPECT_EQ(vq_.used_idx(), 0);
    EXPECT_EQ(q_.next_used(), 0);
    ASSERT_TRUE(q_.add_used_batch(mem_, used));
    EXPECT_EQ(vq_.used_idx(), 3);
    EXPECT_EQ(q_.next_used(), 3);
    for (uint16_t i = 0; i < 3; ++i) {
        EXPECT_EQ(vq_.used(i).id, used[i].head);
        EXPECT_EQ(vq_.used(i).len, used[i].len);
    }
    EXPECT_TRUE(q_.add_used_batch(mem_, {}));  // empty: a no-op
    EXPECT_EQ(vq_.used_idx(), 3);
}

// --- state ---

TEST_F(QueueTest, StateRoundTrip) {
    for (int i = 0; i < 3; ++i) vq_.add_chain({Buf::readable({1})});
    DescriptorChain c = pop_chain();
    ASSERT_TRUE(q_.add_used(mem_, c.head, 1));
    Queue::State s = q_.state();
    EXPECT_EQ(s.max_size, 256);
    EXPECT_EQ(s.size, kSize);
    EXPECT_TRUE(s.ready);
    EXPECT_EQ(s.desc_addr, vq_.desc_addr());
    EXPECT_EQ(s.avail_addr, vq_.avail_addr());
    EXPECT_EQ(s.used_addr, vq_.used_addr());
    EXPECT_EQ(s.next_avail, 1);
    EXPECT_EQ(s.next_used, 1);
    EXPECT_TRUE(s.event_idx);
    EXPECT_TRUE(s.indirect);

    Queue r(256, "restored");
    r.restore(s);
    EXPECT_EQ(r.state(), s);
    // The restored queue carries on where the first stopped.
    PopResult p = r.pop(mem_);
    ASSERT_EQ(p.status, PopStatus::kChain);
    EXPECT_EQ(p.chain.head, vq_.used(0).id + 1);
    EXPECT_TRUE(r.add_used(mem_, p.chain.head, 2));
    EXPECT_EQ(vq_.used_idx(), 2);

    Queue other(128);
    EXPECT_THROW(other.restore(s), std::system_error);
    s.size = 512;
    EXPECT_THROW(r.restore(s), std::system_error);
}

TEST_F(QueueTest, ResetReturnsToPowerOn) {
    vq_.add_chain({Buf::readable({1})});
    pop_chain();
    q_.reset();
    Queue::State s = q_.state();
    EXPECT_EQ(s, (Queue::State{256, 256, false, 0, 0, 0, 0, 0, false, false}));
}

TEST_F(QueueTest, UndoPopGivesTheChainBack) {
    uint16_t h = vq_.add_chain({Buf::writable_len(4)});
    EXPECT_EQ(pop_chain().head, h);
    q_.undo_pop();
    EXPECT_EQ(pop_chain().head, h);
}

TEST(ConfigBytesTest, BoundsChecked) {
    std::vector<uint8_t> cfg = {1, 2, 3, 4};
    std::vector<uint8_t> out(4, 0xff);
    read_config_bytes(cfg, 2, out);
    EXPECT_EQ(out, (std::vector<uint8_t>{3, 4, 0, 0}));
    read_config_bytes(cfg, 100, out);
    EXPECT_EQ(out, (std::vector<uint8_t>{0, 0, 0, 0}));
    read_config_bytes(cfg, ~0ull, out);
    EXPECT_EQ(out, (std::vector<uint8_t>{0, 0, 0, 0}));
    std::vector<uint8_t> in = {9, 9};
    EXPECT_TRUE(write_config_bytes(cfg, 2, in));
    EXPECT_EQ(cfg, (std::vector<uint8_t>{1, 2, 9, 9}));
    EXPECT_FALSE(write_config_bytes(cfg, 3, in));
    EXPECT_FALSE(write_config_bytes(cfg, ~0ull, in));
    EXPECT_EQ(cfg, (std::vector<uint8_t>{1, 2, 9, 9}));
}

}  // namespace
}  // namespace vessel::virtio
