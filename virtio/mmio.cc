#include "virtio/mmio.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <system_error>

namespace vessel::virtio {

static_assert(std::endian::native == std::endian::little);

namespace {

// Register offsets (virtio 1.2 table 4.1).
enum Reg : uint64_t {
    kMagicValue = 0x000,
    kVersionReg = 0x004,
    kDeviceId = 0x008,
    kVendorIdReg = 0x00c,
    kDeviceFeatures = 0x010,
    kDeviceFeaturesSel = 0x014,
    kDriverFeatures = 0x020,
    kDriverFeaturesSel = 0x024,
    kQueueSel = 0x030,
    kQueueNumMax = 0x034,
    kQueueNum = 0x038,
    kQueueReady = 0x044,
    kQueueNotify = 0x050,
    kInterruptStatus = 0x060,
    kInterruptAck = 0x064,
    kStatus = 0x070,
    kQueueDescLow = 0x080,
    kQueueDescHigh = 0x084,
    kQueueDriverLow = 0x090,
    kQueueDriverHigh = 0x094,
    kQueueDeviceLow = 0x0a0,
    kQueueDeviceHigh = 0x0a4,
    kShmSel = 0x0ac,
    kShmLenLow = 0x0b0,
    kShmLenHigh = 0x0b4,
    kShmBaseLow = 0x0b8,
    kShmBaseHigh = 0x0bc,
    kQueueReset = 0x0c0,
    kConfigGeneration = 0x0fc,
};
static_assert(kQueueNotify == MmioTransport::kNotifyOffset);

std::string type_name(uint32_t type) {
    switch (type) {
        case device_id::kNet:
            return "net";
        case device_id::kBlock:
            return "blk";
        case device_id::kConsole:
            return "console";
        case device_id::kEntropy:
            return "rng";
        case device_id::kBalloon:
            return "balloon";
        case device_id::kVsock:
            return "vsock";
    }
    return "dev" + std::to_string(type);
}

uint64_t set_low(uint64_t v, uint32_t lo) {
    return (v & ~0xffffffffull) | lo;
}
uint64_t set_high(uint64_t v, uint32_t hi) {
    return (v & 0xffffffffull) | uint64_t{hi} << 32;
}

[[noreturn]] void throw_einval(const std::string& what) {
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), what);
}

}  // namespace

MmioTransport::MmioTransport(const vmm::GuestMemory& mem, std::shared_ptr<Device> device,
                             Trigger trigger)
    : mem_(mem),
      device_(device ? std::move(device) : throw std::invalid_argument("virtio-mmio: no device")),
      trigger_(std::move(trigger)),
      device_type_(device_->device_type()),
      // This transport is modern-only: VERSION_1 is always offered (and required).
      offered_features_(device_->device_features() | kFeatureVersion1) {
    const auto sizes = device_->queue_max_sizes();
    const std::string name = type_name(device_type_);
    for (size_t i = 0; i < sizes.size(); ++i)
        queues_.push_back(std::make_unique<Queue>(sizes[i], name + " q" + std::to_string(i)));
    for (auto& q : queues_) queue_ptrs_.push_back(q.get());
}

MmioTransport::~MmioTransport() {
    // The device may still be using our queues and Interrupt: stop it before they go away.
    std::lock_guard lock(mu_);
    if (active_.exchange(false)) device_->reset();
}

