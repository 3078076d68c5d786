// Address-range dispatch (vmm/bus.h).
#include "vmm/bus.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "vmm/layout.h"
#include "vmm/serial.h"

namespace vessel::vmm {
namespace {

// Records accesses; reads return bytes derived from the offset and a per-device tag.
class Recorder : public BusDevice {
  public:
    struct Access {
        bool write;
        uint64_t offset;
        std::vector<uint8_t> data;
    };
    explicit Recorder(uint8_t tag) : tag_(tag) {}

    void read(uint64_t offset, std::span<uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(tag_ + offset + i);
        log.push_back({false, offset, {data.begin(), data.end()}});
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        log.push_back({true, offset, {data.begin(), data.end()}});
    }

    std::vector<Access> log;

  private:
    uint8_t tag_;
};

class BusTest : public ::testing::Test {
  protected:
    Bus bus_;
    std::shared_ptr<Recorder> a_ = std::make_shared<Recorder>(0x10);
    std::shared_ptr<Recorder> b_ = std::make_shared<Recorder>(0x80);

    void SetUp() override {
        bus_.insert(0x100, 0x10, a_);
        bus_.insert(0x200, 0x8, b_);
    }
    bool rd(uint64_t addr, std::vector<uint8_t>& buf) { return bus_.read(addr, buf); }
    bool wr(uint64_t addr, std::vector<uint8_t> buf) { return bus_.write(addr, buf); }
};

TEST_F(BusTest, DispatchesReadsWithDeviceRelativeOffset) {
    std::vector<uint8_t> buf(4, 0);
    EXPECT_TRUE(rd(0x105, buf));
    ASSERT_EQ(a_->log.size(), 1u);
    EXPECT_FALSE(a_->log[0].write);
    EXPECT_EQ(a_->log[0].offset, 5u);
    EXPECT_EQ(buf, (std::vector<uint8_t>{0x15, 0x16, 0x17, 0x18}));
    EXPECT_TRUE(b_->log.empty());
}

TEST_F(BusTest, DispatchesWritesWithDeviceRelativeOffset) {
    EXPECT_TRUE(wr(0x207, {0xab}));
    ASSERT_EQ(b_->log.size(), 1u);
    EXPECT_TRUE(b_->log[0].write);
    EXPECT_EQ(b_->log[0].offset, 7u);
    EXPECT_EQ(b_->log[0].data, std::vector<uint8_t>{0xab});
    EXPECT_TRUE(a_->log.empty());
}

TEST_F(BusTest, FirstAndLastAddressOfARange) {
    std::vector<uint8_t> buf(1);
    EXPECT_TRUE(rd(0x100, buf));
    EXPECT_TRUE(rd(0x10f, buf));
    ASSERT_EQ(a_->log.size(), 2u);
    EXPECT_EQ(a_->log[0].offset, 0u);
    EXPECT_EQ(a_->log[1].offset, 0xfu);
}

TEST_F(BusTest, UnclaimedAddressesReadZerosAndReportFalse) {
    for (uint64_t addr : {0x0ull, 0xffull, 0x110ull, 0x1ffull, 0x208ull, ~0ull}) {
        std::vector<uint8_t> buf(4, 0xff);
        EXPECT_FALSE(rd(addr, buf)) << std::hex << addr;
        EXPECT_EQ(buf, std::vector<uint8_t>(4, 0)) << std::hex << addr;
        EXPECT_FALSE(wr(addr, {1, 2})) << std::hex << addr;
    }
    EXPECT_TRUE(a_->log.empty());
    EXPECT_TRUE(b_->log.empty());
}

TEST_F(BusTest, OverlappingInsertsThrowAndLeaveBusIntact) {
    auto c = std::make_shared<Recorder>(0);
    EXPECT_THROW(bus_.insert(0x108, 0x10, c), std::invalid_argument) << "tail overlap";
    EXPECT_THROW(bus_.insert(0xf8, 0x10, c), std::invalid_argument) << "head overlap";
    EXPECT_THROW(bus_.insert(0x100, 0x10, c), std::invalid_argument) << "same range";
    EXPECT_THROW(bus_.insert(0x100, 1, c), std::invalid_argument) << "same base";
    EXPECT_THROW(bus_.insert(0x104, 2, c), std::invalid_argument) << "inside";
    EXPECT_THROW(bus_.insert(0x0, 0x1000, c), std::invalid_argument) << "covers both";
    EXPECT_THROW(bus_.insert(0x10f, 0xf2, c), std::invalid_argument) << "bridges both";
    EXPECT_THROW(bus_.insert(0x300, 0, c), std::invalid_argument) << "empty range";

    std::vector<uint8_t> buf(1);
    EXPECT_TRUE(rd(0x108, buf));
    EXPECT_TRUE(rd(0x200, buf));
    EXPECT_FALSE(rd(0x300, buf));
    EXPECT_EQ(a_->log.size(), 1u);
    EXPECT_EQ(b_->log.size(), 1u);
    EXPECT_TRUE(c->log.empty());
}

TEST_F(BusTest, AdjacentRangesAreIndependent) {
    auto before = std::make_shared<Recorder>(0x40);
    auto after = std::make_shared<Recorder>(0x60);
    ASSERT_NO_THROW(bus_.insert(0xf0, 0x10, before));
    ASSERT_NO_THROW(bus_.insert(0x110, 0xf0, after));  // fills 0x110..0x200 exactly
    std::vector<uint8_t> buf(1);
    EXPECT_TRUE(rd(0xff, buf));
    EXPECT_TRUE(rd(0x100, buf));
    EXPECT_TRUE(rd(0x10f, buf));
    EXPECT_TRUE(rd(0x110, buf));
    EXPECT_TRUE(rd(0x1ff, buf));
    EXPECT_TRUE(rd(0x200, buf));
    ASSERT_EQ(before->log.size(), 1u);
    EXPECT_EQ(before->log[0].offset, 0xfu);
    ASSERT_EQ(a_->log.size(), 2u);
    EXPECT_EQ(a_->log[0].offset, 0u);
    EXPECT_EQ(a_->log[1].offset, 0xfu);
    ASSERT_EQ(after->log.size(), 2u);
    EXPECT_EQ(after->log[0].offset, 0u);
    EXPECT_EQ(after->log[1].offset, 0xefu);
    ASSERT_EQ(b_->log.size(), 1u);
    EXPECT_EQ(b_->log[0].offset, 0u);
}

TEST(BusEdgeTest, RangeEndingAtTopOfAddressSpace) {
    Bus bus;
    auto d = std::make_shared<Recorder>(0);
    bus.insert(~0ull - 7, 8, d);
    std::vector<uint8_t> buf(1);
    EXPECT_TRUE(bus.read(~0ull, buf));
    EXPECT_FALSE(bus.read(~0ull - 8, buf));
    ASSERT_EQ(d->log.size(), 1u);
    EXPECT_EQ(d->log[0].offset, 7u);
}

TEST(BusEdgeTest, BusKeepsDevicesAlive) {
    Bus bus;
    std::weak_ptr<Recorder> weak;
    {
        auto d = std::make_shared<Recorder>(0);
        weak = d;
        bus.insert(0x10, 1, d);
    }
    EXPECT_FALSE(weak.expired());
    std::vector<uint8_t> buf(1);
    EXPECT_TRUE(bus.read(0x10, buf));
    EXPECT_EQ(weak.lock()->log.size(), 1u);
}

TEST(BusEdgeTest, SerialOnCom1Ports) {
    // The port layout the VMM uses: COM1 claims 0x3f8..0x3ff.
    Bus pio;
    std::vector<uint8_t> out;
    pio.insert(layout::kCom1Port, 8,
               std::make_shared<Serial>([&](uint8_t b) { out.push_back(b); }, nullptr));
    std::vector<uint8_t> ch = {'!'};
    EXPECT_TRUE(pio.write(0x3f8, std::span<const uint8_t>(ch)));
    EXPECT_EQ(out, ch);
    std::vector<uint8_t> lsr(1);
    EXPECT_TRUE(pio.read(0x3fd, std::span<uint8_t>(lsr)));
    EXPECT_TRUE(lsr[0] & 0x20) << "THR empty";
    EXPECT_FALSE(pio.read(0x400, std::span<uint8_t>(lsr)));
}

}  // namespace
}  // namespace vessel::vmm
