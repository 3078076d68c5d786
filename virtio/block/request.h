// virtio-blk request parser: turns a descriptor chain into an operation or an immediate status.
//
// Pure: it reads the request header and discard segments from guest memory and resolves
// guest-physical buffers to host iovecs, and does no I/O and keeps no state. Every input is
// guest-controlled, so nothing here throws (beyond std::bad_alloc) or trusts a length.
//
// Layout (virtio 1.x, VERSION_1 implies ANY_LAYOUT): the device-readable descriptors, taken
// together as one byte stream, hold the 16-byte virtio_blk_outhdr followed by the OUT data or
// the DISCARD/WRITE_ZEROES segments; the device-writable descriptors, taken together, hold the
// IN/GET_ID data followed by the 1-byte status, which is the very last writable byte. Message
// framing is independent of descriptor boundaries, so a header split across descriptors, or
// data and status sharing a descriptor, are accepted. A readable descriptor after a writable
// one is rejected (the spec orders them).
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "virtio/descriptor.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::block {

inline constexpr uint32_t kSectorShift = 9;
inline constexpr uint32_t kSectorSize = 1u << kSectorShift;
inline constexpr uint32_t kHeaderSize = 16;   // struct virtio_blk_outhdr
inline constexpr uint32_t kSegmentSize = 16;  // struct virtio_blk_discard_write_zeroes
inline constexpr uint32_t kIdBytes = 20;      // VIRTIO_BLK_ID_BYTES

// Request limits. They are advertised in the config space (see config.h) and enforced here, so a
// conforming driver never hits them: Linux splits its requests to seg_max segments of at most
// size_max bytes, i.e. at most seg_max * size_max = max_request_bytes per request.
struct Limits {
    uint32_t seg_max = 256;                   // data segments (descriptor slices) per request
    uint32_t size_max = 4096;                 // advertised only; not enforced per segment
    uint32_t max_request_bytes = 1u << 20;    // IN/OUT data bytes per request
    uint32_t max_discard_sectors = 1u << 22;  // per segment (2 GiB)
    uint32_t max_discard_seg = 32;            // segments per DISCARD request
    uint32_t discard_sector_alignment = 8;    // advisory (4 KiB), not enforced
    uint32_t max_write_zeroes_sectors = 1u << 22;
    uint32_t max_write_zeroes_seg = 32;
};

// What the parser needs to know about the disk.
struct DiskInfo {
    uint64_t sectors = 0;       // capacity in 512-byte sectors
    bool read_only = false;     // VIRTIO_BLK_F_RO offered
    bool discard = false;       // VIRTIO_BLK_F_DISCARD offered
    bool write_zeroes = false;  // VIRTIO_BLK_F_WRITE_ZEROES offered
    Limits limits;
};

enum class Kind : uint8_t { Read, Write, Flush, GetId, Discard, WriteZeroes };

// Why a request was not turned into an operation. Each has a counter (BlockCore).
enum class RequestError : uint8_t {
    None,
    NoStatus,          // no device-writable byte for the status: completed with used_len 0
    BadLayout,         // a device-readable descriptor follows a device-writable one
    BadAddress,        // a descriptor does not map to guest RAM (the queue should prevent it)
    ShortHeader,       // fewer than 16 device-readable bytes
    Unsupported,       // unknown request type, or a type whose feature was not offered
    UnsupportedFlags,  // DISCARD with UNMAP or any unknown segment flag
    WrongDirection,    // data in the wrong direction for the request type
    BadLength,         // no data, or data not a multiple of 512 bytes
    TooLarge,          // more than limits.max_request_bytes of data
    TooManySegments,   // more than limits.seg_max data segments
    OutOfRange,        // past the end of the disk (overflow included)
    ReadOnly,          // a write, discard or write-zeroes on a read-only disk
    BadSegments,       // DISCARD/WRITE_ZEROES segment list: bad size, too many, too long, empty
    Count,
};
inline constexpr size_t kNumRequestErrors = static_cast<size_t>(RequestError::Count);

std::string_view error_name(RequestError e);
// The status byte reported for an error: UNSUPP for the two Unsupported kinds, else IOERR.
uint8_t error_status(RequestError e);

// One DISCARD/WRITE_ZEROES range, in bytes, already checked against the disk.
struct Segment {
    uint64_t offset;
    uint64_t len;
    bool unmap;  // WRITE_ZEROES with VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
};

struct ParsedRequest {
    uint16_t head = 0;
    uint32_t type = 0;          // raw virtio_blk_outhdr.type (0 when the header is missing)
    uint64_t sector = 0;        // raw virtio_blk_outhdr.sector
    uint8_t* status = nullptr;  // host pointer to the status byte; nullptr: NoStatus
    RequestError error = RequestError::None;
    Kind kind = Kind::Read;         // valid when error == None
    uint64_t offset = 0;            // Read/Write: byte offset on the disk
    uint64_t len = 0;               // Read/Write/GetId: data bytes (GetId: buffer size)
    std::vector<iovec> iovecs;      // Read/Write/GetId data buffers, in guest memory
    std::vector<Segment> segments;  // Discard/WriteZeroes ranges

    bool ok() const { return error == RequestError::None; }
};

// Parses `chain`. Never throws for any chain or memory contents.
ParsedRequest parse_request(const DescriptorChain& chain, const vmm::GuestMemory& mem,
                            const DiskInfo& disk);
// Same, reusing `out`'s vectors (no allocation in the steady state).
void parse_request(const DescriptorChain& chain, const vmm::GuestMemory& mem, const DiskInfo& disk,
                   ParsedRequest& out);

}  // namespace vessel::virtio::block
