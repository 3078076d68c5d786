// Kernel loaders, e820, initramfs placement and the zero page (vmm/boot.h).
// Kernel images are synthesised here byte by byte from the ELF and boot protocol definitions.
#include "vmm/boot.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "vmm/guest_memory.h"
#include "vmm/layout.h"

namespace vessel::vmm {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint32_t kHdrS = 0x53726448;  // "HdrS" read as a little-endian u32

using Bytes = std::vector<uint8_t>;

class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/vessel-boot-test-XXXXXX";
        if (!::mkdtemp(tmpl)) throw std::system_error(errno, std::generic_category(), "mkdtemp");
        path_ = tmpl;
    }
    ~TempDir() {
        for (const auto& f : files_) ::unlink(f.c_str());
        for (const auto& d : dirs_) ::rmdir(d.c_str());
        ::rmdir(path_.c_str());
    }
    std::string write(const std::string& name, const Bytes& data) {
        std::string p = path_ + "/" + name;
        std::ofstream o(p, std::ios::binary | std::ios::trunc);
        o.write(reinterpret_cast<const char*>(data.data()),
                static_cast<std::streamsize>(data.size()));
        o.close();
        if (!o) throw std::runtime_error("writing " + p);
        files_.push_back(p);
        return p;
    }
    std::string mkdir(const std::string& name) {
        std::string p = path_ + "/" + name;
        if (::mkdir(p.c_str(), 0755) < 0)
            throw std::system_error(errno, std::generic_category(), "mkdir");
        dirs_.push_back(p);
        return p;
    }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    std::vector<std::string> files_, dirs_;
};

Bytes pattern(size_t n, uint8_t seed) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
    return b;
}

template <typename T>
void put(Bytes& b, size_t off, const T& v) {
    if (b.size() < off + sizeof v) b.resize(off + sizeof v);
    std::memcpy(b.data() + off, &v, sizeof v);
}

// Expects `fn` to throw BootError whose message contains every word in `words`.
template <typename Fn>
void expect_boot_error(Fn&& fn, std::initializer_list<const char*> words) {
    try {
        fn();
        ADD_FAILURE() << "expected BootError";
    } catch (const BootError& e) {
        std::string msg = e.what();
        for (const char* w : words)
            EXPECT_NE(msg.find(w), std::string::npos) << "message \"" << msg << "\" lacks " << w;
    }
}

// ----- ELF images -----------------------------------------------------------------------

struct Segment {
    uint32_t type = PT_LOAD;
    uint64_t paddr = 0;
    Bytes data;               // file contents
    uint64_t memsz = 0;       // >= data.size() unless a test wants it corrupt
    uint64_t filesz = ~0ull;  // override of data.size() in the header
};

struct ElfSpec {
    uint8_t cls = ELFCLASS64;
    uint8_t data_enc = ELFDATA2LSB;
    uint16_t machine = EM_X86_64;
    uint16_t type = ET_EXEC;
    uint64_t entry = 0;
    std::vector<Segment> segs;
    uint16_t phentsize = sizeof(Elf64_Phdr);
};

// Layout: ELF header, program headers, then each segment's data at a 4 KiB aligned offset.
Bytes build_elf(const ElfSpec& s) {
    Bytes out(sizeof(Elf64_Ehdr) + s.segs.size() * sizeof(Elf64_Phdr), 0);
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = s.cls;
    eh.e_ident[EI_DATA] = s.data_enc;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = s.type;
    eh.e_machine = s.machine;
    eh.e_version = EV_CURRENT;
    eh.e_entry = s.entry;
    eh.e_phoff = sizeof(Elf64_Ehdr);
    eh.e_ehsize = sizeof(Elf64_Ehdr);
    eh.e_phentsize = s.phentsize;
    eh.e_phnum = static_cast<uint16_t>(s.segs.size());
    put(out, 0, eh);
    uint64_t off = 0x1000;
    for (size_t i = 0; i < s.segs.size(); ++i) {
        const Segment& sg = s.segs[i];
        Elf64_Phdr ph{};
        ph.p_type = sg.type;
        ph.p_flags = PF_R | PF_X;
        ph.p_offset = off;
        ph.p_vaddr = 0xffffffff80000000ull + sg.paddr;
        ph.p_paddr = sg.paddr;
        ph.p_filesz = sg.filesz != ~0ull ? sg.filesz : sg.data.size();
        ph.p_memsz = sg.memsz;
        ph.p_align = 0x1000;
        put(out, sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), ph);
        out.resize(off, 0);
        out.insert(out.end(), sg.data.begin(), sg.data.end());
        off = (out.size() + 0xfff) & ~0xfffull;
    }
    return out;
}

constexpr uint64_t kSegAddr = 16 * kMiB;

// A plausible vmlinux: one PT_LOAD at 16 MiB with 8 KiB of code/data and 4 KiB of bss.
ElfSpec good_elf() {
    ElfSpec s;
    Segment text;
    text.paddr = kSegAddr;
    text.data = pattern(0x2000, 0x11);
    text.memsz = 0x3000;
    s.segs.push_back(text);
    s.entry = kSegAddr + 0x40;
    return s;
}

class BootTest : public ::testing::Test {
  protected:
    TempDir dir_;
};

