// memfd-backed guest RAM: layout around the MMIO gap and bounds-checked access
// (vmm/guest_memory.h). Large guests are cheap here: the memfd is sparse and mapped
// MAP_NORESERVE, so only touched pages cost memory.
#include "vmm/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "vmm/layout.h"

namespace vessel::vmm {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kGap = layout::kMmioGapStart;  // 3 GiB
constexpr uint64_t kHigh = layout::kMmioGapEnd;   // 4 GiB

TEST(GuestMemoryLayoutTest, BelowGapIsOneRegion) {
    for (uint64_t size : {32 * kMiB, 256 * kMiB, kGap - kMiB, kGap}) {
        auto r = GuestMemory::layout(size);
        ASSERT_EQ(r.size(), 1u) << size;
        EXPECT_EQ(r[0].gpa, 0u);
        EXPECT_EQ(r[0].size, size);
        EXPECT_EQ(r[0].file_offset, 0u);
    }
}

TEST(GuestMemoryLayoutTest, AboveGapSplitsAt3GiBAndResumesAt4GiB) {
    for (uint64_t size : {kGap + 4096, 4 * kGiB, 6 * kGiB, 64 * kGiB}) {
        auto r = GuestMemory::layout(size);
        ASSERT_EQ(r.size(), 2u) << size;
        EXPECT_EQ(r[0].gpa, 0u);
        EXPECT_EQ(r[0].size, kGap);
        EXPECT_EQ(r[1].gpa, kHigh);
        EXPECT_EQ(r[1].size, size - kGap);
        // The memfd is contiguous: the high region continues where the low one ends.
        EXPECT_EQ(r[1].file_offset, r[0].file_offset + r[0].size);
        EXPECT_EQ(r[0].size + r[1].size, size);
    }
}

TEST(GuestMemoryTest, CreateSmall) {
    auto mem = GuestMemory::create(64 * kMiB);
    EXPECT_EQ(mem.size(), 64 * kMiB);
    EXPECT_EQ(mem.low_ram_end(), 64 * kMiB);
    ASSERT_EQ(mem.regions().size(), 1u);
    EXPECT_NE(mem.regions()[0].host, nullptr);
    ASSERT_GE(mem.fd(), 0);
    struct stat st {};
    ASSERT_EQ(::fstat(mem.fd(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 64 * kMiB);
    // Fresh guest RAM reads as zeros.
    std::vector<uint8_t> buf(4096, 0xff);
    ASSERT_TRUE(mem.read(32 * kMiB, buf.data(), buf.size()));
    EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0));
}

TEST(GuestMemoryTest, HostPtrBounds) {
    const uint64_t size = 64 * kMiB;
    auto mem = GuestMemory::create(size);
    uint8_t* base = mem.host_ptr(0, size);
    ASSERT_NE(base, nullptr) << "whole RAM as one range";
    EXPECT_EQ(mem.host_ptr(size - 1, 1), base + size - 1) << "last byte";
    EXPECT_EQ(mem.host_ptr(size - 8, 8), base + size - 8);
    EXPECT_EQ(mem.host_ptr(size, 1), nullptr) << "one past the end";
    EXPECT_EQ(mem.host_ptr(size - 1, 2), nullptr) << "straddles the end";
    EXPECT_EQ(mem.host_ptr(0, size + 1), nullptr);
    // Lengths and addresses chosen so that gpa + len wraps around 2^64.
    EXPECT_EQ(mem.host_ptr(0, ~0ull), nullptr);
    EXPECT_EQ(mem.host_ptr(1, ~0ull), nullptr);
    EXPECT_EQ(mem.host_ptr(size - 1, ~0ull), nullptr);
    EXPECT_EQ(mem.host_ptr(~0ull, 1), nullptr);
    EXPECT_EQ(mem.host_ptr(~0ull, 2), nullptr);
    EXPECT_EQ(mem.host_ptr(~0ull - size + 1, size), nullptr);
    EXPECT_EQ(mem.host_ptr(layout::kIoapicAddr, 4), nullptr);
}

TEST(GuestMemoryTest, ReadWriteHelpers) {
    auto mem = GuestMemory::create(32 * kMiB);
    const char msg[] = "vessel guest memory";
    ASSERT_TRUE(mem.write(0x123456, msg, sizeof msg));
    char back[sizeof msg] = {};
    ASSERT_TRUE(mem.read(0x123456, back, sizeof back));
    EXPECT_STREQ(back, msg);
    // The same bytes through the raw pointer.
    EXPECT_EQ(std::memcmp(mem.host_ptr(0x123456, sizeof msg), msg, sizeof msg), 0);

    struct Pod {
        uint32_t a;
        uint16_t b;
        uint64_t c;
    } pod{0xdeadbeef, 0x1234, 0x0123456789abcdefull}, got{};
    ASSERT_TRUE(mem.write_obj(0x2000, pod));
    ASSERT_TRUE(mem.read_obj(0x2000, got));
    EXPECT_EQ(got.a, pod.a);
    EXPECT_EQ(got.b, pod.b);
    EXPECT_EQ(got.c, pod.c);
}

TEST(GuestMemoryTest, OutOfBoundsWriteFailsWithoutPartialWrite) {
    const uint64_t size = 32 * kMiB;
    auto mem = GuestMemory::create(size);
    std::vector<uint8_t> data(16, 0xaa);
    EXPECT_FALSE(mem.write(size - 8, data.data(), data.size()));
    std::vector<uint8_t> tail(8, 0xff);
    ASSERT_TRUE(mem.read(size - 8, tail.data(), tail.size()));
    EXPECT_EQ(tail, std::vector<uint8_t>(8, 0)) << "nothing written on failure";
    uint64_t v = 0x1111;
    EXPECT_FALSE(mem.read_obj(size - 4, v));
    EXPECT_EQ(v, 0x1111u) << "destination untouched on failure";
    EXPECT_FALSE(mem.write_obj(size, v));
}

TEST(GuestMemoryTest, WritesReachTheMemfd) {
    // KVM and snapshots use the fd: writes through the mapping must be visible there.
    auto mem = GuestMemory::create(16 * kMiB);
    const uint8_t data[4] = {1, 2, 3, 4};
    ASSERT_TRUE(mem.write(5 * kMiB + 3, data, sizeof data));
    uint8_t back[4] = {};
    ASSERT_EQ(::pread(mem.fd(), back, sizeof back, static_cast<off_t>(5 * kMiB + 3)), 4);
    EXPECT_EQ(std::memcmp(back, data, 4), 0);
}

TEST(GuestMemoryTest, MoveKeepsTheMapping) {
    auto mem = GuestMemory::create(16 * kMiB);
    ASSERT_TRUE(mem.write_obj(0x1000, uint32_t{0xcafe}));
    uint8_t* p = mem.host_ptr(0x1000, 4);
    GuestMemory moved = std::move(mem);
    EXPECT_EQ(moved.host_ptr(0x1000, 4), p);
    uint32_t v = 0;
    ASSERT_TRUE(moved.read_obj(0x1000, v));
    EXPECT_EQ(v, 0xcafeu);
}

TEST(GuestMemoryTest, LargeGuestRegionsAndGap) {
    const uint64_t size = 5 * kGiB;  // 3 GiB low + 2 GiB high
    auto mem = GuestMemory::create(size);
    ASSERT_EQ(mem.regions().size(), 2u);
    EXPECT_EQ(mem.low_ram_end(), kGap);
    const uint64_t high_end = kHigh + (size - kGap);  // 6 GiB

    EXPECT_NE(mem.host_ptr(kGap - 1, 1), nullptr) << "last low byte";
    EXPECT_EQ(mem.host_ptr(kGap, 1), nullptr) << "first gap byte";
    EXPECT_EQ(mem.host_ptr(kGap - 4, 8), nullptr) << "runs into the gap";
    EXPECT_EQ(mem.host_ptr(layout::kVirtioMmioBase, 4), nullptr);
    EXPECT_EQ(mem.host_ptr(layout::kIoapicAddr, 4), nullptr);
    EXPECT_EQ(mem.host_ptr(layout::kLapicAddr, 4), nullptr);
    EXPECT_EQ(mem.host_ptr(kHigh - 1, 1), nullptr) << "last gap byte";
    EXPECT_EQ(mem.host_ptr(kHigh - 1, 2), nullptr) << "from the gap into high RAM";
    EXPECT_EQ(mem.host_ptr(0, kGap + 1), nullptr);
    EXPECT_NE(mem.host_ptr(kHigh, 1), nullptr) << "first high byte";
    EXPECT_NE(mem.host_ptr(high_end - 1, 1), nullptr) << "last high byte";
    EXPECT_EQ(mem.host_ptr(high_end, 1), nullptr) << "one past the end";
    EXPECT_EQ(mem.host_ptr(high_end - 1, 2), nullptr);
    EXPECT_NE(mem.host_ptr(kHigh, size - kGap), nullptr) << "whole high region";
    EXPECT_EQ(mem.host_ptr(kHigh, ~0ull), nullptr);
    // High RAM is shifted up by the 1 GiB gap: gpa == size is still RAM, size + 1 GiB is not.
    EXPECT_NE(mem.host_ptr(size, 1), nullptr);
    EXPECT_EQ(mem.host_ptr(size + kGiB, 1), nullptr);
}

TEST(GuestMemoryTest, LargeGuestHighRegionMapsFileAfterLowRegion) {
    const uint64_t size = 5 * kGiB;
    auto mem = GuestMemory::create(size);
    const uint64_t marks[][2] = {
        {0x1000, 0x11}, {kGap - 1, 0x22}, {kHigh, 0x33}, {kHigh + 2 * kGiB - 1, 0x44}};
    for (const auto& m : marks) ASSERT_TRUE(mem.write_obj(m[0], static_cast<uint8_t>(m[1])));
    // gpa 4 GiB is file offset 3 GiB: nothing of the file is wasted on the gap.
    auto file_byte = [&](uint64_t off) {
        uint8_t b = 0;
        EXPECT_EQ(::pread(mem.fd(), &b, 1, static_cast<off_t>(off)), 1);
        return b;
    };
    EXPECT_EQ(file_byte(0x1000), 0x11);
    EXPECT_EQ(file_byte(kGap - 1), 0x22);
    EXPECT_EQ(file_byte(kGap), 0x33);
    EXPECT_EQ(file_byte(size - 1), 0x44);
    // And the low and high writes did not alias each other.
    uint8_t v = 0;
    ASSERT_TRUE(mem.read_obj(kGap - 1, v));
    EXPECT_EQ(v, 0x22);
    ASSERT_TRUE(mem.read_obj(kHigh, v));
    EXPECT_EQ(v, 0x33);
}

}  // namespace
}  // namespace vessel::vmm
