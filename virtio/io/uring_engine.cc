#include "virtio/io/uring_engine.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

namespace vessel::virtio::io {

namespace {

constexpr uint8_t kMaxRetries = 8;
constexpr unsigned kMaxEntries = 4096;
// user_data of cancel SQEs; records are indexed from 0 and never get near it.
constexpr uint64_t kCancelTag = ~0ull;
// user_data bit of the POLL_ADD in front of a message op (the record index in the low bits).
constexpr uint64_t kPollTag = 1ull << 63;
// "The file's current position" for readv/writev (IORING_FEAT_RW_CUR_POS, 5.6+).
constexpr uint64_t kCurrentPos = ~0ull;

int fallocate_mode(OpKind kind, bool punch) {
    if (kind == OpKind::WriteZeroes && !punch) return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
}

}  // namespace

int restrict_ring(io_uring* ring, EngineUse use) {
    const auto bits = static_cast<uint8_t>(use);
    std::vector<io_uring_restriction> res;
    auto add = [&](uint16_t kind, uint8_t value) {
        io_uring_restriction r{};
        r.opcode = kind;
        r.sqe_op = value;  // a union with register_op and sqe_flags
        res.push_back(r);
    };
    for (const UringOpcode& op : kUringOpcodes)
        if (op.uses & bits) add(IORING_RESTRICTION_SQE_OP, op.op);
    // Registered files only: an SQE naming a raw fd is refused.
    add(IORING_RESTRICTION_SQE_FLAGS_REQUIRED, IOSQE_FIXED_FILE);
    // Message reads wait behind a linked poll.
    if (bits & kUseMessages) add(IORING_RESTRICTION_SQE_FLAGS_ALLOWED, IOSQE_IO_LINK);
    // ~Ring drops the files synchronously; nothing else is registered once enabled.
    add(IORING_RESTRICTION_REGISTER_OP, IORING_UNREGISTER_FILES);
    // liburing 2.3 declares io_uring_register_restrictions and io_uring_enable_rings but its
    // shared library does not export them: issue the two registrations directly.
    auto reg = [ring](unsigned op, void* arg, unsigned n) -> int {
        long r = ::syscall(__NR_io_uring_register, ring->ring_fd, op, arg, n);
        return r < 0 ? -errno : 0;
    };
    int r = reg(IORING_REGISTER_RESTRICTIONS, res.data(), static_cast<unsigned>(res.size()));
    if (r < 0) return r;
    return reg(IORING_REGISTER_ENABLE_RINGS, nullptr, 0);
}

UringEngine::Ring::~Ring() {
    // The kernel frees a ring asynchronously after io_uring_queue_exit, and until then its
    // registered files stay open: with them an image's flock, or a tap that should vanish with
    // the VM. Drop them first, synchronously (-ENXIO if none: harmless).
    io_uring_unregister_files(&ring_);
    io_uring_queue_exit(&ring_);
}

UringEngine::Ring::Ring(unsigned entries) {
    // Disabled until the engine has registered its files and restricted it.
    int r = io_uring_queue_init(entries, &ring_, IORING_SETUP_R_DISABLED);
    if (r < 0) throw_errno("creating an io_uring of " + std::to_string(entries) + " entries", -r);
}

UringEngine::UringEngine(unsigned entries, std::span<const int> files, EngineUse use)
    : event_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      ring_(std::clamp(entries, 1u, kMaxEntries)) {
    if (!event_) throw_errno("creating the io_uring completion eventfd");
    capacity_ = ring_.get()->sq.ring_entries;
    if (!files.empty()) {
        int r =
            io_uring_register_files(ring_.get(), files.data(), static_cast<unsigned>(files.size()));
        if (r < 0) throw_errno("registering files with io_uring", -r);
    }
    nfiles_ = static_cast<uint32_t>(files.size());
    for (int fd : files) {
        const int fl = ::fcntl(fd, F_GETFL);
        nonblocking_.push_back(fl >= 0 && (fl & O_NONBLOCK));
    }
    hot_.assign(files.size(), false);
    int r = io_uring_register_eventfd(ring_.get(), event_.get());
    if (r < 0) throw_errno("registering the io_uring completion eventfd", -r);
    r = restrict_ring(ring_.get(), use);
    if (r < 0) throw_errno("restricting the io_uring to the device's opcodes and files", -r);
    recs_.reserve(capacity_);
}

std::string UringEngine::stats() const {
    return "io_uring: " + std::to_string(stats_.submitted) + " submitted, " +
           std::to_string(stats_.deferred) + " deferred, " + std::to_string(stats_.resubmitted) +
           " resubmitted, " + std::to_string(stats_.rearmed) + " re-armed, " +
           std::to_string(stats_.cancelled) + " cancelled";
}

UringEngine::~UringEngine() {
    // Operations in the kernel write into caller memory (guest RAM): none may land after that
    // memory is unmapped, and a packet read may never complete on its own.
    cancel_all();
}

uint32_t UringEngine::alloc_record() {
    if (!free_.empty()) {
        uint32_t i = free_.back();
        free_.pop_back();
        recs_[i].live = true;
        return i;
    }
    recs_.emplace_back();
    recs_.back().live = true;
    return static_cast<uint32_t>(recs_.size() - 1);
}

void UringEngine::free_record(uint32_t rec) {
    recs_[rec].iov.clear();
    recs_[rec].in_kernel = false;
    recs_[rec].live = false;
    free_.push_back(rec);
}

void UringEngine::submit(const Op& op, uint64_t cookie) {
    ++stats_.submitted;
    ++in_flight_;
    if (op.file >= nfiles_) {
        early_.push_back({cookie, -EBADF});
        kick();
        return;
    }
    uint32_t i = alloc_record();
    Record& r = recs_[i];
    r.kind = op.kind;
    r.file = op.file;
    r.offset = op.offset;
    r.len = op.len;
    r.done = 0;
    r.cookie = cookie;
    r.iov.assign(op.iov.begin(), op.iov.end());
    r.first = 0;
    r.retries = 0;
    r.punch = false;
    r.message = op.message && (op.kind == OpKind::Read || op.kind == OpKind::Write);
    r.poll = r.message && op.kind == OpKind::Read && nonblocking_[op.file] && !hot_[op.file];
    r.in_kernel = false;
    if (!waiting_.empty() || !prep(i)) {
        ++stats_.deferred;
        waiting_.push_back(i);
    }
}

// Puts record `rec` in an SQE. False when the engine already has capacity_ operations in the
// kernel (the caller queues it).
bool UringEngine::prep(uint32_t rec) {
    if (kernel_ops_ >= capacity_) return false;
    Record& r = recs_[rec];
    const int fd = static_cast<int>(r.file);  // index into the registered files
    if (r.poll) {
        if (io_uring_sq_space_left(ring_.get()) < 2) return false;
        io_uring_sqe* p = io_uring_get_sqe(ring_.get());
        // Exclusive for reads: a frame wakes one waiting read, not every armed one.
        const unsigned events =
            r.kind == OpKind::Read ? POLLIN | EPOLLEXCLUSIVE : static_cast<unsigned>(POLLOUT);
        io_uring_prep_poll_add(p, fd, events);
        // No IOSQE_CQE_SKIP_SUCCESS: measured on 6.18, a cancelled poll carrying it takes the
        // -ECANCELED CQE of its linked op with it, and cancel_all() waits for that CQE.
        p->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
        io_uring_sqe_set_data64(p, kPollTag | rec);
    }
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    if (!sqe) return false;
    const uint64_t pos = r.message ? kCurrentPos : r.offset + r.done;
    switch (r.kind) {
        case OpKind::Read:
            io_uring_prep_readv(sqe, fd, r.iov.data() + r.first,
                                static_cast<unsigned>(r.iov.size() - r.first), pos);
            break;
        case OpKind::Write:
            io_uring_prep_writev(sqe, fd, r.iov.data() + r.first,
                                 static_cast<unsigned>(r.iov.size() - r.first), pos);
            break;
        case OpKind::Flush:
            io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
            break;
        case OpKind::Discard:
        case OpKind::WriteZeroes:
            io_uring_prep_fallocate(sqe, fd, fallocate_mode(r.kind, r.punch),
                                    static_cast<off_t>(r.offset), static_cast<off_t>(r.len));
            break;
    }
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, rec);
    r.in_kernel = true;
    ++kernel_ops_;
    return true;
}

