#include "virtio/io/sync_engine.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace vessel::virtio::io {

namespace {

constexpr uint64_t kEventTag = ~0ull;

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
    : event_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (!event_) throw_errno("creating the sync engine's completion eventfd");
    if (!epoll_) throw_errno("creating the sync engine's epoll instance");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kEventTag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, event_.get(), &ev) < 0)
        throw_errno("adding the sync engine's eventfd to its epoll instance");
    files_.resize(files.size());
    for (size_t i = 0; i < files.size(); ++i) files_[i].fd = files[i];
}

void SyncEngine::signal() {
    uint64_t one = 1;
    ssize_t n = ::write(event_.get(), &one, sizeof one);
    (void)n;  // EAGAIN only if the counter is already huge, i.e. readable
}

void SyncEngine::submit(const Op& op, uint64_t cookie) {
    if (op.message && op.file < files_.size() &&
        (op.kind == OpKind::Read || op.kind == OpKind::Write)) {
        File& f = files_[op.file];
        auto& q = op.kind == OpKind::Read ? f.reads : f.writes;
        // Behind parked ops of the same direction: datagrams keep their order.
        if (q.empty()) {
            int64_t r = try_message(f, op.kind, op.iov.data(), static_cast<int>(op.iov.size()));
            if (r != -EAGAIN) {
                if (ready_.empty()) signal();
                ready_.push_back({cookie, r});
                return;
            }
        }
        q.push_back({cookie, std::vector<iovec>(op.iov.begin(), op.iov.end())});
        ++parked_;
        update_interest(op.file);
        return;
    }
    if (ready_.empty()) signal();
    ready_.push_back({cookie, run(op)});
}

// One datagram without waiting: the bytes moved, -EAGAIN when the file is not ready, -errno.
int64_t SyncEngine::try_message(File& f, OpKind kind, const iovec* iov, int cnt) {
    const bool rd = kind == OpKind::Read;
    for (;;) {
        ssize_t n;
        if (f.nowait) {
            n = rd ? ::preadv2(f.fd, iov, cnt, -1, RWF_NOWAIT)
                   : ::pwritev2(f.fd, iov, cnt, -1, RWF_NOWAIT);
            if (n < 0 && errno == EOPNOTSUPP) {
                f.nowait = false;  // e.g. a pipe on an older kernel: poll first instead
                continue;
            }
        } else {
            // Safe only because this engine is the file's only reader and writer: nobody can
            // take the packet between the poll and the transfer.
            pollfd p{f.fd, static_cast<short>(rd ? POLLIN : POLLOUT), 0};
            int r = ::poll(&p, 1, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return -errno;
            if (r == 0) return -EAGAIN;
            n = rd ? ::readv(f.fd, iov, cnt) : ::writev(f.fd, iov, cnt);
        }
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EWOULDBLOCK) return -EAGAIN;
        return -errno;
    }
}

void SyncEngine::update_interest(uint32_t file) {
    File& f = files_[file];
    uint32_t want =
        (f.reads.empty() ? 0u : uint32_t{EPOLLIN}) | (f.writes.empty() ? 0u : uint32_t{EPOLLOUT});
    if (want == f.interest) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = file;
    const int op = f.interest == 0 ? EPOLL_CTL_ADD : want == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (::epoll_ctl(epoll_.get(), op, f.fd, &ev) < 0 && want != 0) {
        // Not pollable (a regular file: always ready) or out of memory: keep the eventfd
        // readable instead, so the caller comes back and retries.
        f.interest = 0;
        signal();
        return;
    }
    f.interest = want;
}

void SyncEngine::retry_parked(File& f, std::vector<Completion>& out) {
    for (auto* q : {&f.reads, &f.writes}) {
        const OpKind kind = q == &f.reads ? OpKind::Read : OpKind::Write;
        while (!q->empty()) {
            Parked& p = q->front();
            int64_t r = try_message(f, kind, p.iov.data(), static_cast<int>(p.iov.size()));
            if (r == -EAGAIN) break;
            out.push_back({p.cookie, r});
            q->pop_front();
            --parked_;
        }
    }
}

size_t SyncEngine::reap(std::vector<Completion>& out) {
    uint64_t count;
    while (::read(event_.get(), &count, sizeof count) < 0 && errno == EINTR) {
    }
    size_t n = out.size();
    out.insert(out.end(), ready_.begin(), ready_.end());
    ready_.clear();
    if (parked_ > 0) {
        for (uint32_t i = 0; i < files_.size(); ++i) {
            if (files_[i].reads.empty() && files_[i].writes.empty()) continue;
            retry_parked(files_[i], out);
            update_interest(i);
        }
    }
    return out.size() - n;
}

void SyncEngine::cancel_all() {
    ready_.clear();
    for (uint32_t i = 0; i < files_.size(); ++i) {
        files_[i].reads.clear();
        files_[i].writes.clear();
        update_interest(i);
    }
    parked_ = 0;
    uint64_t count;
    while (::read(event_.get(), &count, sizeof count) < 0 && errno == EINTR) {
    }
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
    const int fd = files_[op.file].fd;
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

}  // namespace vessel::virtio::io
