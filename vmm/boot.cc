#include "boot.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fd.h"
#include "layout.h"

namespace vessel::vmm {
namespace {

constexpr uint32_t kHdrSMagic = 0x53726448;  // "HdrS"
constexpr uint16_t kBootFlag = 0xaa55;
constexpr uint64_t kPage = 4096;

struct File {
    UniqueFd fd;
    uint64_t size = 0;
    std::string name;

    explicit File(const std::string& path) : name(path) {
        // O_NONBLOCK so that a FIFO named as the kernel fails the S_ISREG check instead of
        // blocking the open; it has no effect on regular files.
        fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
        if (!fd) throw_errno("opening kernel " + path);
        struct stat st {};
        if (::fstat(fd.get(), &st) < 0) throw_errno("stat " + path);
        if (!S_ISREG(st.st_mode)) throw BootError(path + ": not a regular file");
        size = static_cast<uint64_t>(st.st_size);
    }

    // Reads exactly len bytes at off, or throws BootError naming the truncation.
    void read_exact(void* dst, uint64_t len, uint64_t off, const char* what) const {
        if (off > size || len > size - off)
            throw BootError(name + ": truncated (" + what + " past end of file)");
        auto* p = static_cast<uint8_t*>(dst);
        while (len > 0) {
            ssize_t n = ::pread(fd.get(), p, len, static_cast<off_t>(off));
            if (n < 0) {
                if (errno == EINTR) continue;
                throw_errno("reading " + name);
            }
            if (n == 0) throw BootError(name + ": truncated while reading " + what);
            p += n;
            off += static_cast<uint64_t>(n);
            len -= static_cast<uint64_t>(n);
        }
    }
};

KernelImage load_elf(const GuestMemory& mem, const File& f) {
    Elf64_Ehdr eh{};
    f.read_exact(&eh, sizeof eh, 0, "ELF header");
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
        throw BootError(f.name + ": not a 64-bit little-endian ELF kernel");
    if (eh.e_machine != EM_X86_64) throw BootError(f.name + ": ELF is not for x86_64");
    if (eh.e_type != ET_EXEC) throw BootError(f.name + ": ELF is not an executable kernel");
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 64)
        throw BootError(f.name + ": corrupt ELF program header table");

    std::vector<Elf64_Phdr> ph(eh.e_phnum);
    f.read_exact(ph.data(), ph.size() * sizeof(Elf64_Phdr), eh.e_phoff, "program headers");

    KernelImage k;
    k.format = KernelImage::Format::Elf;
    bool entry_ok = false, any = false;
    for (const auto& p : ph) {
        if (p.p_type != PT_LOAD) continue;
        any = true;
        if (p.p_filesz > p.p_memsz) throw BootError(f.name + ": corrupt ELF segment sizes");
        if (p.p_paddr < layout::kHighMemStart)
            throw BootError(f.name + ": ELF segment below 1 MiB");
        uint8_t* dst = mem.host_ptr(p.p_paddr, p.p_memsz);
        if (!dst)
            throw BootError(f.name + ": ELF segment at " + std::to_string(p.p_paddr) +
                            " does not fit in guest memory");
        f.read_exact(dst, p.p_filesz, p.p_offset, "ELF segment");
        std::memset(dst + p.p_filesz, 0, p.p_memsz - p.p_filesz);
        k.load_end = std::max(k.load_end, p.p_paddr + p.p_memsz);
        if (eh.e_entry >= p.p_paddr && eh.e_entry < p.p_paddr + p.p_memsz) entry_ok = true;
    }
    if (!any) throw BootError(f.name + ": ELF has no loadable segments");
    if (!entry_ok) throw BootError(f.name + ": ELF entry point is outside its segments");
    k.entry = eh.e_entry;
    return k;
}

KernelImage load_bzimage(const GuestMemory& mem, const File& f) {
    KernelImage k;
    k.format = KernelImage::Format::BzImage;
    setup_header& h = k.setup;
    f.read_exact(&h, sizeof h, offsetof(boot_params, hdr), "setup header");
    if (h.boot_flag != kBootFlag || h.header != kHdrSMagic)
        throw BootError(f.name + ": not a bzImage (no HdrS signature)");
    if (h.version < 0x020c)
        throw BootError(f.name + ": boot protocol " + std::to_string(h.version >> 8) + "." +
                        std::to_string(h.version & 0xff) + " too old (need 2.12)");
    if (!(h.xloadflags & XLF_KERNEL_64))
        throw BootError(f.name + ": bzImage has no 64-bit entry point");
    if (!(h.loadflags & LOADED_HIGH)) throw BootError(f.name + ": zImage is not supported");

    uint64_t setup_sects = h.setup_sects ? h.setup_sects : 4;
    uint64_t pm_off = (setup_sects + 1) * 512;
    if (pm_off >= f.size) throw BootError(f.name + ": truncated (no protected-mode kernel)");
    uint64_t pm_size = f.size - pm_off;
    if (uint64_t{h.syssize} * 16 > pm_size)
        throw BootError(f.name +
                        ": truncated (protected-mode kernel shorter than its header says)");

    uint64_t load = h.pref_address ? h.pref_address : layout::kKernelLoadAddr;
    uint64_t span = std::max<uint64_t>(pm_size, h.init_size);
    if (load < layout::kHighMemStart || !mem.host_ptr(load, span))
        throw BootError(f.name + ": kernel needs " + std::to_string((load + span) >> 20) +
                        " MiB of guest memory to boot");
    f.read_exact(mem.host_ptr(load, pm_size), pm_size, pm_off, "protected-mode kernel");
    h.code32_start = static_cast<uint32_t>(load);
    k.entry = load + 0x200;  // 64-bit entry is startup_64 at 0x200 into the payload
    k.load_end = load + span;
    // cmdline_size excludes the NUL; cmdline_max includes it.
    k.cmdline_max = (h.cmdline_size ? h.cmdline_size : 255) + 1;
    k.initrd_addr_max =
        (h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G) ? ~uint64_t{0} : h.initrd_addr_max;
    return k;
}

}  // namespace

