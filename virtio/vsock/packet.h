// virtio-vsock packets (virtio 1.2 section 5.10.6): the header, and pure parsers for the two
// kinds of chain the device sees.
//
// Pure: they read guest memory and resolve guest-physical buffers to host iovecs, and do no
// I/O and keep no state. Every input is guest-controlled, so nothing here throws (beyond
// std::bad_alloc) or trusts a length.
//
// Framing is independent of descriptor boundaries (VERSION_1 implies ANY_LAYOUT): the 44-byte
// header may be split across descriptors, or share one with the payload. Linux 6.1 puts the
// header and the payload in two descriptors, later kernels in one.
// - TX chains (driver -> device) are device-readable only: header, then hdr.len payload bytes.
// - RX chains (device -> driver) are device-writable only: room for a header and a payload.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "virtio/descriptor.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::vsock {

inline constexpr uint64_t kHostCid = 2;      // VMADDR_CID_HOST: the only peer this device serves
inline constexpr uint32_t kHeaderSize = 44;  // struct virtio_vsock_hdr
inline constexpr uint32_t kMaxPayload = 64 << 10;  // VIRTIO_VSOCK_MAX_PKT_BUF_SIZE

inline constexpr uint64_t kFeatureStream = 1ull << 0;  // VIRTIO_VSOCK_F_STREAM

// Queue indices.
inline constexpr uint16_t kRxQueue = 0;
inline constexpr uint16_t kTxQueue = 1;
inline constexpr uint16_t kEventQueue = 2;

inline constexpr uint16_t kTypeStream = 1;  // VIRTIO_VSOCK_TYPE_STREAM

namespace op {
inline constexpr uint16_t kRequest = 1;
inline constexpr uint16_t kResponse = 2;
inline constexpr uint16_t kRst = 3;
inline constexpr uint16_t kShutdown = 4;
inline constexpr uint16_t kRw = 5;
inline constexpr uint16_t kCreditUpdate = 6;
inline constexpr uint16_t kCreditRequest = 7;
}  // namespace op

// SHUTDOWN flags.
inline constexpr uint32_t kShutdownRcv = 1;   // the sender will receive no more data
inline constexpr uint32_t kShutdownSend = 2;  // the sender will send no more data
inline constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

// struct virtio_vsock_hdr in host byte order.
struct PacketHeader {
    uint64_t src_cid = 0;
    uint64_t dst_cid = 0;
    uint32_t src_port = 0;
    uint32_t dst_port = 0;
    uint32_t len = 0;
    uint16_t type = 0;
    uint16_t op = 0;
    uint32_t flags = 0;
    uint32_t buf_alloc = 0;
    uint32_t fwd_cnt = 0;
    bool operator==(const PacketHeader&) const = default;
};

// Wire form (little-endian) of a header, and back.
void encode_header(const PacketHeader& h, uint8_t out[kHeaderSize]);
PacketHeader decode_header(const uint8_t in[kHeaderSize]);

std::string_view op_name(uint16_t op);

// Why a TX chain was not turned into a packet. Each has a counter (VsockCounters).
enum class PacketError : uint8_t {
    kNone,
    kWrongDirection,     // a device-writable descriptor in a TX chain
    kShortHeader,        // fewer than 44 device-readable bytes
    kBadAddress,         // a descriptor does not map to guest RAM (the queue should prevent it)
    kBadSrcCid,          // src_cid is not the guest's CID (spoofing): dropped
    kBadDstCid,          // dst_cid is not the host: dropped (no guest-to-guest routing)
    kBadType,            // not a stream packet: answered with RST
    kBadOp,              // unknown op: answered with RST
    kTooLarge,           // hdr.len > kMaxPayload
    kUnexpectedPayload,  // hdr.len != 0 on a control packet
    kShortPayload,       // fewer than hdr.len payload bytes after the header
    kCount,
};
inline constexpr size_t kNumPacketErrors = static_cast<size_t>(PacketError::kCount);

std::string_view error_name(PacketError e);
// Whether the sender gets an RST for this error: the packet was well addressed, we just cannot
// serve it (never for an RST itself: the device checks hdr.op).
bool answer_with_rst(PacketError e);

struct TxPacket {
    uint16_t head = 0;
    PacketError error = PacketError::kNone;
    bool has_header = false;     // hdr was read from the chain (also for most errors)
    PacketHeader hdr;            // raw, as the guest wrote it
    std::vector<iovec> payload;  // OP_RW: hdr.len bytes in guest memory; empty slices skipped
    bool ok() const { return error == PacketError::kNone; }
};

// Parses a TX chain. `guest_cid` is the CID the device advertises. Never throws for any chain
// or memory contents (std::bad_alloc aside); `out`'s vectors are reused.
void parse_tx(const DescriptorChain& chain, const vmm::GuestMemory& mem, uint64_t guest_cid,
              TxPacket& out);

enum class RxBufferError : uint8_t {
    kNone,
    kWrongDirection,  // a device-readable descriptor in an RX chain
    kTooSmall,        // fewer than 44 device-writable bytes
    kBadAddress,      // a descriptor does not map to guest RAM (the queue should prevent it)
    kCount,
};
inline constexpr size_t kNumRxBufferErrors = static_cast<size_t>(RxBufferError::kCount);

std::string_view error_name(RxBufferError e);

// A receive buffer the driver posted: where the header goes and how much payload fits.
struct RxBuffer {
    uint16_t head = 0;
    RxBufferError error = RxBufferError::kNone;
    std::vector<iovec> header;   // exactly kHeaderSize bytes, maybe in pieces
    std::vector<iovec> payload;  // the rest, up to kMaxPayload bytes
    size_t capacity = 0;         // payload bytes
    uint64_t seq = 0;            // pop order, kept by the muxer
    bool ok() const { return error == RxBufferError::kNone; }
};

void parse_rx_buffer(const DescriptorChain& chain, const vmm::GuestMemory& mem, RxBuffer& out);

// Writes `h` into the buffer's header bytes (the buffer must be ok()).
void write_header(const RxBuffer& b, const PacketHeader& h);

// The first `n` bytes of `iov` (n <= total), as a prefix of iovecs in `out`.
void take_prefix(const std::vector<iovec>& iov, size_t n, std::vector<iovec>& out);

}  // namespace vessel::virtio::vsock