void UringEngine::commit() {
    while (io_uring_sq_ready(ring_.get()) > 0) {
        int r = io_uring_submit(ring_.get());
        if (r > 0) continue;  // the kernel may take fewer than offered: offer the rest
        if (r == -EINTR) continue;
        if (r < 0) {
            // -EAGAIN/-EBUSY/-ENOMEM: the SQEs stay queued; come back through reap().
            ++stats_.enter_failures;
            kick();
        }
        break;
    }
}

void UringEngine::kick() {
    uint64_t one = 1;
    ssize_t n = ::write(event_.get(), &one, sizeof one);
    (void)n;  // EAGAIN only when the counter is already huge, i.e. already readable
}

void UringEngine::resubmit(uint32_t rec) {
    ++stats_.resubmitted;
    if (!prep(rec)) waiting_.push_front(rec);
}

void UringEngine::finish(uint32_t rec, int64_t result, std::vector<Completion>& out) {
    out.push_back({recs_[rec].cookie, result});
    free_record(rec);
    --in_flight_;
}

void UringEngine::on_cqe(uint32_t rec, int res, std::vector<Completion>& out) {
    --kernel_ops_;
    if (rec >= recs_.size()) return;  // cannot happen: user_data is always a record index
    Record& r = recs_[rec];
    r.in_kernel = false;
    if (r.message && r.kind == OpKind::Read) hot_[r.file] = res > 0;
    if (res == -EAGAIN && r.message && nonblocking_[r.file]) {
        // Nothing to read (another read took the frame) or no room to write: wait for it.
        ++stats_.rearmed;
        r.poll = true;
        if (!prep(rec)) waiting_.push_front(rec);
        return;
    }
    if ((res == -EAGAIN || res == -EINTR) && r.retries < kMaxRetries) {
        ++r.retries;
        return resubmit(rec);
    }
    if (r.kind == OpKind::WriteZeroes && !r.punch && res == -EOPNOTSUPP) {
        r.punch = true;
        ++stats_.zero_range_fallbacks;
        return resubmit(rec);
    }
    if (res < 0) return finish(rec, res, out);
    if (r.kind != OpKind::Read && r.kind != OpKind::Write) return finish(rec, 0, out);
    if (r.message) return finish(rec, res, out);
    if (res == 0) return finish(rec, -EIO, out);  // no progress: end of file
    r.done += static_cast<uint64_t>(res);
    if (r.done >= r.len) return finish(rec, static_cast<int64_t>(r.len), out);
    // Short transfer: skip what was transferred and go again for the remainder.
    uint64_t n = static_cast<uint64_t>(res);
    while (n > 0 && r.first < r.iov.size()) {
        iovec& v = r.iov[r.first];
        if (n >= v.iov_len) {
            n -= v.iov_len;
            ++r.first;
        } else {
            v.iov_base = static_cast<uint8_t*>(v.iov_base) + n;
            v.iov_len -= n;
            n = 0;
        }
    }
    r.retries = 0;
    resubmit(rec);
}

