// Guest memory restored through userfaultfd (`vessel restore --uffd`), without KVM: pages
// filled on first touch from another thread, holes as zeros, the working set recorded in
// order, written to memory.ws, read back and installed up front; bad working sets ignored.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "snapshot/crc32c.h"
#include "snapshot/working_set.h"
#include "vmm/fd.h"
#include "vmm/guest_memory.h"

using vessel::UniqueFd;
using vessel::vmm::GuestMemory;
using vessel::vmm::MemoryLayer;
using vessel::vmm::Prefetch;
namespace snap = vessel::snapshot;

namespace {

constexpr uint64_t kMem = 32 << 20;
constexpr uint64_t kPage = 4096;

struct Dir {
    std::string path;
    Dir() {
        char t[] = "/var/tmp/vessel-uffd-XXXXXX";
        path = ::mkdtemp(t);
    }
    ~Dir() { std::filesystem::remove_all(path); }
};

bool have_userfaultfd() {
    try {
        vessel::vmm::open_userfaultfd();
        return true;
    } catch (const std::system_error&) {
        return false;
    }
}

#define NEED_UFFD() \
    if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd for this process"

uint64_t pattern(uint64_t page) {
    return 0x5eed000000000000ull | page;
}

// A snapshot memory file: pages in `pages` hold pattern(page) in every word, the rest are
// holes.
std::string make_memory(const Dir& d, const std::vector<uint64_t>& pages,
                        const std::string& name = "memory") {
    GuestMemory m = GuestMemory::create(kMem);
    for (uint64_t p : pages)
        for (uint64_t w = 0; w < kPage / 8; ++w)
            EXPECT_TRUE(m.write_obj<uint64_t>(p * kPage + w * 8, pattern(p)));
    const std::string f = d.path + "/" + name;
    m.save(f);
    return f;
}

// Reads one word of each page from a thread of its own (not the handler's, not this one).
std::vector<uint64_t> touch(const GuestMemory& m, const std::vector<uint64_t>& pages,
                            uint64_t word = 3) {
    std::vector<uint64_t> out;
    std::thread t([&] {
        for (uint64_t p : pages) {
            uint64_t v = 1;
            EXPECT_TRUE(m.read_obj(p * kPage + word * 8, v));
            out.push_back(v);
        }
    });
    t.join();
    return out;
}

TEST(UffdMemory, FirstTouchFromAnotherThreadReadsTheFile) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {1, 2, 100, 4095, kMem / kPage - 1});
    GuestMemory m = GuestMemory::restore_uffd(f, kMem);
    ASSERT_TRUE(m.uffd());
    EXPECT_EQ(m.uffd_stats().faults, 0u);
    std::vector<uint64_t> want = {pattern(100), pattern(1), pattern(kMem / kPage - 1),
                                  pattern(4095), pattern(2)};
    EXPECT_EQ(touch(m, {100, 1, kMem / kPage - 1, 4095, 2}), want);
    EXPECT_EQ(m.uffd_stats().faults, 5u);
    EXPECT_EQ(m.uffd_stats().zero_faults, 0u);
    // Filled once: a second read takes no fault.
    EXPECT_EQ(touch(m, {100}), std::vector<uint64_t>{pattern(100)});
    EXPECT_EQ(m.uffd_stats().faults, 5u);
    // Guest writes stay in guest memory.
    ASSERT_TRUE(m.write_obj<uint64_t>(100 * kPage, 77));
    uint64_t v = 0;
    ASSERT_TRUE(m.read_obj(100 * kPage, v));
    EXPECT_EQ(v, 77u);
    UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(::pread(fd.get(), &v, 8, 100 * kPage), 8);
    EXPECT_EQ(v, pattern(100)) << "a guest write reached the snapshot file";
}

