#include "virtio/block/sync_engine.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace vessel::virtio::block {

namespace {

// fallocate, retried on EINTR. `punch_fallback`: a filesystem without ZERO_RANGE (e.g. tmpfs)
// gets a punched hole instead, which reads back as zeros too.
int64_t falloc(int fd, int mode, off_t off, off_t len, bool punch_fallback) {
    while (::fallocate(fd, mode, off, len) < 0) {
        if (errno == EOPNOTSUPP && punch_fallback) {
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
            punch_fallback = false;
            continue;
        }
        if (errno != EINTR) return -errno;
    }
    return 0;
}

}  // namespace

SyncEngine::SyncEngine(std::span<const int> files)
    : files_(files.begin(), files.end()), event_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (!event_) throw_errno("creating the block engine completion eventfd");
}

void SyncEngine::submit(const Op& op, uint64_t cookie) {
    const bool was_empty = ready_.empty();
    ready_.push_back({cookie, run(op)});
    if (was_empty) {
        uint64_t one = 1;
        ssize_t n = ::write(event_.get(), &one, sizeof one);
        (void)n;  // EAGAIN only if the counter is already huge, i.e. readable
    }
}

size_t SyncEngine::reap(std::vector<Completion>& out) {
    uint64_t count;
    while (::read(event_.get(), &count, sizeof count) < 0 && errno == EINTR) {
    }
    size_t n = ready_.size();
    out.insert(out.end(), ready_.begin(), ready_.end());
    ready_.clear();
    return n;
}

// preadv/pwritev until the whole length is done; a transfer of 0 bytes (end of file) is -EIO.
int64_t SyncEngine::transfer(const Op& op, int fd) {
    scratch_.assign(op.iov.begin(), op.iov.end());
    size_t first = 0;
    uint64_t done = 0;
    while (done < op.len && first < scratch_.size()) {
        const int cnt = static_cast<int>(scratch_.size() - first);
        const off_t off = static_cast<off_t>(op.offset + done);
        ssize_t n = op.kind == OpKind::Read ? ::preadv(fd, scratch_.data() + first, cnt, off)
                                            : ::pwritev(fd, scratch_.data() + first, cnt, off);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -errno;
        }
        if (n == 0) return -EIO;
        done += static_cast<uint64_t>(n);
        auto left = static_cast<uint64_t>(n);
        while (left > 0 && first < scratch_.size()) {
            iovec& v = scratch_[first];
            if (left >= v.iov_len) {
                left -= v.iov_len;
                ++first;
            } else {
                v.iov_base = static_cast<uint8_t*>(v.iov_base) + left;
                v.iov_len -= left;
                left = 0;
            }
        }
    }
    return done >= op.len ? static_cast<int64_t>(op.len) : -EIO;
}

int64_t SyncEngine::run(const Op& op) {
    if (op.file >= files_.size()) return -EBADF;
    const int fd = files_[op.file];
    const auto off = static_cast<off_t>(op.offset);
    const auto len = static_cast<off_t>(op.len);
    switch (op.kind) {
        case OpKind::Read:
        case OpKind::Write:
            return transfer(op, fd);
        case OpKind::Flush:
            while (::fdatasync(fd) < 0) {
                if (errno != EINTR) return -errno;
            }
            return 0;
        case OpKind::WriteZeroes:
            return falloc(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len, true);
        case OpKind::Discard:
            return falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len, false);
    }
    return -EINVAL;
}

}  // namespace vessel::virtio::block
