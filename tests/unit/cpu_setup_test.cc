// CPUID adaptation, long-mode page tables/GDT and special registers (vmm/cpu_setup.h).
#include "vmm/cpu_setup.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <vector>

#include "vmm/guest_memory.h"
#include "vmm/layout.h"

namespace vessel::vmm {
namespace {

constexpr uint32_t kHtt = 1u << 28;         // CPUID.1:EDX
constexpr uint32_t kHypervisor = 1u << 31;  // CPUID.1:ECX

kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t idx, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    kvm_cpuid_entry2 e{};
    e.function = fn;
    e.index = idx;
    e.flags = idx || fn == 0x4 || fn == 0xb || fn == 0x1f || fn == 0x7
                  ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                  : 0;
    e.eax = a;
    e.ebx = b;
    e.ecx = c;
    e.edx = d;
    return e;
}

// Roughly what KVM_GET_SUPPORTED_CPUID returns on an Intel host with 16 threads.
std::vector<kvm_cpuid_entry2> supported() {
    return {
        leaf(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
        // EBX: host APIC id 0x0e, 16 logical CPUs, CLFLUSH 8, brand index 0x21.
        leaf(0x1, 0, 0x000906ea, 0x0e100821, 0x7ffafbff & ~kHypervisor, 0xbfebfbff & ~kHtt),
        leaf(0x4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0),
        leaf(0x4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0),
        leaf(0x7, 0, 0, 0x029c6fbf, 0x40000000, 0xbc000400),
        leaf(0xb, 0, 1, 2, 0x100, 0x0e),
        leaf(0xb, 1, 4, 16, 0x201, 0x0e),
        leaf(0xb, 2, 0, 0, 2, 0x0e),
        leaf(0x1f, 0, 1, 2, 0x100, 0x0e),
        leaf(0x1f, 1, 4, 16, 0x201, 0x0e),
        leaf(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),
        leaf(0x80000001, 0, 0, 0, 0x121, 0x2c100800),
        leaf(0x80000008, 0, 0x3027, 0, 0x0000f30f, 0),
    };
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t fn,
                             uint32_t idx = 0) {
    for (const auto& e : v)
        if (e.function == fn && e.index == idx) return &e;
    return nullptr;
}

// Smallest b with 2^b >= n: bits of APIC id below the package id for n CPUs in one package.
uint32_t id_bits(uint32_t n) {
    uint32_t b = 0;
    while ((1u << b) < n) ++b;
    return b;
}

TEST(CpuidTest, Leaf1ApicIdCountHypervisorAndHtt) {
    const auto in = supported();
    const auto* in1 = find(in, 1);
    for (uint32_t count : {2u, 4u, 128u}) {
        for (uint32_t idx : {0u, 1u, count - 1}) {
            auto out = cpuid_for_vcpu(in, idx, count);
            const auto* l1 = find(out, 1);
            ASSERT_NE(l1, nullptr);
            EXPECT_EQ(l1->ebx >> 24, idx) << "initial APIC id";
            EXPECT_EQ((l1->ebx >> 16) & 0xff, count) << "logical processors per package";
            EXPECT_EQ(l1->ebx & 0xffff, in1->ebx & 0xffff) << "brand index and CLFLUSH kept";
            EXPECT_TRUE(l1->ecx & kHypervisor);
            EXPECT_EQ(l1->ecx & ~kHypervisor, in1->ecx) << "other feature bits kept";
            EXPECT_TRUE(l1->edx & kHtt) << count << " vCPUs";
            EXPECT_EQ(l1->edx & ~kHtt, in1->edx);
            EXPECT_EQ(l1->eax, in1->eax);
        }
    }
}

TEST(CpuidTest, SingleVcpuHasNoHtt) {
    auto out = cpuid_for_vcpu(supported(), 0, 1);
    const auto* l1 = find(out, 1);
    ASSERT_NE(l1, nullptr);
    EXPECT_FALSE(l1->edx & kHtt);
    EXPECT_EQ(l1->ebx >> 24, 0u);
    EXPECT_EQ((l1->ebx >> 16) & 0xff, 1u);
    EXPECT_TRUE(l1->ecx & kHypervisor);
}

void check_topology_leaf(const std::vector<kvm_cpuid_entry2>& out, uint32_t fn, uint32_t idx,
                         uint32_t count) {
    SCOPED_TRACE(::testing::Message()
                 << "leaf " << std::hex << fn << std::dec << " vcpu " << idx << "/" << count);
    const auto* smt = find(out, fn, 0);
    const auto* core = find(out, fn, 1);
    ASSERT_NE(smt, nullptr);
    ASSERT_NE(core, nullptr);
    // Subleaf 0: SMT level, one thread per core, so no APIC id bits for it.
    EXPECT_EQ((smt->ecx >> 8) & 0xff, 1u) << "level type SMT";
    EXPECT_EQ(smt->ecx & 0xff, 0u) << "level number";
    EXPECT_EQ(smt->eax & 0x1f, 0u);
    EXPECT_EQ(smt->ebx & 0xffff, 1u);
    EXPECT_EQ(smt->edx, idx) << "x2APIC id";
    // Subleaf 1: core level holding all vCPUs.
    EXPECT_EQ((core->ecx >> 8) & 0xff, 2u) << "level type core";
    EXPECT_EQ(core->ecx & 0xff, 1u);
    EXPECT_EQ(core->ebx & 0xffff, count);
    EXPECT_EQ(core->edx, idx);
    uint32_t shift = core->eax & 0x1f;
    EXPECT_EQ(shift, id_bits(count));
    // Shifting any APIC id right by the core-level width gives package 0, i.e. one package.
    EXPECT_EQ((count - 1) >> shift, 0u);
    if (const auto* inval = find(out, fn, 2)) {
        EXPECT_EQ((inval->ecx >> 8) & 0xff, 0u) << "level type invalid terminates";
        EXPECT_EQ(inval->ecx & 0xff, 2u);
        EXPECT_EQ(inval->ebx & 0xffff, 0u);
    }
}

TEST(CpuidTest, ExtendedTopologyLeaves) {
    for (uint32_t count : {1u, 2u, 3u, 5u, 64u, 128u}) {
        for (uint32_t idx : {0u, count / 2, count - 1}) {
            auto out = cpuid_for_vcpu(supported(), idx, count);
            check_topology_leaf(out, 0xb, idx, count);
            check_topology_leaf(out, 0x1f, idx, count);
        }
    }
}

TEST(CpuidTest, CacheLeafCoreCountAndAmdCoreCount) {
    const auto in = supported();
    for (uint32_t count : {1u, 6u, 32u}) {
        auto out = cpuid_for_vcpu(in, 0, count);
        for (uint32_t sub : {0u, 1u}) {
            const auto* l4 = find(out, 4, sub);
            ASSERT_NE(l4, nullptr);
            EXPECT_EQ(l4->eax >> 26, count - 1) << "cores per package - 1";
            EXPECT_EQ(l4->eax & 0x03ffffff, find(in, 4, sub)->eax & 0x03ffffff);
            EXPECT_EQ(l4->ebx, find(in, 4, sub)->ebx);
        }
        const auto* ext = find(out, 0x80000008);
        ASSERT_NE(ext, nullptr);
        EXPECT_EQ(ext->ecx & 0xff, count - 1) << "NC";
        EXPECT_EQ((ext->ecx >> 12) & 0xf, id_bits(count)) << "ApicIdSize";
        EXPECT_EQ(ext->ecx & ~0xf0ffu, find(in, 0x80000008)->ecx & ~0xf0ffu);
        EXPECT_EQ(ext->eax, find(in, 0x80000008)->eax) << "address sizes kept";
    }
}

TEST(CpuidTest, OtherLeavesUntouched) {
    const auto in = supported();
    auto out = cpuid_for_vcpu(in, 3, 8);
    ASSERT_EQ(out.size(), in.size());
    std::set<uint32_t> adapted = {0x1, 0x4, 0xb, 0x1f, 0x80000008};
    for (size_t i = 0; i < in.size(); ++i) {
        EXPECT_EQ(out[i].function, in[i].function) << "order kept";
        EXPECT_EQ(out[i].index, in[i].index);
        EXPECT_EQ(out[i].flags, in[i].flags);
        if (adapted.count(in[i].function)) continue;
        EXPECT_EQ(std::memcmp(&out[i], &in[i], sizeof in[i]), 0)
            << "leaf " << std::hex << in[i].function << " changed";
    }
}

TEST(CpuidTest, MissingLeavesAreNotInvented) {
    std::vector<kvm_cpuid_entry2> in = {
        leaf(0x0, 0, 0xa, 0x68747541, 0x444d4163, 0x69746e65),
        leaf(0x1, 0, 0x00a20f10, 0x00000800, 0, 0),
    };
    auto out = cpuid_for_vcpu(in, 1, 4);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].function, 0u);
    EXPECT_EQ(out[1].function, 1u);
    EXPECT_EQ(out[1].ebx >> 24, 1u);
    EXPECT_EQ(find(out, 0xb), nullptr);
    EXPECT_EQ(find(out, 0x1f), nullptr);
    EXPECT_EQ(find(out, 4), nullptr);
    EXPECT_EQ(find(out, 0x80000008), nullptr);
    EXPECT_TRUE(cpuid_for_vcpu({}, 0, 1).empty());
}