TEST(UffdMemory, HolesReadAsZeroAndTakeWrites) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {10});
    GuestMemory m = GuestMemory::restore_uffd(f, kMem);
    EXPECT_EQ(touch(m, {11, 5000, 10}), (std::vector<uint64_t>{0, 0, pattern(10)}));
    EXPECT_EQ(m.uffd_stats().zero_faults, 2u);
    // A first touch that writes (a hole): the page holds the write, the rest stays zero.
    std::thread w([&] { EXPECT_TRUE(m.write_obj<uint64_t>(6000 * kPage + 8, 0xabcd)); });
    w.join();
    EXPECT_EQ(touch(m, {6000}, 1), std::vector<uint64_t>{0xabcd});
    EXPECT_EQ(touch(m, {6000}, 0), std::vector<uint64_t>{0});
    // After a zero page was read, writing it works too.
    ASSERT_TRUE(m.write_obj<uint64_t>(11 * kPage, 5));
    EXPECT_EQ(touch(m, {11}, 0), std::vector<uint64_t>{5});
}

TEST(UffdMemory, DiffLayersServeTheNewestCopy) {
    NEED_UFFD();
    Dir d;
    const std::string base = make_memory(d, {1, 2, 3});
    // A diff holding pages 2 (changed) and 4 (new); page 3 comes from the base.
    GuestMemory g = GuestMemory::create(kMem);
    ASSERT_TRUE(g.write_obj<uint64_t>(2 * kPage + 24, 222));
    ASSERT_TRUE(g.write_obj<uint64_t>(4 * kPage + 24, 444));
    std::vector<uint64_t> bitmap(kMem / kPage / 64, 0);
    bitmap[0] = (1u << 2) | (1u << 4);
    const std::string diff = d.path + "/diff";
    g.save_pages(diff, bitmap);
    GuestMemory m = GuestMemory::restore_uffd(base, kMem, {MemoryLayer{diff, bitmap}});
    EXPECT_EQ(touch(m, {1, 2, 3, 4, 5}),
              (std::vector<uint64_t>{pattern(1), 222, pattern(3), 444, 0}));
    // A save of this memory holds the snapshot's pages the guest never touched too.
    GuestMemory m2 = GuestMemory::restore_uffd(base, kMem, {MemoryLayer{diff, bitmap}});
    const std::string saved = d.path + "/saved";
    m2.save(saved);
    GuestMemory back = GuestMemory::map_file(saved, kMem);
    EXPECT_EQ(touch(back, {1, 2, 3, 4, 5}),
              (std::vector<uint64_t>{pattern(1), 222, pattern(3), 444, 0}));
}

TEST(UffdMemory, RecordsTouchedPagesInOrder) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {7, 8, 9, 300});
    GuestMemory m = GuestMemory::restore_uffd(f, kMem, {}, nullptr, true);
    touch(m, {300, 7, 8, 9, 20, 7, 300});
    EXPECT_EQ(m.take_recorded(), (std::vector<uint64_t>{300, 7, 8, 9, 20}));
    touch(m, {21});  // recording stopped
    EXPECT_TRUE(m.take_recorded().empty());

    // Not recording: nothing kept.
    GuestMemory n = GuestMemory::restore_uffd(f, kMem);
    touch(n, {7});
    EXPECT_TRUE(n.take_recorded().empty());
}

TEST(UffdMemory, SecondRestorePrefetchesTheWorkingSet) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {7, 8, 9, 300, 301});
    const uint64_t id = snap::memory_identity(f, {});
    const std::string ws = d.path + "/" + snap::kWorkingSetFile;
    {
        GuestMemory m = GuestMemory::restore_uffd(f, kMem, {}, nullptr, true);
        touch(m, {300, 7, 8, 9, 20});
        ASSERT_TRUE(m.write_obj<uint64_t>(7 * kPage, 1));  // the guest's change: not recorded
        EXPECT_EQ(snap::write_working_set(ws, m, m.take_recorded(), id), 5u);
    }
    // Header, five entries, four pages of data (page 20 is a hole: an entry only).
    struct stat st {};
    ASSERT_EQ(::stat(ws.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), snap::kWorkingSetHeaderSize + 5 * 8 + 4 * kPage);

    std::string why;
    std::optional<Prefetch> p = snap::read_working_set(ws, kMem, id, why);
    ASSERT_TRUE(p) << why;
    EXPECT_EQ(p->pages, (std::vector<uint64_t>{300, 7, 8, 9, 20 | Prefetch::kZeroPage}));
    GuestMemory m = GuestMemory::restore_uffd(f, kMem, {}, &*p);
    EXPECT_EQ(m.uffd_stats().prefetched_pages, 5u);
    // The working set is there without a fault, with the snapshot's bytes; the rest is lazy.
    EXPECT_EQ(touch(m, {300, 7, 8, 9, 20}),
              (std::vector<uint64_t>{pattern(300), pattern(7), pattern(8), pattern(9), 0}));
    EXPECT_EQ(touch(m, {7}, 0), std::vector<uint64_t>{pattern(7)});
    EXPECT_EQ(m.uffd_stats().faults, 0u);
    EXPECT_EQ(touch(m, {301}), std::vector<uint64_t>{pattern(301)});
    EXPECT_EQ(m.uffd_stats().faults, 1u);
}

