// Guest CIDs unique among the vessel VMs of one host: a lease is an exclusive flock on
// <runtime_dir>/vsock-cid-<N>.lock, held for as long as the lease lives (the kernel drops it
// when the process dies, so a crashed VMM leaks nothing). The files stay behind on purpose:
// unlinking a lock file races with another process that just opened it.
//
// With Unix-socket vsock the CID only matters inside the guest, so uniqueness is a courtesy to
// tools that identify VMs by CID rather than a routing requirement.
#pragma once

#include <cstdint>
#include <string>

#include "vmm/fd.h"

namespace vessel::virtio::vsock {

class CidLease {
  public:
    // The lowest free CID in [first, first + count). Creates runtime_dir (mode 0700) if needed.
    // Throws std::system_error: EADDRINUSE when every CID in the range is taken, or the errno
    // of a failed mkdir/open/flock.
    static CidLease acquire(const std::string& runtime_dir, uint64_t first = 3,
                            uint32_t count = 65536);

    CidLease(CidLease&&) = default;
    CidLease& operator=(CidLease&&) = default;

    uint64_t cid() const { return cid_; }
    const std::string& path() const { return path_; }

  private:
    CidLease(UniqueFd fd, uint64_t cid, std::string path)
        : fd_(std::move(fd)), cid_(cid), path_(std::move(path)) {}

    UniqueFd fd_;
    uint64_t cid_ = 0;
    std::string path_;
};

}  // namespace vessel::virtio::vsock
