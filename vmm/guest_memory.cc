#include "guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "layout.h"

namespace vessel::vmm {
namespace {

// Calls fn(from, to) with the byte range of each run of pages set in `bitmap` (one pread or
// pwrite per run instead of per page).
template <typename Fn>
void for_each_run(std::span<const uint64_t> bitmap, uint64_t pages, Fn fn) {
    auto set = [&](uint64_t p) {
        return p / 64 < bitmap.size() && (bitmap[p / 64] >> (p % 64) & 1);
    };
    for (uint64_t p = 0; p < pages;) {
        if (!set(p)) {
            ++p;
            continue;
        }
        uint64_t q = p;
        while (q < pages && set(q)) ++q;
        fn(p * GuestMemory::kPageSize, q * GuestMemory::kPageSize);
        p = q;
    }
}

}  // namespace

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

GuestMemory GuestMemory::map_file(const std::string& path, uint64_t size) {
    GuestMemory m;
    m.size_ = size;
    m.private_file_ = true;
    m.fd_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!m.fd_) throw_errno("opening memory file " + path);
    struct stat st {};
    if (::fstat(m.fd_.get(), &st) < 0) throw_errno("stat of memory file " + path);
    if (!S_ISREG(st.st_mode))
        throw std::system_error(EINVAL, std::generic_category(),
                                "memory file " + path + " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) != size)
        throw std::system_error(EINVAL, std::generic_category(),
                                "memory file " + path + " is " + std::to_string(st.st_size) +
                                    " bytes, the snapshot says " + std::to_string(size));
    m.map_ = Mapping::map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, m.fd_.get(), 0,
                          "mapping memory file " + path);
    ::madvise(m.map_.get(), size, MADV_DONTDUMP);
    ::madvise(m.map_.get(), size, MADV_DONTFORK);
    m.regions_ = layout(size);
    for (auto& reg : m.regions_) reg.host = m.map_.as<uint8_t>() + reg.file_offset;
    return m;
}

GuestMemory GuestMemory::restore_uffd(const std::string& path, uint64_t size,
                                      std::vector<MemoryLayer> overlays, const Prefetch* prefetch,
                                      bool record) {
    GuestMemory m;
    m.size_ = size;
    // fd_ is the full snapshot's file, as for map_file: data_ranges() finds what a save must
    // write there and in the pages the guest touched.
    m.private_file_ = true;
    m.fd_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!m.fd_) throw_errno("opening memory file " + path);
    struct stat st {};
    if (::fstat(m.fd_.get(), &st) < 0) throw_errno("stat of memory file " + path);
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size)
        throw std::system_error(EINVAL, std::generic_category(),
                                "memory file " + path + " is " + std::to_string(st.st_size) +
                                    " bytes, the snapshot says " + std::to_string(size));
    for (const auto& o : overlays) {
        struct stat ost {};
        if (::stat(o.path.c_str(), &ost) < 0) throw_errno("stat of diff memory file " + o.path);
        if (static_cast<uint64_t>(ost.st_size) != size)
            throw std::system_error(EINVAL, std::generic_category(),
                                    "diff memory file " + o.path + " is " +
                                        std::to_string(ost.st_size) + " bytes, the snapshot says " +
                                        std::to_string(size));
    }
    // Anonymous and private: userfaultfd's MISSING mode sees every first touch, the guest's
    // (KVM's get_user_pages faults included) and the VMM's.
    m.map_ = Mapping::map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                          -1, 0, "mapping guest memory");
    ::madvise(m.map_.get(), size, MADV_DONTDUMP);
    ::madvise(m.map_.get(), size, MADV_DONTFORK);
    m.regions_ = layout(size);
    for (auto& reg : m.regions_) reg.host = m.map_.as<uint8_t>() + reg.file_offset;
    m.pager_ =
        std::make_unique<UffdPager>(m.map_.as<uint8_t>(), size, path, std::move(overlays), record);
    if (prefetch) m.pager_->prefetch(*prefetch);
    m.pager_->start();
    return m;
}