void MmioTransport::bad_access(const char* what, uint64_t offset, size_t len) {
    bad_accesses_.fetch_add(1, std::memory_order_relaxed);
    log_guest_error("mmio %s: %s at offset 0x%llx (%zu bytes)", type_name(device_type_).c_str(),
                    what, static_cast<unsigned long long>(offset), len);
}

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data) {
    if (offset >= kConfigOffset) {
        // The device bounds-checks its config space; byte, word and dword accesses are legal.
        if (offset < kWindowSize) {
            device_->read_config(offset - kConfigOffset, data);
        } else {
            std::fill(data.begin(), data.end(), 0);
        }
        return;
    }
    if (data.size() != 4 || offset % 4 != 0) {
        std::fill(data.begin(), data.end(), 0);
        bad_access("non-32-bit register read", offset, data.size());
        return;
    }
    uint32_t v;
    {
        std::lock_guard lock(mu_);
        v = read_reg(offset);
    }
    std::memcpy(data.data(), &v, 4);
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data) {
    if (offset >= kConfigOffset) {
        if (offset < kWindowSize) device_->write_config(offset - kConfigOffset, data);
        return;
    }
    if (data.size() != 4 || offset % 4 != 0) {
        bad_access("non-32-bit register write", offset, data.size());
        return;
    }
    uint32_t v;
    std::memcpy(&v, data.data(), 4);
    if (offset == kQueueNotify) {
        notify_queue(v);
        return;
    }
    std::lock_guard lock(mu_);
    write_reg(offset, v);
}

void MmioTransport::notify_queue(uint32_t queue) {
    std::lock_guard lock(mu_);
    if (!active_.load(std::memory_order_relaxed)) return;
    if (queue >= queues_.size()) {
        bad_access("notify for a queue that does not exist", kQueueNotify, 4);
        return;
    }
    device_->notify(static_cast<uint16_t>(queue));
}

Queue* MmioTransport::selected_queue() {
    return queue_sel_ < queues_.size() ? queues_[queue_sel_].get() : nullptr;
}

// Queues are configured after FEATURES_OK and before DRIVER_OK (virtio 1.2 section 3.1.1);
// once the device runs, its I/O thread owns them, so later writes are dropped.
bool MmioTransport::queue_config_writable() {
    return (status_ & status::kFeaturesOk) && !(status_ & status::kDriverOk);
}

uint32_t MmioTransport::read_reg(uint64_t offset) {
    Queue* q = selected_queue();
    switch (offset) {
        case kMagicValue:
            return kMagic;
        case kVersionReg:
            return kVersion;
        case kDeviceId:
            return device_type_;
        case kVendorIdReg:
            return kVendorId;
        case kDeviceFeatures:
            if (device_features_sel_ == 0) return static_cast<uint32_t>(offered_features_);
            if (device_features_sel_ == 1) return static_cast<uint32_t>(offered_features_ >> 32);
            return 0;
        case kQueueNumMax:
            return q ? q->max_size() : 0;
        case kQueueReady:
            return q && q->ready() ? 1 : 0;
        case kInterruptStatus:
            return irq_.status.load(std::memory_order_acquire);
        case kStatus:
            return status_ | (needs_reset_.load() ? status::kDeviceNeedsReset : 0);
        // No shared memory regions: a length of all-ones means "no such region".
        case kShmLenLow:
        case kShmLenHigh:
        case kShmBaseLow:
        case kShmBaseHigh:
            return 0xffffffff;
        case kConfigGeneration:
            return config_generation_.load(std::memory_order_acquire);
        default:
            return 0;  // unknown or write-only
    }
}

