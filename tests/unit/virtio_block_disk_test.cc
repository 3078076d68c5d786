// Disk images (open, size, id, locking, O_DIRECT) and the config space built from them.
#include <gtest/gtest.h>
#include <linux/virtio_blk.h>

#include <cstring>

#include "tests/unit/virtio_block_test_util.h"
#include "virtio/block/config.h"
#include "virtio/block/disk.h"

namespace vessel::virtio::block {
namespace {

using testing::disk_opts;
using testing::TempFile;

std::string error_of(const DiskOptions& o) {
    try {
        Disk::open(o);
    } catch (const std::system_error& e) {
        return e.what();
    }
    return "";
}

int errno_of(const DiskOptions& o) {
    try {
        Disk::open(o);
    } catch (const std::system_error& e) {
        return e.code().value();
    }
    return 0;
}

TEST(Disk, SizeIsRoundedDownToSectors) {
    TempFile f((1 << 20) + 100);
    Disk d = Disk::open(disk_opts(f.path()));
    EXPECT_EQ(d.sectors(), 2048u);
    EXPECT_FALSE(d.read_only());
    EXPECT_TRUE(d.discard());  // ext4/xfs/tmpfs all punch holes
    DiskInfo i = d.info();
    EXPECT_EQ(i.sectors, 2048u);
    EXPECT_TRUE(i.discard);
    EXPECT_TRUE(i.write_zeroes);
    EXPECT_EQ(f.size(), (1u << 20) + 100);  // the probe did not change the file
}

TEST(Disk, IdIsStableAndPerFile) {
    TempFile a(4096), b(4096);
    std::array<uint8_t, kIdBytes> id1, id2;
    {
        Disk d = Disk::open(disk_opts(a.path()));
        id1 = d.id();
    }
    id2 = Disk::open(disk_opts(a.path())).id();
    EXPECT_EQ(id1, id2);
    EXPECT_NE(Disk::open(disk_opts(b.path())).id(), id1);
    for (uint8_t c : id1) {
        EXPECT_TRUE(std::isxdigit(c)) << int(c);
    }

    Disk s = Disk::open(disk_opts(a.path(), false, false, "vessel-disk-0"));
    EXPECT_EQ(0, std::memcmp(s.id().data(), "vessel-disk-0\0\0\0\0\0\0\0", kIdBytes));
    EXPECT_EQ(errno_of(disk_opts(b.path(), false, false, std::string(21, 'x'))), EINVAL);
}

TEST(Disk, ExclusiveLockForWritersSharedForReaders) {
    TempFile f(4096);
    {
        Disk rw = Disk::open(disk_opts(f.path()));
        EXPECT_EQ(errno_of(disk_opts(f.path())), EWOULDBLOCK);
        std::string msg = error_of(disk_opts(f.path(), true));
        EXPECT_NE(msg.find(f.path()), std::string::npos) << msg;
        EXPECT_NE(msg.find("in use"), std::string::npos) << msg;
    }
    {
        Disk ro1 = Disk::open(disk_opts(f.path(), true));
        Disk ro2 = Disk::open(disk_opts(f.path(), true));
        EXPECT_EQ(errno_of(disk_opts(f.path())), EWOULDBLOCK);
    }
    EXPECT_NO_THROW(Disk::open(disk_opts(f.path())));  // locks went with the Disks
}

TEST(Disk, OpenErrorsNameTheImage) {
    std::string msg = error_of(disk_opts("/nonexistent/vessel.img"));
    EXPECT_NE(msg.find("/nonexistent/vessel.img"), std::string::npos) << msg;
    EXPECT_EQ(errno_of(disk_opts("/nonexistent/vessel.img")), ENOENT);
    EXPECT_EQ(errno_of(disk_opts("/dev/null")), EINVAL);  // a character device
    msg = error_of(disk_opts("/dev/null"));
    EXPECT_NE(msg.find("neither a regular file nor a block device"), std::string::npos) << msg;
}

TEST(Disk, ReadOnly) {
    TempFile f(8192);
    Disk d = Disk::open(disk_opts(f.path(), true));
    EXPECT_TRUE(d.read_only());
    DiskInfo i = d.info();
    EXPECT_TRUE(i.read_only);
    EXPECT_FALSE(i.discard);
    EXPECT_FALSE(i.write_zeroes);
    uint64_t f_ = device_features(i);
    EXPECT_TRUE(f_ & (1ull << VIRTIO_BLK_F_RO));
    EXPECT_FALSE(f_ & (1ull << VIRTIO_BLK_F_DISCARD));
    EXPECT_FALSE(f_ & (1ull << VIRTIO_BLK_F_WRITE_ZEROES));
}

TEST(Disk, DirectIo) {
    TempFile f(8192);
    try {
        Disk d = Disk::open(disk_opts(f.path(), false, true));
        EXPECT_TRUE(d.direct());
        EXPECT_EQ(d.sectors(), 16u);
    } catch (const std::system_error& e) {
        ASSERT_EQ(e.code().value(), EINVAL) << e.what();
        EXPECT_NE(std::string(e.what()).find("O_DIRECT"), std::string::npos);
        GTEST_SKIP() << e.what();
    }
}

TEST(Config, FeaturesAndLayout) {
    DiskInfo i;
    i.sectors = 123456;
    i.discard = i.write_zeroes = true;
    uint64_t f = device_features(i);
    for (int bit : {VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE,
                    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES})
        EXPECT_TRUE(f & (1ull << bit)) << bit;
    EXPECT_FALSE(f & (1ull << VIRTIO_BLK_F_RO));
    EXPECT_FALSE(f & (1ull << VIRTIO_BLK_F_MQ));
    EXPECT_EQ(f >> 24, 0u);  // no transport bits

    auto b = config_bytes(i);
    ASSERT_EQ(b.size(), 60u);
    auto u32 = [&](size_t off) {
        uint32_t v;
        std::memcpy(&v, b.data() + off, 4);
        return v;
    };
    uint64_t cap;
    std::memcpy(&cap, b.data(), 8);
    EXPECT_EQ(cap, 123456u);
    EXPECT_EQ(u32(8), 4096u);      // size_max
    EXPECT_EQ(u32(12), 256u);      // seg_max
    EXPECT_EQ(u32(20), 512u);      // blk_size
    EXPECT_EQ(u32(36), 1u << 22);  // max_discard_sectors
    EXPECT_EQ(u32(40), 32u);       // max_discard_seg
    EXPECT_EQ(u32(44), 8u);        // discard_sector_alignment
    EXPECT_EQ(u32(48), 1u << 22);  // max_write_zeroes_sectors
    EXPECT_EQ(u32(52), 32u);       // max_write_zeroes_seg
    EXPECT_EQ(b[56], 1);           // write_zeroes_may_unmap
    // seg_max * size_max is the request cap the parser enforces.
    EXPECT_EQ(uint64_t{u32(8)} * u32(12), i.limits.max_request_bytes);

    i.discard = i.write_zeroes = false;
    b = config_bytes(i);
    EXPECT_EQ(u32(36), 0u);
    EXPECT_EQ(u32(48), 0u);
}

}  // namespace
}  // namespace vessel::virtio::block
