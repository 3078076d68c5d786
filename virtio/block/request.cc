#include "virtio/block/request.h"

#include <linux/virtio_blk.h>

#include <algorithm>
#include <bit>
#include <cstring>

namespace vessel::virtio::block {

// virtio 1.x fields are little-endian; the structs below are read in host order.
static_assert(std::endian::native == std::endian::little,
              "virtio-blk parser assumes little-endian");
static_assert(sizeof(virtio_blk_outhdr) == kHeaderSize);
static_assert(sizeof(virtio_blk_discard_write_zeroes) == kSegmentSize);

std::string_view error_name(RequestError e) {
    switch (e) {
        case RequestError::None:
            return "ok";
        case RequestError::NoStatus:
            return "no status byte";
        case RequestError::BadLayout:
            return "device-readable descriptor after a writable one";
        case RequestError::BadAddress:
            return "buffer outside guest memory";
        case RequestError::ShortHeader:
            return "request header shorter than 16 bytes";
        case RequestError::Unsupported:
            return "unsupported request type";
        case RequestError::UnsupportedFlags:
            return "unsupported discard/write-zeroes flags";
        case RequestError::WrongDirection:
            return "data buffer in the wrong direction";
        case RequestError::BadLength:
            return "data length zero or not a multiple of 512";
        case RequestError::TooLarge:
            return "request larger than the advertised maximum";
        case RequestError::TooManySegments:
            return "more data segments than seg_max";
        case RequestError::OutOfRange:
            return "sector range past the end of the disk";
        case RequestError::ReadOnly:
            return "write to a read-only disk";
        case RequestError::BadSegments:
            return "malformed discard/write-zeroes segment list";
        case RequestError::Count:
            break;
    }
    return "?";
}

uint8_t error_status(RequestError e) {
    if (e == RequestError::None) return VIRTIO_BLK_S_OK;
    if (e == RequestError::Unsupported || e == RequestError::UnsupportedFlags)
        return VIRTIO_BLK_S_UNSUPP;
    return VIRTIO_BLK_S_IOERR;
}

namespace {

using Descs = std::vector<Descriptor>;

// A contiguous run of descriptors [begin, end) viewed as one byte stream.
struct Stream {
    const Descs& d;
    size_t begin;
    size_t end;
};

// Calls piece(descriptor, offset in it, length) for each part of bytes [off, off+n) of the
// stream, in order, stopping at the first error; BadLength if the stream is shorter.
template <typename Piece>
RequestError walk(const Stream& s, uint64_t off, uint64_t n, Piece&& piece) {
    for (size_t i = s.begin; i < s.end && n > 0; ++i) {
        const Descriptor& d = s.d[i];
        if (off >= d.len) {
            off -= d.len;
            continue;
        }
        uint64_t take = std::min<uint64_t>(d.len - off, n);
        if (RequestError e = piece(d, off, take); e != RequestError::None) return e;
        n -= take;
        off = 0;
    }
    return n == 0 ? RequestError::None : RequestError::BadLength;
}

// Copies n bytes starting at byte `off` of the stream. False if the bytes are not all there or
// a descriptor does not map.
bool copy_out(const vmm::GuestMemory& mem, const Stream& s, uint64_t off, void* dst, uint64_t n) {
    auto* out = static_cast<uint8_t*>(dst);
    return walk(s, off, n, [&](const Descriptor& d, uint64_t doff, uint64_t take) {
               const uint8_t* p = mem.host_ptr(d.addr + doff, take);
               if (!p) return RequestError::BadAddress;
               std::memcpy(out, p, take);
               out += take;
               return RequestError::None;
           }) == RequestError::None;
}

// Appends the host iovecs for bytes [off, off+n) of the stream. Empty slices are skipped.
RequestError slice(const vmm::GuestMemory& mem, const Stream& s, uint64_t off, uint64_t n,
                   uint32_t max_segs, std::vector<iovec>& out) {
    return walk(s, off, n, [&](const Descriptor& d, uint64_t doff, uint64_t take) {
        if (out.size() >= max_segs) return RequestError::TooManySegments;
        uint8_t* p = mem.host_ptr(d.addr + doff, take);
        if (!p) return RequestError::BadAddress;
        out.push_back(iovec{p, static_cast<size_t>(take)});
        return RequestError::None;
    });
}

// [sector, sector + sectors) inside the disk, without overflow.
bool in_range(uint64_t sector, uint64_t sectors, uint64_t capacity) {
    return sector <= capacity && sectors <= capacity - sector;
}

RequestError parse_rw(const vmm::GuestMemory& mem, const DiskInfo& disk, const Stream& rd,
                      uint64_t rlen, const Stream& wr, uint64_t wlen, ParsedRequest& out) {
    const bool read = out.kind == Kind::Read;
    // IN: nothing readable past the header; OUT: nothing writable but the status.
    if (read ? rlen != kHeaderSize : wlen != 1) return RequestError::WrongDirection;
    if (!read && disk.read_only) return RequestError::ReadOnly;
    uint64_t len = read ? wlen - 1 : rlen - kHeaderSize;
    if (len == 0 || len % kSectorSize != 0) return RequestError::BadLength;
    if (len > disk.limits.max_request_bytes) return RequestError::TooLarge;
    if (!in_range(out.sector, len >> kSectorShift, disk.sectors)) return RequestError::OutOfRange;
    out.offset = out.sector << kSectorShift;
    out.len = len;
    return read ? slice(mem, wr, 0, len, disk.limits.seg_max, out.iovecs)
                : slice(mem, rd, kHeaderSize, len, disk.limits.seg_max, out.iovecs);
}

RequestError parse_ranges(const vmm::GuestMemory& mem, const DiskInfo& disk, const Stream& rd,
                          uint64_t rlen, uint64_t wlen, ParsedRequest& out) {
    const bool discard = out.kind == Kind::Discard;
    if (!(discard ? disk.discard : disk.write_zeroes)) return RequestError::Unsupported;
    if (wlen != 1) return RequestError::WrongDirection;
    if (disk.read_only) return RequestError::ReadOnly;
    uint64_t bytes = rlen - kHeaderSize;
    uint32_t max_seg = discard ? disk.limits.max_discard_seg : disk.limits.max_write_zeroes_seg;
    uint32_t max_sectors =
        discard ? disk.limits.max_discard_sectors : disk.limits.max_write_zeroes_sectors;
    if (bytes == 0 || bytes % kSegmentSize != 0 || bytes / kSegmentSize > max_seg)
        return RequestError::BadSegments;

    // Two passes: flags first, over every segment, since the spec wants UNSUPP for a bad flag
    // whatever else is wrong; then ranges. The second pass re-reads guest memory and checks
    // everything it uses, so a guest changing the segments in between gains nothing.
    const uint32_t allowed = discard ? 0u : VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    const size_t n = bytes / kSegmentSize;
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < n; ++i) {
            virtio_blk_discard_write_zeroes seg;
            if (!copy_out(mem, rd, kHeaderSize + i * kSegmentSize, &seg, sizeof seg))
                return RequestError::BadAddress;
            if (seg.flags & ~allowed) return RequestError::UnsupportedFlags;
            if (pass == 0) continue;
            if (seg.num_sectors == 0 || seg.num_sectors > max_sectors)
                return RequestError::BadSegments;
            if (!in_range(seg.sector, seg.num_sectors, disk.sectors))
                return RequestError::OutOfRange;
            out.segments.push_back(Segment{seg.sector << kSectorShift,
                                           uint64_t{seg.num_sectors} << kSectorShift,
                                           (seg.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0});
        }
    }
    return RequestError::None;
}

RequestError parse(const DescriptorChain& chain, const vmm::GuestMemory& mem, const DiskInfo& disk,
                   ParsedRequest& out) {
    const Descs& d = chain.descs;
    size_t first_w = d.size();
    bool bad_layout = false;
    uint64_t rlen = 0, wlen = 0;
    size_t last_w = d.size();  // last non-empty writable descriptor
    for (size_t i = 0; i < d.size(); ++i) {
        if (d[i].device_writable) {
            if (first_w == d.size()) first_w = i;
            wlen += d[i].len;
            if (d[i].len > 0) last_w = i;
        } else {
            if (first_w != d.size()) bad_layout = true;
            rlen += d[i].len;
        }
    }
    if (wlen == 0) return RequestError::NoStatus;
    out.status = mem.host_ptr(d[last_w].addr + d[last_w].len - 1, 1);
    if (!out.status) return RequestError::BadAddress;
    if (bad_layout) return RequestError::BadLayout;

    const Stream rd{d, 0, first_w};
    const Stream wr{d, first_w, d.size()};
    virtio_blk_outhdr hdr;
    if (rlen < kHeaderSize) return RequestError::ShortHeader;
    if (!copy_out(mem, rd, 0, &hdr, sizeof hdr)) return RequestError::BadAddress;
    out.type = hdr.type;
    out.sector = hdr.sector;

    switch (hdr.type) {
        case VIRTIO_BLK_T_IN:
            out.kind = Kind::Read;
            return parse_rw(mem, disk, rd, rlen, wr, wlen, out);
        case VIRTIO_BLK_T_OUT:
            out.kind = Kind::Write;
            return parse_rw(mem, disk, rd, rlen, wr, wlen, out);
        case VIRTIO_BLK_T_FLUSH:
            // The driver sets sector 0 and SHOULD NOT send data; both are ignored.
            out.kind = Kind::Flush;
            return RequestError::None;
        case VIRTIO_BLK_T_GET_ID: {
            out.kind = Kind::GetId;
            if (rlen != kHeaderSize) return RequestError::WrongDirection;
            if (wlen == 1) return RequestError::BadLength;
            // The id fills at most 20 bytes; a shorter buffer gets a truncated id.
            out.len = std::min<uint64_t>(wlen - 1, kIdBytes);
            return slice(mem, wr, 0, out.len, disk.limits.seg_max, out.iovecs);
        }
        case VIRTIO_BLK_T_DISCARD:
            out.kind = Kind::Discard;
            return parse_ranges(mem, disk, rd, rlen, wlen, out);
        case VIRTIO_BLK_T_WRITE_ZEROES:
            out.kind = Kind::WriteZeroes;
            return parse_ranges(mem, disk, rd, rlen, wlen, out);
        default:
            return RequestError::Unsupported;
    }
}

}  // namespace

void parse_request(const DescriptorChain& chain, const vmm::GuestMemory& mem, const DiskInfo& disk,
                   ParsedRequest& out) {
    out.head = chain.head;
    out.type = 0;
    out.sector = 0;
    out.status = nullptr;
    out.kind = Kind::Read;
    out.offset = 0;
    out.len = 0;
    out.iovecs.clear();
    out.segments.clear();
    out.error = parse(chain, mem, disk, out);
    if (!out.ok()) {
        out.iovecs.clear();
        out.segments.clear();
    }
}

ParsedRequest parse_request(const DescriptorChain& chain, const vmm::GuestMemory& mem,
                            const DiskInfo& disk) {
    ParsedRequest r;
    parse_request(chain, mem, disk, r);
    return r;
}

}  // namespace vessel::virtio::block
