// Guest RAM: one memfd split around the 32-bit MMIO gap, mapped shared into the VMM.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fd.h"

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

    // Highest guest-physical address + 1 of RAM below the MMIO gap.
    uint64_t low_ram_end() const { return regions_.front().gpa + regions_.front().size; }

  private:
    UniqueFd fd_;
    Mapping map_;
    uint64_t size_ = 0;
    std::vector<MemoryRegion> regions_;
};

}  // namespace vessel::vmm