GuestMemory GuestMemory::load_file(const std::string& path, uint64_t size) {
    UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("opening memory file " + path);
    struct stat st {};
    if (::fstat(in.get(), &st) < 0) throw_errno("stat of memory file " + path);
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size)
        throw std::system_error(EINVAL, std::generic_category(),
                                "memory file " + path + " is " + std::to_string(st.st_size) +
                                    " bytes, the snapshot says " + std::to_string(size));
    GuestMemory m = create(size);
    uint8_t* base = m.map_.as<uint8_t>();
    off_t pos = 0;
    const off_t end = static_cast<off_t>(size);
    while (pos < end) {
        off_t d = ::lseek(in.get(), pos, SEEK_DATA);
        if (d < 0 && errno == ENXIO) break;
        if (d < 0) d = pos;  // no SEEK_DATA: read everything
        off_t h = ::lseek(in.get(), d, SEEK_HOLE);
        if (h < 0 || h > end) h = end;
        for (off_t at = d; at < h;) {
            ssize_t n = ::pread(in.get(), base + at, static_cast<size_t>(h - at), at);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw_errno("reading memory file " + path, n == 0 ? EIO : errno);
            at += n;
        }
        pos = h;
    }
    return m;
}

std::vector<std::pair<uint64_t, uint64_t>> GuestMemory::data_ranges() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    if (private_file_) {
        // Pages the guest wrote since the restore are anonymous copies the file knows nothing
        // of; mincore finds them (and any page read so far). Swapped-out copies would be
        // missed: vessel hosts run without swap for guest memory (see docs/snapshot-format.md).
        constexpr uint64_t kChunk = 1ull << 30;
        std::vector<unsigned char> vec(kChunk / 4096);
        for (uint64_t off = 0; off < size_; off += kChunk) {
            uint64_t len = std::min(kChunk, size_ - off);
            if (::mincore(map_.as<uint8_t>() + off, len, vec.data()) < 0) {
                out.assign(1, {0, size_});
                return out;
            }
            for (uint64_t i = 0; i < len / 4096; ++i) {
                if (!(vec[i] & 1)) continue;
                uint64_t p = off + i * 4096;
                if (!out.empty() && out.back().second == p)
                    out.back().second = p + 4096;
                else
                    out.emplace_back(p, p + 4096);
            }
        }
    }
    if (pager_) {
        // The snapshot's pages not touched yet (reading them fills them): the full file's
        // data and every diff's pages.
        auto src = pager_->source_ranges();
        out.insert(out.end(), src.begin(), src.end());
    }
    off_t pos = 0;
    const off_t end = static_cast<off_t>(pager_ ? 0 : size_);
    while (pos < end) {
        off_t d = ::lseek(fd_.get(), pos, SEEK_DATA);
        if (d < 0) {
            if (errno == ENXIO) break;  // no data past pos
            // No SEEK_DATA support: treat everything as data.
            out.assign(1, {0, size_});
            return out;
        }
        off_t h = ::lseek(fd_.get(), d, SEEK_HOLE);
        if (h < 0 || h > end) h = end;
        out.emplace_back(static_cast<uint64_t>(d), static_cast<uint64_t>(h));
        pos = h;
    }
    std::sort(out.begin(), out.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (auto r : out) {
        if (!merged.empty() && r.first <= merged.back().second)
            merged.back().second = std::max(merged.back().second, r.second);
        else
            merged.push_back(r);
    }
    return merged;
}

uint64_t GuestMemory::save(const std::string& path) const {
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) throw_errno("creating memory file " + path);
    if (::ftruncate(out.get(), static_cast<off_t>(size_)) < 0)
        throw_errno("sizing memory file " + path);
    constexpr uint64_t kPage = 4096;
    const uint8_t* base = map_.as<const uint8_t>();
    auto zero_page = [](const uint8_t* p) {
        const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
        for (size_t i = 0; i < kPage / 8; ++i)
            if (w[i]) return false;
        return true;
    };
    uint64_t written = 0;
    auto flush = [&](uint64_t from, uint64_t to) {
        while (from < to) {
            ssize_t n = ::pwrite(out.get(), base + from, std::min<uint64_t>(to - from, 1u << 30),
                                 static_cast<off_t>(from));
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno("writing memory file " + path);
            }
            from += static_cast<uint64_t>(n);
            written += static_cast<uint64_t>(n);
        }
    };
    for (auto [b, e] : data_ranges()) {
        b &= ~(kPage - 1);
        e = std::min(size_, (e + kPage - 1) & ~(kPage - 1));
        uint64_t run = b;  // start of the current run of non-zero pages
        for (uint64_t p = b; p < e; p += kPage) {
            if (zero_page(base + p)) {
                flush(run, p);
                run = p + kPage;
            }
        }
        flush(run, e);
    }
    if (::fsync(out.get()) < 0) throw_errno("syncing memory file " + path);
    return written;
}