void MmioTransport::write_reg(uint64_t offset, uint32_t v) {
    Queue* q = selected_queue();
    const bool qw = q && queue_config_writable() && !q->ready();
    switch (offset) {
        case kDeviceFeaturesSel:
            device_features_sel_ = v;
            return;
        case kDriverFeaturesSel:
            driver_features_sel_ = v;
            return;
        case kDriverFeatures:
            // Features are fixed once FEATURES_OK is set.
            if (!(status_ & status::kDriver) || (status_ & status::kFeaturesOk)) return;
            if (driver_features_sel_ == 0) driver_features_ = set_low(driver_features_, v);
            if (driver_features_sel_ == 1) driver_features_ = set_high(driver_features_, v);
            return;
        case kQueueSel:
            queue_sel_ = v;
            return;
        case kQueueNum:
            // An invalid size is kept (as 0 if it does not fit) and fails the DRIVER_OK check.
            if (qw) q->set_size(v <= 0xffff ? static_cast<uint16_t>(v) : 0);
            return;
        case kQueueReady:
            if (q && queue_config_writable()) q->set_ready(v == 1);
            return;
        case kQueueDescLow:
            if (qw) q->set_desc_addr(set_low(q->desc_addr(), v));
            return;
        case kQueueDescHigh:
            if (qw) q->set_desc_addr(set_high(q->desc_addr(), v));
            return;
        case kQueueDriverLow:
            if (qw) q->set_avail_addr(set_low(q->avail_addr(), v));
            return;
        case kQueueDriverHigh:
            if (qw) q->set_avail_addr(set_high(q->avail_addr(), v));
            return;
        case kQueueDeviceLow:
            if (qw) q->set_used_addr(set_low(q->used_addr(), v));
            return;
        case kQueueDeviceHigh:
            if (qw) q->set_used_addr(set_high(q->used_addr(), v));
            return;
        case kInterruptAck:
            irq_.status.fetch_and(~v, std::memory_order_acq_rel);
            return;
        case kStatus:
            write_status(v);
            return;
        case kShmSel:
            return;  // no regions to select
        case kQueueReset:
            return;  // VIRTIO_F_RING_RESET is not offered
        default:
            bad_access("write to a read-only or unknown register", offset, 4);
            return;
    }
}

void MmioTransport::write_status(uint32_t v) {
    if (v == 0) {
        reset_locked();
        return;
    }
    v &= ~status::kDeviceNeedsReset;  // the device's bit; the driver writes it back as read
    if (status_ & ~v) {
        // Only a reset clears status bits (virtio 1.2 section 2.1.2).
        bad_access("status write clearing bits", kStatus, 4);
        return;
    }
    uint32_t added = v & ~status_;
    if (added & status::kFeaturesOk) {
        const uint32_t need = status::kAcknowledge | status::kDriver;
        const bool order_ok = ((status_ | added) & need) == need;
        const bool subset = (driver_features_ & ~offered_features_) == 0;
        const bool modern = driver_features_ & kFeatureVersion1;
        if (!order_ok || !subset || !modern) {
            // FEATURES_OK stays clear; the driver reads it back and gives up.
            log_guest_error("mmio %s: refusing features 0x%llx (offered 0x%llx)%s",
                            type_name(device_type_).c_str(),
                            static_cast<unsigned long long>(driver_features_),
                            static_cast<unsigned long long>(offered_features_),
                            order_ok ? "" : ": ACKNOWLEDGE|DRIVER not set");
            added &= ~status::kFeaturesOk;
        }
    }
    const bool want_driver_ok = added & status::kDriverOk;
    added &= ~status::kDriverOk;
    status_ |= added;
    if (want_driver_ok) {
        if (!(status_ & status::kFeaturesOk) || needs_reset_.load()) {
            bad_access("DRIVER_OK without FEATURES_OK, or after DEVICE_NEEDS_RESET", kStatus, 4);
        } else if (try_activate()) {
            status_ |= status::kDriverOk;
        }
    }
}

bool MmioTransport::try_activate() {
    auto fail = [this](const std::string& why) {
        log_guest_error("mmio %s: activation failed: %s", type_name(device_type_).c_str(),
                        why.c_str());
        active_.store(false, std::memory_order_release);
        needs_reset_.store(true);
        irq_.status.fetch_or(kIntConfig, std::memory_order_acq_rel);
        if (trigger_) trigger_();
        return false;
    };
    for (size_t i = 0; i < queues_.size(); ++i) {
        Queue& q = *queues_[i];
        if (q.ready() && !q.is_valid(mem_))
            return fail("queue " + std::to_string(i) + " has a bad size, alignment or address");
        q.set_features(driver_features_);
    }
    // Active before the call: the device may signal from inside activate().
    active_.store(true, std::memory_order_release);
    try {
        if (device_->activate(mem_, queue_ptrs_, driver_features_, irq_)) return true;
        return fail("device refused");
    } catch (const std::exception& e) {
        return fail(e.what());
    } catch (...) {
        return fail("unknown exception");
    }
}

