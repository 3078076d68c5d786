// Linux x86 boot protocol: kernel loading (ELF vmlinux and bzImage), initramfs placement,
// the e820 map and the zero page. Loaders validate every offset against the file and guest RAM.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "guest_memory.h"

namespace vessel::vmm {

// A kernel or initramfs file that is missing, truncated or not what it claims to be.
class BootError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct KernelImage {
    enum class Format { Elf, BzImage };
    Format format = Format::Elf;
    uint64_t entry = 0;     // guest-physical 64-bit entry point
    uint64_t load_end = 0;  // first byte past everything the kernel may use while booting
    setup_header setup{};   // bzImage only: the header from the file
    uint32_t cmdline_max = 2048;
    uint64_t initrd_addr_max = 0x7fffffff;
};

// Loads an ELF64 vmlinux or a 64-bit-capable bzImage from `path` into guest memory.
KernelImage load_kernel(const GuestMemory& mem, const std::string& path);

struct E820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};
inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

std::vector<E820Entry> build_e820(const std::vector<MemoryRegion>& regions);

// Where an initramfs of `size` bytes goes: the top of low RAM, page aligned, above the kernel.
// Throws BootError when it does not fit.
uint64_t place_initrd(const GuestMemory& mem, const KernelImage& k, uint64_t size);

struct BootInfo {
    uint64_t cmdline_addr = 0;
    uint32_t cmdline_size = 0;  // without the NUL
    uint64_t initrd_addr = 0;
    uint64_t initrd_size = 0;
};

// The zero page handed to the kernel in %rsi.
boot_params build_boot_params(const KernelImage& k, const BootInfo& info,
                              const std::vector<E820Entry>& e820);

// Writes cmdline, initramfs and zero page into guest memory. Returns the zero page address.
uint64_t write_boot_data(const GuestMemory& mem, const KernelImage& k, const std::string& cmdline,
                         std::span<const uint8_t> initrd);

}  // namespace vessel::vmm
