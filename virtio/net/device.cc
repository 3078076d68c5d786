#include "virtio/net/device.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "vmm/eventfd.h"
#include "vmm/seccomp.h"

namespace vessel::virtio::net {

namespace {

constexpr uint64_t kRxCookie = 1ull << 32;  // cookie bit: an RX slot (else a TX frame index)
constexpr size_t kRxBufSize = kHdrSize + kMaxFrame;
// Rounds of reap/deliver/transmit per wake-up while they make progress: tap writes complete
// during the submit, so a second round reports them without another trip through poll().
constexpr int kMaxRounds = 4;

void drain(int efd) {
    eventfd_drain(efd);
}
void poke(int efd) {
    eventfd_poke(efd);
}

void add(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // one writer
}

Mac choose_mac(const NetDeviceOptions& o) {
    if (o.mac) return *o.mac;
    return o.vm_id.empty() ? random_mac() : mac_from_id(o.vm_id);
}

}  // namespace

NetDevice::NetDevice(NetDeviceOptions opts)
    : queue_size_(opts.queue_size),
      rx_reads_(std::clamp(opts.rx_reads, 1u, 256u)),
      log_(io::log_or_stderr(std::move(opts.log))),
      guest_log_(log_),
      tap_(Tap::open(opts.tap)),
      mac_(choose_mac(opts)),
      mtu_(opts.mtu ? opts.mtu : static_cast<uint16_t>(std::clamp(tap_.mtu(), 68, 65535))),
      rx_kick_(make_eventfd("creating the virtio-net RX kick eventfd")),
      tx_kick_(make_eventfd("creating the virtio-net TX kick eventfd")),
      stop_(make_eventfd("creating the virtio-net stop eventfd")),
      link_up_(opts.link_up),
      link_(opts.link_up),
      rx_mem_(rx_reads_ * kRxBufSize),
      rx_slots_(rx_reads_) {
    int fds[] = {tap_.fd()};
    io::EngineChoice e =
        io::make_engine(opts.engine, rx_reads_ + queue_size_, fds, io::EngineUse::Messages);
    engine_ = std::move(e.engine);
    engine_reason_ = "virtio-net " + tap_.name() + ": " + e.reason;
    for (size_t i = 0; i < rx_slots_.size(); ++i)
        rx_slots_[i].iov = {rx_mem_.data() + i * kRxBufSize, kRxBufSize};
    std::lock_guard l(cfg_mu_);
    update_config_locked();
    if (!link_up_) tap_.set_carrier(false);
}

NetDevice::~NetDevice() {
    reset();
    // For benchmarks and debugging: what the device did over the VM's life.
    if (std::getenv("VESSEL_NET_STATS")) {
        const NetCounters c = counters();
        std::fprintf(
            stderr,
            "vessel: net %s (%s): rx %" PRIu64 " frames %" PRIu64 " bytes, %" PRIu64
            " waited, %" PRIu64 " dropped; tx %" PRIu64 " frames %" PRIu64 " bytes, %" PRIu64
            " dropped, %" PRIu64 " errors; %" PRIu64 " interrupts, %" PRIu64 " kicks%s%s\n",
            tap_.name().c_str(), engine_->name(), c.rx_packets, c.rx_bytes, c.rx_waits,
            c.rx_dropped, c.tx_packets, c.tx_bytes, c.tx_dropped, c.tx_errors, c.interrupts,
            c.kicks, engine_->stats().empty() ? "" : "; ", engine_->stats().c_str());
    }
}

uint64_t NetDevice::device_features() const {
    return net::device_features(tap_.supported_offloads()) | kRingFeatures;
}

void NetDevice::update_config_locked() {
    config_ = config_bytes(make_config(mac_, link_up_, mtu_));
}

void NetDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard l(cfg_mu_);
    read_config_bytes(config_, offset, data);
}

// Nothing is writable: the MAC is read-only with VERSION_1 (CTRL_MAC_ADDR is not offered).
void NetDevice::write_config(uint64_t, std::span<const uint8_t>) {}

int NetDevice::notify_fd(uint16_t queue) const {
    return queue == kRxQueue ? rx_kick_.get() : tx_kick_.get();
}

void NetDevice::set_link(bool up) {
    std::lock_guard l(cfg_mu_);
    if (link_up_ == up) return;
    link_up_ = up;
    link_.store(up, std::memory_order_relaxed);
    update_config_locked();
    tap_.set_carrier(up);
    if (cfg_irq_) {
        cfg_irq_->signal_config();
        poke(rx_kick_.get());  // let the I/O thread drop or deliver what waits
    }
}

