// virtio-mmio version 2 transport (virtio/mmio.h): registers, feature negotiation, queue set-up,
// activation, reset, interrupts, config space, notifications and snapshots, driven the way
// Linux's virtio_mmio driver drives it.
#include "virtio/mmio.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/support/fake_virtqueue.h"
#include "vmm/bus.h"
#include "vmm/layout.h"

namespace vessel::virtio {
namespace {

using testing::Buf;
using testing::FakeVirtqueue;

constexpr uint64_t kMem = 4 << 20;

// Registers.
constexpr uint64_t kMagic = 0x000, kVersion = 0x004, kDeviceId = 0x008, kVendor = 0x00c,
                   kDevFeatures = 0x010, kDevFeaturesSel = 0x014, kDrvFeatures = 0x020,
                   kDrvFeaturesSel = 0x024, kQueueSel = 0x030, kQueueNumMax = 0x034,
                   kQueueNum = 0x038, kQueueReady = 0x044, kQueueNotify = 0x050, kIntStatus = 0x060,
                   kIntAck = 0x064, kStatus = 0x070, kDescLo = 0x080, kDescHi = 0x084,
                   kDriverLo = 0x090, kDriverHi = 0x094, kDeviceLo = 0x0a0, kDeviceHi = 0x0a4,
                   kShmSel = 0x0ac, kShmLenLo = 0x0b0, kShmLenHi = 0x0b4, kShmBaseLo = 0x0b8,
                   kShmBaseHi = 0x0bc, kConfigGen = 0x0fc, kConfig = 0x100;

constexpr uint32_t kAck = status::kAcknowledge, kDriver = status::kDriver,
                   kFeaturesOk = status::kFeaturesOk, kDriverOk = status::kDriverOk,
                   kNeedsReset = status::kDeviceNeedsReset, kFailed = status::kFailed;

constexpr uint64_t kDevBit = 1ull << 5;  // a device-specific feature

class FakeDevice : public Device {
  public:
    uint32_t device_type() const override { return device_id::kBlock; }
    uint64_t device_features() const override { return features; }
    std::vector<uint16_t> queue_max_sizes() const override { return sizes; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override {
        read_config_bytes(config, offset, data);
    }
    void write_config(uint64_t offset, std::span<const uint8_t> data) override {
        write_config_bytes(config, offset, data);
    }
    bool activate(const vmm::GuestMemory& m, std::span<Queue* const> qs, uint64_t feats,
                  Interrupt& i) override {
        ++activations;
        if (throw_on_activate) throw std::system_error(EMFILE, std::generic_category(), "spawn");
        mem = &m;
        queues.assign(qs.begin(), qs.end());
        acked = feats;
        irq = &i;
        return !refuse;
    }
    void reset() override {
        ++resets;
        queues.clear();
        irq = nullptr;
    }
    void notify(uint16_t q) override {
        notifies.push_back(q);
        if (on_notify) on_notify(q);
    }

    uint64_t features = kRingFeatures | kDevBit;
    std::vector<uint16_t> sizes = {256, 128};
    std::vector<uint8_t> config = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
                                   0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b};
    bool refuse = false;
    bool throw_on_activate = false;
    int activations = 0;
    int resets = 0;
    std::vector<uint16_t> notifies;
    std::function<void(uint16_t)> on_notify;
    const vmm::GuestMemory* mem = nullptr;
    std::vector<Queue*> queues;
    uint64_t acked = 0;
    Interrupt* irq = nullptr;
};

class MmioTest : public ::testing::Test {
  protected:
    uint32_t r32(uint64_t off) {
        uint8_t b[4];
        t_->read(off, b);
        uint32_t v;
        std::memcpy(&v, b, 4);
        return v;
    }
    void w32(uint64_t off, uint32_t v) {
        uint8_t b[4];
        std::memcpy(b, &v, 4);
        t_->write(off, b);
    }
    void set_status(uint32_t bits) { w32(kStatus, r32(kStatus) | bits); }
    void write_driver_features(uint64_t f) {
        w32(kDrvFeaturesSel, 0);
        w32(kDrvFeatures, static_cast<uint32_t>(f));
        w32(kDrvFeaturesSel, 1);
        w32(kDrvFeatures, static_cast<uint32_t>(f >> 32));
    }
    // ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns whether FEATURES_OK stuck.
    bool negotiate(uint64_t f) {
        set_status(kAck);
        set_status(kDriver);
        write_driver_features(f);
        set_status(kFeaturesOk);
        return r32(kStatus) & kFeaturesOk;
    }
    void setup_queue(uint32_t index, const FakeVirtqueue& vq) {
        w32(kQueueSel, index);
        ASSERT_EQ(r32(kQueueReady), 0u);
        ASSERT_GE(r32(kQueueNumMax), vq.size());
        w32(kQueueNum, vq.size());
        w32(kDescLo, static_cast<uint32_t>(vq.desc_addr()));
        w32(kDescHi, static_cast<uint32_t>(vq.desc_addr() >> 32));
        w32(kDriverLo, static_cast<uint32_t>(vq.avail_addr()));
        w32(kDriverHi, static_cast<uint32_t>(vq.avail_addr() >> 32));
        w32(kDeviceLo, static_cast<uint32_t>(vq.used_addr()));
        w32(kDeviceHi, static_cast<uint32_t>(vq.used_addr() >> 32));
        w32(kQueueReady, 1);
    }
    // The whole Linux probe sequence with queue 0 set up.
    void bring_up(uint64_t f = kFeatureVersion1 | kRingFeatures) {
        ASSERT_TRUE(negotiate(f));
        setup_queue(0, vq0_);
        set_status(kDriverOk);
        ASSERT_TRUE(t_->active());
    }

