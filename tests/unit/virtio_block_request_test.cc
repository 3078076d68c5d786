// The virtio-blk request parser: every request type and every malformed case.
#include <gtest/gtest.h>
#include <linux/virtio_blk.h>

#include <random>

#include "tests/unit/virtio_block_test_util.h"
#include "virtio/block/request.h"

namespace vessel::virtio::block {
namespace {

using testing::ChainBuilder;

constexpr uint64_t kDiskSectors = 1 << 16;  // 32 MiB

class RequestTest : public ::testing::Test {
  protected:
    RequestTest() : mem(vmm::GuestMemory::create(16 << 20)), b(mem) {
        disk.sectors = kDiskSectors;
        disk.discard = true;
        disk.write_zeroes = true;
    }
    ParsedRequest parse(uint16_t head = 7) { return parse_request(b.take(head), mem, disk); }
    uint8_t* host(uint64_t gpa) { return mem.host_ptr(gpa, 1); }

    vmm::GuestMemory mem;
    ChainBuilder b;
    DiskInfo disk;
};

TEST_F(RequestTest, Read) {
    b.header(VIRTIO_BLK_T_IN, 100).in(512).in(1024).status();
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.head, 7);
    EXPECT_EQ(r.kind, Kind::Read);
    EXPECT_EQ(r.offset, 100u * 512);
    EXPECT_EQ(r.len, 1536u);
    ASSERT_EQ(r.iovecs.size(), 2u);
    EXPECT_EQ(r.iovecs[0].iov_len, 512u);
    EXPECT_EQ(r.iovecs[1].iov_len, 1024u);
    EXPECT_EQ(r.status, host(b.status_gpa()));
}

TEST_F(RequestTest, Write) {
    std::vector<uint8_t> data(4096, 0x5a);
    b.header(VIRTIO_BLK_T_OUT, kDiskSectors - 8).out(data.data(), 4096).status();
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.kind, Kind::Write);
    EXPECT_EQ(r.offset, (kDiskSectors - 8) * 512);
    EXPECT_EQ(r.len, 4096u);
    ASSERT_EQ(r.iovecs.size(), 1u);
    EXPECT_EQ(static_cast<uint8_t*>(r.iovecs[0].iov_base)[0], 0x5a);
}

TEST_F(RequestTest, FlushIgnoresSectorAndData) {
    b.header(VIRTIO_BLK_T_FLUSH, 12345).status();
    auto r = parse();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.kind, Kind::Flush);
    b.header(VIRTIO_BLK_T_FLUSH, 0).in(512).status();
    EXPECT_TRUE(parse().ok());
}

TEST_F(RequestTest, GetIdBufferSizes) {
    b.header(VIRTIO_BLK_T_GET_ID, 0).in(20).status();
    auto r = parse();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.kind, Kind::GetId);
    EXPECT_EQ(r.len, 20u);
    b.header(VIRTIO_BLK_T_GET_ID, 0).in(8).status();
    EXPECT_EQ(parse().len, 8u);
    b.header(VIRTIO_BLK_T_GET_ID, 0).in(64).status();
    EXPECT_EQ(parse().len, 20u);
}

TEST_F(RequestTest, DiscardAndWriteZeroes) {
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(8, 16, 0).segment(1000, 1, 0).status();
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.kind, Kind::Discard);
    ASSERT_EQ(r.segments.size(), 2u);
    EXPECT_EQ(r.segments[0].offset, 8u * 512);
    EXPECT_EQ(r.segments[0].len, 16u * 512);
    EXPECT_EQ(r.segments[1].offset, 1000u * 512);

    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0)
        .segment(0, 4, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)
        .segment(kDiskSectors - 1, 1, 0)
        .status();
    r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.kind, Kind::WriteZeroes);
    ASSERT_EQ(r.segments.size(), 2u);
    EXPECT_TRUE(r.segments[0].unmap);
    EXPECT_FALSE(r.segments[1].unmap);
}

TEST_F(RequestTest, SegmentsSpanDescriptors) {
    // Two segments in one descriptor, after the header.
    std::vector<uint8_t> buf(kHeaderSize + 2 * kSegmentSize);
    virtio_blk_outhdr h{VIRTIO_BLK_T_DISCARD, 0, 0};
    virtio_blk_discard_write_zeroes s[2] = {{1, 1, 0}, {3, 2, 0}};
    std::memcpy(buf.data(), &h, sizeof h);
    std::memcpy(buf.data() + kHeaderSize, s, sizeof s);
    // Split at odd places: 10 | 20 | rest.
    b.out(buf.data(), 10).out(buf.data() + 10, 20).out(buf.data() + 30, 18).status();
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    ASSERT_EQ(r.segments.size(), 2u);
    EXPECT_EQ(r.segments[1].offset, 3u * 512);
    EXPECT_EQ(r.segments[1].len, 2u * 512);
}

