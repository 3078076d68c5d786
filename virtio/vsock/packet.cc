#include "virtio/vsock/packet.h"

#include <linux/virtio_vsock.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace vessel::virtio::vsock {

// virtio 1.x fields are little-endian; the header is copied in host order.
static_assert(std::endian::native == std::endian::little,
              "virtio-vsock parser assumes little-endian");
static_assert(sizeof(virtio_vsock_hdr) == kHeaderSize);

void encode_header(const PacketHeader& h, uint8_t out[kHeaderSize]) {
    virtio_vsock_hdr w{};
    w.src_cid = h.src_cid;
    w.dst_cid = h.dst_cid;
    w.src_port = h.src_port;
    w.dst_port = h.dst_port;
    w.len = h.len;
    w.type = h.type;
    w.op = h.op;
    w.flags = h.flags;
    w.buf_alloc = h.buf_alloc;
    w.fwd_cnt = h.fwd_cnt;
    std::memcpy(out, &w, kHeaderSize);
}

PacketHeader decode_header(const uint8_t in[kHeaderSize]) {
    virtio_vsock_hdr w;
    std::memcpy(&w, in, kHeaderSize);
    PacketHeader h;
    h.src_cid = w.src_cid;
    h.dst_cid = w.dst_cid;
    h.src_port = w.src_port;
    h.dst_port = w.dst_port;
    h.len = w.len;
    h.type = w.type;
    h.op = w.op;
    h.flags = w.flags;
    h.buf_alloc = w.buf_alloc;
    h.fwd_cnt = w.fwd_cnt;
    return h;
}

std::string_view op_name(uint16_t o) {
    switch (o) {
        case op::kRequest:
            return "REQUEST";
        case op::kResponse:
            return "RESPONSE";
        case op::kRst:
            return "RST";
        case op::kShutdown:
            return "SHUTDOWN";
        case op::kRw:
            return "RW";
        case op::kCreditUpdate:
            return "CREDIT_UPDATE";
        case op::kCreditRequest:
            return "CREDIT_REQUEST";
    }
    return "?";
}

std::string_view error_name(PacketError e) {
    switch (e) {
        case PacketError::kNone:
            return "ok";
        case PacketError::kWrongDirection:
            return "device-writable descriptor in a TX chain";
        case PacketError::kShortHeader:
            return "TX chain shorter than the 44-byte header";
        case PacketError::kBadAddress:
            return "buffer outside guest memory";
        case PacketError::kBadSrcCid:
            return "source CID is not the guest's";
        case PacketError::kBadDstCid:
            return "destination CID is not the host";
        case PacketError::kBadType:
            return "socket type is not stream";
        case PacketError::kBadOp:
            return "unknown op";
        case PacketError::kTooLarge:
            return "payload length above 64 KiB";
        case PacketError::kUnexpectedPayload:
            return "payload on a control packet";
        case PacketError::kShortPayload:
            return "chain shorter than header + len";
        case PacketError::kCount:
            break;
    }
    return "?";
}

bool answer_with_rst(PacketError e) {
    return e == PacketError::kBadType || e == PacketError::kBadOp;
}

std::string_view error_name(RxBufferError e) {
    switch (e) {
        case RxBufferError::kNone:
            return "ok";
        case RxBufferError::kWrongDirection:
            return "device-readable descriptor in an RX chain";
        case RxBufferError::kTooSmall:
            return "RX buffer shorter than the 44-byte header";
        case RxBufferError::kBadAddress:
            return "buffer outside guest memory";
        case RxBufferError::kCount:
            break;
    }
    return "?";
}

