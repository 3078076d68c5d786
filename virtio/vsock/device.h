// virtio-vsock (virtio 1.2 section 5.10) as a virtio::Device, with Unix sockets on the host side
// (see unix_backend.h for the "CONNECT <port>\n" / "OK <port>\n" protocol). No vhost: the
// device model runs in the VMM, on its own I/O thread.
//
// Queues: rx (0), tx (1), event (2). Config: guest_cid (le64, read-only). Features: STREAM
// (a Linux 6.1 guest does not know the bit and acks none, which the spec says means stream),
// VERSION_1, INDIRECT_DESC, EVENT_IDX. No SEQPACKET.
//
// Threads (see virtio/device.h):
// - Construction (VMM set-up thread): binds and listens on uds_path (so host clients can
//   connect before the guest is up; they wait in the backlog) and creates the eventfds. Host
//   errors throw std::system_error.
// - vCPU threads, through the transport: activate() creates the Muxer and starts the I/O
//   thread; reset() stops it and drops every connection, closing all host sockets (the
//   listener stays); notify() writes the kick eventfd.
// - The I/O thread runs Muxer::run (muxer.h): TX packets, RX buffers, host sockets, timers.
//
// The event queue is never used: its only event, TRANSPORT_RESET, tells the guest that its
// connections are gone after a migration or snapshot restore. A restore will have to send it
// (and State::connections cannot be resurrected: host sockets do not survive a snapshot).
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "virtio/device.h"
#include "virtio/vsock/connection.h"
#include "virtio/vsock/muxer.h"
#include "virtio/vsock/unix_backend.h"
#include "vmm/fd.h"

namespace vessel::virtio::vsock {

struct VsockOptions {
    uint64_t guest_cid = 3;           // 3 .. 0xfffffffe; the VMM keeps it unique per running VM
    std::string uds_path;             // at most max_uds_path_length() bytes
    uint16_t queue_size = 256;        // every queue; a power of two
    uint32_t max_connections = 1024;  // connections plus pending host handshakes
    uint32_t buf_alloc = 256 << 10;   // per-connection guest -> host buffer (credit we give)
    std::chrono::milliseconds connect_timeout{2000};  // CONNECT line; REQUEST to RESPONSE
    std::chrono::milliseconds close_timeout{5000};    // flushing host-bound bytes at close
    // Host ports of host-initiated connections count up from here (>= 2^30). A restored guest
    // may still hold closing sockets of the ports its original used, counting up from 2^30,
    // and would take a new connection on such a port for the old one: restores start far
    // away (random_host_port_base()).
    uint32_t first_host_port = 1u << 30;
    // A jailed VMM: guest-initiated connections go through this broker socket (not owned;
    // it outlives the device), see broker_connect() in unix_backend.h.
    int connect_broker = -1;
    LogFn log;  // empty: stderr
};

// A random first host port in [2^30 + 2^24, 2^31): for devices of restored VMs.
uint32_t random_host_port_base();

class VsockDevice final : public Device {
  public:
    // Plain state for snapshots.
    struct State {
        uint64_t guest_cid = 0;
        std::string uds_path;
        std::vector<ConnectionState> connections;  // empty while not active
        bool operator==(const State&) const = default;
    };

    // Throws std::system_error: EINVAL for bad options, or the listener's set-up error.
    explicit VsockDevice(VsockOptions opts);
    ~VsockDevice() override;
    VsockDevice(const VsockDevice&) = delete;
    VsockDevice& operator=(const VsockDevice&) = delete;

    uint32_t device_type() const override { return device_id::kVsock; }
    uint64_t device_features() const override { return kFeatureStream | kRingFeatures; }
    std::vector<uint16_t> queue_max_sizes() const override {
        return {queue_size_, queue_size_, queue_size_};
    }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    bool activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                  uint64_t driver_features, Interrupt& irq) override;
    void reset() override;
    void notify(uint16_t queue) override;

    // The kick eventfd notify() writes; the VMM may bind the queues' ioeventfds straight to it.
    int notify_fd() const { return kick_.get(); }
    uint64_t guest_cid() const { return opts_.guest_cid; }
    const std::string& uds_path() const { return listener_.path(); }

    // Any thread.
    State state() const;
    // Snapshots: no packet reaches the guest and no chain is taken while held.
    void hold(bool on) override;
    VsockCounters counters() const;

  private:
    void run() noexcept;

    const VsockOptions opts_;
    const uint16_t queue_size_;
    UnixListener listener_;
    std::array<uint8_t, 8> config_;
    UniqueFd kick_, stop_;

    mutable std::mutex mu_;  // counters_ and the muxer's connections; held by the I/O thread
    VsockCounters counters_;
    std::unique_ptr<Muxer> muxer_;  // between activate() and reset()
    Interrupt* irq_ = nullptr;
    std::thread thread_;
};

}  // namespace vessel::virtio::vsock