void GuestMemory::enable_dirty_tracking() {
    if (dirty_) return;
    dirty_words_ = (size_ / kPageSize + 63) / 64;
    dirty_ = std::make_unique<std::atomic<uint64_t>[]>(dirty_words_);
    for (uint64_t i = 0; i < dirty_words_; ++i) dirty_[i].store(0, std::memory_order_relaxed);
}

void GuestMemory::mark_dirty_slow(uint64_t gpa, uint64_t len) const {
    if (len == 0) return;
    for (const auto& reg : regions_) {
        if (gpa < reg.gpa || gpa - reg.gpa >= reg.size) continue;
        const uint64_t off = reg.file_offset + (gpa - reg.gpa);
        const uint64_t end = reg.file_offset + std::min(reg.size, gpa - reg.gpa + len);
        for (uint64_t p = off / kPageSize; p <= (end - 1) / kPageSize; ++p)
            dirty_[p / 64].fetch_or(1ull << (p % 64), std::memory_order_relaxed);
        return;
    }
}

std::vector<uint64_t> GuestMemory::take_dirty() {
    std::vector<uint64_t> out((size_ / kPageSize + 63) / 64, 0);
    for (uint64_t i = 0; dirty_ && i < dirty_words_; ++i)
        out[i] = dirty_[i].exchange(0, std::memory_order_relaxed);
    return out;
}

void GuestMemory::or_bitmap(std::vector<uint64_t>& bitmap, uint64_t first_page,
                            std::span<const uint64_t> slot_bits, uint64_t pages) {
    for (uint64_t i = 0; i < pages; ++i) {
        if (!(slot_bits[i / 64] >> (i % 64) & 1)) continue;
        const uint64_t p = first_page + i;
        if (p / 64 < bitmap.size()) bitmap[p / 64] |= 1ull << (p % 64);
    }
}

void GuestMemory::overlay(const std::string& path, std::span<const uint64_t> bitmap) {
    UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw_errno("opening diff memory file " + path);
    struct stat st {};
    if (::fstat(in.get(), &st) < 0) throw_errno("stat of diff memory file " + path);
    if (static_cast<uint64_t>(st.st_size) != size_)
        throw std::system_error(EINVAL, std::generic_category(),
                                "diff memory file " + path + " is " + std::to_string(st.st_size) +
                                    " bytes, the snapshot says " + std::to_string(size_));
    uint8_t* base = map_.as<uint8_t>();
    for_each_run(bitmap, size_ / kPageSize, [&](uint64_t from, uint64_t to) {
        for (uint64_t at = from; at < to;) {
            ssize_t n = ::pread(in.get(), base + at, to - at, static_cast<off_t>(at));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw_errno("reading diff memory file " + path, n == 0 ? EIO : errno);
            at += static_cast<uint64_t>(n);
        }
    });
}

uint64_t GuestMemory::save_pages(const std::string& path, std::span<const uint64_t> bitmap) const {
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) throw_errno("creating memory file " + path);
    if (::ftruncate(out.get(), static_cast<off_t>(size_)) < 0)
        throw_errno("sizing memory file " + path);
    const uint8_t* base = map_.as<const uint8_t>();
    uint64_t written = 0;
    for_each_run(bitmap, size_ / kPageSize, [&](uint64_t from, uint64_t to) {
        for (uint64_t at = from; at < to;) {
            ssize_t n = ::pwrite(out.get(), base + at, to - at, static_cast<off_t>(at));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw_errno("writing memory file " + path, n == 0 ? EIO : errno);
            at += static_cast<uint64_t>(n);
            written += static_cast<uint64_t>(n);
        }
    });
    if (::fsync(out.get()) < 0) throw_errno("syncing memory file " + path);
    return written;
}

uint8_t* GuestMemory::host_ptr(uint64_t gpa, uint64_t len) const {
    for (const auto& reg : regions_) {
        if (gpa >= reg.gpa && gpa - reg.gpa <= reg.size && len <= reg.size - (gpa - reg.gpa))
            return reg.host + (gpa - reg.gpa);
    }
    return nullptr;
}

}  // namespace vessel::vmm