bool NetDevice::link_up() const {
    std::lock_guard l(cfg_mu_);
    return link_up_;
}

NetCounters NetDevice::counters() const {
    auto g = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    NetCounters c;
    c.rx_packets = g(counters_.rx_packets);
    c.rx_bytes = g(counters_.rx_bytes);
    c.rx_dropped = g(counters_.rx_dropped);
    c.rx_waits = g(counters_.rx_waits);
    c.rx_errors = g(counters_.rx_errors);
    c.tx_packets = g(counters_.tx_packets);
    c.tx_bytes = g(counters_.tx_bytes);
    c.tx_dropped = g(counters_.tx_dropped);
    c.tx_errors = g(counters_.tx_errors);
    c.bad_chains = g(counters_.bad_chains);
    c.interrupts = g(counters_.interrupts);
    c.kicks = g(counters_.kicks);
    for (size_t i = 0; i < kNumChainErrors; ++i) c.chain_errors[i] = g(counters_.chain_errors[i]);
    return c;
}

NetDevice::State NetDevice::state() const {
    std::lock_guard l(cfg_mu_);
    return State{mac_, link_up_};
}

void NetDevice::restore(const State& s) {
    std::lock_guard l(cfg_mu_);
    mac_ = s.mac;
    if (link_up_ != s.link_up) tap_.set_carrier(s.link_up);
    link_up_ = s.link_up;
    link_.store(s.link_up, std::memory_order_relaxed);
    update_config_locked();
}

bool NetDevice::activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                         uint64_t driver_features, Interrupt& irq) {
    if (thread_.joinable()) return false;
    // The 12-byte header (num_buffers always present) comes with VERSION_1.
    if (!(driver_features & kFeatureVersion1)) return false;
    if (queues.size() != 2 || !queues[kRxQueue] || !queues[kTxQueue] ||
        !queues[kRxQueue]->ready() || !queues[kTxQueue]->ready())
        return false;
    // Throws (the transport then sets DEVICE_NEEDS_RESET) if the tap refuses.
    tap_.set_offloads(tap_offloads_for(driver_features) & tap_.supported_offloads());
    mem_ = &mem;
    rxq_ = queues[kRxQueue];
    txq_ = queues[kTxQueue];
    irq_ = &irq;
    features_ = driver_features;
    mergeable_ = driver_features & bit(feature::kMrgRxbuf);
    broken_ = false;
    rx_used_ = tx_used_ = false;
    rx_ring_ = RxBufferRing(rxq_->size());
    tx_frames_.resize(txq_->size());
    tx_free_.clear();
    for (uint32_t i = txq_->size(); i-- > 0;) tx_free_.push_back(i);
    for (RxSlot& s : rx_slots_) s.state = SlotState::Idle, s.failed = s.waiting = false;
    rx_ready_.clear();
    drain(rx_kick_.get());
    drain(tx_kick_.get());
    drain(stop_.get());
    thread_ = vmm::seccomp::spawn(vmm::seccomp::Role::NetIo, [this] { run(); });
    std::lock_guard l(cfg_mu_);
    cfg_irq_ = &irq;
    return true;
}

void NetDevice::reset() {
    {
        std::lock_guard l(cfg_mu_);
        cfg_irq_ = nullptr;
    }
    if (!thread_.joinable()) return;
    poke(stop_.get());
    thread_.join();
    // Reads waiting for a frame would otherwise stay in the kernel; after this no read or write
    // touches a buffer of ours or of the guest.
    engine_->cancel_all();
    add(counters_.rx_dropped, rx_ready_.size());
    rx_ready_.clear();
    for (RxSlot& s : rx_slots_) s.state = SlotState::Idle;
    rx_ring_.clear();
    tx_free_.clear();
    mem_ = nullptr;
    rxq_ = txq_ = nullptr;
    irq_ = nullptr;
}

void NetDevice::notify(uint16_t queue) {
    poke(notify_fd(queue));
}

void NetDevice::bad_chain(const Queue& q, uint16_t head, ChainError e) {
    add(counters_.bad_chains);
    add(counters_.chain_errors[static_cast<size_t>(e)]);
    guest_log_.log("virtio-net " + tap_.name() + ": " + q.name() + ": bad chain (head " +
                   std::to_string(head) + "): " + std::string(error_name(e)));
}

void NetDevice::queue_broken() {
    if (broken_) return;
    broken_ = true;
    irq_->signal_needs_reset();
}

void NetDevice::drop_rx(uint32_t s) {
    rx_slots_[s].state = SlotState::Idle;
    rx_slots_[s].waiting = false;
    add(counters_.rx_dropped);
}

