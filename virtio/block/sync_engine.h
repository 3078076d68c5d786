// Synchronous block engine: the fallback when io_uring is unavailable.
//
// submit() does the syscall inline (preadv/pwritev looping over short transfers, fdatasync,
// fallocate), so it blocks the calling thread for the duration of the I/O; results are queued
// and the completion eventfd is written, so the caller's loop is the same as with io_uring.
#pragma once

#include <span>
#include <vector>

#include "virtio/block/engine.h"
#include "vmm/fd.h"

namespace vessel::virtio::block {

class SyncEngine final : public IoEngine {
  public:
    // Throws std::system_error when the eventfd cannot be created. `files` are borrowed.
    explicit SyncEngine(std::span<const int> files);

    const char* name() const override { return "sync"; }
    void submit(const Op& op, uint64_t cookie) override;
    void commit() override {}
    int completion_fd() const override { return event_.get(); }
    size_t reap(std::vector<Completion>& out) override;
    size_t in_flight() const override { return ready_.size(); }

  private:
    int64_t run(const Op& op);
    int64_t transfer(const Op& op, int fd);

    std::vector<int> files_;
    UniqueFd event_;
    std::vector<Completion> ready_;
    std::vector<iovec> scratch_;
};

}  // namespace vessel::virtio::block