TEST_F(BootTest, ElfLoadsSegmentZeroesBssAndReportsEntry) {
    auto mem = GuestMemory::create(64 * kMiB);
    // Dirty the bss range first: the loader must zero it, not rely on fresh memory.
    ASSERT_TRUE(mem.write(kSegAddr + 0x2000, Bytes(0x1000, 0xcc).data(), 0x1000));
    ElfSpec s = good_elf();
    KernelImage k = load_kernel(mem, dir_.write("vmlinux", build_elf(s)));
    EXPECT_EQ(k.format, KernelImage::Format::Elf);
    EXPECT_EQ(k.entry, kSegAddr + 0x40);
    EXPECT_EQ(k.load_end, kSegAddr + 0x3000);
    Bytes got(0x2000);
    ASSERT_TRUE(mem.read(kSegAddr, got.data(), got.size()));
    EXPECT_EQ(got, s.segs[0].data);
    Bytes bss(0x1000);
    ASSERT_TRUE(mem.read(kSegAddr + 0x2000, bss.data(), bss.size()));
    EXPECT_EQ(bss, Bytes(0x1000, 0));
    // Nothing was written below the segment.
    uint8_t below = 0xff;
    ASSERT_TRUE(mem.read_obj(kSegAddr - 1, below));
    EXPECT_EQ(below, 0);
}

TEST_F(BootTest, ElfLoadsEverySegmentSkipsNonLoadAndAcceptsEntryInLaterSegment) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    Segment note;
    note.type = PT_NOTE;
    note.paddr = 0;  // would be refused as a load segment (below 1 MiB): must be ignored
    note.data = pattern(64, 0x99);
    note.memsz = 64;
    Segment data;
    data.paddr = 20 * kMiB;
    data.data = pattern(0x1800, 0x55);
    data.memsz = 0x4000;
    s.segs.push_back(note);
    s.segs.push_back(data);
    s.entry = 20 * kMiB + 0x10;
    KernelImage k = load_kernel(mem, dir_.write("vmlinux", build_elf(s)));
    EXPECT_EQ(k.entry, 20 * kMiB + 0x10);
    EXPECT_EQ(k.load_end, 20 * kMiB + 0x4000);
    Bytes got(0x1800);
    ASSERT_TRUE(mem.read(20 * kMiB, got.data(), got.size()));
    EXPECT_EQ(got, data.data);
    ASSERT_TRUE(mem.read(kSegAddr, got.data(), 0x1800));
    EXPECT_EQ(got, Bytes(s.segs[0].data.begin(), s.segs[0].data.begin() + 0x1800));
    Bytes low(64);
    ASSERT_TRUE(mem.read(0, low.data(), low.size()));
    EXPECT_EQ(low, Bytes(64, 0));
}

TEST_F(BootTest, ElfTruncatedHeader) {
    auto mem = GuestMemory::create(64 * kMiB);
    Bytes img = build_elf(good_elf());
    img.resize(40);  // magic present, header cut
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", img)); }, {"truncated", "ELF header"});
}

TEST_F(BootTest, ElfTruncatedProgramHeaders) {
    auto mem = GuestMemory::create(64 * kMiB);
    Bytes img = build_elf(good_elf());
    img.resize(sizeof(Elf64_Ehdr) + 10);
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", img)); },
                      {"truncated", "program headers"});
}

TEST_F(BootTest, ElfProgramHeaderOffsetPastEndOfFile) {
    auto mem = GuestMemory::create(64 * kMiB);
    Bytes img = build_elf(good_elf());
    Elf64_Ehdr eh;
    std::memcpy(&eh, img.data(), sizeof eh);
    eh.e_phoff = ~0ull - 8;  // offset + size overflows 64 bits
    put(img, 0, eh);
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", img)); }, {"truncated"});
}

TEST_F(BootTest, ElfTruncatedSegmentData) {
    auto mem = GuestMemory::create(64 * kMiB);
    Bytes img = build_elf(good_elf());
    img.resize(img.size() - 100);
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", img)); },
                      {"truncated", "ELF segment"});
}

TEST_F(BootTest, ElfSegmentOffsetOverflowIsTruncation) {
    auto mem = GuestMemory::create(64 * kMiB);
    Bytes img = build_elf(good_elf());
    Elf64_Phdr ph;
    std::memcpy(&ph, img.data() + sizeof(Elf64_Ehdr), sizeof ph);
    ph.p_offset = ~0ull - 0x10;
    put(img, sizeof(Elf64_Ehdr), ph);
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", img)); }, {"truncated"});
}

TEST_F(BootTest, ElfWrongClassOrByteOrder) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    s.cls = ELFCLASS32;
    expect_boot_error([&] { load_kernel(mem, dir_.write("k32", build_elf(s))); }, {"64-bit"});
    s = good_elf();
    s.data_enc = ELFDATA2MSB;
    expect_boot_error([&] { load_kernel(mem, dir_.write("kbe", build_elf(s))); },
                      {"little-endian"});
}

TEST_F(BootTest, ElfWrongMachine) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    s.machine = EM_AARCH64;
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", build_elf(s))); }, {"x86_64"});
}

TEST_F(BootTest, ElfWrongType) {
    auto mem = GuestMemory::create(64 * kMiB);
    for (uint16_t t : {ET_DYN, ET_REL, ET_CORE}) {
        ElfSpec s = good_elf();
        s.type = t;
        expect_boot_error([&] { load_kernel(mem, dir_.write("k", build_elf(s))); },
                          {"not an executable"});
    }
}

