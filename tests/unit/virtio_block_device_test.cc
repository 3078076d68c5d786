// BlockDevice (the virtio::Device adapter) on a real split virtqueue in guest memory: the I/O
// thread pops chains, does the I/O and fills the used ring.
#include <gtest/gtest.h>
#include <linux/virtio_blk.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "tests/support/fake_virtqueue.h"
#include "tests/unit/virtio_block_test_util.h"
#include "virtio/block/device.h"

namespace vessel::virtio::block {
namespace {

using testing::disk_opts;
using testing::random_bytes;
using testing::TempFile;
using virtio::testing::Buf;
using virtio::testing::FakeVirtqueue;

class CountingIrq : public Interrupt {
  public:
    void signal_used() override { ++used; }
    void signal_config() override {}
    void signal_needs_reset() override { ++needs_reset; }
    std::atomic<int> used{0}, needs_reset{0};
};

std::vector<uint8_t> hdr(uint32_t type, uint64_t sector) {
    virtio_blk_outhdr h{type, 0, sector};
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}

bool wait_used(const FakeVirtqueue& q, uint16_t n) {
    for (int i = 0; i < 5000 && q.used_idx() != n; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return q.used_idx() == n;
}

class DeviceTest : public ::testing::Test {
  protected:
    DeviceTest() : file(1 << 20), contents(random_bytes(1 << 20, 21)) {
        file.write_all(0, contents.data(), contents.size());
    }
    std::unique_ptr<BlockDevice> make() {
        BlockDeviceOptions o;
        o.disk = disk_opts(file.path());
        o.queue_size = 16;
        o.log = [this](const std::string& l) { logs.push_back(l); };
        return std::make_unique<BlockDevice>(o);
    }

    TempFile file;
    std::vector<uint8_t> contents;
    vmm::GuestMemory mem = vmm::GuestMemory::create(16 << 20);
    std::vector<std::string> logs;
};

TEST_F(DeviceTest, FeaturesAndConfig) {
    auto dev = make();
    EXPECT_EQ(dev->device_type(), 2u);
    EXPECT_EQ(dev->queue_max_sizes(), std::vector<uint16_t>{16});
    uint64_t f = dev->device_features();
    EXPECT_EQ(f & kRingFeatures, kRingFeatures);
    EXPECT_TRUE(f & (1ull << VIRTIO_BLK_F_FLUSH));
    EXPECT_NE(dev->engine_reason().find(file.path()), std::string::npos);
    uint8_t cap[8];
    dev->read_config(0, cap);
    uint64_t c;
    std::memcpy(&c, cap, 8);
    EXPECT_EQ(c, 2048u);
    uint8_t past[4] = {1, 1, 1, 1};
    dev->read_config(58, past);  // straddles the end: the tail reads as zeros
    EXPECT_EQ(past[2], 0);
    EXPECT_EQ(past[3], 0);
    dev->write_config(0, std::span<const uint8_t>(past, 4));  // ignored
    dev->read_config(0, cap);
    EXPECT_EQ(0, std::memcmp(cap, &c, 8));
}

TEST_F(DeviceTest, ServesAQueue) {
    auto dev = make();
    FakeVirtqueue fq(mem, 16);
    Queue q(16, "blk q0");
    fq.configure(q, kFeatureIndirectDesc);
    CountingIrq irq;
    Queue* qs[] = {&q};
    EXPECT_FALSE(dev->activate(mem, qs, kFeatureIndirectDesc, irq));  // no VERSION_1
    ASSERT_TRUE(dev->activate(mem, qs, kFeatureVersion1 | kFeatureIndirectDesc, irq));

    std::vector<uint8_t> data = random_bytes(4096, 22);
    uint16_t w = fq.add_chain(
        {Buf::readable(hdr(VIRTIO_BLK_T_OUT, 8)), Buf::readable(data), Buf::writable_len(1)});
    uint16_t r = fq.add_indirect_chain(
        {Buf::readable(hdr(VIRTIO_BLK_T_IN, 100)), Buf::writable_len(4096 + 1)});
    uint16_t id = fq.add_chain(
        {Buf::readable(hdr(VIRTIO_BLK_T_GET_ID, 0)), Buf::writable_len(20), Buf::writable_len(1)});
    uint16_t bad = fq.add_loop_chain(3);
    uint16_t unsupp = fq.add_chain({Buf::readable(hdr(42, 0)), Buf::writable_len(1)});
    dev->notify(0);
    ASSERT_TRUE(wait_used(fq, 5));

    std::map<uint32_t, uint32_t> used;
    for (uint16_t i = 0; i < 5; ++i) used[fq.used(i).id] = fq.used(i).len;
    EXPECT_EQ(used.at(w), 1u);
    EXPECT_EQ(used.at(r), 4097u);
    EXPECT_EQ(used.at(id), 21u);
    EXPECT_EQ(used.at(bad), 0u);
    EXPECT_EQ(used.at(unsupp), 1u);
    EXPECT_GT(irq.used.load(), 0);
    EXPECT_EQ(irq.needs_reset.load(), 0);

    EXPECT_EQ(fq.read(fq.desc(w + 2).addr, 1)[0], VIRTIO_BLK_S_OK);
    EXPECT_EQ(file.read_all(8 * 512, 4096), data);
    // The indirect table's second entry holds the read data and the status.
    uint64_t table = fq.desc(r).addr;
    virtio::testing::RawDesc rd;
    ASSERT_TRUE(mem.read_obj(table + 16, rd));
    auto back = fq.read(rd.addr, 4097);
    EXPECT_EQ(back[4096], VIRTIO_BLK_S_OK);
    back.resize(4096);
    EXPECT_EQ(0, std::memcmp(back.data(), contents.data() + 100 * 512, 4096));
    auto idb = fq.read(fq.desc(id + 1).addr, 20);
    EXPECT_EQ(0, std::memcmp(idb.data(), dev->disk().id().data(), 20));
    EXPECT_EQ(fq.read(fq.desc(unsupp + 1).addr, 1)[0], VIRTIO_BLK_S_UNSUPP);

    dev->reset();
    EXPECT_EQ(dev->bad_chains(), 1u);

    // Activate again on fresh rings.
    FakeVirtqueue fq2(mem, 16, 0x20000, 0x800000);
    q.reset();
    fq2.configure(q, 0);
    ASSERT_TRUE(dev->activate(mem, qs, kFeatureVersion1, irq));
    uint16_t fl = fq2.add_chain({Buf::readable(hdr(VIRTIO_BLK_T_FLUSH, 0)), Buf::writable_len(1)});
    dev->notify(0);
    ASSERT_TRUE(wait_used(fq2, 1));
    EXPECT_EQ(fq2.used(0).id, fl);
    EXPECT_EQ(fq2.used(0).len, 1u);
    dev->reset();
}

// Chains published before activation (a restore) are served without a notification, and a
// flood bigger than the queue is served in queue-sized passes.
TEST_F(DeviceTest, ServesChainsPublishedBeforeActivation) {
    auto dev = make();
    FakeVirtqueue fq(mem, 16);
    Queue q(16, "blk q0");
    fq.configure(q, 0);
    CountingIrq irq;
    Queue* qs[] = {&q};
    for (int i = 0; i < 16; ++i)
        fq.add_chain({Buf::readable(hdr(VIRTIO_BLK_T_IN, i)), Buf::writable_len(513)});
    ASSERT_TRUE(dev->activate(mem, qs, kFeatureVersion1, irq));
    ASSERT_TRUE(wait_used(fq, 16));
    for (uint16_t i = 0; i < 16; ++i) EXPECT_EQ(fq.used(i).len, 513u);
    dev->reset();
}

}  // namespace
}  // namespace vessel::virtio::block