size_t UringEngine::reap(std::vector<Completion>& out) {
    uint64_t count;
    while (::read(event_.get(), &count, sizeof count) < 0 && errno == EINTR) {
    }
    const size_t before = out.size();
    out.insert(out.end(), early_.begin(), early_.end());
    in_flight_ -= early_.size();
    early_.clear();

    io_uring_cqe* cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(ring_.get(), head, cqe) {
        if (cqe->user_data == kCancelTag) {
            --cancels_;
        } else if (!(cqe->user_data & kPollTag)) {
            on_cqe(static_cast<uint32_t>(cqe->user_data), cqe->res, out);
        }  // a poll's CQE: its linked op reports the outcome
        ++n;
    }
    io_uring_cq_advance(ring_.get(), n);

    while (!waiting_.empty() && prep(waiting_.front())) waiting_.pop_front();
    commit();
    return out.size() - before;
}

io_uring_sqe* UringEngine::sqe_for_cancel() {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    while (!sqe) {
        // The SQ ring is full of cancels (it holds as many entries as there can be operations
        // in the kernel, so it never is in practice): hand them over and try again.
        int r = io_uring_submit(ring_.get());
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) return nullptr;
        sqe = io_uring_get_sqe(ring_.get());
    }
    return sqe;
}

void UringEngine::cancel_all() {
    // Nothing waiting for ring space or completed early has reached the kernel.
    for (uint32_t rec : waiting_) free_record(rec);
    stats_.cancelled += waiting_.size() + early_.size();
    waiting_.clear();
    early_.clear();
    // Cancel every operation holding an SQE. SQEs not yet submitted are submitted with their
    // cancel: the cancel then finds them, or they complete on their own; either way each
    // produces exactly one CQE.
    for (uint32_t i = 0; i < recs_.size(); ++i) {
        if (!recs_[i].in_kernel) continue;
        io_uring_sqe* sqe = sqe_for_cancel();
        if (!sqe) break;  // the ring is unusable: drain_kernel waits for completions instead
        io_uring_prep_cancel64(sqe, i, 0);
        sqe->flags |= IOSQE_FIXED_FILE;  // ignored by the kernel; keeps the restriction simple
        io_uring_sqe_set_data64(sqe, kCancelTag);
        ++cancels_;
        ++stats_.cancelled;
        if (recs_[i].poll) {
            // An op still behind its poll is not findable itself: cancelling the poll fails
            // the link, and the op completes with -ECANCELED.
            io_uring_sqe* psqe = sqe_for_cancel();
            if (!psqe) break;
            io_uring_prep_cancel64(psqe, kPollTag | i, 0);
            psqe->flags |= IOSQE_FIXED_FILE;
            io_uring_sqe_set_data64(psqe, kCancelTag);
            ++cancels_;
        }
    }
    drain_kernel();
    for (uint32_t i = 0; i < recs_.size(); ++i)
        if (recs_[i].live) free_record(i);
    in_flight_ = 0;
    uint64_t count;
    while (::read(event_.get(), &count, sizeof count) < 0 && errno == EINTR) {
    }
}

void UringEngine::drain_kernel() {
    while (kernel_ops_ > 0 || cancels_ > 0) {
        int r = io_uring_submit_and_wait(ring_.get(), 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
        io_uring_cqe* cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(ring_.get(), head, cqe) {
            if (cqe->user_data == kCancelTag) {
                if (cancels_ > 0) --cancels_;
            } else if (!(cqe->user_data & kPollTag)) {
                if (kernel_ops_ > 0) --kernel_ops_;
                if (cqe->user_data < recs_.size()) recs_[cqe->user_data].in_kernel = false;
            }
            ++n;
        }
        io_uring_cq_advance(ring_.get(), n);
    }
}

}  // namespace vessel::virtio::io
