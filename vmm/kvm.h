// Thin RAII wrappers over the KVM API. Only vmm/ issues KVM ioctls.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu_setup.h"
#include "fd.h"
#include "guest_memory.h"
#include "vcpu_state.h"

namespace vessel::vmm {

class Kvm {
  public:
    // Opens the KVM device; throws std::system_error with an explanation when it is missing
    // or not accessible.
    explicit Kvm(const std::string& path = "/dev/kvm");

    int fd() const { return fd_.get(); }
    int check_extension(long cap) const;
    size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
    uint32_t max_vcpus() const;
    std::vector<kvm_cpuid_entry2> supported_cpuid() const;
    // KVM_GET_MSR_INDEX_LIST: every MSR KVM can save and restore (not all are readable on a
    // given vCPU; see Vcpu::readable_msrs).
    std::vector<uint32_t> msr_index_list() const;

  private:
    UniqueFd fd_;
    size_t vcpu_mmap_size_ = 0;
};

class Vm {
  public:
    explicit Vm(const Kvm& kvm);

    int fd() const { return fd_.get(); }
    // Registers every region of `mem` as a KVM memory slot; `log_dirty`: with KVM's dirty-page
    // log on (diff snapshots).
    void set_memory(const GuestMemory& mem, bool log_dirty = false);
    // The guest's writes since the last call, or-ed into `bitmap` (one bit per page of the
    // memory's backing file; see GuestMemory::take_dirty). KVM clears its log as it is read.
    void take_dirty_log(std::vector<uint64_t>& bitmap) const;
    // Pulses (edge) or sets (level) an IOAPIC/PIC input.
    void set_irq_line(uint32_t irq, bool level) const;
    void pulse_irq(uint32_t irq) const {
        set_irq_line(irq, true);
        set_irq_line(irq, false);
    }
    // A guest write of `len` bytes equal to `datamatch` at MMIO `addr` signals `event_fd`
    // inside KVM, without an exit to the VMM.
    void add_ioeventfd(uint64_t addr, uint32_t len, uint64_t datamatch, int event_fd) const;
    // Signalling `event_fd` raises (edge) interrupt line `gsi` inside KVM.
    void add_irqfd(int event_fd, uint32_t gsi) const;
    int check_extension(long cap) const;

    // Irqchip (PIC master, PIC slave, IOAPIC), PIT and kvmclock (vm_state.cc).
    VmState save_state() const;
    // Irqchip and PIT only; the clock goes last, through set_clock.
    void restore_state(const VmState& s) const;
    kvm_clock_data get_clock() const;
    void set_clock(const kvm_clock_data& c) const;

  private:
    UniqueFd fd_;
    uint32_t next_slot_ = 0;
    struct Slot {
        uint32_t slot;
        uint64_t first_page;  // in the backing file
        uint64_t pages;
    };
    std::vector<Slot> logged_;  // slots with the dirty log on
};

class Vcpu {
  public:
    Vcpu(const Kvm& kvm, const Vm& vm, uint32_t index);

    uint32_t index() const { return index_; }
    kvm_run* run_data() const { return run_.as<kvm_run>(); }
    // KVM_RUN; returns 0 or -errno (EINTR when kicked).
    int run() const;

    void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) const;
    void set_msrs(const std::vector<MsrValue>& msrs) const;
    kvm_sregs get_sregs() const;
    void set_sregs(const kvm_sregs& s) const;
    void set_regs(const kvm_regs& r) const;
    kvm_regs get_regs() const;
    void set_fpu(const kvm_fpu& f) const;
    // Wires LINT0 to ExtINT and LINT1 to NMI, as firmware does.
    void setup_lapic_lints() const;

    // The subset of `candidates` that KVM_GET_MSRS reads on this vCPU (vcpu_state.cc).
    std::vector<uint32_t> readable_msrs(const std::vector<uint32_t>& candidates) const;
    // Whole vCPU state; the vCPU must not be in KVM_RUN.
    VcpuState save_state(const std::vector<uint32_t>& msrs) const;
    // Applies a saved state in the order KVM needs: CPUID first (it defines what the MSRs
    // and XSAVE mean), LAPIC before events and the TSC deadline, MP state last.
    void restore_state(const VcpuState& s) const;

  private:
    uint32_t index_;
    size_t xsave_size_ = 0;  // 0: no KVM_CAP_XSAVE
    UniqueFd fd_;
    Mapping run_;
};

}  // namespace vessel::vmm
