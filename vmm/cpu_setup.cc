#include "cpu_setup.h"

#include "layout.h"

namespace vessel::vmm {
namespace {

constexpr uint64_t kCr0Pe = 1ull << 0;
constexpr uint64_t kCr0Et = 1ull << 4;
constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kEferLme = 1ull << 8;
constexpr uint64_t kEferLma = 1ull << 10;

// GDT entries: null, 64-bit code, data, TSS.
constexpr uint64_t kGdt[] = {0, 0x00af9b000000ffff, 0x00cf93000000ffff, 0x008f8b000000ffff};
constexpr uint16_t kCodeSel = 0x08, kDataSel = 0x10, kTssSel = 0x18;

kvm_segment segment(uint64_t desc, uint16_t sel) {
    kvm_segment s{};
    s.base = ((desc >> 16) & 0xffffff) | (((desc >> 56) & 0xff) << 24);
    uint32_t limit = static_cast<uint32_t>((desc & 0xffff) | (((desc >> 48) & 0xf) << 16));
    s.g = (desc >> 55) & 1;
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.selector = sel;
    s.type = (desc >> 40) & 0xf;
    s.present = (desc >> 47) & 1;
    s.dpl = (desc >> 45) & 3;
    s.db = (desc >> 54) & 1;
    s.s = (desc >> 44) & 1;
    s.l = (desc >> 53) & 1;
    s.avl = (desc >> 52) & 1;
    s.unusable = s.present ? 0 : 1;
    return s;
}

uint32_t bits_for(uint32_t n) {
    uint32_t b = 0;
    while ((1u << b) < n) ++b;
    return b;
}

}  // namespace

std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(std::vector<kvm_cpuid_entry2> entries, uint32_t index,
                                             uint32_t count) {
    const uint32_t apic_id = index;
    const uint32_t shift = bits_for(count);
    for (auto& e : entries) {
        switch (e.function) {
            case 0x1:
                e.ebx = (e.ebx & 0x0000ffff) | (apic_id << 24) | ((count & 0xff) << 16);
                if (count > 1) e.edx |= 1u << 28;  // HTT: several logical CPUs per package
                e.ecx |= 1u << 31;                 // running under a hypervisor
                break;
            case 0x4:
                // Cores per package - 1, so Linux's topology agrees with the MP table.
                e.eax = (e.eax & 0x03ffffff) | (((count - 1) & 0x3f) << 26);
                break;
            case 0xb:
            case 0x1f:
                e.edx = apic_id;
                if (e.index == 0) {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (1u << 8) | e.index;  // SMT level, one thread per core
                } else if (e.index == 1) {
                    e.eax = shift;
                    e.ebx = count;
                    e.ecx = (2u << 8) | e.index;  // core level
                } else {
                    e.eax = e.ebx = 0;
                    e.ecx = e.index;
                }
                break;
            case 0x80000008:
                // AMD: number of physical cores - 1 and the APIC id width.
                e.ecx = (e.ecx & ~0xf0ffu) | ((count - 1) & 0xff) | (shift << 12);
                break;
            default:
                break;
        }
    }
    return entries;
}

bool write_long_mode_tables(const GuestMemory& mem) {
    if (!mem.write(layout::kGdtAddr, kGdt, sizeof kGdt)) return false;
    const uint64_t idt = 0;
    if (!mem.write_obj(layout::kGdtAddr + sizeof kGdt, idt)) return false;
    if (!mem.write_obj(layout::kPml4Addr, layout::kPdptAddr | 0x3)) return false;
    if (!mem.write_obj(layout::kPdptAddr, layout::kPdAddr | 0x3)) return false;
    for (uint64_t i = 0; i < 512; ++i) {
        // 2 MiB pages: present, writable, page size.
        if (!mem.write_obj(layout::kPdAddr + i * 8, (i << 21) | 0x83)) return false;
    }
    return true;
}

kvm_sregs long_mode_sregs(kvm_sregs s) {
    s.gdt.base = layout::kGdtAddr;
    s.gdt.limit = sizeof kGdt - 1;
    s.idt.base = layout::kGdtAddr + sizeof kGdt;
    s.idt.limit = 7;
    s.cs = segment(kGdt[1], kCodeSel);
    s.ds = s.es = s.fs = s.gs = s.ss = segment(kGdt[2], kDataSel);
    s.tr = segment(kGdt[3], kTssSel);
    s.cr3 = layout::kPml4Addr;
    s.cr4 |= kCr4Pae;
    s.cr0 |= kCr0Pe | kCr0Et | kCr0Pg;
    s.efer |= kEferLme | kEferLma;
    return s;
}

std::vector<MsrValue> boot_msrs() {
    return {
        {0x174, 0},       // IA32_SYSENTER_CS
        {0x175, 0},       // IA32_SYSENTER_ESP
        {0x176, 0},       // IA32_SYSENTER_EIP
        {0xc0000081, 0},  // STAR
        {0xc0000082, 0},  // LSTAR
        {0xc0000083, 0},  // CSTAR
        {0xc0000084, 0},  // SYSCALL_MASK
        {0xc0000102, 0},  // KERNEL_GS_BASE
        {0x10, 0},        // IA32_TSC
        {0x1a0, 1},       // IA32_MISC_ENABLE: fast strings
    };
}

}  // namespace vessel::vmm