// ----- Page tables and GDT --------------------------------------------------------------

constexpr uint64_t kPresent = 1, kWritable = 2, kPageSize = 0x80;
constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;

uint64_t read_u64(const GuestMemory& mem, uint64_t gpa) {
    uint64_t v = 0;
    EXPECT_TRUE(mem.read_obj(gpa, v)) << std::hex << gpa;
    return v;
}

// Walks the 4-level tables from CR3 the way the MMU does; returns ~0 when unmapped.
uint64_t translate(const GuestMemory& mem, uint64_t cr3, uint64_t va) {
    uint64_t pml4e = read_u64(mem, (cr3 & kAddrMask) + ((va >> 39) & 511) * 8);
    if (!(pml4e & kPresent)) return ~0ull;
    uint64_t pdpte = read_u64(mem, (pml4e & kAddrMask) + ((va >> 30) & 511) * 8);
    if (!(pdpte & kPresent)) return ~0ull;
    if (pdpte & kPageSize) return (pdpte & 0x000fffffc0000000ull) | (va & 0x3fffffff);
    uint64_t pde = read_u64(mem, (pdpte & kAddrMask) + ((va >> 21) & 511) * 8);
    if (!(pde & kPresent)) return ~0ull;
    if (pde & kPageSize) return (pde & 0x000fffffffe00000ull) | (va & 0x1fffff);
    uint64_t pte = read_u64(mem, (pde & kAddrMask) + ((va >> 12) & 511) * 8);
    if (!(pte & kPresent)) return ~0ull;
    return (pte & kAddrMask) | (va & 0xfff);
}

