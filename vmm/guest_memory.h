// Guest RAM: one memfd split around the 32-bit MMIO gap, mapped shared into the VMM.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fd.h"
#include "uffd.h"

namespace vessel::vmm {

struct MemoryRegion {
    uint64_t gpa;
    uint64_t size;
    uint64_t file_offset;
    uint8_t* host;
};

class GuestMemory {
  public:
    // Creates `size` bytes of zeroed guest RAM backed by a memfd (pages are allocated lazily).
    static GuestMemory create(uint64_t size);

    // Guest RAM from a snapshot's memory file, mapped MAP_PRIVATE: pages load lazily from the
    // page cache (shared by every VM restored from the same file) and guest writes stay
    // private. Throws std::system_error when the file is missing or is not `size` bytes
    // (a short file would fault the VMM with SIGBUS on first touch).
    static GuestMemory map_file(const std::string& path, uint64_t size);
    // The same file read up front into a new memfd (as create() makes): the restore costs a
    // read of the file's data, and guest memory never shares pages with it (so the file may
    // change or go away while the VM runs).
    static GuestMemory load_file(const std::string& path, uint64_t size);
    // The same file behind a userfaultfd (vmm/uffd.h): anonymous private memory whose pages
    // a handler thread (seccomp role uffd) fills on first touch from `path`, or from the
    // newest of `overlays` (diff snapshots, oldest first) holding the page. `prefetch`, if
    // given, is installed before this returns. `record`: the pages filled on faults are kept
    // in order for take_recorded(). Throws std::system_error (no userfaultfd, bad file).
    static GuestMemory restore_uffd(const std::string& path, uint64_t size,
                                    std::vector<MemoryLayer> overlays = {},
                                    const Prefetch* prefetch = nullptr, bool record = false);

    // Writes guest RAM to `path` (created or truncated) as a sparse file of size() bytes:
    // file offset = the region's file_offset. Holes and all-zero pages are not written.
    // Returns the number of bytes written. The vCPUs must be paused.
    uint64_t save(const std::string& path) const;

    // Guest-physical regions for a RAM size: [0, gap) and, past the gap, [4 GiB, ...).
    static std::vector<MemoryRegion> layout(uint64_t size);

    uint64_t size() const { return size_; }
    const std::vector<MemoryRegion>& regions() const { return regions_; }
    int fd() const { return fd_.get(); }

    // Host pointer for [gpa, gpa+len) or nullptr when the range is not entirely inside one
    // region. Never throws: callers pass guest-controlled addresses.
    uint8_t* host_ptr(uint64_t gpa, uint64_t len) const;

    bool write(uint64_t gpa, const void* data, uint64_t len) const {
        uint8_t* p = host_ptr(gpa, len);
        if (!p) return false;
        std::memcpy(p, data, len);
        mark_dirty(gpa, len);
        return true;
    }
    bool read(uint64_t gpa, void* data, uint64_t len) const {
        const uint8_t* p = host_ptr(gpa, len);
        if (!p) return false;
        std::memcpy(data, p, len);
        return true;
    }
    template <typename T>
    bool write_obj(uint64_t gpa, const T& v) const {
        return write(gpa, &v, sizeof(T));
    }
    template <typename T>
    bool read_obj(uint64_t gpa, T& v) const {
        return read(gpa, &v, sizeof(T));
    }

    // Dirty-page tracking of the VMM's own writes (diff snapshots; KVM logs the guest's).
    // Every device write into guest RAM goes through a device-writable descriptor of a popped
    // chain, a used ring or write(): those call mark_dirty(). Off until enabled; then one bit
    // per 4 KiB page of the backing file, set from any thread.
    static constexpr uint64_t kPageSize = 4096;
    void enable_dirty_tracking();
    bool dirty_tracking() const { return dirty_ != nullptr; }
    // Marks the pages of [gpa, gpa+len) (clipped to RAM). Never throws.
    void mark_dirty(uint64_t gpa, uint64_t len) const {
        if (dirty_) mark_dirty_slow(gpa, len);
    }
    // The VMM's bitmap since the last call (one bit per page of the file, 64 pages a word),
    // cleared as it is taken.
    std::vector<uint64_t> take_dirty();
    // The pages of [offset, offset+len) of the backing file, as a slot-relative KVM dirty log
    // is, or-ed into `bitmap` (file pages, words of 64).
    static void or_bitmap(std::vector<uint64_t>& bitmap, uint64_t first_page,
                          std::span<const uint64_t> slot_bits, uint64_t pages);
    // Copies the pages set in `bitmap` from the file at `path` (same size as this memory)
    // over guest RAM: a diff snapshot on top of its parent. Throws std::system_error.
    void overlay(const std::string& path, std::span<const uint64_t> bitmap);
    // Writes the pages set in `bitmap` to `path` (created, size() bytes, sparse elsewhere),
    // zero pages included: the diff's bitmap says which pages it holds. Returns bytes written.
    uint64_t save_pages(const std::string& path, std::span<const uint64_t> bitmap) const;

    // restore_uffd() memory only (else: nothing, zeros, false).
    bool uffd() const { return pager_ != nullptr; }
    UffdStats uffd_stats() const { return pager_ ? pager_->stats() : UffdStats{}; }
    // The pages filled on faults, first touch first; recording stops here.
    std::vector<uint64_t> take_recorded() {
        if (!pager_) return {};
        return pager_->take_recorded();
    }
    // The snapshot's own bytes of page `page` (not the guest's since): for a working set.
    bool read_source_page(uint64_t page, uint8_t* out) const {
        return pager_ && pager_->read_source_page(page, out);
    }
    // Called once if a page cannot be read from the snapshot (the VM must stop).
    void on_fault_error(std::function<void(const std::string&)> fn) {
        if (pager_) pager_->set_error_handler(std::move(fn));
    }

    // Highest guest-physical address + 1 of RAM below the MMIO gap.
    uint64_t low_ram_end() const { return regions_.front().gpa + regions_.front().size; }

  private:
    // Runs of [offset, end) in the backing file that may hold non-zero data.
    std::vector<std::pair<uint64_t, uint64_t>> data_ranges() const;

    UniqueFd fd_;
    bool private_file_ = false;  // fd_ is a snapshot file mapped MAP_PRIVATE
    Mapping map_;
    uint64_t size_ = 0;
    std::vector<MemoryRegion> regions_;
    void mark_dirty_slow(uint64_t gpa, uint64_t len) const;
    std::unique_ptr<std::atomic<uint64_t>[]> dirty_;
    uint64_t dirty_words_ = 0;
    // After map_: stopped (its thread joined) before the memory is unmapped.
    std::unique_ptr<UffdPager> pager_;
};

}  // namespace vessel::vmm
