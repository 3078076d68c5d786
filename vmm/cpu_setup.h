// Pure builders for the vCPU boot state: CPUID, 64-bit segments and identity page tables.
// No KVM ioctls here; vcpu.cc applies the results.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "guest_memory.h"

namespace vessel::vmm {

// Adapts KVM_GET_SUPPORTED_CPUID output for vCPU `index` of `count`: APIC ids, topology,
// the hypervisor bit.
std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(std::vector<kvm_cpuid_entry2> supported,
                                             uint32_t index, uint32_t count);

// Writes GDT, IDT and identity page tables for the first 1 GiB into guest memory.
// Returns false when guest memory is too small to hold them.
bool write_long_mode_tables(const GuestMemory& mem);

// Special registers for 64-bit entry with the tables above, starting from `base` (as read
// from KVM, so fields this code does not own keep their values).
kvm_sregs long_mode_sregs(kvm_sregs base);

struct MsrValue {
    uint32_t index;
    uint64_t value;
};
std::vector<MsrValue> boot_msrs();

}  // namespace vessel::vmm
