// Guest memory to and from snapshot files, without KVM: sparse saves, lazy private mappings.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "vmm/fd.h"
#include "vmm/guest_memory.h"

using vessel::UniqueFd;
using vessel::vmm::GuestMemory;

namespace {

struct Dir {
    std::string path;
    Dir() {
        char t[] = "/var/tmp/vessel-snapmem-XXXXXX";
        path = ::mkdtemp(t);
    }
    ~Dir() { std::filesystem::remove_all(path); }
};

uint64_t allocated(const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_blocks) * 512;
}

uint64_t read_u64(const std::string& p, uint64_t off) {
    UniqueFd f(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    uint64_t v = 0;
    EXPECT_EQ(::pread(f.get(), &v, 8, static_cast<off_t>(off)), 8);
    return v;
}

TEST(SnapshotMemory, SaveIsSparseAndExact) {
    Dir d;
    GuestMemory m = GuestMemory::create(64 << 20);
    // Three non-zero pages and one page written with zeros (allocated, but not worth saving).
    ASSERT_TRUE(m.write_obj<uint64_t>(0x1000, 0x1111));
    ASSERT_TRUE(m.write_obj<uint64_t>(0x2000008, 0x2222));
    ASSERT_TRUE(m.write_obj<uint64_t>((64 << 20) - 8, 0x3333));
    ASSERT_TRUE(m.write_obj<uint64_t>(0x500000, 0));
    const std::string f = d.path + "/memory";
    uint64_t written = m.save(f);
    EXPECT_EQ(written, 3u * 4096);
    struct stat st {};
    ASSERT_EQ(::stat(f.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 64 << 20);
    EXPECT_LE(allocated(f), 64u * 1024);  // holes everywhere else
    EXPECT_EQ(read_u64(f, 0x1000), 0x1111u);
    EXPECT_EQ(read_u64(f, 0x2000008), 0x2222u);
    EXPECT_EQ(read_u64(f, (64 << 20) - 8), 0x3333u);
}

TEST(SnapshotMemory, PrivateMappingSeesTheFileAndKeepsWritesPrivate) {
    Dir d;
    const std::string f = d.path + "/memory";
    {
        GuestMemory m = GuestMemory::create(32 << 20);
        ASSERT_TRUE(m.write_obj<uint64_t>(0x3000, 42));
        m.save(f);
    }
    GuestMemory r = GuestMemory::map_file(f, 32 << 20);
    uint64_t v = 0;
    ASSERT_TRUE(r.read_obj(0x3000, v));
    EXPECT_EQ(v, 42u);
    ASSERT_TRUE(r.write_obj<uint64_t>(0x3000, 43));
    ASSERT_TRUE(r.write_obj<uint64_t>(0x1000000, 7));  // a hole of the file
    EXPECT_EQ(read_u64(f, 0x3000), 42u) << "a guest write reached the snapshot file";
    // A snapshot of the restored memory holds its writes and the file's untouched data.
    ASSERT_TRUE(r.write_obj<uint64_t>(0x5000, 9));
    const std::string f2 = d.path + "/memory2";
    r.save(f2);
    EXPECT_EQ(read_u64(f2, 0x3000), 43u);
    EXPECT_EQ(read_u64(f2, 0x1000000), 7u);
    EXPECT_EQ(read_u64(f2, 0x5000), 9u);
    EXPECT_LE(allocated(f2), 64u * 1024);
}

TEST(SnapshotMemory, CopiedMemoryIsIndependentOfTheFile) {
    Dir d;
    const std::string f = d.path + "/memory";
    {
        GuestMemory m = GuestMemory::create(32 << 20);
        ASSERT_TRUE(m.write_obj<uint64_t>(0x3000, 42));
        ASSERT_TRUE(m.write_obj<uint64_t>((32 << 20) - 8, 5));
        m.save(f);
    }
    GuestMemory r = GuestMemory::load_file(f, 32 << 20);
    ASSERT_EQ(::truncate(f.c_str(), 0), 0);  // the file may go away once loaded
    uint64_t v = 0;
    ASSERT_TRUE(r.read_obj(0x3000, v));
    EXPECT_EQ(v, 42u);
    ASSERT_TRUE(r.read_obj((32 << 20) - 8, v));
    EXPECT_EQ(v, 5u);
    ASSERT_TRUE(r.read_obj(0x100000, v));
    EXPECT_EQ(v, 0u);
    EXPECT_THROW(GuestMemory::load_file(f, 32 << 20), std::system_error);  // now 0 bytes
}

TEST(SnapshotMemory, WrongSizeOrMissingFileIsRefused) {
    Dir d;
    const std::string f = d.path + "/memory";
    {
        GuestMemory m = GuestMemory::create(32 << 20);
        m.save(f);
    }
    try {
        GuestMemory::map_file(f, 64 << 20);
        FAIL() << "a short memory file was mapped";
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("the snapshot says 67108864"), std::string::npos)
            << e.what();
    }
    EXPECT_THROW(GuestMemory::map_file(d.path + "/nope", 32 << 20), std::system_error);
    EXPECT_THROW(GuestMemory::map_file(d.path, 32 << 20), std::system_error);  // a directory
}

bool bit(const std::vector<uint64_t>& b, uint64_t page) {
    return page / 64 < b.size() && (b[page / 64] >> (page % 64) & 1);
}

size_t count(const std::vector<uint64_t>& b) {
    size_t n = 0;
    for (uint64_t w : b) n += static_cast<size_t>(__builtin_popcountll(w));
    return n;
}

TEST(DirtyPages, OffUntilEnabledThenEveryTouchedPage) {
    GuestMemory m = GuestMemory::create(8 << 20);
    m.mark_dirty(0x5000, 8);
    EXPECT_FALSE(m.dirty_tracking());
    EXPECT_EQ(count(m.take_dirty()), 0u);
    m.enable_dirty_tracking();
    ASSERT_TRUE(m.write(0x5000, "x", 1));  // page 5
    m.mark_dirty(0x1ff0, 0x20);            // pages 1 and 2
    m.mark_dirty(0x7ff000, 0x100000);      // the last page, clipped at the end of RAM
    m.mark_dirty(0x10000000, 4096);        // outside RAM: ignored
    std::vector<uint64_t> b = m.take_dirty();
    EXPECT_EQ(b.size(), (8u << 20) / 4096 / 64);
    EXPECT_TRUE(bit(b, 5) && bit(b, 1) && bit(b, 2) && bit(b, 2047));
    EXPECT_EQ(count(b), 4u);
    EXPECT_EQ(count(m.take_dirty()), 0u);  // taking clears
}

TEST(DirtyPages, SlotBitmapsLandAtTheirFileOffset) {
    std::vector<uint64_t> file(4, 0);
    const uint64_t slot[] = {0b101};  // slot pages 0 and 2
    GuestMemory::or_bitmap(file, 70, slot, 3);
    EXPECT_TRUE(bit(file, 70) && bit(file, 72));
    EXPECT_EQ(count(file), 2u);
}

// A diff's pages, zero ones included, written alone and laid over other memory.
TEST(DirtyPages, SavedPagesOverlayExactlyThosePages) {
    Dir d;
    constexpr uint64_t kSize = 4 << 20;
    GuestMemory src = GuestMemory::create(kSize);
    for (uint64_t p = 0; p < kSize / 4096; ++p) {
        uint64_t v = 0x1000 + p;
        ASSERT_TRUE(src.write(p * 4096, &v, 8));
    }
    uint64_t zero = 0;
    ASSERT_TRUE(src.write(10 * 4096, &zero, 8));  // page 10 becomes all zero
    std::vector<uint64_t> b(kSize / 4096 / 64, 0);
    for (uint64_t p : {3, 4, 10, 1023}) b[p / 64] |= 1ull << (p % 64);
    const std::string f = d.path + "/diff";
    EXPECT_EQ(src.save_pages(f, b), 4u * 4096);
    EXPECT_LE(allocated(f), 4u * 4096 + 8192);  // sparse elsewhere

    GuestMemory dst = GuestMemory::create(kSize);
    for (uint64_t p = 0; p < kSize / 4096; ++p) {
        uint64_t v = 0xdead;
        ASSERT_TRUE(dst.write(p * 4096, &v, 8));
    }
    dst.overlay(f, b);
    for (uint64_t p = 0; p < kSize / 4096; ++p) {
        uint64_t v = 0;
        ASSERT_TRUE(dst.read(p * 4096, &v, 8));
        const bool in = bit(b, p);
        EXPECT_EQ(v, !in ? 0xdeadu : p == 10 ? 0u : 0x1000 + p) << "page " << p;
    }
    // A file of another size is refused before anything is copied.
    GuestMemory other = GuestMemory::create(8 << 20);
    EXPECT_THROW(other.overlay(f, b), std::system_error);
}

}  // namespace
