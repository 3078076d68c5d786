// Helpers for the virtio-blk tests: temp image files and descriptor chains in guest memory.
#pragma once

#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "virtio/block/disk.h"
#include "virtio/block/engine.h"
#include "virtio/descriptor.h"
#include "vmm/fd.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::block::testing {

inline DiskOptions disk_opts(const std::string& path, bool read_only = false, bool direct = false,
                             std::string serial = {}) {
    DiskOptions o;
    o.path = path;
    o.read_only = read_only;
    o.direct = direct;
    o.serial = std::move(serial);
    return o;
}

// A temp file in `dir` (default $TMPDIR or /var/tmp), removed on destruction.
class TempFile {
  public:
    explicit TempFile(uint64_t size, std::string dir = "") {
        if (dir.empty()) {
            const char* t = std::getenv("TMPDIR");
            dir = t && *t ? t : "/var/tmp";
        }
        path_ = dir + "/vessel-blk-XXXXXX";
        int fd = ::mkstemp(path_.data());
        if (fd < 0) throw_errno("mkstemp in " + dir);
        fd_ = UniqueFd(fd);
        if (::ftruncate(fd, static_cast<off_t>(size)) < 0) throw_errno("ftruncate " + path_);
    }
    ~TempFile() { ::unlink(path_.c_str()); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;

    const std::string& path() const { return path_; }
    int fd() const { return fd_.get(); }

    void write_all(uint64_t off, const void* data, size_t len) const {
        if (::pwrite(fd_.get(), data, len, static_cast<off_t>(off)) != static_cast<ssize_t>(len))
            throw_errno("pwrite " + path_);
    }
    std::vector<uint8_t> read_all(uint64_t off, size_t len) const {
        std::vector<uint8_t> b(len);
        ssize_t n = ::pread(fd_.get(), b.data(), len, static_cast<off_t>(off));
        if (n < 0) throw_errno("pread " + path_);
        b.resize(static_cast<size_t>(n));
        return b;
    }
    uint64_t size() const {
        struct stat st;
        if (::fstat(fd_.get(), &st) < 0) throw_errno("fstat " + path_);
        return static_cast<uint64_t>(st.st_size);
    }

  private:
    std::string path_;
    UniqueFd fd_;
};

inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng();
        std::memcpy(b.data() + i, &v, std::min<size_t>(8, n - i));
    }
    return b;
}

inline uint64_t fnv1a(const std::vector<uint8_t>& b) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint8_t c : b) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

// Builds a DescriptorChain over guest memory, allocating buffers from a bump pointer.
class ChainBuilder {
  public:
    explicit ChainBuilder(const vmm::GuestMemory& mem, uint64_t base = 0x100000)
        : mem_(mem), next_(base) {}

    uint64_t alloc(uint64_t len, uint64_t align = 512) {
        next_ = (next_ + align - 1) & ~(align - 1);
        uint64_t gpa = next_;
        next_ += len;
        if (!mem_.host_ptr(gpa, len)) throw std::runtime_error("test guest memory exhausted");
        return gpa;
    }
    void reset(uint64_t base = 0x100000) {
        next_ = base;
        chain_ = {};
    }

    // Device-readable descriptor holding `data`.
    ChainBuilder& out(const void* data, uint32_t len) {
        uint64_t gpa = alloc(len);
        mem_.write(gpa, data, len);
        chain_.descs.push_back({gpa, len, false});
        return *this;
    }
    ChainBuilder& header(uint32_t type, uint64_t sector) {
        virtio_blk_outhdr h{type, 0, sector};
        return out(&h, sizeof h);
    }
    ChainBuilder& segment(uint64_t sector, uint32_t num, uint32_t flags) {
        virtio_blk_discard_write_zeroes s{sector, num, flags};
        return out(&s, sizeof s);
    }
    // Device-writable descriptor of `len` bytes (filled with 0xee so writes are visible).
    ChainBuilder& in(uint32_t len) {
        uint64_t gpa = alloc(len == 0 ? 1 : len);
        std::vector<uint8_t> fill(len, 0xee);
        if (len > 0) mem_.write(gpa, fill.data(), len);
        chain_.descs.push_back({gpa, len, true});
        return *this;
    }
    // One-byte status descriptor.
    ChainBuilder& status() {
        in(1);
        status_gpa_ = chain_.descs.back().addr;
        return *this;
    }
    ChainBuilder& raw(uint64_t gpa, uint32_t len, bool writable) {
        chain_.descs.push_back({gpa, len, writable});
        return *this;
    }

    DescriptorChain take(uint16_t head = 0) {
        chain_.head = head;
        DescriptorChain c = std::move(chain_);
        chain_ = {};
        return c;
    }
    uint64_t status_gpa() const { return status_gpa_; }
    uint8_t status_byte() const {
        uint8_t s = 0xff;
        mem_.read(status_gpa_, &s, 1);
        return s;
    }

  private:
    const vmm::GuestMemory& mem_;
    uint64_t next_;
    uint64_t status_gpa_ = 0;
    DescriptorChain chain_;
};

// Waits until `n` completions have been reaped from `e` (5 s timeout per wait).
inline std::vector<Completion> reap_n(IoEngine& e, size_t n) {
    std::vector<Completion> out;
    e.commit();
    while (out.size() < n) {
        if (e.reap(out) > 0) continue;
        pollfd p{e.completion_fd(), POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) throw std::runtime_error("timed out waiting for I/O");
    }
    return out;
}

}  // namespace vessel::virtio::block::testing
