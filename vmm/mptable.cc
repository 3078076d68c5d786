#include "mptable.h"

#include <cstring>
#include <stdexcept>

#include "layout.h"

namespace vessel::vmm {
namespace {

constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoapicVersion = 0x11;

void put8(std::vector<uint8_t>& v, uint8_t x) {
    v.push_back(x);
}
void put16(std::vector<uint8_t>& v, uint16_t x) {
    for (int i = 0; i < 2; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void put32(std::vector<uint8_t>& v, uint32_t x) {
    for (int i = 0; i < 4; ++i) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void put_str(std::vector<uint8_t>& v, const char* s, size_t n) {
    for (size_t i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>(s[i]));
}
uint8_t checksum(const uint8_t* p, size_t n) {
    uint8_t sum = 0;
    for (size_t i = 0; i < n; ++i) sum = static_cast<uint8_t>(sum + p[i]);
    return static_cast<uint8_t>(-sum);
}

}  // namespace

std::vector<uint8_t> build_mptable(uint32_t ncpus, uint64_t addr) {
    if (ncpus == 0 || ncpus > kMaxVcpus) throw std::invalid_argument("mptable: bad vCPU count");
    const uint8_t ioapic_id = static_cast<uint8_t>(ncpus);
    std::vector<uint8_t> t;

    // Floating pointer structure (16 bytes); the config table follows it directly.
    put_str(t, "_MP_", 4);
    put32(t, static_cast<uint32_t>(addr + 16));
    put8(t, 1);                              // length in 16-byte units
    put8(t, 4);                              // spec revision 1.4
    put8(t, 0);                              // checksum, below
    for (int i = 0; i < 5; ++i) put8(t, 0);  // feature bytes: 0 = config table present
    t[10] = checksum(t.data(), 16);

    const size_t cfg = t.size();
    put_str(t, "PCMP", 4);
    put16(t, 0);  // base table length, below
    put8(t, 4);
    put8(t, 0);  // checksum, below
    put_str(t, "VESSEL  ", 8);
    put_str(t, "MICROVM     ", 12);
    put32(t, 0);  // OEM table pointer
    put16(t, 0);  // OEM table size
    put16(t, 0);  // entry count, below
    put32(t, static_cast<uint32_t>(layout::kLapicAddr));
    put16(t, 0);  // extended table length
    put8(t, 0);   // extended checksum
    put8(t, 0);
    uint16_t entries = 0;

    for (uint32_t cpu = 0; cpu < ncpus; ++cpu, ++entries) {
        put8(t, 0);  // processor
        put8(t, static_cast<uint8_t>(cpu));
        put8(t, kApicVersion);
        put8(t, cpu == 0 ? 0x3 : 0x1);  // enabled, BSP
        put32(t, 0x600);                // signature: family 6
        put32(t, 0x201);                // features: FPU, APIC
        put32(t, 0);
        put32(t, 0);
    }
    put8(t, 1);  // bus
    put8(t, 0);
    put_str(t, "ISA   ", 6);
    ++entries;
    put8(t, 2);  // IOAPIC
    put8(t, ioapic_id);
    put8(t, kIoapicVersion);
    put8(t, 1);  // enabled
    put32(t, static_cast<uint32_t>(layout::kIoapicAddr));
    ++entries;
    // Identity-route every IOAPIC pin; virtio-mmio devices use pins above the ISA range.
    for (uint32_t irq = 0; irq < layout::kIoapicPins; ++irq, ++entries) {
        put8(t, 3);   // I/O interrupt
        put8(t, 0);   // INT
        put16(t, 0);  // conforming polarity and trigger
        put8(t, 0);   // source bus: ISA
        put8(t, static_cast<uint8_t>(irq));
        put8(t, ioapic_id);
        put8(t, static_cast<uint8_t>(irq));
    }
    for (uint8_t lint = 0; lint < 2; ++lint, ++entries) {
        put8(t, 4);                  // local interrupt
        put8(t, lint == 0 ? 3 : 1);  // ExtINT on LINT0, NMI on LINT1
        put16(t, 0);
        put8(t, 0);
        put8(t, 0);
        put8(t, 0xff);  // all local APICs
        put8(t, lint);
    }

    const size_t len = t.size() - cfg;
    t[cfg + 4] = static_cast<uint8_t>(len);
    t[cfg + 5] = static_cast<uint8_t>(len >> 8);
    t[cfg + 34] = static_cast<uint8_t>(entries);
    t[cfg + 35] = static_cast<uint8_t>(entries >> 8);
    t[cfg + 7] = checksum(t.data() + cfg, len);
    return t;
}

}  // namespace vessel::vmm