    vmm::GuestMemory mem_ = vmm::GuestMemory::create(kMem);
    FakeVirtqueue vq0_{mem_, 64, 0x10000};
    FakeVirtqueue vq1_{mem_, 32, 0x20000, 0x200000};
    std::shared_ptr<FakeDevice> dev_ = std::make_shared<FakeDevice>();
    std::atomic<int> triggers_{0};
    std::unique_ptr<MmioTransport> t_ =
        std::make_unique<MmioTransport>(mem_, dev_, [this] { ++triggers_; });
};

TEST_F(MmioTest, IdentityRegisters) {
    EXPECT_EQ(r32(kMagic), 0x74726976u);
    EXPECT_EQ(r32(kVersion), 2u);
    EXPECT_EQ(r32(kDeviceId), device_id::kBlock);
    EXPECT_EQ(r32(kVendor), MmioTransport::kVendorId);
    EXPECT_EQ(r32(kStatus), 0u);
    EXPECT_EQ(r32(kConfigGen), 0u);
    EXPECT_EQ(t_->num_queues(), 2u);
    EXPECT_EQ(MmioTransport::notify_address_offset(), 0x50u);
}

TEST_F(MmioTest, ReachableThroughTheBus) {
    vmm::Bus bus;
    bus.insert(vmm::layout::kVirtioMmioBase, MmioTransport::kWindowSize, std::move(t_));
    uint8_t b[4];
    ASSERT_TRUE(bus.read(vmm::layout::kVirtioMmioBase, b));
    EXPECT_EQ(std::memcmp(b, "virt", 4), 0);
}

TEST_F(MmioTest, DeviceFeaturesAreWindowedAndIncludeVersion1) {
    w32(kDevFeaturesSel, 0);
    EXPECT_EQ(r32(kDevFeatures), static_cast<uint32_t>(kRingFeatures | kDevBit));
    w32(kDevFeaturesSel, 1);
    EXPECT_EQ(r32(kDevFeatures), 1u);  // bit 32: VIRTIO_F_VERSION_1
    w32(kDevFeaturesSel, 2);
    EXPECT_EQ(r32(kDevFeatures), 0u);
    w32(kDevFeaturesSel, 0xffffffff);
    EXPECT_EQ(r32(kDevFeatures), 0u);
}

TEST_F(MmioTest, FeaturesOkForAnOfferedSubsetWithVersion1) {
    EXPECT_TRUE(negotiate(kFeatureVersion1 | kDevBit));
    EXPECT_EQ(r32(kStatus), kAck | kDriver | kFeaturesOk);
    EXPECT_EQ(t_->state().driver_features, kFeatureVersion1 | kDevBit);
}

TEST_F(MmioTest, FeaturesOkRefusedWithoutVersion1) {
    EXPECT_FALSE(negotiate(kDevBit | kFeatureEventIdx));
    EXPECT_EQ(r32(kStatus), kAck | kDriver);
    // The driver gives up: FAILED is accepted, DRIVER_OK is not.
    set_status(kDriverOk);
    EXPECT_FALSE(t_->active());
    EXPECT_EQ(dev_->activations, 0);
    set_status(kFailed);
    EXPECT_EQ(r32(kStatus), kAck | kDriver | kFailed);
}

TEST_F(MmioTest, FeaturesOkRefusedForFeaturesNotOffered) {
    EXPECT_FALSE(negotiate(kFeatureVersion1 | (1ull << 6)));
    EXPECT_FALSE(negotiate(kFeatureVersion1 | (1ull << 40)));
    // Retrying with a proper set works.
    EXPECT_TRUE(negotiate(kFeatureVersion1));
}

TEST_F(MmioTest, FeaturesOkNeedsAcknowledgeAndDriver) {
    write_driver_features(kFeatureVersion1);  // ignored: DRIVER not set yet
    w32(kStatus, kFeaturesOk);
    EXPECT_EQ(r32(kStatus) & kFeaturesOk, 0u);
}

TEST_F(MmioTest, DriverFeaturesAreFrozenAtFeaturesOk) {
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    write_driver_features(kFeatureVersion1 | kDevBit | kRingFeatures);
    EXPECT_EQ(t_->state().driver_features, kFeatureVersion1);
    // Selectors past the second word are ignored.
    MmioTransport t(mem_, dev_, nullptr);
    uint8_t b[4] = {kAck | kDriver, 0, 0, 0};
    t.write(kStatus, b);
    uint32_t sel = 2, v = 0xffffffff;
    t.write(kDrvFeaturesSel, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&sel), 4));
    t.write(kDrvFeatures, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    EXPECT_EQ(t.state().driver_features, 0u);
}

TEST_F(MmioTest, QueueNumMaxPerQueue) {
    w32(kQueueSel, 0);
    EXPECT_EQ(r32(kQueueNumMax), 256u);
    w32(kQueueSel, 1);
    EXPECT_EQ(r32(kQueueNumMax), 128u);
    w32(kQueueSel, 2);  // Linux stops looking for queues at a zero maximum
    EXPECT_EQ(r32(kQueueNumMax), 0u);
    EXPECT_EQ(r32(kQueueReady), 0u);
    w32(kQueueNum, 16);  // no queue 2: ignored
    w32(kQueueReady, 1);
    EXPECT_EQ(r32(kQueueReady), 0u);
}

TEST_F(MmioTest, QueueConfigurationIsIgnoredBeforeFeaturesOk) {
    setup_queue(0, vq0_);
    EXPECT_EQ(r32(kQueueReady), 0u);
    EXPECT_EQ(t_->state().queues[0].desc_addr, 0u);
}

TEST_F(MmioTest, QueueConfigurationRegisters) {
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    w32(kQueueSel, 1);
    w32(kQueueNum, 32);
    w32(kDescLo, 0x89abc000);
    w32(kDescHi, 0x1);
    w32(kDriverLo, 0x2000);
    w32(kDriverHi, 0x2);
    w32(kDeviceLo, 0x3000);
    w32(kDeviceHi, 0x3);
    Queue::State q = t_->state().queues[1];
    EXPECT_EQ(q.size, 32);
    EXPECT_EQ(q.desc_addr, 0x189abc000u);
    EXPECT_EQ(q.avail_addr, 0x200002000u);
    EXPECT_EQ(q.used_addr, 0x300003000u);
    EXPECT_FALSE(q.ready);
    w32(kQueueReady, 1);
    EXPECT_EQ(r32(kQueueReady), 1u);
    // A ready queue's addresses are fixed; clearing ready unlocks them again.
    w32(kDescLo, 0);
    EXPECT_EQ(t_->state().queues[1].desc_addr, 0x189abc000u);
    w32(kQueueReady, 0);
    EXPECT_EQ(r32(kQueueReady), 0u);
    w32(kQueueNum, 70000);  // does not fit: kept as 0, fails validation later
    EXPECT_EQ(t_->state().queues[1].size, 0);
}

TEST_F(MmioTest, DriverOkActivatesTheDeviceWithItsQueues) {
    ASSERT_TRUE(negotiate(kFeatureVersion1 | kFeatureEventIdx | kDevBit));
    setup_queue(0, vq0_);
    setup_queue(1, vq1_);
    EXPECT_EQ(dev_->activations, 0);
    set_status(kDriverOk);
    EXPECT_EQ(dev_->activations, 1);
    EXPECT_TRUE(t_->active());
    EXPECT_EQ(r32(kStatus), kAck | kDriver | kFeaturesOk | kDriverOk);
    EXPECT_EQ(dev_->mem, &mem_);
    EXPECT_EQ(dev_->acked, kFeatureVersion1 | kFeatureEventIdx | kDevBit);
    ASSERT_EQ(dev_->queues.size(), 2u);
    const Queue& q0 = *dev_->queues[0];
    EXPECT_TRUE(q0.ready());
    EXPECT_EQ(q0.size(), vq0_.size());
    EXPECT_EQ(q0.desc_addr(), vq0_.desc_addr());
    EXPECT_EQ(q0.avail_addr(), vq0_.avail_addr());
    EXPECT_EQ(q0.used_addr(), vq0_.used_addr());
    EXPECT_TRUE(q0.event_idx());
    EXPECT_FALSE(q0.indirect());
    EXPECT_EQ(dev_->queues[1]->size(), vq1_.size());
    EXPECT_EQ(dev_->queues[1]->used_addr(), vq1_.used_addr());
    EXPECT_EQ(triggers_, 0);

    // Queue configuration is frozen while the device runs.
    w32(kQueueSel, 0);
    w32(kQueueReady, 0);
    w32(kQueueNum, 8);
    EXPECT_TRUE(q0.ready());
    EXPECT_EQ(q0.size(), vq0_.size());
    // A second DRIVER_OK does not activate twice.
    set_status(kDriverOk);
    EXPECT_EQ(dev_->activations, 1);
}

TEST_F(MmioTest, QueuesNotMadeReadyArePassedButNotReady) {
    bring_up();
    ASSERT_EQ(dev_->queues.size(), 2u);
    EXPECT_TRUE(dev_->queues[0]->ready());
    EXPECT_FALSE(dev_->queues[1]->ready());
}

TEST_F(MmioTest, DriverOkWithoutFeaturesOkIsIgnored) {
    set_status(kAck);
    set_status(kDriver);
    set_status(kDriverOk);
    EXPECT_EQ(r32(kStatus), kAck | kDriver);
    EXPECT_EQ(dev_->activations, 0);
}

TEST_F(MmioTest, InvalidQueueAtDriverOkNeedsReset) {
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    setup_queue(0, vq0_);
    w32(kQueueSel, 1);
    w32(kQueueNum, 32);
    w32(kDescLo, 0x30008);  // not 16-aligned
    w32(kDriverLo, 0x31000);
    w32(kDeviceLo, 0x32000);
    w32(kQueueReady, 1);
    set_status(kDriverOk);
    EXPECT_EQ(dev_->activations, 0);
    EXPECT_FALSE(t_->active());
    EXPECT_EQ(r32(kStatus), kAck | kDriver | kFeaturesOk | kNeedsReset);
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntConfig);
    EXPECT_EQ(triggers_, 1);
    // Writing the status back (with the device's bit) is harmless; only reset clears it.
    set_status(kDriverOk);
    EXPECT_FALSE(t_->active());
    w32(kStatus, 0);
    EXPECT_EQ(r32(kStatus), 0u);
}