TEST(LongModeTablesTest, IdentityMapsFirstGiBWith2MiBPages) {
    auto mem = GuestMemory::create(64 << 20);
    ASSERT_TRUE(write_long_mode_tables(mem));
    uint64_t pml4_0 = read_u64(mem, layout::kPml4Addr);
    EXPECT_EQ(pml4_0 & kAddrMask, layout::kPdptAddr);
    EXPECT_EQ(pml4_0 & (kPresent | kWritable), kPresent | kWritable);
    uint64_t pdpt_0 = read_u64(mem, layout::kPdptAddr);
    EXPECT_EQ(pdpt_0 & kAddrMask, layout::kPdAddr);
    EXPECT_EQ(pdpt_0 & (kPresent | kWritable | kPageSize), kPresent | kWritable);
    for (uint64_t i : {0ull, 1ull, 8ull, 255ull, 511ull}) {
        uint64_t pde = read_u64(mem, layout::kPdAddr + i * 8);
        EXPECT_EQ(pde & (kPresent | kWritable | kPageSize), kPresent | kWritable | kPageSize) << i;
        EXPECT_EQ(pde & kAddrMask, i << 21) << i;
    }
    // Only the first GiB: the rest of the PML4 and PDPT stays empty.
    for (uint64_t i : {1ull, 256ull, 511ull}) {
        EXPECT_EQ(read_u64(mem, layout::kPml4Addr + i * 8), 0u) << i;
        EXPECT_EQ(read_u64(mem, layout::kPdptAddr + i * 8), 0u) << i;
    }
}

