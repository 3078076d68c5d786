// virtio-net as a virtio::Device: queue 0 receives (tap -> guest), queue 1 transmits (guest ->
// tap), served by the device's own I/O thread through the shared I/O engine (virtio/io).
//
// Threads (see virtio/device.h):
// - Construction (VMM set-up thread): opens the tap, probes its offloads, creates the engine;
//   host errors throw std::system_error. engine_reason() is the line to log.
// - vCPU threads, through the transport: activate() tells the tap which offloads the driver
//   takes and starts the I/O thread; reset() stops it and cancels the tap reads and writes in
//   flight (frames already read and not delivered are dropped and counted); notify() writes
//   the queue's kick eventfd. read_config() serves the byte image under a mutex, because
//   set_link() (any thread) changes it and raises a configuration interrupt.
// - The I/O thread polls four fds: stop, the RX and TX kick eventfds, and the engine's
//   completion fd. It is the only thread that touches the queues, the engine and the packet
//   buffers while active. Per wake-up it reaps completions, delivers received frames into RX
//   chains, pops every TX chain it has room for and submits them as one batch, re-arms tap
//   reads, and raises at most one interrupt (Queue::needs_interrupt, so EVENT_IDX suppresses
//   what the driver does not want).
//
// Data path: TX frames go from guest memory to the tap without a copy (writev of the chain's
// buffers, behind a checked copy of the 12-byte header). RX frames are read into host buffers,
// `rx_reads` reads in flight, and copied once into as many RX chains as they need
// (MRG_RXBUF). A frame waits (counted in rx_waits) while the guest has too few RX buffers;
// while frames wait, fewer reads are in flight, and once every buffer holds a frame the tap's
// own queue fills and the kernel drops (counted by the kernel on the tap).
#pragma once

#include <array>
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "virtio/device.h"
#include "virtio/io/engine.h"
#include "virtio/io/log.h"
#include "virtio/net/config.h"
#include "virtio/net/packet.h"
#include "virtio/net/tap.h"
#include "vmm/fd.h"

namespace vessel::virtio::net {

struct NetDeviceOptions {
    TapSpec tap;
    // The guest's MAC; default: mac_from_id(vm_id), or a random one if vm_id is empty.
    std::optional<Mac> mac;
    std::string vm_id;
    io::EnginePreference engine = io::EnginePreference::Auto;
    uint16_t queue_size = 256;  // both queues; a power of two <= 32768
    unsigned rx_reads = 8;      // tap reads in flight, each with its own 64 KiB host buffer
    uint16_t mtu = 0;           // offered with VIRTIO_NET_F_MTU; 0: the tap's MTU
    bool link_up = true;
    io::LogFn log;  // empty: stderr
};

struct NetCounters {
    uint64_t rx_packets = 0, rx_bytes = 0;  // frames (and their bytes, header excluded) delivered
    uint64_t rx_dropped = 0;  // read from the tap, not delivered: link down, too big, reset
    uint64_t rx_waits = 0;    // frames that had to wait for the driver to add RX buffers
    uint64_t rx_errors = 0;   // tap reads that failed
    uint64_t tx_packets = 0, tx_bytes = 0;  // frames (bytes without header) the tap took
    uint64_t tx_dropped = 0;                // frames not sent: malformed chain or link down
    uint64_t tx_errors = 0;                 // tap writes that failed (e.g. interface down)
    uint64_t bad_chains = 0;                // malformed chains, either queue (used_len 0)
    uint64_t interrupts = 0;                // used-buffer interrupts raised (both queues)
    uint64_t kicks = 0;                     // driver notifications taken (both queues)
    std::array<uint64_t, kNumChainErrors> chain_errors{};  // bad chains by ChainError
};

class NetDevice final : public Device {
  public:
    static constexpr uint16_t kRxQueue = 0;
    static constexpr uint16_t kTxQueue = 1;

    // Plain device state for snapshots (queues and negotiated features are the transport's).
    // Frames in flight are not state: a restored device has lost them, like a cable pulled.
    struct State {
        Mac mac{};
        bool link_up = true;
        bool operator==(const State&) const = default;
    };

    explicit NetDevice(NetDeviceOptions opts);
    ~NetDevice() override;
    NetDevice(const NetDevice&) = delete;
    NetDevice& operator=(const NetDevice&) = delete;