TEST_F(MmioTest, QueueOutsideGuestMemoryAtDriverOkNeedsReset) {
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    w32(kQueueSel, 0);
    w32(kQueueNum, 64);
    w32(kDescLo, 0);
    w32(kDescHi, 0x10);  // 64 GiB: no RAM there
    w32(kQueueReady, 1);
    set_status(kDriverOk);
    EXPECT_EQ(dev_->activations, 0);
    EXPECT_TRUE(r32(kStatus) & kNeedsReset);
}

TEST_F(MmioTest, DeviceRefusingOrThrowingAtActivationNeedsReset) {
    dev_->refuse = true;
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    setup_queue(0, vq0_);
    set_status(kDriverOk);
    EXPECT_EQ(dev_->activations, 1);
    EXPECT_FALSE(t_->active());
    EXPECT_EQ(r32(kStatus) & (kDriverOk | kNeedsReset), kNeedsReset);

    w32(kStatus, 0);
    dev_->refuse = false;
    dev_->throw_on_activate = true;
    ASSERT_TRUE(negotiate(kFeatureVersion1));
    setup_queue(0, vq0_);
    set_status(kDriverOk);  // must not propagate out of the vCPU's MMIO write
    EXPECT_EQ(dev_->activations, 2);
    EXPECT_FALSE(t_->active());
    EXPECT_TRUE(r32(kStatus) & kNeedsReset);
}