// Takes RX chains until the ring holds `need` bytes (mergeable) or one chain, or the queue is
// empty (which, under EVENT_IDX, asks the driver to notify us when it adds more).
void NetDevice::refill_rx_ring(uint64_t need) {
    while (!broken_ && !rx_ring_.full() &&
           (mergeable_ ? rx_ring_.total_capacity() < need : rx_ring_.size() == 0)) {
        PopResult r = rxq_->pop(*mem_);
        switch (r.status) {
            case PopStatus::kEmpty:
                return;
            case PopStatus::kBroken:
                return queue_broken();
            case PopStatus::kBadChain:
                bad_chain(*rxq_, r.chain.head, ChainError::Malformed);
                rx_used_ |= rxq_->add_used(*mem_, r.chain.head, 0);
                break;
            case PopStatus::kChain: {
                ChainError e = parse_rx(r.chain, *mem_, rx_ring_.next());
                if (e != ChainError::None) {
                    bad_chain(*rxq_, r.chain.head, e);
                    rx_used_ |= rxq_->add_used(*mem_, r.chain.head, 0);
                } else {
                    rx_ring_.push();
                }
                break;
            }
        }
    }
}

bool NetDevice::deliver_rx() {
    bool progress = false;
    const bool link = link_.load(std::memory_order_relaxed);
    while (!rx_ready_.empty() && !broken_) {
        const uint32_t s = rx_ready_.front();
        RxSlot& slot = rx_slots_[s];
        if (!link) {
            rx_ready_.pop_front();
            drop_rx(s);
            progress = true;
            continue;
        }
        std::span<const uint8_t> pkt(static_cast<const uint8_t*>(slot.iov.iov_base), slot.len);
        used_.clear();
        RxPlace r = place_rx(pkt, rx_ring_, mergeable_, used_);
        if (r == RxPlace::NeedBuffers) {
            refill_rx_ring(slot.len);
            r = place_rx(pkt, rx_ring_, mergeable_, used_);
        }
        if (r == RxPlace::NeedBuffers) {
            if (!slot.waiting) add(counters_.rx_waits);
            slot.waiting = true;
            break;  // the driver's next RX notification brings us back
        }
        rx_ready_.pop_front();
        progress = true;
        if (r == RxPlace::TooBig) {
            drop_rx(s);
            guest_log_.log("virtio-net " + tap_.name() + ": dropped a " +
                           std::to_string(slot.len - kHdrSize) +
                           "-byte frame: the guest's RX buffers cannot hold it");
            continue;
        }
        // A frame spanning several chains must become visible at once: the driver reads
        // num_buffers and expects every buffer to be there.
        // One publication per frame: the driver must never see part of a merged frame.
        rx_used_ |= rxq_->add_used_batch(*mem_, used_);
        add(counters_.rx_packets);
        add(counters_.rx_bytes, slot.len - kHdrSize);
        slot.state = SlotState::Idle;
        slot.waiting = false;
    }
    return progress;
}

bool NetDevice::process_tx() {
    bool progress = false;
    const bool link = link_.load(std::memory_order_relaxed);
    // A guest that keeps publishing must not starve RX and completions: a queue's worth per
    // round, then come back (the queue wants popping to kEmpty before we sleep: kick ourselves).
    for (unsigned budget = txq_->size(); !broken_ && !tx_free_.empty(); --budget) {
        if (budget == 0) {
            poke(tx_kick_.get());
            break;
        }
        PopResult r = txq_->pop(*mem_);
        if (r.status == PopStatus::kEmpty) break;
        progress = true;
        if (r.status == PopStatus::kBroken) {
            queue_broken();
            break;
        }
        if (r.status == PopStatus::kBadChain) {
            bad_chain(*txq_, r.chain.head, ChainError::Malformed);
            add(counters_.tx_dropped);
            tx_used_ |= txq_->add_used(*mem_, r.chain.head, 0);
            continue;
        }
        const uint32_t i = tx_free_.back();
        TxFrame& f = tx_frames_[i];
        parse_tx(r.chain, *mem_, features_, f);
        if (!f.ok() || !link) {
            if (!f.ok()) bad_chain(*txq_, f.head, f.error);
            add(counters_.tx_dropped);
            tx_used_ |= txq_->add_used(*mem_, f.head, 0);
            continue;
        }
        tx_free_.pop_back();
        io::Op op;
        op.kind = io::OpKind::Write;
        op.iov = f.iov;
        op.len = f.total_len();
        op.message = true;
        engine_->submit(op, i);
    }
    return progress;
}

