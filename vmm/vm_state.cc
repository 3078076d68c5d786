// Saving and restoring the VM-wide KVM state: in-kernel PIC/IOAPIC, PIT and kvmclock.
#include "ioctl.h"
#include "kvm.h"

namespace vessel::vmm {
namespace {

kvm_irqchip get_chip(int fd, uint32_t id) {
    kvm_irqchip c{};
    c.chip_id = id;
    if (xioctl(fd, KVM_GET_IRQCHIP, &c) < 0)
        throw_errno("KVM_GET_IRQCHIP (chip " + std::to_string(id) + ")");
    return c;
}

void set_chip(int fd, const kvm_irqchip& c, uint32_t id) {
    kvm_irqchip copy = c;
    copy.chip_id = id;  // never trust the saved id to pick the chip
    if (xioctl(fd, KVM_SET_IRQCHIP, &copy) < 0)
        throw_errno("KVM_SET_IRQCHIP (chip " + std::to_string(id) + ")");
}

}  // namespace

VmState Vm::save_state() const {
    VmState s;
    const int fd = fd_.get();
    s.pic_master = get_chip(fd, KVM_IRQCHIP_PIC_MASTER);
    s.pic_slave = get_chip(fd, KVM_IRQCHIP_PIC_SLAVE);
    s.ioapic = get_chip(fd, KVM_IRQCHIP_IOAPIC);
    if (xioctl(fd, KVM_GET_PIT2, &s.pit) < 0) throw_errno("KVM_GET_PIT2");
    s.clock = get_clock();
    return s;
}

void Vm::restore_state(const VmState& s) const {
    const int fd = fd_.get();
    set_chip(fd, s.pic_master, KVM_IRQCHIP_PIC_MASTER);
    set_chip(fd, s.pic_slave, KVM_IRQCHIP_PIC_SLAVE);
    set_chip(fd, s.ioapic, KVM_IRQCHIP_IOAPIC);
    if (xioctl(fd, KVM_SET_PIT2, &s.pit) < 0) throw_errno("KVM_SET_PIT2");
}

kvm_clock_data Vm::get_clock() const {
    kvm_clock_data c{};
    if (xioctl(fd_.get(), KVM_GET_CLOCK, &c) < 0) throw_errno("KVM_GET_CLOCK");
    return c;
}

void Vm::set_clock(const kvm_clock_data& saved) const {
    // Only the clock value: KVM_CLOCK_REALTIME would advance it by the host time that passed
    // since the save, and the guest is meant to resume where it stopped.
    kvm_clock_data c{};
    c.clock = saved.clock;
    if (xioctl(fd_.get(), KVM_SET_CLOCK, &c) < 0) throw_errno("KVM_SET_CLOCK");
}

}  // namespace vessel::vmm