TEST_F(MmioTest, StatusBitsCannotBeClearedExceptByReset) {
    set_status(kAck);
    set_status(kDriver);
    w32(kStatus, kAck);
    EXPECT_EQ(r32(kStatus), kAck | kDriver);
    EXPECT_GT(t_->bad_access_count(), 0u);
}

TEST_F(MmioTest, ResetClearsEverything) {
    bring_up();
    dev_->irq->signal_used();
    dev_->irq->signal_config();
    w32(kQueueSel, 1);
    w32(kDevFeaturesSel, 1);
    ASSERT_NE(r32(kIntStatus), 0u);

    w32(kStatus, 0);
    EXPECT_EQ(dev_->resets, 1);
    EXPECT_FALSE(t_->active());
    EXPECT_EQ(r32(kStatus), 0u);
    EXPECT_EQ(r32(kIntStatus), 0u);
    MmioTransport::State s = t_->state();
    EXPECT_EQ(s.driver_features, 0u);
    EXPECT_EQ(s.queue_sel, 0u);
    EXPECT_EQ(s.device_features_sel, 0u);
    EXPECT_EQ(s.driver_features_sel, 0u);
    for (size_t i = 0; i < s.queues.size(); ++i) {
        EXPECT_FALSE(s.queues[i].ready) << i;
        EXPECT_EQ(s.queues[i].desc_addr, 0u);
        EXPECT_EQ(s.queues[i].next_avail, 0);
        EXPECT_EQ(s.queues[i].size, s.queues[i].max_size);
    }
    w32(kQueueSel, 0);
    EXPECT_EQ(r32(kQueueReady), 0u);

    // A reset before DRIVER_OK does not reset the (inactive) device again.
    set_status(kAck);
    w32(kStatus, 0);
    EXPECT_EQ(dev_->resets, 1);

    // The driver can start over.
    bring_up();
    EXPECT_EQ(dev_->activations, 2);
}

