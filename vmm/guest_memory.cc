#include "guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include "layout.h"

namespace vessel::vmm {

std::vector<MemoryRegion> GuestMemory::layout(uint64_t size) {
    std::vector<MemoryRegion> r;
    uint64_t low = size < layout::kMmioGapStart ? size : layout::kMmioGapStart;
    r.push_back({0, low, 0, nullptr});
    if (size > low) r.push_back({layout::kMmioGapEnd, size - low, low, nullptr});
    return r;
}

GuestMemory GuestMemory::create(uint64_t size) {
    GuestMemory m;
    m.size_ = size;
    m.fd_ = UniqueFd(::memfd_create("vessel-guest-ram", MFD_CLOEXEC));
    if (!m.fd_) throw_errno("creating guest memory memfd");
    if (::ftruncate(m.fd_.get(), static_cast<off_t>(size)) < 0)
        throw_errno("sizing guest memory to " + std::to_string(size >> 20) + " MiB");
    m.map_ = Mapping::map(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m.fd_.get(), 0,
                          "mapping guest memory");
    // Guest memory is not worth dumping and must not be shared with a forked child.
    ::madvise(m.map_.get(), size, MADV_DONTDUMP);
    ::madvise(m.map_.get(), size, MADV_DONTFORK);
    m.regions_ = layout(size);
    for (auto& reg : m.regions_) reg.host = m.map_.as<uint8_t>() + reg.file_offset;
    return m;
}

uint8_t* GuestMemory::host_ptr(uint64_t gpa, uint64_t len) const {
    for (const auto& reg : regions_) {
        if (gpa >= reg.gpa && gpa - reg.gpa <= reg.size && len <= reg.size - (gpa - reg.gpa))
            return reg.host + (gpa - reg.gpa);
    }
    return nullptr;
}

}  // namespace vessel::vmm