TEST(LongModeTablesTest, WalkTranslatesToIdentity) {
    auto mem = GuestMemory::create(64 << 20);
    ASSERT_TRUE(write_long_mode_tables(mem));
    for (uint64_t va : {0x0ull, 0x7000ull, 0x1000200ull, 0x12345678ull, 0x3fffffffull})
        EXPECT_EQ(translate(mem, layout::kPml4Addr, va), va) << std::hex << va;
    EXPECT_EQ(translate(mem, layout::kPml4Addr, 0x40000000ull), ~0ull) << "1 GiB is unmapped";
}

TEST(LongModeTablesTest, FailsWhenGuestMemoryTooSmall) {
    // 32 KiB holds the GDT at 0x500 but not the PML4 at 0x9000.
    auto mem = GuestMemory::create(0x8000);
    EXPECT_FALSE(write_long_mode_tables(mem));
}

// Decoded GDT descriptor (Intel SDM vol. 3, 3.4.5).
struct Desc {
    uint32_t base, limit;
    uint8_t type, s, dpl, p, avl, l, db, g;
};
Desc decode(uint64_t d) {
    Desc x{};
    x.limit = static_cast<uint32_t>((d & 0xffff) | ((d >> 32) & 0xf0000));
    x.base = static_cast<uint32_t>(((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000));
    x.type = (d >> 40) & 0xf;
    x.s = (d >> 44) & 1;
    x.dpl = (d >> 45) & 3;
    x.p = (d >> 47) & 1;
    x.avl = (d >> 52) & 1;
    x.l = (d >> 53) & 1;
    x.db = (d >> 54) & 1;
    x.g = (d >> 55) & 1;
    return x;
}

TEST(LongModeTablesTest, GdtHasLongModeCodeDataAndTss) {
    auto mem = GuestMemory::create(64 << 20);
    ASSERT_TRUE(write_long_mode_tables(mem));
    EXPECT_EQ(read_u64(mem, layout::kGdtAddr), 0u) << "null descriptor";
    Desc code = decode(read_u64(mem, layout::kGdtAddr + 8));
    EXPECT_TRUE(code.p);
    EXPECT_TRUE(code.s);
    EXPECT_TRUE(code.type & 0x8) << "executable";
    EXPECT_TRUE(code.l) << "64-bit code";
    EXPECT_FALSE(code.db) << "D must be 0 when L is 1";
    EXPECT_EQ(code.dpl, 0);
    Desc data = decode(read_u64(mem, layout::kGdtAddr + 16));
    EXPECT_TRUE(data.p);
    EXPECT_TRUE(data.s);
    EXPECT_FALSE(data.type & 0x8) << "data segment";
    EXPECT_TRUE(data.type & 0x2) << "writable";
    EXPECT_EQ(data.dpl, 0);
    Desc tss = decode(read_u64(mem, layout::kGdtAddr + 24));
    EXPECT_TRUE(tss.p);
    EXPECT_FALSE(tss.s) << "system descriptor";
    EXPECT_EQ(tss.type, 0xb) << "busy 64-bit TSS";
}

kvm_sregs reset_sregs() {
    kvm_sregs s{};
    s.cr0 = 0x60000010;  // architectural reset value: CD | NW | ET
    s.apic_base = 0xfee00900;
    s.interrupt_bitmap[0] = 0x1234;
    s.cr8 = 3;
    s.cr2 = 0xdead;
    return s;
}

TEST(LongModeSregsTest, ControlRegistersAndEfer) {
    kvm_sregs s = long_mode_sregs(reset_sregs());
    constexpr uint64_t kPe = 1, kPg = 1ull << 31, kPae = 1ull << 5;
    constexpr uint64_t kLme = 1ull << 8, kLma = 1ull << 10;
    EXPECT_EQ(s.cr0 & (kPe | kPg), kPe | kPg);
    EXPECT_TRUE(s.cr4 & kPae);
    EXPECT_EQ(s.efer & (kLme | kLma), kLme | kLma);
    EXPECT_EQ(s.cr3, layout::kPml4Addr);
    // Fields this code does not own keep their values.
    EXPECT_EQ(s.apic_base, 0xfee00900u);
    EXPECT_EQ(s.interrupt_bitmap[0], 0x1234u);
    EXPECT_EQ(s.cr8, 3u);
    EXPECT_EQ(s.cr2, 0xdeadu);
}

TEST(LongModeSregsTest, SegmentsSelectorsAndDescriptorTables) {
    kvm_sregs s = long_mode_sregs(reset_sregs());
    EXPECT_EQ(s.cs.selector, 0x08);
    EXPECT_EQ(s.cs.l, 1);
    EXPECT_EQ(s.cs.db, 0);
    EXPECT_EQ(s.cs.present, 1);
    EXPECT_EQ(s.cs.s, 1);
    EXPECT_TRUE(s.cs.type & 0x8);
    EXPECT_EQ(s.cs.dpl, 0);
    EXPECT_EQ(s.cs.base, 0u);
    for (const kvm_segment* d : {&s.ds, &s.es, &s.fs, &s.gs, &s.ss}) {
        EXPECT_EQ(d->selector, 0x10);
        EXPECT_EQ(d->present, 1);
        EXPECT_EQ(d->unusable, 0);
        EXPECT_EQ(d->l, 0);
        EXPECT_FALSE(d->type & 0x8);
        EXPECT_TRUE(d->type & 0x2) << "writable (SS must be)";
    }
    EXPECT_EQ(s.tr.selector, 0x18);
    EXPECT_EQ(s.tr.present, 1);
    EXPECT_EQ(s.tr.s, 0);
    EXPECT_EQ(s.tr.type, 0xb);
    EXPECT_EQ(s.gdt.base, layout::kGdtAddr);
    EXPECT_EQ(s.gdt.limit, 4 * 8 - 1);
    EXPECT_EQ(s.idt.limit, 7);
    EXPECT_GE(s.idt.base, s.gdt.base + s.gdt.limit + 1) << "IDT does not overlap the GDT";
}

// The hidden segment state in sregs must match what the guest would load from the GDT in
// memory (Linux reloads segments from its own GDT later, but until then they must agree).
TEST(LongModeSregsTest, SegmentCachesMatchGdtInMemory) {
    auto mem = GuestMemory::create(64 << 20);
    ASSERT_TRUE(write_long_mode_tables(mem));
    kvm_sregs s = long_mode_sregs(reset_sregs());
    for (const kvm_segment* seg : {&s.cs, &s.ds, &s.ss, &s.tr}) {
        ASSERT_LE(seg->selector + 7u, s.gdt.limit) << seg->selector;
        Desc d = decode(read_u64(mem, s.gdt.base + (seg->selector & ~7u)));
        SCOPED_TRACE(seg->selector);
        EXPECT_EQ(seg->type, d.type);
        EXPECT_EQ(seg->s, d.s);
        EXPECT_EQ(seg->dpl, d.dpl);
        EXPECT_EQ(seg->present, d.p);
        EXPECT_EQ(seg->l, d.l);
        EXPECT_EQ(seg->db, d.db);
        EXPECT_EQ(seg->g, d.g);
        EXPECT_EQ(seg->base, d.base);
        EXPECT_EQ(seg->limit, d.g ? (d.limit << 12) | 0xfff : d.limit);
    }
    // The IDT it points at is empty: no handlers until the kernel installs its own.
    EXPECT_EQ(read_u64(mem, s.idt.base), 0u);
}

TEST(BootMsrsTest, UniqueIndicesAndFastStrings) {
    auto msrs = boot_msrs();
    std::set<uint32_t> seen;
    for (const auto& m : msrs) EXPECT_TRUE(seen.insert(m.index).second) << std::hex << m.index;
    bool misc = false;
    for (const auto& m : msrs) {
        if (m.index == 0x1a0) misc = m.value & 1;  // IA32_MISC_ENABLE.FAST_STRING
    }
    EXPECT_TRUE(misc);
}

}  // namespace
}  // namespace vessel::vmm
