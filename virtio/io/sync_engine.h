// Synchronous engine: the fallback when io_uring is unavailable.
//
// Disk operations run inline in submit() (preadv/pwritev looping over short transfers,
// fdatasync, fallocate), so they block the calling thread for the duration of the I/O.
// Message ops (packets) never block: submit() tries the transfer at once without waiting
// (preadv2/pwritev2 with RWF_NOWAIT, or poll() with a zero timeout where the file does not
// support RWF_NOWAIT), and when the file is not ready the op is parked, in order, until it is.
// Results are queued and completion_fd() becomes readable, so the caller's loop is the same as
// with io_uring.
//
// completion_fd() is an epoll instance holding the engine's eventfd (ready results) and each
// file with parked ops (EPOLLIN for reads, EPOLLOUT for writes; a file leaves the set when it
// has none, so a readable tap nobody reads from does not keep the caller spinning).
#pragma once

#include <deque>
#include <span>
#include <vector>

#include "virtio/io/engine.h"
#include "vmm/fd.h"

namespace vessel::virtio::io {

class SyncEngine final : public IoEngine {
  public:
    // Throws std::system_error when the eventfd or epoll instance cannot be created. `files`
    // are borrowed.
    explicit SyncEngine(std::span<const int> files);

    const char* name() const override { return "sync"; }
    void submit(const Op& op, uint64_t cookie) override;
    void commit() override {}
    int completion_fd() const override { return epoll_.get(); }
    size_t reap(std::vector<Completion>& out) override;
    size_t in_flight() const override { return ready_.size() + parked_; }
    void cancel_all() override;

  private:
    struct Parked {
        uint64_t cookie;
        std::vector<iovec> iov;
    };
    struct File {
        int fd = -1;
        bool nowait = true;  // RWF_NOWAIT works; else poll() first
        uint32_t interest = 0;
        std::deque<Parked> reads, writes;
    };

    int64_t run(const Op& op);
    int64_t transfer(const Op& op, int fd);
    int64_t try_message(File& f, OpKind kind, const iovec* iov, int cnt);
    void retry_parked(File& f, std::vector<Completion>& out);
    void update_interest(uint32_t file);
    void signal();

    std::vector<File> files_;
    UniqueFd event_;
    UniqueFd epoll_;
    std::vector<Completion> ready_;
    std::vector<iovec> scratch_;
    size_t parked_ = 0;
};

}  // namespace vessel::virtio::io
