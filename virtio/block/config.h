// virtio-blk feature bits and configuration space, as pure functions of the disk.
//
// Only the device-specific bits are here. The transport adds VIRTIO_F_VERSION_1 (required:
// the parser assumes ANY_LAYOUT and little-endian fields), VIRTIO_RING_F_EVENT_IDX and
// VIRTIO_RING_F_INDIRECT_DESC. With the default seg_max of 256, a driver needs indirect
// descriptors or a queue of at least seg_max + 2 entries: keep seg_max <= queue size - 2 when
// INDIRECT_DESC is not offered.
#pragma once

#include <linux/virtio_blk.h>

#include <array>
#include <cstddef>
#include <cstdint>

#include "virtio/block/request.h"

namespace vessel::virtio::block {

inline constexpr uint32_t kVirtioBlkDeviceId = 2;

// struct virtio_blk_config (virtio 1.2 section 5.2.4) up to write_zeroes_may_unmap: the fields
// after it (secure erase, zoned) belong to features never offered, and reads past the end of
// the image return zeros. Defined here rather than taken from <linux/virtio_blk.h>, whose
// struct grows with the kernel headers. Little-endian, like the host (checked in request.cc).
struct __attribute__((packed)) BlkConfig {
    uint64_t capacity;  // 512-byte sectors
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;  // geometry: VIRTIO_BLK_F_GEOMETRY, not offered
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;  // topology: VIRTIO_BLK_F_TOPOLOGY, not offered
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t wce;  // VIRTIO_BLK_F_CONFIG_WCE, not offered
    uint8_t unused0;
    uint16_t num_queues;  // VIRTIO_BLK_F_MQ, not offered
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
};
static_assert(sizeof(BlkConfig) == 60);
static_assert(offsetof(BlkConfig, blk_size) == 20);
static_assert(offsetof(BlkConfig, max_discard_sectors) == 36);
static_assert(offsetof(BlkConfig, write_zeroes_may_unmap) == 56);

// VIRTIO_BLK_F_{SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH}, plus RO, DISCARD and WRITE_ZEROES as the
// disk allows. SIZE_MAX and SEG_MAX together bound a Linux guest's requests to
// limits.max_request_bytes.
uint64_t device_features(const DiskInfo& disk);

// The config space; fields for features not offered are zero. Read-only for the driver:
// writes to it are ignored (no CONFIG_WCE).
BlkConfig make_config(const DiskInfo& disk);
std::array<uint8_t, sizeof(BlkConfig)> config_bytes(const DiskInfo& disk);

}  // namespace vessel::virtio::block