namespace {

// Appends host iovecs for bytes [off, off+n) of the descriptors taken as one stream. False if a
// descriptor does not map or the stream is shorter. Empty slices are skipped.
bool slice(const vmm::GuestMemory& mem, const std::vector<Descriptor>& d, uint64_t off, uint64_t n,
           std::vector<iovec>& out) {
    for (size_t i = 0; i < d.size() && n > 0; ++i) {
        if (off >= d[i].len) {
            off -= d[i].len;
            continue;
        }
        const uint64_t take = std::min<uint64_t>(d[i].len - off, n);
        uint8_t* p = mem.host_ptr(d[i].addr + off, take);
        if (!p) return false;
        out.push_back(iovec{p, static_cast<size_t>(take)});
        n -= take;
        off = 0;
    }
    return n == 0;
}

PacketError parse(const DescriptorChain& chain, const vmm::GuestMemory& mem, uint64_t guest_cid,
                  TxPacket& out) {
    uint64_t readable = 0;
    for (const Descriptor& d : chain.descs) {
        if (d.device_writable) return PacketError::kWrongDirection;
        readable += d.len;
    }
    if (readable < kHeaderSize) return PacketError::kShortHeader;

    // Copy once: the guest may rewrite the header while we look at it.
    std::vector<iovec>& pieces = out.payload;  // scratch, cleared below
    if (!slice(mem, chain.descs, 0, kHeaderSize, pieces)) return PacketError::kBadAddress;
    uint8_t raw[kHeaderSize];
    size_t at = 0;
    for (const iovec& v : pieces) {
        std::memcpy(raw + at, v.iov_base, v.iov_len);
        at += v.iov_len;
    }
    pieces.clear();
    out.hdr = decode_header(raw);
    out.has_header = true;

    const PacketHeader& h = out.hdr;
    if (h.src_cid != guest_cid) return PacketError::kBadSrcCid;
    if (h.dst_cid != kHostCid) return PacketError::kBadDstCid;
    if (h.type != kTypeStream) return PacketError::kBadType;
    if (h.op < op::kRequest || h.op > op::kCreditRequest) return PacketError::kBadOp;
    if (h.len > kMaxPayload) return PacketError::kTooLarge;
    if (h.op != op::kRw && h.len != 0) return PacketError::kUnexpectedPayload;
    if (readable - kHeaderSize < h.len) return PacketError::kShortPayload;
    if (!slice(mem, chain.descs, kHeaderSize, h.len, out.payload)) return PacketError::kBadAddress;
    return PacketError::kNone;
}

}  // namespace

void parse_tx(const DescriptorChain& chain, const vmm::GuestMemory& mem, uint64_t guest_cid,
              TxPacket& out) {
    out.head = chain.head;
    out.has_header = false;
    out.hdr = {};
    out.payload.clear();
    out.error = parse(chain, mem, guest_cid, out);
    if (!out.ok()) out.payload.clear();
}

void parse_rx_buffer(const DescriptorChain& chain, const vmm::GuestMemory& mem, RxBuffer& out) {
    out.head = chain.head;
    out.header.clear();
    out.payload.clear();
    out.capacity = 0;
    out.error = RxBufferError::kNone;
    uint64_t writable = 0;
    for (const Descriptor& d : chain.descs) {
        if (!d.device_writable) {
            out.error = RxBufferError::kWrongDirection;
            return;
        }
        writable += d.len;
    }
    if (writable < kHeaderSize) {
        out.error = RxBufferError::kTooSmall;
        return;
    }
    const uint64_t cap = std::min<uint64_t>(writable - kHeaderSize, kMaxPayload);
    if (!slice(mem, chain.descs, 0, kHeaderSize, out.header) ||
        !slice(mem, chain.descs, kHeaderSize, cap, out.payload)) {
        out.header.clear();
        out.payload.clear();
        out.error = RxBufferError::kBadAddress;
        return;
    }
    out.capacity = cap;
}

void write_header(const RxBuffer& b, const PacketHeader& h) {
    uint8_t raw[kHeaderSize];
    encode_header(h, raw);
    size_t at = 0;
    for (const iovec& v : b.header) {
        std::memcpy(v.iov_base, raw + at, v.iov_len);
        at += v.iov_len;
    }
}

void take_prefix(const std::vector<iovec>& iov, size_t n, std::vector<iovec>& out) {
    out.clear();
    for (const iovec& v : iov) {
        if (n == 0) break;
        const size_t take = std::min(v.iov_len, n);
        out.push_back(iovec{v.iov_base, take});
        n -= take;
    }
}

}  // namespace vessel::virtio::vsock
