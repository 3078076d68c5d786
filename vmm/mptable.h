// Intel MultiProcessor Specification 1.4 table: how a guest without ACPI finds its CPUs,
// the IOAPIC and the ISA interrupt routing.
#pragma once

#include <cstdint>
#include <vector>

namespace vessel::vmm {

inline constexpr uint64_t kMpTableAddr = 0xf0000;  // BIOS area, scanned by Linux for "_MP_"
inline constexpr uint32_t kMaxVcpus = 128;

// Floating pointer plus configuration table, to be written at `addr`.
// APIC ids are 0..ncpus-1; the IOAPIC gets id ncpus.
std::vector<uint8_t> build_mptable(uint32_t ncpus, uint64_t addr = kMpTableAddr);

}  // namespace vessel::vmm