    uint32_t device_type() const override { return device_id::kNet; }
    uint64_t device_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {queue_size_, queue_size_}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    bool activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                  uint64_t driver_features, Interrupt& irq) override;
    void reset() override;
    void notify(uint16_t queue) override;

    // The kick eventfd notify(queue) writes; a KVM ioeventfd may be bound straight to it.
    int notify_fd(uint16_t queue) const;
    const std::string& tap_name() const { return tap_.name(); }
    const Tap& tap() const { return tap_; }
    const Mac& mac() const { return mac_; }
    uint16_t mtu() const { return mtu_; }
    const std::string& engine_reason() const { return engine_reason_; }
    const char* engine_name() const { return engine_->name(); }
    // Link state in the config space (VIRTIO_NET_S_LINK_UP) and, best effort, the tap's carrier.
    // Any thread; raises a configuration change interrupt while active. While down, frames are
    // dropped both ways (counted).
    void set_link(bool up);
    bool link_up() const;
    // Any thread; a consistent-enough snapshot (each counter is read atomically).
    NetCounters counters() const;

    State state() const;
    // Only while not active.
    void restore(const State& s);
    // Received frames wait in host buffers and TX chains stay in the ring while held.
    void hold(bool on) override;

  private:
    enum class SlotState : uint8_t { Idle, Reading, Full };
    struct RxSlot {
        SlotState state = SlotState::Idle;
        bool failed = false;   // its last read failed: re-armed on the next guest kick
        bool waiting = false;  // counted in rx_waits already
        uint32_t len = 0;
        iovec iov{};
    };
    struct Counters {
        std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, rx_dropped{0}, rx_waits{0}, rx_errors{0},
            tx_packets{0}, tx_bytes{0}, tx_dropped{0}, tx_errors{0}, bad_chains{0}, interrupts{0},
            kicks{0};
        std::array<std::atomic<uint64_t>, kNumChainErrors> chain_errors{};
    };

    void run() noexcept;
    void work(bool kicked);
    bool reap();
    bool deliver_rx();
    void refill_rx_ring(uint64_t need);
    bool process_tx();
    void post_reads(bool retry_failed);
    void bad_chain(const Queue& q, uint16_t head, ChainError e);
    void queue_broken();
    void drop_rx(uint32_t slot);
    void update_config_locked();

    const uint16_t queue_size_;
    const unsigned rx_reads_;
    io::LogFn log_;
    io::RateLimitedLog guest_log_;  // I/O thread only
    Tap tap_;                       // outlives engine_, which may borrow its fd
    std::unique_ptr<io::IoEngine> engine_;
    std::string engine_reason_;
    Mac mac_;
    uint16_t mtu_;
    UniqueFd rx_kick_, tx_kick_, stop_;

    mutable std::mutex cfg_mu_;
    std::array<uint8_t, sizeof(NetConfig)> config_{};  // cfg_mu_
    bool link_up_ = true;                              // cfg_mu_
    Interrupt* cfg_irq_ = nullptr;                     // cfg_mu_; set while active
    std::atomic<bool> link_{true};                     // for the I/O thread
    // The I/O thread holds io_mu_ for each round of work(), so hold(true) waits it out.
    std::mutex io_mu_;
    std::atomic<bool> held_{false};

    Counters counters_;

    // Set by activate(), cleared by reset(); used by the I/O thread in between.
    const vmm::GuestMemory* mem_ = nullptr;
    Queue* rxq_ = nullptr;
    Queue* txq_ = nullptr;
    Interrupt* irq_ = nullptr;
    uint64_t features_ = 0;
    bool mergeable_ = false;
    bool broken_ = false;
    bool rx_used_ = false, tx_used_ = false;

    std::vector<uint8_t> rx_mem_;  // rx_reads_ buffers of kHdrSize + kMaxFrame bytes
    std::vector<RxSlot> rx_slots_;
    std::deque<uint32_t> rx_ready_;  // Full slots, in arrival order
    RxBufferRing rx_ring_;
    std::vector<TxFrame> tx_frames_;
    std::vector<uint32_t> tx_free_;
    std::vector<io::Completion> completions_;
    std::vector<Used> used_;
    std::thread thread_;
};

}  // namespace vessel::virtio::net
