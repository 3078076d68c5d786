// The virtio-net data path without I/O: TX chains to iovecs for the tap, received frames into RX
// chains. Pure: reads and writes guest memory through resolved host pointers, no syscalls, no
// state beyond its arguments. Every chain is guest-controlled, so nothing here throws (beyond
// std::bad_alloc) or trusts a length.
//
// Frame layout on both queues (VERSION_1): a 12-byte struct virtio_net_hdr_v1, then the
// Ethernet frame. The tap uses the very same 12-byte header (TUNSETVNETHDRSZ 12), so a frame
// goes from a TX chain to the tap, and from the tap to RX chains, with its header unchanged,
// except num_buffers, which the device fills in on RX and the tap ignores on TX.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "virtio/descriptor.h"
#include "virtio/queue.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::net {

inline constexpr uint32_t kHdrSize = 12;  // struct virtio_net_hdr_v1
inline constexpr uint32_t kEthHeader = 14;
// Largest frame (without the virtio header) either way: a 64 KiB GSO frame plus Ethernet and
// VLAN headers.
inline constexpr uint32_t kMaxFrame = 65536 + 18;
// iovecs per TX frame: what one writev takes (IOV_MAX), the header included.
inline constexpr uint32_t kMaxTxSegments = 1024;

// struct virtio_net_hdr_v1 flags and gso_type values (virtio 1.2 section 5.1.6).
inline constexpr uint8_t kHdrNeedsCsum = 1;
inline constexpr uint8_t kHdrDataValid = 2;
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpV4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpV6 = 4;
inline constexpr uint8_t kGsoEcn = 0x80;

struct __attribute__((packed)) NetHdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
static_assert(sizeof(NetHdr) == kHdrSize);

// Why a chain was not used. Each has a counter (NetDevice).
enum class ChainError : uint8_t {
    None,
    Malformed,        // the queue rejected the chain (loop, bad index, ...; it logged why)
    WrongDirection,   // TX: a device-writable descriptor; RX: a device-readable one
    BadAddress,       // a descriptor does not map to guest RAM (the queue should prevent it)
    ShortHeader,      // TX: fewer than 12 header bytes; RX: a buffer of fewer than 12 bytes
    ShortFrame,       // TX: less than an Ethernet header after the virtio header
    TooLarge,         // TX: frame longer than kMaxFrame
    TooManySegments,  // TX: more than kMaxTxSegments iovecs
    BadHeader,        // TX: flags or gso_type not allowed by the negotiated features
    Count,
};
inline constexpr size_t kNumChainErrors = static_cast<size_t>(ChainError::Count);
std::string_view error_name(ChainError e);

// One TX frame ready for writev: iov[0] is the header copy inside this struct (so the kernel
// gets the header that was checked, not one the guest rewrote since), the rest are the frame's
// bytes in guest memory. Do not move or copy the struct while iov is in use.
struct TxFrame {
    uint16_t head = 0;
    ChainError error = ChainError::None;
    NetHdr hdr{};
    std::vector<iovec> iov;
    uint32_t frame_len = 0;  // bytes after the header

    uint64_t total_len() const { return kHdrSize + frame_len; }
    bool ok() const { return error == ChainError::None; }
};

// Parses a TX chain. `driver_features` decides which header flags and GSO types are allowed
// (NEEDS_CSUM with CSUM, TCPV4/TCPV6 with HOST_TSO4/6, the ECN bit with HOST_ECN). Reuses
// `out`'s vector. Never throws for any chain.
void parse_tx(const DescriptorChain& chain, const vmm::GuestMemory& mem, uint64_t driver_features,
              TxFrame& out);

// The device-writable buffers of one RX chain.
struct RxBuffer {
    uint16_t head = 0;
    uint32_t capacity = 0;
    std::vector<iovec> iov;
};

// Resolves an RX chain (every descriptor device-writable, at least kHdrSize bytes: a header
// never straddles two chains). Reuses `out`'s vector.
ChainError parse_rx(const DescriptorChain& chain, const vmm::GuestMemory& mem, RxBuffer& out);

// RX chains taken from the queue and not yet used, oldest first: a frame that does not fit in
// what is there waits here until the driver adds more. Fixed capacity (the queue size); slots
// keep their vectors, so the steady state does not allocate.
class RxBufferRing {
  public:
    explicit RxBufferRing(size_t capacity = 0) : slots_(capacity) {}
    size_t size() const { return count_; }
    size_t capacity() const { return slots_.size(); }
    bool full() const { return count_ == slots_.size(); }
    uint64_t total_capacity() const { return bytes_; }
    // The slot to fill next; commit it with push() (or leave it, to discard).
    RxBuffer& next() { return slots_[(first_ + count_) % slots_.size()]; }
    void push() {
        bytes_ += next().capacity;
        ++count_;
    }
    RxBuffer& at(size_t i) { return slots_[(first_ + i) % slots_.size()]; }
    void pop_front(size_t n);
    void clear() { first_ = count_ = 0, bytes_ = 0; }

  private:
    std::vector<RxBuffer> slots_;
    size_t first_ = 0, count_ = 0;
    uint64_t bytes_ = 0;
};

// A used-ring entry, in the form Queue::add_used_batch publishes at once.
using Used = Queue::UsedElem;

enum class RxPlace : uint8_t {
    Done,         // the frame is in the chains reported in `used`, which left the ring
    NeedBuffers,  // not enough room in the ring yet: nothing was written or removed
    TooBig,       // it cannot ever fit (non-mergeable chain too small, or a ring full of chains
                  // that still lacks room): nothing was written or removed; drop the frame
};

// Copies `packet` (a 12-byte header then the frame, as the tap delivered it) into the chains at
// the front of `ring`, filling each before the next, and sets num_buffers in the first one.
// Mergeable (VIRTIO_NET_F_MRG_RXBUF): as many chains as needed, and a frame that does not fit
// in a full ring (every chain of the queue) never will; otherwise the first chain must hold
// the whole packet and num_buffers is 1. `packet` holds at least kHdrSize bytes.
RxPlace place_rx(std::span<const uint8_t> packet, RxBufferRing& ring, bool mergeable,
                 std::vector<Used>& used);

}  // namespace vessel::virtio::net