TEST_F(BootTest, ElfBadProgramHeaderTable) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    s.phentsize = sizeof(Elf64_Phdr) - 8;
    expect_boot_error([&] { load_kernel(mem, dir_.write("k1", build_elf(s))); },
                      {"program header"});
    s = good_elf();
    s.segs.clear();  // e_phnum == 0
    expect_boot_error([&] { load_kernel(mem, dir_.write("k2", build_elf(s))); },
                      {"program header"});
}

TEST_F(BootTest, ElfFileSizeLargerThanMemorySize) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    s.segs[0].memsz = 0x1000;  // file has 0x2000 bytes
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", build_elf(s))); }, {"segment sizes"});
}

TEST_F(BootTest, ElfSegmentOutsideGuestMemory) {
    auto mem = GuestMemory::create(32 * kMiB);
    ElfSpec s = good_elf();
    s.segs[0].paddr = 40 * kMiB;
    s.entry = 40 * kMiB;
    expect_boot_error([&] { load_kernel(mem, dir_.write("beyond", build_elf(s))); },
                      {"does not fit"});
    // Straddling the end of RAM: starts inside, bss runs past the last byte.
    s = good_elf();
    s.segs[0].paddr = 32 * kMiB - 0x2000;
    s.entry = s.segs[0].paddr;
    expect_boot_error([&] { load_kernel(mem, dir_.write("straddle", build_elf(s))); },
                      {"does not fit"});
    // Wrapping around the address space.
    s = good_elf();
    s.segs[0].paddr = ~0ull - 0x1000;
    s.entry = s.segs[0].paddr;
    expect_boot_error([&] { load_kernel(mem, dir_.write("wrap", build_elf(s))); },
                      {"does not fit"});
}

TEST_F(BootTest, ElfSegmentInMmioGapOfLargeGuest) {
    auto mem = GuestMemory::create(5 * kGiB);
    ElfSpec s = good_elf();
    s.segs[0].paddr = layout::kMmioGapStart + 16 * kMiB;
    s.entry = s.segs[0].paddr;
    expect_boot_error([&] { load_kernel(mem, dir_.write("gap", build_elf(s))); }, {"does not fit"});
}

TEST_F(BootTest, ElfSegmentBelowOneMiB) {
    auto mem = GuestMemory::create(32 * kMiB);
    ElfSpec s = good_elf();
    s.segs[0].paddr = 0x7000;  // would overwrite the zero page
    s.entry = 0x7000;
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", build_elf(s))); }, {"below 1 MiB"});
}

TEST_F(BootTest, ElfEntryOutsideSegments) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    s.entry = kSegAddr + 0x3000;  // one past the end of memsz
    expect_boot_error([&] { load_kernel(mem, dir_.write("k1", build_elf(s))); }, {"entry point"});
    s.entry = kSegAddr - 1;
    expect_boot_error([&] { load_kernel(mem, dir_.write("k2", build_elf(s))); }, {"entry point"});
}

TEST_F(BootTest, ElfWithoutLoadableSegments) {
    auto mem = GuestMemory::create(64 * kMiB);
    ElfSpec s = good_elf();
    s.segs[0].type = PT_NOTE;
    expect_boot_error([&] { load_kernel(mem, dir_.write("k", build_elf(s))); }, {"no loadable"});
}

// ----- Files that are not kernels ------------------------------------------------------

TEST_F(BootTest, RandomBytesAreNotAKernel) {
    auto mem = GuestMemory::create(64 * kMiB);
    std::mt19937 rng(12345);
    Bytes junk(64 * 1024);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    // Make sure the fixed seed did not produce either magic by accident.
    ASSERT_NE(std::memcmp(junk.data(), ELFMAG, SELFMAG), 0);
    expect_boot_error([&] { load_kernel(mem, dir_.write("junk", junk)); }, {"not a bzImage"});
}

TEST_F(BootTest, TinyAndEmptyFiles) {
    auto mem = GuestMemory::create(64 * kMiB);
    expect_boot_error([&] { load_kernel(mem, dir_.write("empty", {})); }, {"too short"});
    expect_boot_error(
        [&] {
            load_kernel(mem, dir_.write("three", {0x7f, 'E', 'L'}));
        },
        {"too short"});
    // Shorter than a zero page and not ELF: cannot be a bzImage.
    expect_boot_error([&] { load_kernel(mem, dir_.write("small", pattern(1000, 1))); },
                      {"too short"});
}

TEST_F(BootTest, DirectoryIsRefused) {
    auto mem = GuestMemory::create(64 * kMiB);
    std::string d = dir_.mkdir("adir");
    expect_boot_error([&] { load_kernel(mem, d); }, {"not a regular file"});
}

