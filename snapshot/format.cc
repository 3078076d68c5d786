#include "snapshot/format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "snapshot/crc32c.h"
#include "vmm/fd.h"

namespace vessel::snapshot {
namespace {

void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(std::vector<uint8_t>& b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(std::span<const uint8_t> b, size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(b[at + i]) << (8 * i);
    return v;
}
uint64_t get64(std::span<const uint8_t> b, size_t at) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(b[at + i]) << (8 * i);
    return v;
}
size_t align8(size_t n) {
    return (n + 7) & ~size_t{7};
}

std::string describe(uint32_t type, uint32_t index) {
    return std::string(section_name(type)) + " section " + std::to_string(index);
}

}  // namespace

const char* section_name(uint32_t type) {
    switch (static_cast<SectionType>(type)) {
        case SectionType::kMeta:
            return "meta";
        case SectionType::kVcpu:
            return "vcpu";
        case SectionType::kVm:
            return "vm";
        case SectionType::kSerial:
            return "serial";
        case SectionType::kDevice:
            return "device";
        case SectionType::kMemory:
            return "memory";
    }
    return "unknown";
}

std::vector<uint8_t> encode(const std::vector<Section>& sections) {
    const size_t table = kHeaderSize;
    size_t off = align8(table + sections.size() * kTableEntrySize);
    std::vector<uint8_t> out(off, 0);
    for (size_t i = 0; i < sections.size(); ++i) {
        const Section& s = sections[i];
        const size_t e = table + i * kTableEntrySize;
        put32(out, e, static_cast<uint32_t>(s.type));
        put32(out, e + 4, s.index);
        put64(out, e + 8, out.size());
        put64(out, e + 16, s.data.size());
        put32(out, e + 24, crc32c(s.data));
        out.insert(out.end(), s.data.begin(), s.data.end());
        out.resize(align8(out.size()), 0);
    }
    std::memcpy(out.data(), kMagic, sizeof kMagic);
    put32(out, 8, kFormatVersion);
    put32(out, 12, static_cast<uint32_t>(sections.size()));
    put64(out, 16, out.size());
    put32(out, 24, crc32c({out.data() + table, sections.size() * kTableEntrySize}));
    put32(out, 28, crc32c({out.data(), 28}));
    return out;
}

std::vector<Section> decode(std::span<const uint8_t> f) {
    if (f.size() < kHeaderSize)
        throw SnapshotError("truncated: " + std::to_string(f.size()) + " bytes, shorter than the " +
                            std::to_string(kHeaderSize) + "-byte header");
    if (std::memcmp(f.data(), kMagic, sizeof kMagic) != 0)
        throw SnapshotError("not a vessel snapshot (bad magic)");
    if (crc32c(f.first(28)) != get32(f, 28)) throw SnapshotError("header corrupted (checksum)");
    const uint32_t version = get32(f, 8);
    if (version != kFormatVersion)
        throw SnapshotError("unsupported snapshot format version " + std::to_string(version) +
                            " (this vessel reads version " + std::to_string(kFormatVersion) + ")");
    const uint32_t count = get32(f, 12);
    const uint64_t size = get64(f, 16);
    if (size != f.size())
        throw SnapshotError(size > f.size() ? "truncated: " + std::to_string(f.size()) +
                                                  " bytes of " + std::to_string(size)
                                            : "trailing data: " + std::to_string(f.size()) +
                                                  " bytes, header says " + std::to_string(size));
    if (count > kMaxSections)
        throw SnapshotError("too many sections (" + std::to_string(count) + ")");
    const uint64_t table_len = uint64_t{count} * kTableEntrySize;
    if (kHeaderSize + table_len > f.size()) throw SnapshotError("truncated section table");
    if (crc32c(f.subspan(kHeaderSize, table_len)) != get32(f, 24))
        throw SnapshotError("section table corrupted (checksum)");
    std::vector<Section> out;
    out.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
        const size_t e = kHeaderSize + size_t{i} * kTableEntrySize;
        const uint32_t type = get32(f, e), index = get32(f, e + 4);
        const uint64_t off = get64(f, e + 8), len = get64(f, e + 16);
        if (type < 1 || type > static_cast<uint32_t>(SectionType::kMemory))
            throw SnapshotError("unknown section type " + std::to_string(type));
        if (off < kHeaderSize + table_len || off > f.size() || len > f.size() - off)
            throw SnapshotError(describe(type, index) + " lies outside the file");
        auto payload = f.subspan(off, len);
        if (crc32c(payload) != get32(f, e + 24))
            throw SnapshotError(describe(type, index) + " corrupted (checksum)");
        out.push_back({static_cast<SectionType>(type), index, {payload.begin(), payload.end()}});
    }
    return out;
}

void write_file(const std::string& path, std::span<const uint8_t> bytes) {
    const std::string tmp = path + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) throw_errno("creating " + tmp);
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            ::unlink(tmp.c_str());
            throw_errno("writing " + tmp, e);
        }
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) < 0 || ::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw_errno("saving " + path, e);
    }
}

std::vector<uint8_t> read_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw SnapshotError("cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode))
        throw SnapshotError(path + " is not a regular file");
    // The state file is small (KiB); a huge one is not ours.
    if (st.st_size > (64 << 20)) throw SnapshotError(path + " is too large for a state file");
    std::vector<uint8_t> b(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < b.size()) {
        ssize_t n = ::pread(fd.get(), b.data() + done, b.size() - done, static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw SnapshotError("reading " + path + ": " + std::strerror(errno));
        if (n == 0) break;
        done += static_cast<size_t>(n);
    }
    b.resize(done);
    return b;
}

}  // namespace vessel::snapshot
