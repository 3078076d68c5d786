#include "snapshot/working_set.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <system_error>

#include "snapshot/crc32c.h"
#include "vmm/fd.h"

namespace vessel::snapshot {
namespace {

constexpr uint64_t kPage = vmm::GuestMemory::kPageSize;
constexpr char kMagic[8] = {'V', 'E', 'S', 'S', 'W', 'S', 0, 0};

// Header fields (docs/snapshot-format.md), little-endian.
constexpr size_t kOffVersion = 8, kOffPageSize = 12, kOffMemSize = 16, kOffIdentity = 24,
                 kOffEntries = 32, kOffDataPages = 40, kOffListCrc = 48, kOffHeaderCrc = 60;

void put(uint8_t* p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get(const uint8_t* p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
    return v;
}

bool all_zero(const uint8_t* p) {
    const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
    for (size_t i = 0; i < kPage / 8; ++i)
        if (w[i]) return false;
    return true;
}

void write_at(int fd, const uint8_t* p, uint64_t n, uint64_t off, const std::string& path) {
    while (n > 0) {
        ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) throw_errno("writing working set " + path, w == 0 ? EIO : errno);
        p += w;
        off += static_cast<uint64_t>(w);
        n -= static_cast<uint64_t>(w);
    }
}

}  // namespace

uint64_t memory_identity(const std::string& memory_path,
                         const std::vector<vmm::MemoryLayer>& overlays) {
    std::vector<uint8_t> bytes;
    auto add = [&](const std::string& p) {
        struct stat st {};
        if (::stat(p.c_str(), &st) < 0) throw_errno("stat of memory file " + p);
        for (uint64_t v : {uint64_t(st.st_dev), uint64_t(st.st_ino), uint64_t(st.st_size),
                           uint64_t(st.st_mtim.tv_sec), uint64_t(st.st_mtim.tv_nsec)}) {
            uint8_t b[8];
            put(b, v, 8);
            bytes.insert(bytes.end(), b, b + 8);
        }
    };
    add(memory_path);
    for (const auto& o : overlays) add(o.path);
    // Two CRCs with different seeds: a cache key, not a defence (the file is not trusted
    // for anything but the bytes it offers for pages it names).
    return uint64_t{crc32c(bytes)} << 32 | crc32c(bytes, 0x5bd1e995u);
}

std::optional<vmm::Prefetch> read_working_set(const std::string& path, uint64_t memory_size,
                                              uint64_t identity, std::string& why) {
    why.clear();
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno != ENOENT) why = std::string("cannot open it: ") + std::strerror(errno);
        return std::nullopt;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) {
        why = "not a regular file";
        return std::nullopt;
    }
    const uint64_t pages = memory_size / kPage;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    // Never more than one entry and one copy per page of the memory.
    if (size < kWorkingSetHeaderSize || size > kWorkingSetHeaderSize + pages * (8 + kPage)) {
        why = "size " + std::to_string(size) + " impossible for this memory";
        return std::nullopt;
    }
    auto buf = std::make_unique_for_overwrite<uint8_t[]>(size);
    for (uint64_t at = 0; at < size;) {
        ssize_t n = ::read(fd.get(), buf.get() + at, size - at);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            why = n == 0 ? "truncated while read" : std::string("read: ") + std::strerror(errno);
            return std::nullopt;
        }
        at += static_cast<uint64_t>(n);
    }
    const uint8_t* h = buf.get();
    if (std::memcmp(h, kMagic, sizeof kMagic) != 0) {
        why = "not a vessel working set";
        return std::nullopt;
    }
    if (get(h + kOffHeaderCrc, 4) != crc32c({h, kOffHeaderCrc})) {
        why = "header corrupted (checksum)";
        return std::nullopt;
    }
    if (get(h + kOffVersion, 4) != kWorkingSetVersion) {
        why = "version " + std::to_string(get(h + kOffVersion, 4)) + " (this vessel reads " +
              std::to_string(kWorkingSetVersion) + ")";
        return std::nullopt;
    }
    if (get(h + kOffPageSize, 4) != kPage || get(h + kOffMemSize, 8) != memory_size) {
        why = "recorded for another memory size";
        return std::nullopt;
    }
    if (get(h + kOffIdentity, 8) != identity) {
        why = "recorded from other memory files (the snapshot was re-created or copied)";
        return std::nullopt;
    }
    const uint64_t entries = get(h + kOffEntries, 8), data_pages = get(h + kOffDataPages, 8);
    if (entries > pages || data_pages > entries ||
        size != kWorkingSetHeaderSize + entries * 8 + data_pages * kPage) {
        why = "counts do not match the file's size";
        return std::nullopt;
    }
    const uint8_t* list = h + kWorkingSetHeaderSize;
    if (get(h + kOffListCrc, 4) != crc32c({list, entries * 8})) {
        why = "page list corrupted (checksum)";
        return std::nullopt;
    }
    vmm::Prefetch p;
    p.pages.reserve(entries);
    uint64_t nonzero = 0;
    for (uint64_t i = 0; i < entries; ++i) {
        const uint64_t e = get(list + i * 8, 8);
        if ((e & ~vmm::Prefetch::kZeroPage) >= pages) {
            why = "page " + std::to_string(e & ~vmm::Prefetch::kZeroPage) + " is past the memory";
            return std::nullopt;
        }
        if (!(e & vmm::Prefetch::kZeroPage)) ++nonzero;
        p.pages.push_back(e);
    }
    if (nonzero != data_pages) {
        why = "page list and data do not match";
        return std::nullopt;
    }
    p.data = {list + entries * 8, data_pages * kPage};
    p.storage = std::move(buf);
    return p;
}