TEST_F(MmioTest, InterruptStatusAndAck) {
    bring_up();
    Interrupt& irq = *dev_->irq;
    irq.signal_used();
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntUsedRing);
    EXPECT_EQ(triggers_, 1);
    irq.signal_config();
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntUsedRing | MmioTransport::kIntConfig);
    EXPECT_EQ(r32(kConfigGen), 1u);
    EXPECT_EQ(triggers_, 2);
    w32(kIntAck, MmioTransport::kIntUsedRing);
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntConfig);
    w32(kIntAck, 0xffffffff);
    EXPECT_EQ(r32(kIntStatus), 0u);
    // InterruptStatus is read-only.
    w32(kIntStatus, 3);
    EXPECT_EQ(r32(kIntStatus), 0u);
}

TEST_F(MmioTest, SignalsWhileInactiveAreDropped) {
    bring_up();
    Interrupt* irq = dev_->irq;
    w32(kStatus, 0);
    irq->signal_used();
    irq->signal_config();
    irq->signal_needs_reset();
    EXPECT_EQ(r32(kIntStatus), 0u);
    EXPECT_EQ(r32(kStatus), 0u);
    EXPECT_EQ(triggers_, 0);
}

TEST_F(MmioTest, DeviceCanAskForAReset) {
    bring_up();
    dev_->irq->signal_needs_reset();
    EXPECT_EQ(r32(kStatus), kAck | kDriver | kFeaturesOk | kDriverOk | kNeedsReset);
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntConfig);
    EXPECT_EQ(triggers_, 1);
    EXPECT_TRUE(t_->active());  // until the driver resets it
    w32(kStatus, 0);
    EXPECT_EQ(r32(kStatus), 0u);
    EXPECT_EQ(dev_->resets, 1);
}

