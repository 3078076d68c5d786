#include "virtio/net/packet.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "virtio/net/config.h"

namespace vessel::virtio::net {

static_assert(std::endian::native == std::endian::little, "virtio-net headers are little-endian");

std::string_view error_name(ChainError e) {
    switch (e) {
        case ChainError::None:
            return "ok";
        case ChainError::Malformed:
            return "malformed descriptor chain";
        case ChainError::WrongDirection:
            return "descriptor in the wrong direction";
        case ChainError::BadAddress:
            return "buffer outside guest memory";
        case ChainError::ShortHeader:
            return "shorter than the 12-byte virtio-net header";
        case ChainError::ShortFrame:
            return "frame shorter than an Ethernet header";
        case ChainError::TooLarge:
            return "frame larger than 65554 bytes";
        case ChainError::TooManySegments:
            return "more than 1024 segments";
        case ChainError::BadHeader:
            return "header flags or GSO type not negotiated";
        case ChainError::Count:
            break;
    }
    return "?";
}

namespace {

bool header_allowed(const NetHdr& h, uint64_t f) {
    if (h.flags & ~kHdrNeedsCsum) return false;  // DATA_VALID, RSC: RX only
    if ((h.flags & kHdrNeedsCsum) && !(f & bit(feature::kCsum))) return false;
    const uint8_t gso = h.gso_type & ~kGsoEcn;
    if (h.gso_type & kGsoEcn) {
        if (gso == kGsoNone || !(f & bit(feature::kHostEcn))) return false;
    }
    switch (gso) {
        case kGsoNone:
            return true;
        case kGsoTcpV4:
            return (f & bit(feature::kHostTso4)) && h.gso_size > 0;
        case kGsoTcpV6:
            return (f & bit(feature::kHostTso6)) && h.gso_size > 0;
        default:
            return false;  // UDP (UFO) and anything newer: not offered
    }
}

}  // namespace

void parse_tx(const DescriptorChain& chain, const vmm::GuestMemory& mem, uint64_t driver_features,
              TxFrame& out) {
    out.head = chain.head;
    out.error = ChainError::None;
    out.frame_len = 0;
    out.iov.clear();
    out.iov.push_back({&out.hdr, kHdrSize});
    auto* hdr = reinterpret_cast<uint8_t*>(&out.hdr);
    uint32_t hdr_got = 0;
    uint64_t frame = 0;
    for (const Descriptor& d : chain.descs) {
        if (d.device_writable) {
            out.error = ChainError::WrongDirection;
            return;
        }
        if (d.len == 0) continue;
        uint8_t* p = mem.host_ptr(d.addr, d.len);
        if (!p) {
            out.error = ChainError::BadAddress;
            return;
        }
        uint32_t n = d.len;
        if (hdr_got < kHdrSize) {
            // The header may be split across descriptors (ANY_LAYOUT); copy it out once.
            uint32_t take = std::min(n, kHdrSize - hdr_got);
            std::memcpy(hdr + hdr_got, p, take);
            hdr_got += take;
            p += take;
            n -= take;
            if (n == 0) continue;
        }
        frame += n;
        if (frame > kMaxFrame) {
            out.error = ChainError::TooLarge;
            return;
        }
        if (out.iov.size() >= kMaxTxSegments) {
            out.error = ChainError::TooManySegments;
            return;
        }
        out.iov.push_back({p, n});
    }
    if (hdr_got < kHdrSize) {
        out.error = ChainError::ShortHeader;
        return;
    }
    if (frame < kEthHeader) {
        out.error = ChainError::ShortFrame;
        return;
    }
    if (!header_allowed(out.hdr, driver_features)) {
        out.error = ChainError::BadHeader;
        return;
    }
    out.hdr.num_buffers = 0;  // unused on TX; the tap ignores it anyway
    out.frame_len = static_cast<uint32_t>(frame);
}

ChainError parse_rx(const DescriptorChain& chain, const vmm::GuestMemory& mem, RxBuffer& out) {
    out.head = chain.head;
    out.capacity = 0;
    out.iov.clear();
    uint64_t total = 0;
    for (const Descriptor& d : chain.descs) {
        if (!d.device_writable) return ChainError::WrongDirection;
        if (d.len == 0) continue;
        uint8_t* p = mem.host_ptr(d.addr, d.len);
        if (!p) return ChainError::BadAddress;
        out.iov.push_back({p, d.len});
        total += d.len;
    }
    if (total < kHdrSize) return ChainError::ShortHeader;
    // The queue caps a chain's total at 4 GiB - 1; a frame never needs more than this anyway.
    out.capacity = static_cast<uint32_t>(std::min<uint64_t>(total, UINT32_MAX));
    return ChainError::None;
}

void RxBufferRing::pop_front(size_t n) {
    n = std::min(n, count_);
    for (size_t i = 0; i < n; ++i) {
        bytes_ -= slots_[first_].capacity;
        first_ = (first_ + 1) % slots_.size();
    }
    count_ -= n;
    if (count_ == 0) first_ = 0;
}

namespace {

// Copies `src` into the iovecs of `b`; returns the bytes written (at most b.capacity).
uint32_t fill(const RxBuffer& b, const uint8_t* src, uint64_t len) {
    uint64_t done = 0;
    for (const iovec& v : b.iov) {
        if (done == len) break;
        const size_t n = std::min<uint64_t>(v.iov_len, len - done);
        std::memcpy(v.iov_base, src + done, n);
        done += n;
    }
    return static_cast<uint32_t>(done);
}

// Writes num_buffers (bytes 10-11 of the header) into chain `b`, whose first kHdrSize bytes
// hold the header, wherever its descriptors split them.
void put_num_buffers(const RxBuffer& b, uint16_t n) {
    const uint8_t bytes[2] = {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8)};
    uint64_t off = 0;
    size_t k = 0;
    for (const iovec& v : b.iov) {
        while (k < 2 && offsetof(NetHdr, num_buffers) + k < off + v.iov_len) {
            const uint64_t at = offsetof(NetHdr, num_buffers) + k - off;
            static_cast<uint8_t*>(v.iov_base)[at] = bytes[k];
            ++k;
        }
        if (k == 2) return;
        off += v.iov_len;
    }
}

}  // namespace

RxPlace place_rx(std::span<const uint8_t> packet, RxBufferRing& ring, bool mergeable,
                 std::vector<Used>& used) {
    const uint64_t len = packet.size();
    if (!mergeable) {
        if (ring.size() == 0) return RxPlace::NeedBuffers;
        RxBuffer& b = ring.at(0);
        if (b.capacity < len) return RxPlace::TooBig;
        uint32_t n = fill(b, packet.data(), len);
        put_num_buffers(b, 1);
        used.push_back({b.head, n});
        ring.pop_front(1);
        return RxPlace::Done;
    }
    if (ring.total_capacity() < len) return ring.full() ? RxPlace::TooBig : RxPlace::NeedBuffers;
    uint64_t done = 0;
    size_t chains = 0;
    while (done < len) {
        RxBuffer& b = ring.at(chains++);
        uint32_t n = fill(b, packet.data() + done, len - done);
        used.push_back({b.head, n});
        done += n;
    }
    put_num_buffers(ring.at(0), static_cast<uint16_t>(chains));
    ring.pop_front(chains);
    return RxPlace::Done;
}

}  // namespace vessel::virtio::net