TEST(UffdMemory, PrefetchNeverTrustsItsInput) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {1, 2});
    Prefetch p;
    static uint8_t data[3 * kPage];
    for (uint64_t i = 0; i < 3; ++i) {
        const uint64_t v = pattern(50 + i);
        for (uint64_t w = 0; w < kPage / 8; ++w) std::memcpy(data + i * kPage + w * 8, &v, 8);
    }
    // Past the memory, a repeat, a huge index with the zero flag, then data running out.
    p.pages = {kMem / kPage, 1, 1, ~0ull, 2, 3};
    p.data = {data, sizeof data};
    GuestMemory m = GuestMemory::restore_uffd(f, kMem, {}, &p);
    // Installed: page 1 (data slot 1), page 2 (slot 3 does not exist: stop) -> page 1 only.
    EXPECT_EQ(m.uffd_stats().prefetched_pages, 1u);
    EXPECT_EQ(touch(m, {1, 2}), (std::vector<uint64_t>{pattern(51), pattern(2)}));
}

// The VMM takes SIGTERM on a signalfd with the signal blocked in the threads it starts;
// the handler thread exists before those and must block it too (else SIGTERM's default
// action, on that thread, would kill the process).
TEST(UffdMemory, HandlerThreadBlocksEverySignal) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {1});
    GuestMemory m = GuestMemory::restore_uffd(f, kMem);
    int others = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
        if (e.path().filename() == std::to_string(::gettid())) continue;
        std::ifstream in(e.path() / "status");
        std::string line;
        while (std::getline(in, line))
            if (line.rfind("SigBlk:", 0) == 0) {
                const uint64_t blocked = std::stoull(line.substr(7), nullptr, 16);
                for (int sig : {SIGTERM, SIGINT, SIGHUP})
                    EXPECT_TRUE(blocked >> (sig - 1) & 1) << "thread " << e.path() << ": " << line;
                ++others;
            }
    }
    EXPECT_GE(others, 1);  // the handler thread (gtest starts none)
}

// First-touch order interleaves runs: the install sorts them into one ioctl per run of
// consecutive pages (of one kind), gathering their data.
TEST(UffdMemory, PrefetchInstallsRunsInOneCallEach) {
    NEED_UFFD();
    Dir d;
    const std::string f = make_memory(d, {});
    static uint8_t data[4 * kPage];
    const uint64_t order[] = {6, 3, 5, 4};
    for (uint64_t i = 0; i < 4; ++i) {
        const uint64_t v = pattern(order[i]);
        for (uint64_t w = 0; w < kPage / 8; ++w) std::memcpy(data + i * kPage + w * 8, &v, 8);
    }
    Prefetch p;
    p.pages = {6, 100 | Prefetch::kZeroPage, 3, 5, 99 | Prefetch::kZeroPage, 4};
    p.data = {data, sizeof data};
    GuestMemory m = GuestMemory::restore_uffd(f, kMem, {}, &p);
    EXPECT_EQ(m.uffd_stats().prefetched_pages, 6u);
    EXPECT_EQ(m.uffd_stats().prefetch_runs, 2u);  // 3-6 with data, 99-100 zero
    EXPECT_EQ(touch(m, {3, 4, 5, 6, 99, 100}),
              (std::vector<uint64_t>{pattern(3), pattern(4), pattern(5), pattern(6), 0, 0}));
    EXPECT_EQ(m.uffd_stats().faults, 0u);
}