TEST_F(MmioTest, ConfigSpaceAccessesAreBoundsChecked) {
    uint8_t b1[1], b2[2], b4[4], b8[8];
    t_->read(kConfig + 3, b1);
    EXPECT_EQ(b1[0], 0x13);
    t_->read(kConfig + 2, b2);
    EXPECT_EQ(b2[0], 0x12);
    EXPECT_EQ(b2[1], 0x13);
    t_->read(kConfig + 4, b4);
    EXPECT_EQ(std::vector<uint8_t>(b4, b4 + 4), (std::vector<uint8_t>{0x14, 0x15, 0x16, 0x17}));
    t_->read(kConfig, b8);
    EXPECT_EQ(b8[7], 0x17);
    // Straddling the end: the bytes that exist, then zeros; past the end: zeros.
    t_->read(kConfig + 10, b4);
    EXPECT_EQ(std::vector<uint8_t>(b4, b4 + 4), (std::vector<uint8_t>{0x1a, 0x1b, 0, 0}));
    t_->read(kConfig + 0x200, b4);
    EXPECT_EQ(std::vector<uint8_t>(b4, b4 + 4), (std::vector<uint8_t>(4, 0)));
    t_->read(0xffc, b4);
    EXPECT_EQ(std::vector<uint8_t>(b4, b4 + 4), (std::vector<uint8_t>(4, 0)));

    const uint8_t w[2] = {0xaa, 0xbb};
    t_->write(kConfig + 1, w);
    EXPECT_EQ(dev_->config[1], 0xaa);
    EXPECT_EQ(dev_->config[2], 0xbb);
    t_->write(kConfig + 11, w);  // straddles the end: ignored
    EXPECT_EQ(dev_->config[11], 0x1b);
    t_->write(kConfig + 0xe00, w);
    EXPECT_EQ(dev_->config.size(), 12u);
}

TEST_F(MmioTest, NotifyDispatch) {
    w32(kQueueNotify, 0);  // before DRIVER_OK: dropped
    t_->notify_queue(0);
    EXPECT_TRUE(dev_->notifies.empty());
    bring_up();
    w32(kQueueNotify, 1);
    w32(kQueueNotify, 0);
    t_->notify_queue(1);  // the ioeventfd path
    EXPECT_EQ(dev_->notifies, (std::vector<uint16_t>{1, 0, 1}));
    const uint64_t bad = t_->bad_access_count();
    w32(kQueueNotify, 2);
    w32(kQueueNotify, 0x10000);
    t_->notify_queue(0xffffffff);
    EXPECT_EQ(dev_->notifies.size(), 3u);
    EXPECT_EQ(t_->bad_access_count(), bad + 3);
    EXPECT_EQ(r32(kQueueNotify), 0u);  // write-only
}

