// The interface between a virtio device model (blk, net, vsock, ...) and its transport.
//
// Who calls what (see mmio.h for the transport's side):
// - vCPU threads, through the transport, with the transport's lock held: activate(), reset(),
//   notify() (also from the thread that reads a queue's ioeventfd, via notify_queue()).
//   These must not call back into the transport's register interface, and reset() must not
//   wait for a thread that might be blocked on the transport (device threads never need it:
//   the Interrupt methods are lock-free).
// - vCPU threads, without the transport's lock: read_config(), write_config(). Devices whose
//   config changes at run time lock it themselves.
// - The device's own I/O thread, between activate() and the end of reset(): the queues and the
//   Interrupt. After reset() returns the device must no longer touch either.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "virtio/queue.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio {

// Device IDs (virtio 1.2 section 5).
namespace device_id {
inline constexpr uint32_t kNet = 1;
inline constexpr uint32_t kBlock = 2;
inline constexpr uint32_t kConsole = 3;
inline constexpr uint32_t kEntropy = 4;
inline constexpr uint32_t kBalloon = 5;
inline constexpr uint32_t kVsock = 19;
}  // namespace device_id

// Transport-level feature bits (ring ones are in queue.h).
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;  // VIRTIO_F_VERSION_1
// What the queue implementation supports; devices usually offer these plus their own bits.
inline constexpr uint64_t kRingFeatures = kFeatureIndirectDesc | kFeatureEventIdx;

// Device status bits (virtio 1.2 section 2.1).
namespace status {
inline constexpr uint32_t kAcknowledge = 1;
inline constexpr uint32_t kDriver = 2;
inline constexpr uint32_t kDriverOk = 4;
inline constexpr uint32_t kFeaturesOk = 8;
inline constexpr uint32_t kDeviceNeedsReset = 64;
inline constexpr uint32_t kFailed = 128;
}  // namespace status

// Raised by the device, implemented by the transport. Lock-free; callable from any thread while
// the device is active (between activate() and reset()); calls at other times are dropped.
class Interrupt {
  public:
    virtual ~Interrupt() = default;
    // Used-buffer notification. Call it after add_used() when Queue::needs_interrupt() says so.
    virtual void signal_used() = 0;
    // Configuration change notification: call it after updating the config space (it also
    // advances ConfigGeneration).
    virtual void signal_config() = 0;
    // The device cannot go on (e.g. a broken queue): sets DEVICE_NEEDS_RESET and raises a
    // configuration change interrupt. The device stays active until the driver resets it.
    virtual void signal_needs_reset() = 0;
};

class Device {
  public:
    virtual ~Device() = default;

    // Read once, when the transport is created.
    virtual uint32_t device_type() const = 0;
    // Feature bits offered (device-specific bits, plus kRingFeatures if wanted). The transport
    // adds VIRTIO_F_VERSION_1 itself.
    virtual uint64_t device_features() const = 0;
    // One entry per queue: its maximum size, a power of two <= Queue::kMaxSize.
    virtual std::vector<uint16_t> queue_max_sizes() const = 0;

    // Device-specific configuration space (guest-controlled offset and length: the device
    // bounds-checks; read_config_bytes/write_config_bytes below do it for a byte image).
    // Reads outside the space return zeros; writes outside it are ignored. Never throw.
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;

    // DRIVER_OK: start serving. `queues` holds every queue (check ready() on the ones you
    // need); ready ones have passed Queue::is_valid and carry the negotiated ring features.
    // `mem` and `irq` outlive the activation. Buffers may already be available (notifications
    // before DRIVER_OK are dropped), so look at the queues once after starting. Return false
    // (or throw, e.g. std::system_error for a host failure) to refuse: the transport then sets
    // DEVICE_NEEDS_RESET.
    virtual bool activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                          uint64_t driver_features, Interrupt& irq) = 0;
    // Driver wrote 0 to Status while the device was active: stop all queue processing before
    // returning and drop every reference to the queues and the Interrupt. Never throws.
    virtual void reset() = 0;
    // The driver notified `queue` (only while active; index already range-checked). Usually
    // wakes the I/O thread. Never throws.
    virtual void notify(uint16_t queue) = 0;
    // Snapshots, with the vCPUs paused: while held, the device starts no new guest request
    // and writes nothing the guest did not ask for (e.g. received frames) into guest memory;
    // requests already started still complete. hold(true) returns once that is so. Devices
    // that only answer the guest's requests need nothing. Any thread but the device's own.
    virtual void hold(bool on) { (void)on; }
};

// Config-space helpers for devices that keep their config as a byte image.
inline void read_config_bytes(std::span<const uint8_t> config, uint64_t offset,
                              std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);
    if (offset >= config.size()) return;
    const size_t n = std::min<uint64_t>(data.size(), config.size() - offset);
    if (n) std::memcpy(data.data(), config.data() + offset, n);
}
// Writes only if the whole access lies inside the image; returns whether it did.
inline bool write_config_bytes(std::span<uint8_t> config, uint64_t offset,
                               std::span<const uint8_t> data) {
    if (offset > config.size() || data.size() > config.size() - offset) return false;
    if (!data.empty()) std::memcpy(config.data() + offset, data.data(), data.size());
    return true;
}

}  // namespace vessel::virtio