class BadWorkingSet : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!have_userfaultfd()) GTEST_SKIP() << "no userfaultfd for this process";
        f = make_memory(d, {7, 8});
        id = snap::memory_identity(f, {});
        ws = d.path + "/" + snap::kWorkingSetFile;
        GuestMemory m = GuestMemory::restore_uffd(f, kMem, {}, nullptr, true);
        touch(m, {7, 8, 9});
        snap::write_working_set(ws, m, m.take_recorded(), id);
        std::ifstream in(ws, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    void write(const std::string& b) { std::ofstream(ws, std::ios::binary | std::ios::trunc) << b; }
    std::string rejected(uint64_t mem = kMem, uint64_t ident = 0) {
        std::string why;
        EXPECT_FALSE(snap::read_working_set(ws, mem, ident ? ident : id, why));
        return why;
    }
    // Sets a little-endian field and fixes the header checksum, so the field is what fails.
    void set_field(size_t off, uint64_t v, int n) {
        for (int i = 0; i < n; ++i) bytes[off + i] = static_cast<char>(v >> (8 * i));
        uint32_t c = snap::crc32c({reinterpret_cast<const uint8_t*>(bytes.data()), 60});
        for (int i = 0; i < 4; ++i) bytes[60 + i] = static_cast<char>(c >> (8 * i));
    }
    Dir d;
    std::string f, ws, bytes;
    uint64_t id = 0;
};

TEST_F(BadWorkingSet, GoodOneIsRead) {
    std::string why;
    EXPECT_TRUE(snap::read_working_set(ws, kMem, id, why)) << why;
    // No file at all: nothing, and nothing to say.
    std::filesystem::remove(ws);
    EXPECT_EQ(rejected(), "");
}

TEST_F(BadWorkingSet, EachDamageIsRefusedByName) {
    write(bytes.substr(0, 30));
    EXPECT_NE(rejected().find("size"), std::string::npos);
    write(bytes.substr(0, bytes.size() - 1));
    EXPECT_NE(rejected().find("counts"), std::string::npos);
    std::string b = bytes;
    b[0] = 'X';
    write(b);
    EXPECT_NE(rejected().find("not a vessel working set"), std::string::npos);
    b = bytes;
    b[20] ^= 1;  // memory size, header checksum not fixed
    write(b);
    EXPECT_NE(rejected().find("header corrupted"), std::string::npos);
    b = bytes;
    b[snap::kWorkingSetHeaderSize + 1] ^= 1;  // an entry
    write(b);
    EXPECT_NE(rejected().find("page list corrupted"), std::string::npos);
    write(bytes);
    EXPECT_NE(rejected(64 << 20).find("another memory size"), std::string::npos);
    EXPECT_NE(rejected(kMem, id + 1).find("other memory files"), std::string::npos);
}

TEST_F(BadWorkingSet, PagesPastTheMemoryAreRefusedEvenWithGoodChecksums) {
    // Entry 0 points past the memory; the list checksum is recomputed to match.
    const size_t list = snap::kWorkingSetHeaderSize;
    for (int i = 0; i < 8; ++i) bytes[list + i] = static_cast<char>((kMem / kPage) >> (8 * i));
    const uint64_t entries = 3;
    uint32_t c = snap::crc32c({reinterpret_cast<const uint8_t*>(bytes.data()) + list, entries * 8});
    set_field(48, c, 4);
    write(bytes);
    EXPECT_NE(rejected().find("past the memory"), std::string::npos) << rejected();
    // A version from the future.
    set_field(8, 2, 4);
    write(bytes);
    EXPECT_NE(rejected().find("version 2"), std::string::npos);
}

TEST_F(BadWorkingSet, RecreatedMemoryFileMakesItStale) {
    ::usleep(10 * 1000);
    make_memory(d, {7, 8});  // same bytes, a new file
    EXPECT_NE(rejected(kMem, snap::memory_identity(f, {})).find("other memory files"),
              std::string::npos);
}

}  // namespace
