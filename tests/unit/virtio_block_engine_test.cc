// Block I/O engines against real files: both engines, the same expectations.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/statfs.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include "tests/unit/virtio_block_test_util.h"
#include "virtio/block/disk.h"
#include "virtio/io/sync_engine.h"
#include "virtio/io/uring_engine.h"

namespace vessel::virtio::block {
namespace {

using io::SyncEngine;
using io::UringEngine;
using testing::random_bytes;
using testing::reap_n;
using testing::TempFile;

bool uring_ok() {
    static const bool ok = probe_io_uring().ok;
    return ok;
}

std::unique_ptr<IoEngine> make(const std::string& kind, int fd, unsigned depth = 32) {
    int fds[] = {fd};
    if (kind == "io_uring") return std::make_unique<UringEngine>(depth, fds);
    return std::make_unique<SyncEngine>(fds);
}

class EngineTest : public ::testing::TestWithParam<std::string> {
  protected:
    void SetUp() override {
        if (GetParam() == "io_uring" && !uring_ok()) GTEST_SKIP() << probe_io_uring().reason;
    }
};

// A buffer split into a few iovecs of random (512-multiple) sizes.
struct IoBuf {
    std::vector<uint8_t> data;
    std::vector<iovec> iov;
    IoBuf(size_t len, std::mt19937_64& rng) : data(len) {
        size_t off = 0;
        while (off < len) {
            size_t n = std::min<size_t>(len - off, 512 * (1 + rng() % 16));
            iov.push_back({data.data() + off, n});
            off += n;
        }
    }
};

// >= 8 MiB of random reads and writes, 32 in flight with no overlap inside a batch: every read
// matches a reference buffer, and at the end the file matches it byte for byte.
TEST_P(EngineTest, RandomReadWriteMatchesReference) {
    constexpr size_t kSize = 8 << 20;
    TempFile f(kSize);
    std::vector<uint8_t> ref = random_bytes(kSize, 1);
    f.write_all(0, ref.data(), kSize);
    auto e = make(GetParam(), f.fd());
    std::mt19937_64 rng(2);

    uint64_t read_bytes = 0, write_bytes = 0;
    while (read_bytes < kSize || write_bytes < kSize) {
        std::vector<std::unique_ptr<IoBuf>> bufs;
        std::map<uint64_t, std::pair<uint64_t, bool>> ranges;  // cookie -> (offset, is_read)
        std::vector<std::pair<uint64_t, uint64_t>> used;
        for (uint64_t cookie = 0; cookie < 32; ++cookie) {
            size_t len = 512 * (1 + rng() % 256);  // up to 128 KiB
            uint64_t off = 512 * (rng() % ((kSize - len) / 512 + 1));
            bool overlap = false;
            for (auto& [o, l] : used) overlap |= off < o + l && o < off + len;
            if (overlap) continue;
            used.push_back({off, len});
            bufs.push_back(std::make_unique<IoBuf>(len, rng));
            IoBuf& b = *bufs.back();
            bool is_read = rng() % 2;
            Op op;
            op.kind = is_read ? OpKind::Read : OpKind::Write;
            op.offset = off;
            op.iov = b.iov;
            op.len = len;
            if (!is_read) {
                b.data = random_bytes(len, rng());
                for (size_t i = 0, o = 0; i < b.iov.size(); o += b.iov[i].iov_len, ++i)
                    b.iov[i].iov_base = b.data.data() + o;
                std::memcpy(ref.data() + off, b.data.data(), len);
                write_bytes += len;
            } else {
                read_bytes += len;
            }
            ranges[bufs.size() - 1] = {off, is_read};
            e->submit(op, bufs.size() - 1);
        }
        for (const Completion& c : reap_n(*e, bufs.size())) {
            const IoBuf& b = *bufs[c.cookie];
            ASSERT_EQ(c.result, static_cast<int64_t>(b.data.size()));
            auto [off, is_read] = ranges[c.cookie];
            if (is_read) {
                ASSERT_EQ(0, std::memcmp(b.data.data(), ref.data() + off, b.data.size()));
            }
        }
        EXPECT_EQ(e->in_flight(), 0u);
    }
    EXPECT_EQ(f.read_all(0, kSize), ref);
}

TEST_P(EngineTest, FlushCompletesAfterDataIsOnTheFile) {
    TempFile f(1 << 20);
    auto e = make(GetParam(), f.fd());
    std::vector<uint8_t> data = random_bytes(64 << 10, 3);
    iovec v{data.data(), data.size()};
    e->submit({OpKind::Write, 0, 4096, {&v, 1}, data.size()}, 1);
    ASSERT_EQ(reap_n(*e, 1)[0].result, static_cast<int64_t>(data.size()));
    e->submit({OpKind::Flush, 0, 0, {}, 0}, 2);
    auto c = reap_n(*e, 1);
    EXPECT_EQ(c[0].cookie, 2u);
    EXPECT_EQ(c[0].result, 0);
    // Another open file description sees the data.
    UniqueFd other(::open(f.path().c_str(), O_RDONLY | O_CLOEXEC));
    std::vector<uint8_t> back(data.size());
    ASSERT_EQ(::pread(other.get(), back.data(), back.size(), 4096),
              static_cast<ssize_t>(back.size()));
    EXPECT_EQ(back, data);
}

void check_zeroing(IoEngine& e, const TempFile& f) {
    constexpr size_t kSize = 1 << 20;
    std::vector<uint8_t> ref(kSize, 0xaa);
    f.write_all(0, ref.data(), kSize);
    struct {
        OpKind kind;
        uint64_t off, len;
    } ops[] = {
        {OpKind::Discard, 64 << 10, 128 << 10},  // block aligned
        {OpKind::Discard, 300 * 512, 3 * 512},   // sector aligned only: partial blocks zeroed
        {OpKind::WriteZeroes, 512 << 10, 64 << 10},
        {OpKind::WriteZeroes, 700 * 1024 + 512, 5 * 512},
    };
    uint64_t cookie = 0;
    for (auto& o : ops) {
        e.submit({o.kind, 0, o.off, {}, o.len}, cookie++);
        std::memset(ref.data() + o.off, 0, o.len);
    }
    for (const Completion& c : reap_n(e, cookie)) EXPECT_EQ(c.result, 0) << c.cookie;
    // Read back through the engine, then through the file.
    std::vector<uint8_t> back(kSize, 0x55);
    iovec v{back.data(), back.size()};
    e.submit({OpKind::Read, 0, 0, {&v, 1}, kSize}, 99);
    ASSERT_EQ(reap_n(e, 1)[0].result, static_cast<int64_t>(kSize));
    EXPECT_EQ(back, ref);
    EXPECT_EQ(f.read_all(0, kSize), ref);
    EXPECT_EQ(f.size(), kSize);  // KEEP_SIZE
}

TEST_P(EngineTest, DiscardAndWriteZeroesReadBackZeros) {
    TempFile f(1 << 20);
    auto e = make(GetParam(), f.fd());
    check_zeroing(*e, f);
}

// tmpfs has PUNCH_HOLE but no ZERO_RANGE: WriteZeroes falls back to punching.
TEST_P(EngineTest, WriteZeroesOnTmpfs) {
    struct statfs sf;
    if (::statfs("/dev/shm", &sf) < 0 || sf.f_type != 0x01021994)
        GTEST_SKIP() << "/dev/shm is not tmpfs";
    TempFile f(1 << 20, "/dev/shm");
    auto e = make(GetParam(), f.fd());
    check_zeroing(*e, f);
    if (auto* u = dynamic_cast<UringEngine*>(e.get())) {
        EXPECT_GT(u->counters().zero_range_fallbacks, 0u);
    }
}

TEST_P(EngineTest, ReadPastEndOfFileIsEio) {
    TempFile f(4096);
    auto e = make(GetParam(), f.fd());
    std::vector<uint8_t> b(8192);
    iovec v{b.data(), b.size()};
    e->submit({OpKind::Read, 0, 4096, {&v, 1}, b.size()}, 1);  // wholly past the end
    e->submit({OpKind::Read, 0, 0, {&v, 1}, b.size()}, 2);     // half past the end
    for (const Completion& c : reap_n(*e, 2)) EXPECT_EQ(c.result, -EIO) << c.cookie;
}

TEST_P(EngineTest, ErrorsAreResultsNotExceptions) {
    TempFile f(4096);
    UniqueFd ro(::open(f.path().c_str(), O_RDONLY | O_CLOEXEC));
    auto e = make(GetParam(), ro.get());
    std::vector<uint8_t> b(512);
    iovec v{b.data(), b.size()};
    e->submit({OpKind::Write, 0, 0, {&v, 1}, 512}, 1);  // read-only fd
    e->submit({OpKind::Read, 5, 0, {&v, 1}, 512}, 2);   // no such file index
    e->submit({OpKind::Discard, 0, 0, {}, 512}, 3);     // read-only fd
    std::map<uint64_t, int64_t> res;
    for (const Completion& c : reap_n(*e, 3)) res[c.cookie] = c.result;
    EXPECT_EQ(res[1], -EBADF);
    EXPECT_EQ(res[2], -EBADF);
    EXPECT_EQ(res[3], -EBADF);
    EXPECT_EQ(e->in_flight(), 0u);
}

// O_DIRECT through Disk, with sector-aligned buffers.
TEST_P(EngineTest, DirectIo) {
    constexpr size_t kSize = 4 << 20;
    TempFile f(kSize);
    std::vector<uint8_t> ref = random_bytes(kSize, 5);
    f.write_all(0, ref.data(), kSize);
    std::optional<Disk> disk;
    try {
        disk = Disk::open(testing::disk_opts(f.path(), false, true));
    } catch (const std::system_error& err) {
        if (err.code().value() == EINVAL) GTEST_SKIP() << err.what();
        throw;
    }
    auto e = make(GetParam(), disk->fd());
    auto mem = vmm::GuestMemory::create(8 << 20);  // page-aligned buffers
    uint8_t* buf = mem.host_ptr(0, 8 << 20);
    std::mt19937_64 rng(6);
    for (int round = 0; round < 16; ++round) {
        std::vector<std::pair<uint64_t, uint64_t>> ops;  // (file offset, buffer offset)
        for (int i = 0; i < 16; ++i) ops.push_back({(rng() % (kSize / 4096)) * 4096, i * 65536});
        bool write = round % 2;
        std::vector<iovec> iov;
        for (auto [off, boff] : ops) iov.push_back({buf + boff, 4096});
        for (size_t i = 0; i < ops.size(); ++i) {
            if (write) {
                std::vector<uint8_t> d = random_bytes(4096, rng());
                std::memcpy(buf + ops[i].second, d.data(), 4096);
            }
        }
        // Writes to the same offset in one batch would race: dedupe.
        std::map<uint64_t, size_t> last;
        for (size_t i = 0; i < ops.size(); ++i) last[ops[i].first] = i;
        size_t n = 0;
        for (auto [off, i] : last) {
            if (write) std::memcpy(ref.data() + off, buf + ops[i].second, 4096);
            e->submit({write ? OpKind::Write : OpKind::Read, 0, off, {&iov[i], 1}, 4096}, i);
            ++n;
        }
        for (const Completion& c : reap_n(*e, n)) {
            ASSERT_EQ(c.result, 4096) << strerror(static_cast<int>(-c.result));
            if (!write) {
                EXPECT_EQ(0, std::memcmp(buf + ops[c.cookie].second,
                                         ref.data() + ops[c.cookie].first, 4096));
            }
        }
    }
    EXPECT_EQ(f.read_all(0, kSize), ref);
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest, ::testing::Values("io_uring", "sync"),
                         [](const auto& info) {
                             return info.param == "io_uring" ? "Uring" : "Sync";
                         });

class UringTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!uring_ok()) GTEST_SKIP() << probe_io_uring().reason;
    }
};