TEST_F(BootTest, MissingFileIsSystemErrorEnoent) {
    auto mem = GuestMemory::create(64 * kMiB);
    std::string p = dir_.path() + "/does-not-exist";
    try {
        load_kernel(mem, p);
        ADD_FAILURE() << "expected std::system_error";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
        EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
}

// ----- bzImage -------------------------------------------------------------------------

struct BzSpec {
    uint8_t setup_sects = 4;
    uint16_t version = 0x020f;
    uint16_t boot_flag = 0xaa55;
    uint32_t header = kHdrS;
    uint8_t loadflags = LOADED_HIGH;
    uint16_t xloadflags = XLF_KERNEL_64;
    uint64_t pref_address = layout::kKernelLoadAddr;
    uint32_t init_size = 0x80000;
    uint32_t cmdline_size = 2047;
    uint32_t initrd_addr_max = 0x37ffffff;
    size_t payload_size = 0x5000;
    int64_t syssize_extra = 0;  // added to the honest syssize
};

// The real-mode part is (setup_sects + 1) sectors; the setup header sits at 0x1f1 as in
// struct boot_params. The protected-mode payload follows.
Bytes build_bzimage(const BzSpec& s, Bytes* payload_out = nullptr) {
    size_t setup_len = (static_cast<size_t>(s.setup_sects ? s.setup_sects : 4) + 1) * 512;
    Bytes img(setup_len, 0);
    setup_header h{};
    h.setup_sects = s.setup_sects;
    h.syssize =
        static_cast<uint32_t>(static_cast<int64_t>((s.payload_size + 15) / 16) + s.syssize_extra);
    h.boot_flag = s.boot_flag;
    h.jump = 0x66eb;
    h.header = s.header;
    h.version = s.version;
    h.loadflags = s.loadflags;
    h.code32_start = 0x100000;
    h.initrd_addr_max = s.initrd_addr_max;
    h.kernel_alignment = 0x200000;
    h.relocatable_kernel = 1;
    h.xloadflags = s.xloadflags;
    h.cmdline_size = s.cmdline_size;
    h.pref_address = s.pref_address;
    h.init_size = s.init_size;
    put(img, offsetof(boot_params, hdr), h);
    Bytes payload = pattern(s.payload_size, 0x3c);
    img.insert(img.end(), payload.begin(), payload.end());
    if (payload_out) *payload_out = payload;
    return img;
}

TEST_F(BootTest, BzImageLoadsPayloadAtPreferredAddress) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    Bytes payload;
    KernelImage k = load_kernel(mem, dir_.write("bzImage", build_bzimage(s, &payload)));
    EXPECT_EQ(k.format, KernelImage::Format::BzImage);
    EXPECT_EQ(k.entry, layout::kKernelLoadAddr + 0x200);  // startup_64
    EXPECT_EQ(k.setup.code32_start, layout::kKernelLoadAddr);
    EXPECT_EQ(k.setup.header, kHdrS);
    EXPECT_EQ(k.setup.version, 0x020f);
    // init_size (512 KiB) exceeds the payload (20 KiB): the kernel owns the larger range.
    EXPECT_EQ(k.load_end, layout::kKernelLoadAddr + s.init_size);
    EXPECT_EQ(k.initrd_addr_max, 0x37ffffffu);
    Bytes got(payload.size());
    ASSERT_TRUE(mem.read(layout::kKernelLoadAddr, got.data(), got.size()));
    EXPECT_EQ(got, payload);
    // The real-mode setup code is not loaded anywhere near the kernel.
    uint8_t before = 0xff;
    ASSERT_TRUE(mem.read_obj(layout::kKernelLoadAddr - 1, before));
    EXPECT_EQ(before, 0);
}

TEST_F(BootTest, BzImageLoadEndCoversPayloadLargerThanInitSize) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.init_size = 0x1000;
    s.payload_size = 0x6000;
    KernelImage k = load_kernel(mem, dir_.write("bzImage", build_bzimage(s)));
    EXPECT_EQ(k.load_end, layout::kKernelLoadAddr + 0x6000);
}

TEST_F(BootTest, BzImageZeroSetupSectsMeansFour) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.setup_sects = 0;
    Bytes payload;
    KernelImage k = load_kernel(mem, dir_.write("bzImage", build_bzimage(s, &payload)));
    Bytes got(payload.size());
    ASSERT_TRUE(mem.read(layout::kKernelLoadAddr, got.data(), got.size()));
    EXPECT_EQ(got, payload);
    EXPECT_EQ(k.entry, layout::kKernelLoadAddr + 0x200);
}

TEST_F(BootTest, BzImageHonoursPrefAddressAndDefaultsWhenZero) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.pref_address = 0x2000000;
    s.setup_sects = 30;
    Bytes payload;
    KernelImage k = load_kernel(mem, dir_.write("bz1", build_bzimage(s, &payload)));
    EXPECT_EQ(k.entry, 0x2000200u);
    EXPECT_EQ(k.setup.code32_start, 0x2000000u);
    Bytes got(payload.size());
    ASSERT_TRUE(mem.read(0x2000000, got.data(), got.size()));
    EXPECT_EQ(got, payload);

    s.pref_address = 0;
    k = load_kernel(mem, dir_.write("bz2", build_bzimage(s)));
    EXPECT_EQ(k.entry, layout::kKernelLoadAddr + 0x200);
}

TEST_F(BootTest, BzImageAbove4GCapableHasNoInitrdLimit) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    KernelImage k = load_kernel(mem, dir_.write("bz", build_bzimage(s)));
    EXPECT_EQ(k.initrd_addr_max, ~uint64_t{0});
}

TEST_F(BootTest, BzImageOldProtocolRefused) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.version = 0x020b;  // 2.11: no xloadflags
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz", build_bzimage(s))); },
                      {"2.11", "too old"});
}

TEST_F(BootTest, BzImageWithout64BitEntryRefused) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.xloadflags = 0;
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz", build_bzimage(s))); }, {"64-bit"});
}

TEST_F(BootTest, ZImageRefused) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.loadflags = 0;
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz", build_bzimage(s))); }, {"zImage"});
}

TEST_F(BootTest, BzImageWithoutSignatureRefused) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.header = 0x12345678;
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz1", build_bzimage(s))); },
                      {"not a bzImage"});
    s = BzSpec{};
    s.boot_flag = 0;
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz2", build_bzimage(s))); },
                      {"not a bzImage"});
}