KernelImage load_kernel(const GuestMemory& mem, const std::string& path) {
    File f(path);
    uint8_t magic[4] = {};
    if (f.size < sizeof magic) throw BootError(path + ": too short to be a kernel");
    f.read_exact(magic, sizeof magic, 0, "magic");
    if (std::memcmp(magic, ELFMAG, SELFMAG) == 0) return load_elf(mem, f);
    if (f.size < sizeof(boot_params)) throw BootError(path + ": not a kernel (too short)");
    return load_bzimage(mem, f);
}

std::vector<E820Entry> build_e820(const std::vector<MemoryRegion>& regions) {
    std::vector<E820Entry> e;
    const MemoryRegion& low = regions.front();
    e.push_back({0, layout::kEbdaStart, kE820Ram});
    // EBDA and the BIOS area, where the MP table lives, are not RAM for the guest.
    e.push_back({layout::kEbdaStart, layout::kHighMemStart - layout::kEbdaStart, kE820Reserved});
    if (low.size > layout::kHighMemStart)
        e.push_back({layout::kHighMemStart, low.size - layout::kHighMemStart, kE820Ram});
    for (size_t i = 1; i < regions.size(); ++i)
        e.push_back({regions[i].gpa, regions[i].size, kE820Ram});
    return e;
}

uint64_t place_initrd(const GuestMemory& mem, const KernelImage& k, uint64_t size) {
    // initrd_addr_max is inclusive and may be ~0: compare before adding one.
    uint64_t top = std::min(mem.low_ram_end() - 1, k.initrd_addr_max) + 1;
    uint64_t floor = (k.load_end + kPage - 1) & ~(kPage - 1);
    if (size > top || ((top - size) & ~(kPage - 1)) < floor)
        throw BootError("guest memory too small for the kernel and a " +
                        std::to_string(size >> 10) + " KiB initramfs");
    return (top - size) & ~(kPage - 1);
}

boot_params build_boot_params(const KernelImage& k, const BootInfo& info,
                              const std::vector<E820Entry>& e820) {
    boot_params bp{};
    if (k.format == KernelImage::Format::BzImage) {
        bp.hdr = k.setup;
    } else {
        bp.hdr.boot_flag = kBootFlag;
        bp.hdr.header = kHdrSMagic;
        bp.hdr.kernel_alignment = 0x1000000;
    }
    bp.hdr.type_of_loader = 0xff;  // "undefined" loader: vessel has no registered id
    bp.hdr.loadflags |= KEEP_SEGMENTS;
    bp.hdr.cmd_line_ptr = static_cast<uint32_t>(info.cmdline_addr);
    bp.ext_cmd_line_ptr = static_cast<uint32_t>(info.cmdline_addr >> 32);
    bp.hdr.cmdline_size = info.cmdline_size;
    bp.hdr.ramdisk_image = static_cast<uint32_t>(info.initrd_addr);
    bp.ext_ramdisk_image = static_cast<uint32_t>(info.initrd_addr >> 32);
    bp.hdr.ramdisk_size = static_cast<uint32_t>(info.initrd_size);
    bp.ext_ramdisk_size = static_cast<uint32_t>(info.initrd_size >> 32);
    size_t n = std::min<size_t>(e820.size(), E820_MAX_ENTRIES_ZEROPAGE);
    for (size_t i = 0; i < n; ++i) {
        bp.e820_table[i].addr = e820[i].addr;
        bp.e820_table[i].size = e820[i].size;
        bp.e820_table[i].type = e820[i].type;
    }
    bp.e820_entries = static_cast<uint8_t>(n);
    return bp;
}

uint64_t write_boot_data(const GuestMemory& mem, const KernelImage& k, const std::string& cmdline,
                         std::span<const uint8_t> initrd) {
    if (cmdline.size() + 1 > std::min<uint64_t>(k.cmdline_max, layout::kCmdlineMax))
        throw BootError("kernel command line too long (" + std::to_string(cmdline.size()) +
                        " bytes, limit " + std::to_string(k.cmdline_max - 1) + ")");
    if (!mem.write(layout::kCmdlineAddr, cmdline.c_str(), cmdline.size() + 1))
        throw BootError("guest memory too small for the command line");
    BootInfo info;
    info.cmdline_addr = layout::kCmdlineAddr;
    info.cmdline_size = static_cast<uint32_t>(cmdline.size());
    if (!initrd.empty()) {
        info.initrd_addr = place_initrd(mem, k, initrd.size());
        info.initrd_size = initrd.size();
        mem.write(info.initrd_addr, initrd.data(), initrd.size());
    }
    boot_params bp = build_boot_params(k, info, build_e820(mem.regions()));
    if (!mem.write_obj(layout::kBootParamsAddr, bp))
        throw BootError("guest memory too small for the zero page");
    return layout::kBootParamsAddr;
}

}  // namespace vessel::vmm