// Reads from an empty pipe park in the kernel: with 8 times more reads than the ring holds,
// submit/commit/reap still return at once, and everything completes once data arrives.
TEST_F(UringTest, NeverBlocksWhenMoreOpsThanRingEntries) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    int fds[] = {rd.get()};
    UringEngine e(8, fds);
    ASSERT_EQ(e.ring_entries(), 8u);

    constexpr int kOps = 64;
    std::vector<std::vector<uint8_t>> bufs(kOps, std::vector<uint8_t>(512));
    std::vector<iovec> iov(kOps);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kOps; ++i) {
        iov[i] = {bufs[i].data(), 512};
        e.submit({OpKind::Read, 0, 0, {&iov[i], 1}, 512}, i);
        e.commit();
    }
    std::vector<Completion> out;
    EXPECT_EQ(e.reap(out), 0u);
    auto elapsed = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(elapsed, std::chrono::seconds(1));
    EXPECT_EQ(e.in_flight(), static_cast<size_t>(kOps));
    EXPECT_EQ(e.counters().deferred, static_cast<uint64_t>(kOps - 8));
    pollfd pf{e.completion_fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&pf, 1, 50), 0) << "completions without data?";

    std::vector<uint8_t> data(kOps * 512);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i / 512);
    ASSERT_EQ(::write(wr.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
    auto done = reap_n(e, kOps);
    std::vector<int> seen(kOps, 0);
    for (const Completion& c : done) {
        EXPECT_EQ(c.result, 512);
        ++seen[bufs[c.cookie][0]];  // each 512-byte chunk went to exactly one read
    }
    for (int i = 0; i < kOps; ++i) EXPECT_EQ(seen[i], 1) << i;
    EXPECT_EQ(e.in_flight(), 0u);
}

// A read that gets part of its data is resubmitted for the rest.
TEST_F(UringTest, ShortReadIsResubmitted) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    int fds[] = {rd.get()};
    UringEngine e(4, fds);
    std::vector<uint8_t> a(600), b(424);
    iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
    e.submit({OpKind::Read, 0, 0, iov, 1024}, 7);
    e.commit();
    std::vector<uint8_t> data = random_bytes(1024, 9);
    ASSERT_EQ(::write(wr.get(), data.data(), 700), 700);
    // The first 700 bytes complete a short read; nothing is reported yet.
    std::vector<Completion> out;
    for (int i = 0; i < 50 && e.counters().resubmitted == 0; ++i) {
        pollfd pf{e.completion_fd(), POLLIN, 0};
        ::poll(&pf, 1, 100);
        e.reap(out);
    }
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(e.counters().resubmitted, 1u);
    ASSERT_EQ(::write(wr.get(), data.data() + 700, 324), 324);
    auto c = reap_n(e, 1);
    EXPECT_EQ(c[0].cookie, 7u);
    EXPECT_EQ(c[0].result, 1024);
    a.insert(a.end(), b.begin(), b.end());
    EXPECT_EQ(a, data);
}

