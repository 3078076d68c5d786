#include "virtio/block/disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace vessel::virtio::block {

namespace {

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// 20 hex digits from the image's device and inode numbers.
std::array<uint8_t, kIdBytes> derived_id(dev_t dev, ino_t ino) {
    uint64_t a = mix(static_cast<uint64_t>(dev) ^ mix(static_cast<uint64_t>(ino)));
    uint64_t b = mix(a ^ static_cast<uint64_t>(ino));
    char buf[kIdBytes + 1];
    std::snprintf(buf, sizeof buf, "%016llx%04llx", static_cast<unsigned long long>(a),
                  static_cast<unsigned long long>(b & 0xffff));
    std::array<uint8_t, kIdBytes> id{};
    std::memcpy(id.data(), buf, kIdBytes);
    return id;
}

}  // namespace

Disk Disk::open(const DiskOptions& opts) {
    Disk d;
    d.path_ = opts.path;
    d.read_only_ = opts.read_only;
    d.direct_ = opts.direct;
    d.limits_ = opts.limits;
    const std::string name = "disk image '" + opts.path + "'";

    if (opts.serial.size() > kIdBytes)
        throw std::system_error(EINVAL, std::generic_category(),
                                name + ": serial '" + opts.serial + "' is longer than 20 bytes");

    int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (opts.direct) flags |= O_DIRECT;
    d.fd_ = UniqueFd(::open(opts.path.c_str(), flags));
    if (!d.fd_) {
        if (opts.direct && errno == EINVAL)
            throw_errno("opening " + name +
                        " with O_DIRECT: its filesystem does not support direct I/O");
        throw_errno("opening " + name + (opts.read_only ? " read-only" : " read-write"));
    }

    struct stat st;
    if (::fstat(d.fd_.get(), &st) < 0) throw_errno("stat of " + name);
    uint64_t bytes = 0;
    if (S_ISREG(st.st_mode)) {
        bytes = static_cast<uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        if (::ioctl(d.fd_.get(), BLKGETSIZE64, &bytes) < 0) throw_errno("size of " + name);
    } else {
        throw std::system_error(EINVAL, std::generic_category(),
                                name + " is neither a regular file nor a block device");
    }
    d.sectors_ = bytes >> kSectorShift;

    if (opts.direct) {
        // The guest does 512-byte sector I/O: refuse a file that needs coarser direct I/O.
        struct statx sx {};
        if (::statx(d.fd_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
            (sx.stx_mask & STATX_DIOALIGN)) {
            if (sx.stx_dio_offset_align == 0)
                throw std::system_error(EINVAL, std::generic_category(),
                                        "opening " + name +
                                            " with O_DIRECT: its filesystem does not support "
                                            "direct I/O for this file");
            if (sx.stx_dio_offset_align > kSectorSize || sx.stx_dio_mem_align > kSectorSize)
                throw std::system_error(EINVAL, std::generic_category(),
                                        "opening " + name + " with O_DIRECT: it needs " +
                                            std::to_string(sx.stx_dio_offset_align) +
                                            "-byte aligned direct I/O; " +
                                            "virtio-blk sectors are 512 bytes");
        }
    }

    const int lock = opts.read_only ? LOCK_SH : LOCK_EX;
    while (::flock(d.fd_.get(), lock | LOCK_NB) < 0) {
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK)
            throw_errno("locking " + name + (opts.read_only ? " (shared)" : " (exclusive)") +
                        ": it is in use by another VM or process");
        throw_errno("locking " + name);
    }

    if (!opts.read_only) {
        if (S_ISBLK(st.st_mode)) {
            d.discard_ = true;  // blkdev_fallocate: PUNCH_HOLE and ZERO_RANGE (Linux 4.9+)
        } else {
            // Punching a hole past the end of the file changes nothing and tells whether the
            // filesystem can punch at all.
            off_t past_end = static_cast<off_t>((bytes + 4095) & ~uint64_t{4095});
            d.discard_ = ::fallocate(d.fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                     past_end, 4096) == 0;
        }
    }

    if (!opts.serial.empty()) {
        std::memcpy(d.id_.data(), opts.serial.data(), opts.serial.size());
    } else {
        d.id_ = derived_id(st.st_dev, st.st_ino);
    }
    return d;
}

DiskInfo Disk::info() const {
    DiskInfo i;
    i.sectors = sectors_;
    i.read_only = read_only_;
    i.discard = discard_;
    i.write_zeroes = discard_;  // WRITE_ZEROES falls back to a punched hole (see engine.h)
    i.limits = limits_;
    return i;
}

}  // namespace vessel::virtio::block
