#include "virtio/vsock/device.h"

#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "vmm/eventfd.h"
#include "vmm/seccomp.h"

namespace vessel::virtio::vsock {

namespace {

void drain(int efd) {
    eventfd_drain(efd);
}
void poke(int efd) {
    eventfd_poke(efd);
}

[[noreturn]] void invalid(const std::string& what) {
    throw std::system_error(EINVAL, std::generic_category(), "virtio-vsock: " + what);
}

const VsockOptions& checked(const VsockOptions& o) {
    // CIDs 0-2 are the hypervisor, local and host; 0xffffffff is VMADDR_CID_ANY.
    if (o.guest_cid < 3 || o.guest_cid >= 0xffffffffull)
        invalid("guest CID " + std::to_string(o.guest_cid) + " is not in 3..4294967294");
    if (o.queue_size == 0 || o.queue_size > Queue::kMaxSize || !std::has_single_bit(o.queue_size))
        invalid("queue size must be a power of two up to 32768");
    if (o.max_connections == 0) invalid("max_connections must be at least 1");
    if (o.buf_alloc == 0 || o.buf_alloc > (64u << 20))
        invalid("buf_alloc must be between 1 byte and 64 MiB");
    return o;
}

}  // namespace

VsockDevice::VsockDevice(VsockOptions opts)
    : opts_(checked(opts)),
      queue_size_(opts_.queue_size),
      listener_(opts_.uds_path),
      kick_(make_eventfd("creating the virtio-vsock kick eventfd")),
      stop_(make_eventfd("creating the virtio-vsock stop eventfd")) {
    static_assert(std::endian::native == std::endian::little);
    std::memcpy(config_.data(), &opts_.guest_cid, sizeof opts_.guest_cid);
    if (opts_.connect_broker >= 0) listener_.set_broker(opts_.connect_broker);
}

VsockDevice::~VsockDevice() {
    reset();
}

void VsockDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    read_config_bytes(config_, offset, data);
}

void VsockDevice::write_config(uint64_t, std::span<const uint8_t>) {}

bool VsockDevice::activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                           uint64_t driver_features, Interrupt& irq) {
    if (thread_.joinable()) return false;
    // The parser relies on VERSION_1: little-endian fields and any descriptor layout.
    if (!(driver_features & kFeatureVersion1)) return false;
    if (queues.size() != 3 || !queues[kRxQueue] || !queues[kTxQueue] ||
        !queues[kRxQueue]->ready() || !queues[kTxQueue]->ready())
        return false;
    MuxerOptions mo;
    mo.conn.guest_cid = opts_.guest_cid;
    mo.conn.buf_alloc = opts_.buf_alloc;
    mo.conn.connect_timeout = opts_.connect_timeout;
    mo.conn.close_timeout = opts_.close_timeout;
    mo.max_connections = opts_.max_connections;
    mo.first_host_port = opts_.first_host_port;
    mo.log = opts_.log;
    auto muxer = std::make_unique<Muxer>(mem, *queues[kRxQueue], *queues[kTxQueue], irq, listener_,
                                         std::move(mo), counters_, mu_);
    {
        std::lock_guard lock(mu_);
        muxer_ = std::move(muxer);
    }
    irq_ = &irq;
    drain(kick_.get());
    drain(stop_.get());
    thread_ = vmm::seccomp::spawn(vmm::seccomp::Role::VsockIo, [this] { run(); });
    return true;
}

void VsockDevice::reset() {
    if (!thread_.joinable()) return;
    poke(stop_.get());
    thread_.join();
    // Closes every host socket: the guest's connections are gone with its driver.
    std::unique_ptr<Muxer> gone;
    {
        std::lock_guard lock(mu_);
        gone = std::move(muxer_);
    }
    gone.reset();
    irq_ = nullptr;
}

void VsockDevice::notify(uint16_t) {
    poke(kick_.get());
}

void VsockDevice::run() noexcept {
    try {
        muxer_->run(stop_.get(), kick_.get());
    } catch (const std::exception& e) {
        const std::string line = std::string("virtio-vsock: I/O thread failed: ") + e.what();
        if (opts_.log)
            opts_.log(line);
        else
            std::fprintf(stderr, "vessel: %s\n", line.c_str());
        if (irq_) irq_->signal_needs_reset();
    }
}

VsockDevice::State VsockDevice::state() const {
    State s;
    s.guest_cid = opts_.guest_cid;
    s.uds_path = listener_.path();
    std::lock_guard lock(mu_);
    if (muxer_) s.connections = muxer_->connections();
    return s;
}

void VsockDevice::hold(bool on) {
    {
        std::lock_guard lock(mu_);  // the I/O thread holds it for each round
        if (muxer_) muxer_->set_held(on);
    }
    if (!on) poke(kick_.get());  // what arrived meanwhile is delivered now
}

VsockCounters VsockDevice::counters() const {
    std::lock_guard lock(mu_);
    return counters_;
}

uint32_t random_host_port_base() {
    uint32_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
        r = static_cast<uint32_t>(::getpid()) * 2654435761u;
    constexpr uint32_t kLow = (1u << 30) + (1u << 24), kHigh = 1u << 31;
    return kLow + r % (kHigh - kLow);
}

}  // namespace vessel::virtio::vsock
