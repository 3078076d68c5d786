// Plain copies of everything KVM holds for one vCPU and for the VM, so a paused machine can
// be saved and rebuilt elsewhere. Filled and applied by Vcpu/Vm (vcpu_state.cc,
// vm_state.cc); serialised by snapshot/.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "cpu_setup.h"

namespace vessel::vmm {

struct VcpuState {
    std::vector<kvm_cpuid_entry2> cpuid;
    kvm_regs regs{};
    kvm_sregs sregs{};
    // KVM_GET_XSAVE(2) image (4096 bytes or KVM_CAP_XSAVE2's size); empty when the host has
    // no XSAVE support, in which case `fpu` carries the x87/SSE state.
    std::vector<uint8_t> xsave;
    kvm_fpu fpu{};
    bool has_xcrs = false;
    kvm_xcrs xcrs{};
    std::vector<MsrValue> msrs;
    kvm_lapic_state lapic{};
    kvm_vcpu_events events{};
    kvm_debugregs debugregs{};
    kvm_mp_state mp_state{};
    uint32_t tsc_khz = 0;  // 0: unknown
};

struct VmState {
    kvm_irqchip pic_master{};
    kvm_irqchip pic_slave{};
    kvm_irqchip ioapic{};
    kvm_pit_state2 pit{};
    kvm_clock_data clock{};
};

// MSRs whose value must be written after the LAPIC (writing the LAPIC resets its timer).
inline constexpr uint32_t kMsrTscDeadline = 0x6e0;

}  // namespace vessel::vmm
