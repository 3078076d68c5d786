// Block engine benchmark: 4 KiB random read/write and 1 MiB sequential read/write at queue
// depth 32, for each engine (io_uring, sync), through the page cache and with O_DIRECT, against
// a temp file. Reports IOPS, throughput and host CPU time per I/O (getrusage of the whole
// process, so io_uring's io-wq workers count too).
//
//   block_engine_bench [--dir DIR] [--size-mib N] [--seconds S] [--engines io_uring,sync]
//                      [--modes cache,direct]
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "virtio/block/disk.h"
#include "virtio/block/engine.h"
#include "vmm/fd.h"

using namespace vessel;
using namespace vessel::virtio::block;

namespace {

constexpr unsigned kDepth = 32;

struct Args {
    std::string dir = "/var/tmp";
    uint64_t size_mib = 256;
    double seconds = 2;
    std::string engines = "io_uring,sync";
    std::string modes = "cache,direct";
};

struct Workload {
    const char* name;
    OpKind kind;
    size_t block;
    bool random;
};

double cpu_seconds() {
    rusage u;
    ::getrusage(RUSAGE_SELF, &u);
    auto s = [](timeval t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return s(u.ru_utime) + s(u.ru_stime);
}

struct Result {
    uint64_t ops = 0;
    double wall = 0, cpu = 0;
};

Result run(IoEngine& e, const Workload& w, uint64_t size, double seconds) {
    std::vector<uint8_t*> bufs(kDepth);
    std::vector<iovec> iov(kDepth);
    for (unsigned i = 0; i < kDepth; ++i) {
        void* p = nullptr;
        if (::posix_memalign(&p, 4096, w.block) != 0) throw std::bad_alloc();
        std::memset(p, static_cast<int>(i), w.block);
        bufs[i] = static_cast<uint8_t*>(p);
        iov[i] = {p, w.block};
    }
    std::mt19937_64 rng(42);
    const uint64_t blocks = size / w.block;
    uint64_t next_seq = 0;
    auto submit = [&](unsigned slot) {
        uint64_t b = w.random ? rng() % blocks : next_seq++ % blocks;
        e.submit({w.kind, 0, b * w.block, {&iov[slot], 1}, w.block}, slot);
    };

    Result r;
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    const auto deadline = t0 + std::chrono::duration<double>(seconds);
    for (unsigned i = 0; i < kDepth; ++i) submit(i);
    e.commit();
    std::vector<Completion> done;
    bool stopping = false;
    while (e.in_flight() > 0) {
        done.clear();
        if (e.reap(done) == 0) {
            pollfd p{e.completion_fd(), POLLIN, 0};
            ::poll(&p, 1, 1000);
            continue;
        }
        if (!stopping && std::chrono::steady_clock::now() >= deadline) stopping = true;
        for (const Completion& c : done) {
            if (c.result < 0) {
                std::fprintf(stderr, "I/O error: %s\n", std::strerror(static_cast<int>(-c.result)));
                std::exit(1);
            }
            ++r.ops;
            if (!stopping) submit(static_cast<unsigned>(c.cookie));
        }
        e.commit();
    }
    r.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.cpu = cpu_seconds() - c0;
    for (uint8_t* p : bufs) std::free(p);
    return r;
}

bool has(const std::string& list, const std::string& item) {
    return ("," + list + ",").find("," + item + ",") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string k = argv[i], v = argv[i + 1];
        if (k == "--dir")
            a.dir = v;
        else if (k == "--size-mib")
            a.size_mib = std::stoull(v);
        else if (k == "--seconds")
            a.seconds = std::stod(v);
        else if (k == "--engines")
            a.engines = v;
        else if (k == "--modes")
            a.modes = v;
        else {
            std::fprintf(stderr, "unknown option %s\n", k.c_str());
            return 2;
        }
    }
    try {
        const uint64_t size = a.size_mib << 20;
        std::string path = a.dir + "/vessel-blk-bench-XXXXXX";
        UniqueFd tmp(::mkstemp(path.data()));
        if (!tmp) throw_errno("creating a temp file in " + a.dir);
        struct Unlink {
            std::string p;
            ~Unlink() { ::unlink(p.c_str()); }
        } unlink_at_exit{path};
        {
            std::vector<uint8_t> chunk(1 << 20);
            std::mt19937_64 rng(1);
            for (uint64_t off = 0; off < size; off += chunk.size()) {
                for (auto& c : chunk) c = static_cast<uint8_t>(rng());
                if (::pwrite(tmp.get(), chunk.data(), chunk.size(), static_cast<off_t>(off)) !=
                    static_cast<ssize_t>(chunk.size()))
                    throw_errno("filling " + path);
            }
            if (::fsync(tmp.get()) < 0) throw_errno("fsync " + path);
        }
        tmp.reset();

        const Workload workloads[] = {
            {"randread 4k", OpKind::Read, 4096, true},
            {"randwrite 4k", OpKind::Write, 4096, true},
            {"seqread 1m", OpKind::Read, 1 << 20, false},
            {"seqwrite 1m", OpKind::Write, 1 << 20, false},
        };
        std::printf("file %s, %llu MiB, queue depth %u, %.1f s per case\n", path.c_str(),
                    static_cast<unsigned long long>(a.size_mib), kDepth, a.seconds);
        std::printf("%-9s %-7s %-13s %10s %10s %12s\n", "engine", "mode", "workload", "IOPS",
                    "MiB/s", "CPU us/IO");
        for (const char* mode : {"cache", "direct"}) {
            if (!has(a.modes, mode)) continue;
            const bool direct = std::strcmp(mode, "direct") == 0;
            for (const char* en : {"io_uring", "sync"}) {
                if (!has(a.engines, en)) continue;
                std::optional<Disk> disk;
                try {
                    DiskOptions o;
                    o.path = path;
                    o.direct = direct;
                    disk = Disk::open(o);
                } catch (const std::system_error& e) {
                    std::printf("%-9s %-7s skipped: %s\n", en, mode, e.what());
                    continue;
                }
                int fds[] = {disk->fd()};
                auto pref = std::strcmp(en, "io_uring") == 0 ? EnginePreference::IoUring
                                                             : EnginePreference::Sync;
                auto choice = make_engine(pref, kDepth, fds);
                for (const Workload& w : workloads) {
                    Result r = run(*choice.engine, w, size, a.seconds);
                    std::printf("%-9s %-7s %-13s %10.0f %10.1f %12.2f\n", en, mode, w.name,
                                r.ops / r.wall, r.ops * (w.block / 1048576.0) / r.wall,
                                r.cpu / r.ops * 1e6);
                    std::fflush(stdout);
                }
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "block_engine_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