TEST_F(MmioTest, UnknownShortAndMisalignedAccesses) {
    EXPECT_EQ(r32(0x0f0), 0u);      // unknown
    EXPECT_EQ(r32(0x028), 0u);      // legacy GuestPageSize: not in version 2
    EXPECT_EQ(r32(0x040), 0u);      // legacy QueuePFN
    EXPECT_EQ(r32(kQueueNum), 0u);  // write-only registers read as 0
    EXPECT_EQ(r32(kDescLo), 0u);

    uint64_t bad = t_->bad_access_count();
    uint8_t b1[1] = {0xff}, b2[2] = {0xff, 0xff}, b8[8];
    std::memset(b8, 0xff, sizeof b8);
    t_->read(kMagic, b1);
    EXPECT_EQ(b1[0], 0);
    t_->read(kMagic, b2);
    EXPECT_EQ(b2[0] | b2[1], 0);
    t_->read(kMagic, b8);
    EXPECT_EQ(b8[0], 0);
    uint8_t b4[4] = {0xff, 0xff, 0xff, 0xff};
    t_->read(kMagic + 2, b4);  // misaligned
    EXPECT_EQ(b4[0], 0);
    EXPECT_EQ(t_->bad_access_count(), bad + 4);

    const uint8_t one[1] = {kAck};
    const uint8_t two[2] = {kAck, 0};
    t_->write(kStatus, one);
    t_->write(kStatus, two);
    t_->write(kStatus + 1, std::span<const uint8_t>(b4, 4));
    EXPECT_EQ(r32(kStatus), 0u);
    EXPECT_EQ(t_->bad_access_count(), bad + 7);

    // Writes to read-only registers are ignored.
    w32(kMagic, 0);
    w32(kVersion, 1);
    w32(kDeviceId, 7);
    w32(kConfigGen, 9);
    EXPECT_EQ(r32(kMagic), 0x74726976u);
    EXPECT_EQ(r32(kVersion), 2u);
    EXPECT_EQ(r32(kDeviceId), device_id::kBlock);
    EXPECT_EQ(r32(kConfigGen), 0u);
    EXPECT_EQ(t_->bad_access_count(), bad + 11);

    // An empty access does not crash either.
    t_->read(kMagic, std::span<uint8_t>());
    t_->write(kStatus, std::span<const uint8_t>());
}

TEST_F(MmioTest, NoSharedMemoryRegions) {
    w32(kShmSel, 0);
    EXPECT_EQ(r32(kShmLenLo), 0xffffffffu);
    EXPECT_EQ(r32(kShmLenHi), 0xffffffffu);
    EXPECT_EQ(r32(kShmBaseLo), 0xffffffffu);
    EXPECT_EQ(r32(kShmBaseHi), 0xffffffffu);
}

TEST_F(MmioTest, DeviceProcessingAQueueEndToEnd) {
    // A device that completes requests inline on notify, as a simple device might.
    dev_->on_notify = [this](uint16_t qi) {
        Queue& q = *dev_->queues[qi];
        for (PopResult r = q.pop(mem_); r.status != PopStatus::kEmpty; r = q.pop(mem_)) {
            if (r.status == PopStatus::kBroken) {
                dev_->irq->signal_needs_reset();
                return;
            }
            uint32_t len = 0;
            for (const Descriptor& d : r.chain.descs) len += d.device_writable ? d.len : 0;
            q.add_used(mem_, r.chain.head, len);
        }
        if (q.needs_interrupt(mem_)) dev_->irq->signal_used();
    };
    bring_up();
    uint16_t h1 = vq0_.add_chain({Buf::readable({1, 2}), Buf::writable_len(10)});
    uint16_t h2 = vq0_.add_indirect_chain({Buf::writable_len(5)});
    w32(kQueueNotify, 0);
    EXPECT_EQ(vq0_.used_idx(), 2);
    EXPECT_EQ(vq0_.used(0).id, h1);
    EXPECT_EQ(vq0_.used(0).len, 10u);
    EXPECT_EQ(vq0_.used(1).id, h2);
    EXPECT_EQ(vq0_.used(1).len, 5u);
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntUsedRing);
    EXPECT_EQ(triggers_, 1);
    w32(kIntAck, 1);

    // A driver that scribbles over avail idx gets DEVICE_NEEDS_RESET, not a crashed VMM.
    vq0_.set_avail_idx(1000);
    w32(kQueueNotify, 0);
    EXPECT_TRUE(r32(kStatus) & kNeedsReset);
    EXPECT_EQ(r32(kIntStatus), MmioTransport::kIntConfig);
}