void MmioTransport::reset_locked() {
    // Drop the device's late signals, then wait for it to stop (Device::reset contract), and
    // only then clear InterruptStatus so nothing it raised survives the reset.
    if (active_.exchange(false, std::memory_order_acq_rel)) device_->reset();
    status_ = 0;
    needs_reset_.store(false);
    device_features_sel_ = driver_features_sel_ = 0;
    driver_features_ = 0;
    queue_sel_ = 0;
    for (auto& q : queues_) q->reset();
    irq_.status.store(0, std::memory_order_release);
}

MmioTransport::State MmioTransport::state() const {
    std::lock_guard lock(mu_);
    State s;
    s.status = status_ | (needs_reset_.load() ? status::kDeviceNeedsReset : 0);
    s.device_features_sel = device_features_sel_;
    s.driver_features_sel = driver_features_sel_;
    s.driver_features = driver_features_;
    s.queue_sel = queue_sel_;
    s.interrupt_status = irq_.status.load();
    s.config_generation = config_generation_.load();
    for (const auto& q : queues_) s.queues.push_back(q->state());
    return s;
}

void MmioTransport::restore(const State& s) {
    std::lock_guard lock(mu_);
    if (s.queues.size() != queues_.size())
        throw_einval("restoring virtio-mmio " + type_name(device_type_) + ": " +
                     std::to_string(s.queues.size()) + " queues, device has " +
                     std::to_string(queues_.size()));
    for (size_t i = 0; i < queues_.size(); ++i)
        if (s.queues[i].max_size != queues_[i]->max_size() ||
            s.queues[i].size > queues_[i]->max_size())
            throw_einval("restoring virtio-mmio " + type_name(device_type_) + ": queue " +
                         std::to_string(i) + " size does not fit");
    reset_locked();
    for (size_t i = 0; i < queues_.size(); ++i) queues_[i]->restore(s.queues[i]);
    status_ = s.status & ~(status::kDeviceNeedsReset | status::kDriverOk);
    needs_reset_.store(s.status & status::kDeviceNeedsReset);
    device_features_sel_ = s.device_features_sel;
    driver_features_sel_ = s.driver_features_sel;
    driver_features_ = s.driver_features;
    queue_sel_ = s.queue_sel;
    config_generation_.store(s.config_generation);
    irq_.status.store(s.interrupt_status);
    if (s.status & status::kDriverOk) {
        // Restored queue state already carries the ring features; activation re-derives the
        // same ones from driver_features.
        const bool nr = needs_reset_.load();
        if (!try_activate())
            throw_einval("restoring virtio-mmio " + type_name(device_type_) +
                         ": device did not activate");
        status_ |= status::kDriverOk;
        needs_reset_.store(nr);
    }
}

void MmioTransport::Irq::signal_used() {
    if (!t_.active_.load(std::memory_order_acquire)) return;
    status.fetch_or(kIntUsedRing, std::memory_order_acq_rel);
    if (t_.trigger_) t_.trigger_();
}

void MmioTransport::Irq::signal_config() {
    if (!t_.active_.load(std::memory_order_acquire)) return;
    t_.config_generation_.fetch_add(1, std::memory_order_acq_rel);
    status.fetch_or(kIntConfig, std::memory_order_acq_rel);
    if (t_.trigger_) t_.trigger_();
}

void MmioTransport::Irq::signal_needs_reset() {
    if (!t_.active_.load(std::memory_order_acquire)) return;
    t_.needs_reset_.store(true);
    status.fetch_or(kIntConfig, std::memory_order_acq_rel);
    if (t_.trigger_) t_.trigger_();
}

}  // namespace vessel::virtio
