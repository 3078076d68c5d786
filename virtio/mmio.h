// virtio-mmio transport, version 2 (modern only; virtio 1.2 section 4.2), as a 4 KiB bus device.
//
// Threads and locking:
// - read()/write() run on vCPU threads. Register state (status, feature selection, queue
//   configuration) is guarded by one mutex; Device::activate/reset/notify are called with it
//   held, config-space accesses (offset >= 0x100) without it.
// - notify_queue() is the ioeventfd path: the VMM registers a KVM ioeventfd on
//   base + kNotifyOffset with datamatch = queue index (4-byte writes), and whichever thread polls
//   that eventfd calls notify_queue(index) on wake-up. It takes the same mutex, so a
//   notification never reaches a device that is not active.
// - The Interrupt handed to the device is lock-free (atomic InterruptStatus): it sets the bit
//   and calls the VMM's trigger callback, normally a write to a KVM irqfd bound to the device's
//   IOAPIC pin (edge-triggered: the trigger runs on every signal, not only when InterruptStatus
//   rises). It may run on any thread, concurrently, and must not block.
// - state()/restore() are for snapshots: call them with the vCPUs and the device paused.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "virtio/device.h"
#include "virtio/queue.h"
#include "vmm/bus.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio {

class MmioTransport : public vmm::BusDevice {
  public:
    static constexpr uint64_t kWindowSize = 0x1000;
    static constexpr uint64_t kNotifyOffset = 0x50;  // QueueNotify
    static constexpr uint64_t kConfigOffset = 0x100;
    static constexpr uint32_t kMagic = 0x74726976;  // "virt"
    static constexpr uint32_t kVersion = 2;
    static constexpr uint32_t kVendorId = 0x4c535356;  // "VSSL", little-endian

    // InterruptStatus bits.
    static constexpr uint32_t kIntUsedRing = 1;
    static constexpr uint32_t kIntConfig = 2;

    // Plain register state for snapshots. A status with DRIVER_OK means "device active".
    struct State {
        uint32_t status = 0;  // includes DEVICE_NEEDS_RESET
        uint32_t device_features_sel = 0;
        uint32_t driver_features_sel = 0;
        uint64_t driver_features = 0;
        uint32_t queue_sel = 0;
        uint32_t interrupt_status = 0;
        uint32_t config_generation = 0;
        std::vector<Queue::State> queues;
        bool operator==(const State&) const = default;
    };

    using Trigger = std::function<void()>;

    // `mem` must outlive the transport. Throws std::invalid_argument if the device reports an
    // invalid queue size (a programming error, not guest input).
    MmioTransport(const vmm::GuestMemory& mem, std::shared_ptr<Device> device, Trigger trigger);
    ~MmioTransport() override;

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Offset of QueueNotify inside the window, for KVM_IOEVENTFD (datamatch = queue index).
    static constexpr uint64_t notify_address_offset() { return kNotifyOffset; }
    // A driver notification for `queue` (from QueueNotify or an ioeventfd wake-up). Ignored
    // unless the device is active and the index valid.
    void notify_queue(uint32_t queue);

    Device& device() const { return *device_; }
    size_t num_queues() const { return queues_.size(); }
    bool active() const { return active_.load(std::memory_order_acquire); }
    uint32_t interrupt_status() const { return irq_.status.load(std::memory_order_acquire); }
    // Malformed register accesses (wrong size, misaligned, read-only) since creation.
    uint64_t bad_access_count() const { return bad_accesses_.load(std::memory_order_relaxed); }

    State state() const;
    // Sets the used-buffer bit and raises the interrupt (if active). After a snapshot
    // restore: an interrupt that was in flight at the save is not lost; drivers treat a
    // spurious one as a no-op.
    void raise_used_interrupt() { irq_.signal_used(); }
    // A configuration change interrupt (if active): after a restore that attached a device
    // whose configuration differs from the saved one (warm start: another disk in a slot),
    // the driver reads it again.
    void raise_config_interrupt() { irq_.signal_config(); }
    // Replaces the register and queue state. If the state is active, activates the device
    // (restore the device's own state first). Throws std::system_error (EINVAL) if the state
    // does not fit this device or the device refuses to activate.
    void restore(const State& s);

  private:
    class Irq : public Interrupt {
      public:
        explicit Irq(MmioTransport& t) : t_(t) {}
        void signal_used() override;
        void signal_config() override;
        void signal_needs_reset() override;

        std::atomic<uint32_t> status{0};  // InterruptStatus

      private:
        MmioTransport& t_;
    };

    uint32_t read_reg(uint64_t offset);           // mu_ held
    void write_reg(uint64_t offset, uint32_t v);  // mu_ held
    void write_status(uint32_t v);                // mu_ held
    bool try_activate();                          // mu_ held
    void reset_locked();                          // mu_ held
    Queue* selected_queue();                      // mu_ held; nullptr if QueueSel is out of range
    bool queue_config_writable();                 // mu_ held
    void bad_access(const char* what, uint64_t offset, size_t len);

    const vmm::GuestMemory& mem_;
    const std::shared_ptr<Device> device_;
    const Trigger trigger_;
    const uint32_t device_type_;
    const uint64_t offered_features_;

    mutable std::mutex mu_;
    uint32_t status_ = 0;  // without DEVICE_NEEDS_RESET, which lives in needs_reset_
    uint32_t device_features_sel_ = 0;
    uint32_t driver_features_sel_ = 0;
    uint64_t driver_features_ = 0;
    uint32_t queue_sel_ = 0;
    std::vector<std::unique_ptr<Queue>> queues_;
    std::vector<Queue*> queue_ptrs_;

    std::atomic<bool> active_{false};
    std::atomic<bool> needs_reset_{false};
    std::atomic<uint32_t> config_generation_{0};
    std::atomic<uint64_t> bad_accesses_{0};
    Irq irq_{*this};
};

}  // namespace vessel::virtio