TEST_F(BootTest, BzImageTruncatedPayload) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.syssize_extra = 1;  // header claims 16 bytes more than the file holds
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz1", build_bzimage(s))); },
                      {"truncated"});
    s = BzSpec{};
    s.syssize_extra = 0x100000;
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz2", build_bzimage(s))); },
                      {"truncated"});
}

TEST_F(BootTest, BzImageWithNoProtectedModePart) {
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.setup_sects = 7;  // 4 KiB of setup: exactly a zero page, so it passes the size check
    s.payload_size = 0;
    s.syssize_extra = 0;
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz", build_bzimage(s))); },
                      {"truncated", "protected-mode"});
}

TEST_F(BootTest, BzImageNeedingMoreMemoryThanGuestHas) {
    auto mem = GuestMemory::create(32 * kMiB);
    BzSpec s;
    s.init_size = 64 * kMiB;  // 16 MiB load address + 64 MiB > 32 MiB
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz", build_bzimage(s))); },
                      {"80 MiB", "guest memory"});
    s = BzSpec{};
    s.pref_address = 0x80000;  // below 1 MiB: would overwrite the boot data
    expect_boot_error([&] { load_kernel(mem, dir_.write("bz2", build_bzimage(s))); },
                      {"guest memory"});
}

// ----- Real kernels --------------------------------------------------------------------