TEST_F(MmioTest, StateRoundTripReactivates) {
    bring_up(kFeatureVersion1 | kRingFeatures | kDevBit);
    vq0_.add_chain({Buf::writable_len(4)});
    PopResult r = dev_->queues[0]->pop(mem_);
    ASSERT_EQ(r.status, PopStatus::kChain);
    dev_->irq->signal_used();
    dev_->irq->signal_config();
    w32(kQueueSel, 1);
    MmioTransport::State s = t_->state();
    EXPECT_EQ(s.status, kAck | kDriver | kFeaturesOk | kDriverOk);
    EXPECT_EQ(s.queues[0].next_avail, 1);
    EXPECT_EQ(s.interrupt_status, 3u);
    EXPECT_EQ(s.config_generation, 1u);

    auto dev2 = std::make_shared<FakeDevice>();
    MmioTransport t2(mem_, dev2, nullptr);
    t2.restore(s);
    EXPECT_TRUE(t2.active());
    EXPECT_EQ(dev2->activations, 1);
    EXPECT_EQ(dev2->acked, kFeatureVersion1 | kRingFeatures | kDevBit);
    ASSERT_EQ(dev2->queues.size(), 2u);
    EXPECT_EQ(dev2->queues[0]->next_avail(), 1);
    EXPECT_TRUE(dev2->queues[0]->event_idx());
    EXPECT_EQ(t2.state(), s);
    // It carries on: completing the popped chain lands in the same used ring.
    EXPECT_TRUE(dev2->queues[0]->add_used(mem_, r.chain.head, 4));
    EXPECT_EQ(vq0_.used_idx(), 1);

    // An inactive state restores without activating; a restore resets an active device.
    MmioTransport::State idle =
        MmioTransport(mem_, std::make_shared<FakeDevice>(), nullptr).state();
    t2.restore(idle);
    EXPECT_FALSE(t2.active());
    EXPECT_EQ(dev2->resets, 1);
    EXPECT_EQ(t2.state(), idle);
}

TEST_F(MmioTest, RestoreRejectsStateOfAnotherShape) {
    MmioTransport::State s = t_->state();
    s.queues.pop_back();
    EXPECT_THROW(t_->restore(s), std::system_error);
    s = t_->state();
    s.queues[0].max_size = 512;
    EXPECT_THROW(t_->restore(s), std::system_error);
    s = t_->state();
    s.status = kAck | kDriver | kFeaturesOk | kDriverOk;
    s.queues[0].ready = true;
    s.queues[0].desc_addr = 8;  // misaligned: the device cannot be activated
    EXPECT_THROW(t_->restore(s), std::system_error);
}

TEST_F(MmioTest, DestroyingAnActiveTransportStopsTheDevice) {
    bring_up();
    t_.reset();
    EXPECT_EQ(dev_->resets, 1);
}

TEST_F(MmioTest, BadDeviceQueueSizeIsAHostError) {
    auto d = std::make_shared<FakeDevice>();
    d->sizes = {100};
    EXPECT_THROW(MmioTransport(mem_, d, nullptr), std::invalid_argument);
    EXPECT_THROW(MmioTransport(mem_, nullptr, nullptr), std::invalid_argument);
}

TEST_F(MmioTest, InterruptsFromAnotherThreadWhileTheVcpuAcks) {
    bring_up();
    Interrupt* irq = dev_->irq;
    std::thread io([irq] {
        for (int i = 0; i < 20000; ++i) irq->signal_used();
    });
    for (int i = 0; i < 20000; ++i) {
        uint32_t s = r32(kIntStatus);
        if (s) w32(kIntAck, s);
        EXPECT_EQ(s & ~3u, 0u);
    }
    io.join();
    EXPECT_EQ(triggers_, 20000);
}

}  // namespace
}  // namespace vessel::virtio