TEST_F(RequestTest, HeaderSplitAcrossDescriptors) {
    virtio_blk_outhdr h{VIRTIO_BLK_T_IN, 0, 42};
    auto* p = reinterpret_cast<uint8_t*>(&h);
    b.out(p, 3).out(p + 3, 0).out(p + 3, 13).in(512).status();
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.offset, 42u * 512);
}

TEST_F(RequestTest, HeaderAndDataShareADescriptor) {
    std::vector<uint8_t> buf(kHeaderSize + 1024, 0x33);
    virtio_blk_outhdr h{VIRTIO_BLK_T_OUT, 0, 2};
    std::memcpy(buf.data(), &h, sizeof h);
    b.out(buf.data(), static_cast<uint32_t>(buf.size())).status();
    DescriptorChain c = b.take(3);
    auto r = parse_request(c, mem, disk);
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.len, 1024u);
    ASSERT_EQ(r.iovecs.size(), 1u);
    EXPECT_EQ(static_cast<uint8_t*>(r.iovecs[0].iov_base), host(c.descs[0].addr + kHeaderSize));
    EXPECT_EQ(static_cast<uint8_t*>(r.iovecs[0].iov_base)[0], 0x33);
}

TEST_F(RequestTest, DataAndStatusShareADescriptor) {
    b.header(VIRTIO_BLK_T_IN, 0).in(513);
    DescriptorChain c = b.take(1);
    auto r = parse_request(c, mem, disk);
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.len, 512u);
    EXPECT_EQ(r.status, host(c.descs[1].addr + 512));
    EXPECT_EQ(static_cast<uint8_t*>(r.iovecs[0].iov_base), host(c.descs[1].addr));
}

TEST_F(RequestTest, ZeroLengthStatusDescriptorIsSkipped) {
    b.header(VIRTIO_BLK_T_IN, 0).in(512).status().in(0);
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.status, host(b.status_gpa()));
}

TEST_F(RequestTest, UnknownTypesAreUnsupported) {
    for (uint32_t type : {2u, 3u, 5u, 10u, 14u, 0x80000000u, 0x80000001u, 0xffffffffu}) {
        b.header(type, 0).in(512).status();
        auto r = parse();
        EXPECT_EQ(r.error, RequestError::Unsupported) << type;
        EXPECT_EQ(error_status(r.error), VIRTIO_BLK_S_UNSUPP);
        EXPECT_EQ(r.status, host(b.status_gpa()));
    }
}

TEST_F(RequestTest, DiscardWithoutFeatureIsUnsupported) {
    disk.discard = false;
    disk.write_zeroes = false;
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, 1, 0).status();
    EXPECT_EQ(parse().error, RequestError::Unsupported);
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0).segment(0, 1, 0).status();
    EXPECT_EQ(parse().error, RequestError::Unsupported);
}

TEST_F(RequestTest, NoStatus) {
    b.header(VIRTIO_BLK_T_IN, 0);
    auto r = parse();
    EXPECT_EQ(r.error, RequestError::NoStatus);
    EXPECT_EQ(r.status, nullptr);

    b.header(VIRTIO_BLK_T_FLUSH, 0).in(0);  // writable but empty
    EXPECT_EQ(parse().error, RequestError::NoStatus);

    EXPECT_EQ(parse_request(DescriptorChain{}, mem, disk).error, RequestError::NoStatus);
}

TEST_F(RequestTest, ReadableAfterWritable) {
    std::vector<uint8_t> data(512);
    b.header(VIRTIO_BLK_T_OUT, 0).in(512).out(data.data(), 512).status();
    auto r = parse();
    EXPECT_EQ(r.error, RequestError::BadLayout);
    EXPECT_NE(r.status, nullptr);
    EXPECT_EQ(error_status(r.error), VIRTIO_BLK_S_IOERR);
}

TEST_F(RequestTest, ShortHeader) {
    virtio_blk_outhdr h{VIRTIO_BLK_T_IN, 0, 0};
    b.out(&h, 15).in(512).status();
    EXPECT_EQ(parse().error, RequestError::ShortHeader);
    b.in(512).status();  // no readable part at all
    EXPECT_EQ(parse().error, RequestError::ShortHeader);
}