bool is_regular_file(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Bytes read_file(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

constexpr const char* kVesselKernelDir = "/var/cache/vessel/kernel/current";
constexpr const char* kDebianBzImage = "/boot/vmlinuz-6.1.0-56-amd64";

TEST(RealKernelTest, VesselBzImage) {
    std::string p = std::string(kVesselKernelDir) + "/bzImage";
    if (!is_regular_file(p)) GTEST_SKIP() << p << " has not been built on this machine";
    auto mem = GuestMemory::create(256 * kMiB);
    KernelImage k = load_kernel(mem, p);
    EXPECT_EQ(k.format, KernelImage::Format::BzImage);
    uint64_t load = k.setup.pref_address ? k.setup.pref_address : layout::kKernelLoadAddr;
    EXPECT_EQ(k.entry, load + 0x200);
    EXPECT_GE(k.entry, layout::kHighMemStart);
    EXPECT_LT(k.entry, k.load_end);
    EXPECT_LE(k.load_end, 256 * kMiB);
    EXPECT_GE(k.setup.version, 0x020c);
}

TEST(RealKernelTest, VesselVmlinux) {
    std::string p = std::string(kVesselKernelDir) + "/vmlinux";
    if (!is_regular_file(p)) GTEST_SKIP() << p << " has not been built on this machine";
    auto mem = GuestMemory::create(256 * kMiB);
    KernelImage k = load_kernel(mem, p);
    EXPECT_EQ(k.format, KernelImage::Format::Elf);
    // x86_64 vmlinux links startup_64 at LOAD_PHYSICAL_ADDR (CONFIG_PHYSICAL_START, 16 MiB
    // by default) and its e_entry is that physical address.
    EXPECT_GE(k.entry, layout::kHighMemStart);
    EXPECT_LT(k.entry, k.load_end);
    EXPECT_LE(k.load_end, 256 * kMiB);
    EXPECT_EQ(k.entry % 0x1000, 0u) << "startup_64 is page aligned";
    Bytes code(16);
    ASSERT_TRUE(mem.read(k.entry, code.data(), code.size()));
    EXPECT_NE(code, Bytes(16, 0)) << "no code at the entry point";
}

TEST(RealKernelTest, DebianBzImage) {
    if (!is_regular_file(kDebianBzImage)) GTEST_SKIP() << kDebianBzImage << " not installed";
    Bytes file = read_file(kDebianBzImage);
    ASSERT_GT(file.size(), sizeof(boot_params));
    setup_header h;
    std::memcpy(&h, file.data() + offsetof(boot_params, hdr), sizeof h);
    ASSERT_EQ(h.header, kHdrS);

    auto mem = GuestMemory::create(512 * kMiB);
    KernelImage k = load_kernel(mem, kDebianBzImage);
    EXPECT_EQ(k.format, KernelImage::Format::BzImage);
    EXPECT_EQ(k.entry, h.pref_address + 0x200);
    EXPECT_EQ(k.setup.code32_start, h.pref_address);
    // The protected-mode payload follows the (setup_sects + 1) real-mode sectors.
    size_t pm_off = (static_cast<size_t>(h.setup_sects ? h.setup_sects : 4) + 1) * 512;
    size_t pm_size = file.size() - pm_off;
    EXPECT_EQ(k.load_end, h.pref_address + std::max<uint64_t>(h.init_size, pm_size));
    // It is copied verbatim to the load address.
    Bytes got(pm_size);
    ASSERT_TRUE(mem.read(h.pref_address, got.data(), got.size()));
    EXPECT_TRUE(std::equal(got.begin(), got.end(), file.begin() + static_cast<long>(pm_off)));
}

TEST(RealKernelTest, DebianBzImageWithInitramfsBoots) {
    if (!is_regular_file(kDebianBzImage)) GTEST_SKIP() << kDebianBzImage << " not installed";
    auto mem = GuestMemory::create(512 * kMiB);
    KernelImage k = load_kernel(mem, kDebianBzImage);
    // Debian's kernel sets XLF_CAN_BE_LOADED_ABOVE_4G; an initramfs must still be placeable.
    Bytes initrd = pattern(3 * kMiB + 17, 0x42);
    uint64_t zp = 0;
    ASSERT_NO_THROW(zp = write_boot_data(mem, k, "console=ttyS0", initrd));
    boot_params bp{};
    ASSERT_TRUE(mem.read_obj(zp, bp));
    EXPECT_EQ(bp.hdr.ramdisk_size, initrd.size());
    EXPECT_GE(bp.hdr.ramdisk_image, k.load_end);
    EXPECT_LE(bp.hdr.ramdisk_image + initrd.size(), 512 * kMiB);
}

// ----- e820 ----------------------------------------------------------------------------

uint64_t ram_total(const std::vector<E820Entry>& e) {
    uint64_t t = 0;
    for (const auto& x : e)
        if (x.type == kE820Ram) t += x.size;
    return t;
}

void expect_sorted_disjoint(const std::vector<E820Entry>& e) {
    for (size_t i = 1; i < e.size(); ++i)
        EXPECT_LE(e[i - 1].addr + e[i - 1].size, e[i].addr) << "entry " << i;
}

TEST(E820Test, SmallMemory) {
    auto e = build_e820(GuestMemory::layout(256 * kMiB));
    ASSERT_EQ(e.size(), 3u);
    // Conventional memory up to the EBDA, the EBDA + BIOS area reserved, then RAM from 1 MiB.
    EXPECT_EQ(e[0].addr, 0u);
    EXPECT_EQ(e[0].size, layout::kEbdaStart);
    EXPECT_EQ(e[0].type, kE820Ram);
    EXPECT_EQ(e[1].addr, layout::kEbdaStart);
    EXPECT_EQ(e[1].addr + e[1].size, 0x100000u);
    EXPECT_EQ(e[1].type, kE820Reserved);
    EXPECT_EQ(e[2].addr, 0x100000u);
    EXPECT_EQ(e[2].addr + e[2].size, 256 * kMiB);
    EXPECT_EQ(e[2].type, kE820Ram);
    EXPECT_EQ(ram_total(e), 256 * kMiB - (0x100000 - layout::kEbdaStart));
    expect_sorted_disjoint(e);
}

TEST(E820Test, MpTableAreaIsReserved) {
    auto e = build_e820(GuestMemory::layout(128 * kMiB));
    bool covered = false;
    for (const auto& x : e) {
        if (x.addr <= 0xf0000 && 0x100000 <= x.addr + x.size) covered = x.type == kE820Reserved;
    }
    EXPECT_TRUE(covered) << "0xf0000..1MiB (MP table) must be reserved";
}

TEST(E820Test, LargeMemorySplitsAroundMmioGap) {
    const uint64_t size = 6 * kGiB;
    auto e = build_e820(GuestMemory::layout(size));
    ASSERT_EQ(e.size(), 4u);
    EXPECT_EQ(e[2].addr, 0x100000u);
    EXPECT_EQ(e[2].addr + e[2].size, 0xc0000000u);
    EXPECT_EQ(e[3].addr, 0x100000000u);
    EXPECT_EQ(e[3].size, size - 0xc0000000u);
    EXPECT_EQ(e[3].type, kE820Ram);
    EXPECT_EQ(ram_total(e), size - (0x100000 - layout::kEbdaStart));
    for (const auto& x : e) {
        if (x.type != kE820Ram) continue;
        bool outside_gap = x.addr + x.size <= 0xc0000000u || x.addr >= 0x100000000u;
        EXPECT_TRUE(outside_gap) << "RAM entry at " << std::hex << x.addr << " hits the gap";
    }
    expect_sorted_disjoint(e);
}

TEST(E820Test, ExactlyThreeGiBHasNoHighRam) {
    auto e = build_e820(GuestMemory::layout(3 * kGiB));
    ASSERT_EQ(e.size(), 3u);
    EXPECT_EQ(e.back().addr + e.back().size, 3 * kGiB);
    EXPECT_EQ(ram_total(e), 3 * kGiB - (0x100000 - layout::kEbdaStart));
}

// ----- Zero page -----------------------------------------------------------------------

TEST(BootParamsTest, ElfKernelGetsSyntheticHeader) {
    KernelImage k;  // ELF
    BootInfo info;
    info.cmdline_addr = layout::kCmdlineAddr;
    info.cmdline_size = 42;
    info.initrd_addr = 0x7f00000;
    info.initrd_size = 0x123456;
    auto e820 = build_e820(GuestMemory::layout(256 * kMiB));
    boot_params bp = build_boot_params(k, info, e820);
    EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
    EXPECT_EQ(bp.hdr.header, kHdrS);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
    EXPECT_TRUE(bp.hdr.loadflags & KEEP_SEGMENTS);
    EXPECT_EQ(bp.hdr.cmd_line_ptr, layout::kCmdlineAddr);
    EXPECT_EQ(bp.ext_cmd_line_ptr, 0u);
    EXPECT_EQ(bp.hdr.cmdline_size, 42u);
    EXPECT_EQ(bp.hdr.ramdisk_image, 0x7f00000u);
    EXPECT_EQ(bp.ext_ramdisk_image, 0u);
    EXPECT_EQ(bp.hdr.ramdisk_size, 0x123456u);
    EXPECT_EQ(bp.ext_ramdisk_size, 0u);
    ASSERT_EQ(size_t{bp.e820_entries}, e820.size());
    for (size_t i = 0; i < e820.size(); ++i) {
        EXPECT_EQ(bp.e820_table[i].addr, e820[i].addr);
        EXPECT_EQ(bp.e820_table[i].size, e820[i].size);
        EXPECT_EQ(bp.e820_table[i].type, e820[i].type);
    }
}

TEST(BootParamsTest, AddressesAbove4GUseExtFields) {
    KernelImage k;
    BootInfo info;
    info.cmdline_addr = 0x2'0000'1000ull;
    info.cmdline_size = 10;
    info.initrd_addr = 0x1'2345'6000ull;
    info.initrd_size = 0x1'0000'2000ull;
    boot_params bp = build_boot_params(k, info, {});
    EXPECT_EQ(bp.hdr.cmd_line_ptr, 0x1000u);
    EXPECT_EQ(bp.ext_cmd_line_ptr, 2u);
    EXPECT_EQ(bp.hdr.ramdisk_image, 0x23456000u);
    EXPECT_EQ(bp.ext_ramdisk_image, 1u);
    EXPECT_EQ(bp.hdr.ramdisk_size, 0x2000u);
    EXPECT_EQ(bp.ext_ramdisk_size, 1u);
    EXPECT_EQ(bp.e820_entries, 0);
}

TEST(BootParamsTest, BzImageHeaderIsCarriedOver) {
    KernelImage k;
    k.format = KernelImage::Format::BzImage;
    k.setup.version = 0x020f;
    k.setup.header = kHdrS;
    k.setup.boot_flag = 0xaa55;
    k.setup.loadflags = LOADED_HIGH;
    k.setup.code32_start = 0x1000000;
    k.setup.init_size = 0x3f98000;
    k.setup.type_of_loader = 0;
    k.setup.pref_address = 0x1000000;
    BootInfo info;
    info.cmdline_addr = layout::kCmdlineAddr;
    boot_params bp = build_boot_params(k, info, {});
    EXPECT_EQ(bp.hdr.version, 0x020f);
    EXPECT_EQ(bp.hdr.code32_start, 0x1000000u);
    EXPECT_EQ(bp.hdr.init_size, 0x3f98000u);
    EXPECT_EQ(bp.hdr.pref_address, 0x1000000u);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
    EXPECT_EQ(bp.hdr.loadflags, LOADED_HIGH | KEEP_SEGMENTS);
}

TEST(BootParamsTest, E820IsCappedAtZeroPageCapacity) {
    std::vector<E820Entry> many;
    for (uint64_t i = 0; i < E820_MAX_ENTRIES_ZEROPAGE + 10; ++i)
        many.push_back({i * 0x10000, 0x8000, kE820Ram});
    boot_params bp = build_boot_params(KernelImage{}, BootInfo{}, many);
    EXPECT_EQ(bp.e820_entries, E820_MAX_ENTRIES_ZEROPAGE);
    EXPECT_EQ(bp.e820_table[E820_MAX_ENTRIES_ZEROPAGE - 1].addr,
              (E820_MAX_ENTRIES_ZEROPAGE - 1) * 0x10000ull);
}

// ----- initramfs placement -------------------------------------------------------------

KernelImage elf_kernel_ending_at(uint64_t end) {
    KernelImage k;
    k.entry = layout::kKernelLoadAddr;
    k.load_end = end;
    return k;
}

TEST(PlaceInitrdTest, TopOfLowRamPageAligned) {
    auto mem = GuestMemory::create(256 * kMiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB + 0x123);
    for (uint64_t size :
         {uint64_t{1}, uint64_t{4096}, uint64_t{4097}, 1 * kMiB + 123, 100 * kMiB}) {
        uint64_t a = place_initrd(mem, k, size);
        EXPECT_EQ(a % 4096, 0u) << size;
        EXPECT_LE(a + size, 256 * kMiB) << size;
        // Highest page-aligned address that fits: one more page would run past the end.
        EXPECT_GT(a + 4096 + size, 256 * kMiB) << size;
        EXPECT_GE(a, k.load_end) << size;
    }
}

TEST(PlaceInitrdTest, RespectsInitrdAddrMax) {
    auto mem = GuestMemory::create(256 * kMiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB);
    k.initrd_addr_max = 128 * kMiB - 1;  // last byte the initrd may occupy
    uint64_t a = place_initrd(mem, k, 5000);
    EXPECT_LE(a + 5000, 128 * kMiB);
    EXPECT_GT(a + 4096 + 5000, 128 * kMiB);
}

TEST(PlaceInitrdTest, KernelThatCanBeLoadedAbove4G) {
    // bzImages with XLF_CAN_BE_LOADED_ABOVE_4G report initrd_addr_max = ~0 (no limit).
    auto mem = GuestMemory::create(256 * kMiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB);
    k.format = KernelImage::Format::BzImage;
    k.initrd_addr_max = ~uint64_t{0};
    uint64_t a = 0;
    ASSERT_NO_THROW(a = place_initrd(mem, k, 1 * kMiB));
    EXPECT_EQ(a, 255 * kMiB);
}

TEST(PlaceInitrdTest, StaysBelowMmioGapInLargeGuest) {
    auto mem = GuestMemory::create(5 * kGiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB);
    k.initrd_addr_max = 0xffffffff;
    uint64_t a = place_initrd(mem, k, 10 * kMiB);
    EXPECT_EQ(a, layout::kMmioGapStart - 10 * kMiB);
    EXPECT_NE(mem.host_ptr(a, 10 * kMiB), nullptr);
}

TEST(PlaceInitrdTest, RefusesWhenItDoesNotFitAboveTheKernel) {
    auto mem = GuestMemory::create(256 * kMiB);
    // Exactly fits between the kernel's end and the top of RAM.
    KernelImage k = elf_kernel_ending_at(248 * kMiB);
    EXPECT_EQ(place_initrd(mem, k, 8 * kMiB), 248 * kMiB);
    // One byte more would overlap the kernel.
    expect_boot_error([&] { place_initrd(mem, k, 8 * kMiB + 1); }, {"too small", "initramfs"});
    // Larger than RAM altogether.
    expect_boot_error([&] { place_initrd(mem, k, 300 * kMiB); }, {"too small"});
    // A kernel end that is not page aligned rounds up: the initrd must not share its page.
    k = elf_kernel_ending_at(248 * kMiB + 1);
    expect_boot_error([&] { place_initrd(mem, k, 8 * kMiB); }, {"too small"});
}

// ----- write_boot_data -----------------------------------------------------------------

TEST(WriteBootDataTest, WritesCmdlineInitrdAndZeroPage) {
    auto mem = GuestMemory::create(64 * kMiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB);
    const std::string cmdline = "console=ttyS0 reboot=k panic=1";
    // Pre-fill so the NUL terminator is really written, not just left over.
    Bytes junk(256, 'X');
    ASSERT_TRUE(mem.write(layout::kCmdlineAddr, junk.data(), junk.size()));
    Bytes initrd = pattern(10000, 0x77);
    uint64_t zp = write_boot_data(mem, k, cmdline, initrd);
    EXPECT_EQ(zp, layout::kBootParamsAddr);

    Bytes cl(cmdline.size() + 1);
    ASSERT_TRUE(mem.read(layout::kCmdlineAddr, cl.data(), cl.size()));
    EXPECT_EQ(std::string(cl.begin(), cl.end() - 1), cmdline);
    EXPECT_EQ(cl.back(), 0);

    boot_params bp{};
    ASSERT_TRUE(mem.read_obj(zp, bp));
    EXPECT_EQ(bp.hdr.boot_flag, 0xaa55);
    EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
    EXPECT_EQ(bp.hdr.cmd_line_ptr, layout::kCmdlineAddr);
    EXPECT_EQ(bp.hdr.cmdline_size, cmdline.size());
    EXPECT_EQ(bp.hdr.ramdisk_size, initrd.size());
    EXPECT_EQ(bp.hdr.ramdisk_image % 4096, 0u);
    EXPECT_GE(bp.hdr.ramdisk_image, k.load_end);
    Bytes got(initrd.size());
    ASSERT_TRUE(mem.read(bp.hdr.ramdisk_image, got.data(), got.size()));
    EXPECT_EQ(got, initrd);
    auto e820 = build_e820(mem.regions());
    ASSERT_EQ(size_t{bp.e820_entries}, e820.size());
    EXPECT_EQ(bp.e820_table[2].addr + bp.e820_table[2].size, 64 * kMiB);
}

TEST(WriteBootDataTest, NoInitrdLeavesRamdiskFieldsZero) {
    auto mem = GuestMemory::create(64 * kMiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB);
    uint64_t zp = write_boot_data(mem, k, "", {});
    boot_params bp{};
    ASSERT_TRUE(mem.read_obj(zp, bp));
    EXPECT_EQ(bp.hdr.ramdisk_image, 0u);
    EXPECT_EQ(bp.hdr.ramdisk_size, 0u);
    EXPECT_EQ(bp.hdr.cmdline_size, 0u);
    uint8_t nul = 0xff;
    ASSERT_TRUE(mem.read_obj(layout::kCmdlineAddr, nul));
    EXPECT_EQ(nul, 0);
}

TEST(WriteBootDataTest, RefusesOverlongCmdline) {
    auto mem = GuestMemory::create(64 * kMiB);
    KernelImage k = elf_kernel_ending_at(20 * kMiB);
    // An ELF vmlinux has no header to say; x86's COMMAND_LINE_SIZE is 2048 with the NUL.
    EXPECT_NO_THROW(write_boot_data(mem, k, std::string(2047, 'a'), {}));
    expect_boot_error([&] { write_boot_data(mem, k, std::string(2048, 'a'), {}); },
                      {"command line too long"});
    // Even a kernel claiming a huge limit cannot overflow the command line area.
    k.cmdline_max = 0x100000;
    expect_boot_error([&] { write_boot_data(mem, k, std::string(layout::kCmdlineMax, 'b'), {}); },
                      {"command line too long"});
}

TEST(WriteBootDataTest, BzImageCmdlineSizeExcludesTheNul) {
    // Boot protocol: "cmdline_size: The maximum size of the command line without the
    // terminating zero." A bzImage advertising 2047 accepts a 2047-character command line.
    TempDir dir;
    auto mem = GuestMemory::create(64 * kMiB);
    BzSpec s;
    s.cmdline_size = 2047;
    KernelImage k = load_kernel(mem, dir.write("bz", build_bzimage(s)));
    EXPECT_NO_THROW(write_boot_data(mem, k, std::string(2047, 'c'), {}));
    expect_boot_error([&] { write_boot_data(mem, k, std::string(2048, 'c'), {}); }, {"too long"});
}

TEST(WriteBootDataTest, RefusesInitrdThatDoesNotFit) {
    auto mem = GuestMemory::create(64 * kMiB);
    KernelImage k = elf_kernel_ending_at(60 * kMiB);
    Bytes initrd(8 * kMiB, 1);
    expect_boot_error([&] { write_boot_data(mem, k, "x", initrd); }, {"initramfs"});
}

}  // namespace
}  // namespace vessel::vmm