// The ring holds a reference to its registered files, and the kernel tears rings down
// asynchronously: the engine must drop the file itself, or the image's lock outlives the Disk
// and an immediate re-open (a VM restart) fails with "in use".
TEST_F(UringTest, ImageLockIsReleasedWithTheEngine) {
    TempFile f(1 << 20);
    for (int i = 0; i < 20; ++i) {
        Disk d = Disk::open(testing::disk_opts(f.path()));
        int fds[] = {d.fd()};
        UringEngine e(8, fds);
        std::vector<uint8_t> b(4096);
        iovec v{b.data(), b.size()};
        e.submit({OpKind::Read, 0, 0, {&v, 1}, b.size()}, 1);
        ASSERT_EQ(reap_n(e, 1)[0].result, 4096);
    }
    EXPECT_NO_THROW(Disk::open(testing::disk_opts(f.path())));
}

TEST(MakeEngine, PicksAnEngineAndSaysWhy) {
    TempFile f(4096);
    int fds[] = {f.fd()};
    auto sync = make_engine(EnginePreference::Sync, 32, fds);
    EXPECT_STREQ(sync.engine->name(), "sync");
    EXPECT_EQ(sync.reason, "sync: requested");

    auto probe = probe_io_uring();
    auto autoe = make_engine(EnginePreference::Auto, 32, fds);
    ASSERT_TRUE(autoe.engine);
    EXPECT_FALSE(autoe.reason.empty());
    if (probe.ok) {
        EXPECT_STREQ(autoe.engine->name(), "io_uring");
        EXPECT_EQ(autoe.reason, "io_uring: ring of 32 entries, 1 registered file(s)");
    } else {
        EXPECT_STREQ(autoe.engine->name(), "sync");
        EXPECT_NE(autoe.reason.find(probe.reason), std::string::npos);
        EXPECT_THROW(make_engine(EnginePreference::IoUring, 32, fds), std::system_error);
    }
}

}  // namespace
}  // namespace vessel::virtio::block