TEST_F(RequestTest, WrongDirection) {
    std::vector<uint8_t> data(512);
    b.header(VIRTIO_BLK_T_IN, 0).out(data.data(), 512).status();
    EXPECT_EQ(parse().error, RequestError::WrongDirection);
    b.header(VIRTIO_BLK_T_OUT, 0).in(512).status();
    EXPECT_EQ(parse().error, RequestError::WrongDirection);
    b.header(VIRTIO_BLK_T_GET_ID, 0).out(data.data(), 20).in(20).status();
    EXPECT_EQ(parse().error, RequestError::WrongDirection);
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, 1, 0).in(16).status();
    EXPECT_EQ(parse().error, RequestError::WrongDirection);
}

TEST_F(RequestTest, BadLength) {
    std::vector<uint8_t> data(600);
    b.header(VIRTIO_BLK_T_IN, 0).status();  // no data
    EXPECT_EQ(parse().error, RequestError::BadLength);
    b.header(VIRTIO_BLK_T_IN, 0).in(513).status();
    EXPECT_EQ(parse().error, RequestError::BadLength);
    b.header(VIRTIO_BLK_T_OUT, 0).out(data.data(), 100).status();
    EXPECT_EQ(parse().error, RequestError::BadLength);
    b.header(VIRTIO_BLK_T_OUT, 0).status();
    EXPECT_EQ(parse().error, RequestError::BadLength);
    b.header(VIRTIO_BLK_T_GET_ID, 0).status();
    EXPECT_EQ(parse().error, RequestError::BadLength);
}

TEST_F(RequestTest, TooLarge) {
    b.header(VIRTIO_BLK_T_IN, 0).in(1 << 20).status();
    EXPECT_TRUE(parse().ok());
    b.header(VIRTIO_BLK_T_IN, 0).in(1 << 20).in(512).status();
    EXPECT_EQ(parse().error, RequestError::TooLarge);
}

TEST_F(RequestTest, TooManySegments) {
    b.header(VIRTIO_BLK_T_IN, 0);
    for (int i = 0; i < 256; ++i) b.in(512);
    b.status();
    auto r = parse();
    ASSERT_TRUE(r.ok()) << error_name(r.error);
    EXPECT_EQ(r.iovecs.size(), 256u);

    b.reset();
    b.header(VIRTIO_BLK_T_IN, 0);
    for (int i = 0; i < 257; ++i) b.in(512);
    b.status();
    EXPECT_EQ(parse().error, RequestError::TooManySegments);
}

TEST_F(RequestTest, OutOfRange) {
    b.header(VIRTIO_BLK_T_IN, kDiskSectors - 1).in(512).status();
    EXPECT_TRUE(parse().ok());
    b.header(VIRTIO_BLK_T_IN, kDiskSectors).in(512).status();
    EXPECT_EQ(parse().error, RequestError::OutOfRange);
    b.header(VIRTIO_BLK_T_IN, kDiskSectors - 1).in(1024).status();
    EXPECT_EQ(parse().error, RequestError::OutOfRange);
    // sector * 512 and sector + n overflow 64 bits.
    for (uint64_t s : {~0ull, ~0ull >> 9, (~0ull >> 9) + 1, 1ull << 55, (1ull << 63) + 1}) {
        b.header(VIRTIO_BLK_T_IN, s).in(512).status();
        EXPECT_EQ(parse().error, RequestError::OutOfRange) << s;
    }
    std::vector<uint8_t> data(512);
    b.header(VIRTIO_BLK_T_OUT, ~0ull).out(data.data(), 512).status();
    EXPECT_EQ(parse().error, RequestError::OutOfRange);
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(kDiskSectors - 1, 2, 0).status();
    EXPECT_EQ(parse().error, RequestError::OutOfRange);
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0).segment(~0ull, 1, 0).status();
    EXPECT_EQ(parse().error, RequestError::OutOfRange);
}

TEST_F(RequestTest, ReadOnlyDisk) {
    disk.read_only = true;
    std::vector<uint8_t> data(512);
    b.header(VIRTIO_BLK_T_OUT, 0).out(data.data(), 512).status();
    auto r = parse();
    EXPECT_EQ(r.error, RequestError::ReadOnly);
    EXPECT_EQ(error_status(r.error), VIRTIO_BLK_S_IOERR);
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, 1, 0).status();
    EXPECT_EQ(parse().error, RequestError::ReadOnly);
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0).segment(0, 1, 0).status();
    EXPECT_EQ(parse().error, RequestError::ReadOnly);
    b.header(VIRTIO_BLK_T_IN, 0).in(512).status();
    EXPECT_TRUE(parse().ok());
    b.header(VIRTIO_BLK_T_FLUSH, 0).status();
    EXPECT_TRUE(parse().ok());
}

