#include "virtio/attach.h"

#include <unistd.h>

#include <vector>

#include "vmm/eventfd.h"
#include "vmm/fd.h"

namespace vessel::virtio {
namespace {

// Owns the eventfds of one attached device for the machine's lifetime.
struct Wiring {
    UniqueFd irq;
    std::vector<UniqueFd> notify;
};

}  // namespace

std::shared_ptr<MmioTransport> attach_mmio(vmm::Machine& m, std::shared_ptr<Device> dev) {
    auto w = std::make_shared<Wiring>();
    w->irq = make_eventfd("creating eventfd for a virtio interrupt");
    const int irq_fd = w->irq.get();
    auto transport = std::make_shared<MmioTransport>(m.memory(), std::move(dev), [irq_fd] {
        uint64_t one = 1;
        // Fails only when the counter is saturated, and then the interrupt is pending anyway.
        [[maybe_unused]] ssize_t n = ::write(irq_fd, &one, sizeof one);
    });
    vmm::MmioSlot slot = m.add_virtio_mmio_device(transport);
    m.vm().add_irqfd(irq_fd, slot.irq);
    for (uint32_t q = 0; q < transport->num_queues(); ++q) {
        UniqueFd efd = make_eventfd("creating eventfd for a virtio queue notification");
        m.vm().add_ioeventfd(slot.base + MmioTransport::notify_address_offset(), 4, q, efd.get());
        const int fd = efd.get();
        std::weak_ptr<MmioTransport> weak = transport;
        m.io_loop().add(fd, [fd, q, weak](uint32_t) {
            uint64_t v;
            if (::read(fd, &v, sizeof v) != sizeof v) return;
            if (auto t = weak.lock()) t->notify_queue(q);
        });
        w->notify.push_back(std::move(efd));
    }
    m.keep_alive(w);
    m.keep_alive(transport);
    return transport;
}

}  // namespace vessel::virtio
