// Guest RAM restored through userfaultfd (`vessel restore --uffd`): anonymous private memory
// whose missing pages a handler thread fills from the snapshot's memory files, a working set
// installed in bulk before the vCPUs start, and the order pages were first touched in
// (docs/snapshot-format.md, "Working set"). Used by GuestMemory::restore_uffd only.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fd.h"

namespace vessel::vmm {

// A diff snapshot's memory file and the pages it holds (one bit per 4 KiB page, 64 a word).
struct MemoryLayer {
    std::string path;
    std::vector<uint64_t> bitmap;
};

// Pages to install before anything runs: page indexes of the memory file in the order they
// were first touched, kZeroPage set for a page that is all zero, and the data of the other
// pages back to back in that order (4 KiB each). Untrusted: every index is checked again.
struct Prefetch {
    static constexpr uint64_t kZeroPage = 1ull << 63;
    std::vector<uint64_t> pages;
    std::span<const uint8_t> data;
    std::unique_ptr<uint8_t[]> storage;  // owns `data`, when it is not owned elsewhere
};

struct UffdStats {
    uint64_t prefetched_pages = 0;  // installed up front from a working set
    uint64_t prefetch_ns = 0;       // time that took (the UFFDIO_COPY/ZEROPAGE calls)
    uint64_t prefetch_runs = 0;     // runs of consecutive pages installed, one ioctl each
    uint64_t faults = 0;            // pages filled on a fault since
    uint64_t zero_faults = 0;       // of those, pages that were holes of the file
};

class UffdPager {
  public:
    // Registers [base, base+size) (anonymous, private, not yet touched) with a new
    // userfaultfd in MISSING mode; pages come from `memory_path` (`size` bytes, already
    // checked) with `overlays` on top, newest last. Throws std::system_error.
    UffdPager(uint8_t* base, uint64_t size, const std::string& memory_path,
              std::vector<MemoryLayer> overlays, bool record);
    // Stops the handler thread; the userfaultfd closes after it, so a fault still pending
    // would be filled with zeros by the kernel (none is: every user of guest RAM is gone).
    ~UffdPager();
    UffdPager(const UffdPager&) = delete;
    UffdPager& operator=(const UffdPager&) = delete;

    // Installs the pages of `p` (before start(): nothing may fault meanwhile). Indexes past
    // the memory, repeats and a short data block are skipped, never trusted. Returns the
    // number of pages installed.
    uint64_t prefetch(const Prefetch& p);
    // Starts the handler thread (seccomp role uffd).
    void start();
    // Called once, from the handler thread, if a page cannot be read: the pager then fills
    // faults with zeros so every thread can be stopped; the VM must not go on.
    void set_error_handler(std::function<void(const std::string&)> fn);

    // The page indexes filled on a fault, first touch first, since construction; stops
    // recording (later faults are not added). Empty when not recording.
    std::vector<uint64_t> take_recorded();
    // The snapshot's bytes of page `page` (the newest layer holding it; zeros for a hole).
    // Any thread. Returns false on a read error.
    bool read_source_page(uint64_t page, uint8_t* out) const;
    // Runs of pages [from, to) (byte offsets) that the memory files hold data for.
    std::vector<std::pair<uint64_t, uint64_t>> source_ranges() const;
    UffdStats stats() const;

  private:
    struct Layer {
        UniqueFd fd;
        std::string path;
        std::vector<uint64_t> bitmap;  // empty: the base file (data where SEEK_DATA says)
    };
    static bool bit(const std::vector<uint64_t>& bits, uint64_t p) {
        return p / 64 < bits.size() && (bits[p / 64] >> (p % 64) & 1);
    }
    void serve();
    void fill(uint64_t page, bool write);
    int copy(uint64_t page, const uint8_t* src, uint64_t pages, bool wake);
    int zero(uint64_t page, uint64_t pages, bool wake);
    void wake(uint64_t page);
    void fail(const std::string& what);

    uint8_t* base_;
    uint64_t size_;
    uint64_t pages_;
    UniqueFd uffd_;
    UniqueFd stop_;
    std::vector<Layer> layers_;     // [0] the full snapshot's file, then the diffs, oldest first
    std::vector<uint64_t> data_;    // pages the base file holds data for (SEEK_DATA)
    std::vector<uint64_t> filled_;  // pages installed (prefetch, then the handler thread only)
    std::thread thread_;
    std::unique_ptr<uint8_t[]> buf_;  // one page, for the handler thread

    std::atomic<bool> recording_;
    std::atomic<bool> failed_{false};
    mutable std::mutex mu_;  // recorded_, on_error_
    std::vector<uint64_t> recorded_;
    std::function<void(const std::string&)> on_error_;

    std::atomic<uint64_t> faults_{0}, zero_faults_{0};
    uint64_t prefetched_ = 0, prefetch_ns_ = 0, prefetch_ioctls_ = 0;
};

// Opens a userfaultfd (the system call, or /dev/userfaultfd when the call is refused to this
// process). Throws std::system_error saying why it is unavailable.
UniqueFd open_userfaultfd();

}  // namespace vessel::vmm