void NetDevice::post_reads(bool retry_failed) {
    for (uint32_t s = 0; s < rx_slots_.size(); ++s) {
        RxSlot& slot = rx_slots_[s];
        if (slot.state != SlotState::Idle || (slot.failed && !retry_failed)) continue;
        slot.failed = false;
        slot.state = SlotState::Reading;
        io::Op op;
        op.kind = io::OpKind::Read;
        op.iov = {&slot.iov, 1};
        op.len = slot.iov.iov_len;
        op.message = true;
        engine_->submit(op, kRxCookie | s);
    }
}

bool NetDevice::reap() {
    completions_.clear();
    if (engine_->reap(completions_) == 0) return false;
    for (const io::Completion& c : completions_) {
        if (c.cookie & kRxCookie) {
            const auto s = static_cast<uint32_t>(c.cookie & ~kRxCookie);
            if (s >= rx_slots_.size()) continue;  // cannot happen: we made the cookie
            RxSlot& slot = rx_slots_[s];
            if (c.result >= static_cast<int64_t>(kHdrSize + kEthHeader) && !broken_) {
                slot.state = SlotState::Full;
                slot.len = static_cast<uint32_t>(c.result);
                rx_ready_.push_back(s);
                continue;
            }
            slot.state = SlotState::Idle;
            if (broken_) continue;
            add(counters_.rx_errors);
            slot.failed = true;
            guest_log_.log("virtio-net " + tap_.name() + ": tap read failed: " +
                           (c.result < 0 ? std::string(std::strerror(static_cast<int>(-c.result)))
                                         : std::to_string(c.result) + "-byte frame"));
            continue;
        }
        if (c.cookie >= tx_frames_.size()) continue;
        const auto i = static_cast<uint32_t>(c.cookie);
        TxFrame& f = tx_frames_[i];
        tx_free_.push_back(i);
        if (broken_) continue;
        if (c.result == static_cast<int64_t>(f.total_len())) {
            add(counters_.tx_packets);
            add(counters_.tx_bytes, f.frame_len);
        } else {
            add(counters_.tx_errors);
            guest_log_.log("virtio-net " + tap_.name() + ": tap write failed: " +
                           (c.result < 0 ? std::string(std::strerror(static_cast<int>(-c.result)))
                                         : "short write"));
        }
        tx_used_ |= txq_->add_used(*mem_, f.head, 0);
    }
    return true;
}

void NetDevice::hold(bool on) {
    {
        std::lock_guard l(io_mu_);
        held_ = on;
    }
    if (!on) poke(rx_kick_.get());  // frames that arrived meanwhile wait for a wake-up
}

void NetDevice::work(bool kicked) {
    std::lock_guard hold_lock(io_mu_);
    const bool held = held_;
    for (int round = 0; round < kMaxRounds; ++round) {
        bool progress = reap();
        if (broken_) return;  // keep reaping (so the completion fd goes quiet), nothing else
        if (held) {
            engine_->commit();
            break;
        }
        progress |= deliver_rx();
        progress |= process_tx();
        post_reads(kicked && round == 0);
        engine_->commit();
        if (!progress) break;
    }
    // One interrupt for both queues; needs_interrupt() on each keeps its EVENT_IDX state right.
    bool signal = false;
    if (rx_used_) signal |= rxq_->needs_interrupt(*mem_);
    if (tx_used_) signal |= txq_->needs_interrupt(*mem_);
    rx_used_ = tx_used_ = false;
    if (signal) {
        add(counters_.interrupts);
        irq_->signal_used();
    }
}

void NetDevice::run() noexcept {
    try {
        pollfd fds[4] = {{stop_.get(), POLLIN, 0},
                         {rx_kick_.get(), POLLIN, 0},
                         {tx_kick_.get(), POLLIN, 0},
                         {engine_->completion_fd(), POLLIN, 0}};
        // Chains made available before activation (e.g. after a restore) get served at once.
        work(true);
        for (;;) {
            if (::poll(fds, 4, -1) < 0) {
                if (errno == EINTR) continue;
                throw_errno("polling the virtio-net fds");
            }
            if (fds[0].revents) return;
            const bool kicked = fds[1].revents || fds[2].revents;
            if (kicked) add(counters_.kicks);
            if (fds[1].revents) drain(rx_kick_.get());
            if (fds[2].revents) drain(tx_kick_.get());
            work(kicked);
        }
    } catch (const std::exception& e) {
        log_(std::string("virtio-net: I/O thread failed: ") + e.what());
        if (irq_) irq_->signal_needs_reset();
    }
}

}  // namespace vessel::virtio::net