TEST_F(RequestTest, BadSegments) {
    b.header(VIRTIO_BLK_T_DISCARD, 0).status();  // no segment
    EXPECT_EQ(parse().error, RequestError::BadSegments);
    uint8_t junk[15] = {};
    b.header(VIRTIO_BLK_T_DISCARD, 0).out(junk, 15).status();
    EXPECT_EQ(parse().error, RequestError::BadSegments);
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, 0, 0).status();
    EXPECT_EQ(parse().error, RequestError::BadSegments);
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, (1u << 22) + 1, 0).status();
    EXPECT_EQ(parse().error, RequestError::BadSegments);
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    for (int i = 0; i < 33; ++i) b.segment(i, 1, 0);
    b.status();
    EXPECT_EQ(parse().error, RequestError::BadSegments);
    b.reset();
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    for (int i = 0; i < 32; ++i) b.segment(i, 1, 0);
    b.status();
    EXPECT_TRUE(parse().ok());
}

TEST_F(RequestTest, UnsupportedFlags) {
    b.header(VIRTIO_BLK_T_DISCARD, 0).segment(0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).status();
    auto r = parse();
    EXPECT_EQ(r.error, RequestError::UnsupportedFlags);
    EXPECT_EQ(error_status(r.error), VIRTIO_BLK_S_UNSUPP);
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0).segment(0, 1, 2).status();
    EXPECT_EQ(parse().error, RequestError::UnsupportedFlags);
    // Flags win over other segment errors, wherever they are.
    b.header(VIRTIO_BLK_T_WRITE_ZEROES, 0).segment(~0ull, 1, 0).segment(0, 1, 0x80).status();
    EXPECT_EQ(parse().error, RequestError::UnsupportedFlags);
}

TEST_F(RequestTest, BadAddress) {
    const uint64_t outside = 64ull << 30;
    b.header(VIRTIO_BLK_T_IN, 0).raw(outside, 512, true).status();
    auto r = parse();
    EXPECT_EQ(r.error, RequestError::BadAddress);
    EXPECT_NE(r.status, nullptr);
    EXPECT_TRUE(r.iovecs.empty());
    b.header(VIRTIO_BLK_T_IN, 0).in(512).raw(outside, 1, true);
    r = parse();
    EXPECT_EQ(r.error, RequestError::BadAddress);
    EXPECT_EQ(r.status, nullptr);
    b.raw(outside, 16, false).status();
    EXPECT_EQ(parse().error, RequestError::BadAddress);
}

// Random chains, in-range or not, with random headers: the parser never crashes, and every
// pointer it hands out lies inside guest memory.
TEST_F(RequestTest, RandomChainsNeverEscapeGuestMemory) {
    std::mt19937_64 rng(1234);
    const uint64_t memsize = mem.size();
    auto inside = [&](const void* p, size_t len) {
        auto* base = mem.host_ptr(0, memsize);
        auto* q = static_cast<const uint8_t*>(p);
        return q >= base && q + len <= base + memsize;
    };
    for (int iter = 0; iter < 20000; ++iter) {
        DescriptorChain c;
        c.head = static_cast<uint16_t>(rng());
        int n = static_cast<int>(rng() % 8);
        bool writable = false;
        for (int i = 0; i < n; ++i) {
            if (rng() % 3 == 0) writable = true;
            if (rng() % 20 == 0) writable = !writable;
            uint32_t len = static_cast<uint32_t>(rng() % 4 == 0 ? rng() % 64 : rng() % 8192);
            uint64_t gpa = rng() % 10 == 0 ? rng() : rng() % (memsize - 8192);
            c.descs.push_back({gpa, len, writable});
            if (i == 0 && len >= 16 && mem.host_ptr(gpa, 16)) {
                virtio_blk_outhdr h{static_cast<uint32_t>(rng() % 16), 0,
                                    rng() % 2 ? rng() % kDiskSectors : rng()};
                mem.write_obj(gpa, h);
            }
        }
        disk.read_only = rng() % 2;
        ParsedRequest r = parse_request(c, mem, disk);
        if (r.status) {
            EXPECT_TRUE(inside(r.status, 1));
        }
        uint64_t total = 0;
        for (const iovec& v : r.iovecs) {
            EXPECT_TRUE(inside(v.iov_base, v.iov_len));
            total += v.iov_len;
        }
        if (r.ok() && (r.kind == Kind::Read || r.kind == Kind::Write)) {
            EXPECT_EQ(total, r.len);
            EXPECT_LE(r.offset + r.len, kDiskSectors * 512);
        }
        for (const Segment& s : r.segments) EXPECT_LE(s.offset + s.len, kDiskSectors * 512);
    }
}

}  // namespace
}  // namespace vessel::virtio::block