uint64_t write_working_set(const std::string& path, const vmm::GuestMemory& mem,
                           const std::vector<uint64_t>& pages, uint64_t identity) {
    const uint64_t total = mem.size() / kPage;
    std::vector<uint64_t> list;
    std::vector<bool> seen(total);
    for (uint64_t p : pages)
        if (p < total && !seen[p]) {
            seen[p] = true;
            list.push_back(p);
        }

    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) throw_errno("creating working set " + tmp);
    try {
        // The data goes after the list, whose length is known: one pass reads each page from
        // the snapshot (not from the guest, which may have changed it) and writes it out.
        const uint64_t data_off = kWorkingSetHeaderSize + list.size() * 8;
        constexpr uint64_t kBatch = 256;
        auto batch = std::make_unique_for_overwrite<uint8_t[]>(kBatch * kPage);
        uint64_t in_batch = 0, data_pages = 0;
        auto flush = [&] {
            write_at(fd.get(), batch.get(), in_batch * kPage,
                     data_off + (data_pages - in_batch) * kPage, tmp);
            in_batch = 0;
        };
        for (uint64_t& e : list) {
            uint8_t* slot = batch.get() + in_batch * kPage;
            if (!mem.read_source_page(e, slot))
                throw_errno("reading page " + std::to_string(e) + " of the snapshot",
                            errno ? errno : EIO);
            if (all_zero(slot)) {
                e |= vmm::Prefetch::kZeroPage;
                continue;
            }
            ++in_batch;
            ++data_pages;
            if (in_batch == kBatch) flush();
        }
        flush();
        std::vector<uint8_t> head(kWorkingSetHeaderSize + list.size() * 8, 0);
        for (size_t i = 0; i < list.size(); ++i)
            put(head.data() + kWorkingSetHeaderSize + i * 8, list[i], 8);
        uint8_t* h = head.data();
        std::memcpy(h, kMagic, sizeof kMagic);
        put(h + kOffVersion, kWorkingSetVersion, 4);
        put(h + kOffPageSize, kPage, 4);
        put(h + kOffMemSize, mem.size(), 8);
        put(h + kOffIdentity, identity, 8);
        put(h + kOffEntries, list.size(), 8);
        put(h + kOffDataPages, data_pages, 8);
        put(h + kOffListCrc, crc32c({h + kWorkingSetHeaderSize, list.size() * 8}), 4);
        put(h + kOffHeaderCrc, crc32c({h, kOffHeaderCrc}), 4);
        write_at(fd.get(), h, head.size(), 0, tmp);
        if (::fsync(fd.get()) < 0) throw_errno("syncing working set " + tmp);
        if (::rename(tmp.c_str(), path.c_str()) < 0) throw_errno("renaming working set to " + path);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    return list.size();
}

}  // namespace vessel::snapshot
