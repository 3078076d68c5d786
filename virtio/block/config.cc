#include "virtio/block/config.h"

#include <cstring>

namespace vessel::virtio::block {

uint64_t device_features(const DiskInfo& disk) {
    uint64_t f = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
                 (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH);
    if (disk.read_only) f |= 1ull << VIRTIO_BLK_F_RO;
    if (disk.discard && !disk.read_only) f |= 1ull << VIRTIO_BLK_F_DISCARD;
    if (disk.write_zeroes && !disk.read_only) f |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;
    return f;
}

BlkConfig make_config(const DiskInfo& disk) {
    BlkConfig c;
    std::memset(&c, 0, sizeof c);
    const Limits& l = disk.limits;
    c.capacity = disk.sectors;
    c.size_max = l.size_max;
    c.seg_max = l.seg_max;
    c.blk_size = kSectorSize;
    const uint64_t f = device_features(disk);
    if (f & (1ull << VIRTIO_BLK_F_DISCARD)) {
        c.max_discard_sectors = l.max_discard_sectors;
        c.max_discard_seg = l.max_discard_seg;
        c.discard_sector_alignment = l.discard_sector_alignment;
    }
    if (f & (1ull << VIRTIO_BLK_F_WRITE_ZEROES)) {
        c.max_write_zeroes_sectors = l.max_write_zeroes_sectors;
        c.max_write_zeroes_seg = l.max_write_zeroes_seg;
        c.write_zeroes_may_unmap = 1;  // UNMAP, and filesystems without ZERO_RANGE, punch holes
    }
    return c;
}

std::array<uint8_t, sizeof(BlkConfig)> config_bytes(const DiskInfo& disk) {
    BlkConfig c = make_config(disk);
    std::array<uint8_t, sizeof(BlkConfig)> b;
    std::memcpy(b.data(), &c, sizeof c);
    return b;
}

}  // namespace vessel::virtio::block
