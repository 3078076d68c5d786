// Puts a virtio device on a machine: the MMIO transport in the next device window, its
// interrupt on a KVM irqfd, and one KVM ioeventfd per queue, read by the device I/O thread,
// so that neither notifications nor interrupts need a VM exit to the VMM.
#pragma once

#include <memory>

#include "virtio/device.h"
#include "virtio/mmio.h"
#include "vmm/machine.h"

namespace vessel::virtio {

std::shared_ptr<MmioTransport> attach_mmio(vmm::Machine& m, std::shared_ptr<Device> dev);

}  // namespace vessel::virtio
