#include "virtio/block/device.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "vmm/eventfd.h"
#include "vmm/seccomp.h"

namespace vessel::virtio::block {

namespace {

void drain(int efd) {
    eventfd_drain(efd);
}
void poke(int efd) {
    eventfd_poke(efd);
}

}  // namespace

BlockDevice::BlockDevice(BlockDeviceOptions opts)
    : queue_size_(opts.queue_size),
      log_(opts.log
               ? std::move(opts.log)
               : [](const std::string& l) { std::fprintf(stderr, "vessel: %s\n", l.c_str()); }),
      disk_(Disk::open(opts.disk)),
      config_(config_bytes(disk_.info())),
      kick_(make_eventfd("creating the virtio-blk kick eventfd")),
      stop_(make_eventfd("creating the virtio-blk stop eventfd")) {
    int fds[] = {disk_.fd()};
    EngineChoice e = make_engine(opts.engine, queue_size_, fds, io::EngineUse::Files);
    engine_ = std::move(e.engine);
    engine_reason_ = "virtio-block " + disk_.path() + ": " + e.reason;
}

BlockDevice::~BlockDevice() {
    reset();
}

uint64_t BlockDevice::device_features() const {
    return block::device_features(disk_.info()) | kRingFeatures;
}

void BlockDevice::read_config(uint64_t offset, std::span<uint8_t> data) {
    read_config_bytes(config_, offset, data);
}

void BlockDevice::write_config(uint64_t, std::span<const uint8_t>) {}

bool BlockDevice::activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                           uint64_t driver_features, Interrupt& irq) {
    if (thread_.joinable()) return false;
    // The parser relies on VERSION_1: little-endian fields and any descriptor layout.
    if (!(driver_features & kFeatureVersion1)) return false;
    if (queues.size() != 1 || !queues[0] || !queues[0]->ready()) return false;
    mem_ = &mem;
    queue_ = queues[0];
    irq_ = &irq;
    broken_ = false;
    used_added_ = false;
    BlockCoreOptions o;
    o.max_in_flight = queue_->size();
    o.log = log_;
    core_ = std::make_unique<BlockCore>(mem, disk_, *engine_, o);
    drain(kick_.get());
    drain(stop_.get());
    thread_ = vmm::seccomp::spawn(vmm::seccomp::Role::BlockIo, [this] { run(); });
    return true;
}

void BlockDevice::reset() {
    if (!thread_.joinable()) return;
    poke(stop_.get());
    thread_.join();
    // Requests still in the kernel write into guest memory: wait for them, without reporting
    // them (the driver is resetting the queue).
    while (core_->in_flight() > 0) {
        pollfd p{core_->completion_fd(), POLLIN, 0};
        ::poll(&p, 1, 100);
        core_->process_completions([](uint16_t, uint32_t) {});
    }
    core_.reset();
    mem_ = nullptr;
    queue_ = nullptr;
    irq_ = nullptr;
}

void BlockDevice::notify(uint16_t) {
    poke(kick_.get());
}

void BlockDevice::pop_all() {
    // A guest that keeps publishing chains must not keep us here while results pile up: after a
    // queue's worth, report what is done and come back (the queue wants popping to kEmpty
    // before the thread sleeps, so kick ourselves).
    for (unsigned budget = queue_->size(); !broken_; --budget) {
        if (budget == 0) {
            poke(kick_.get());
            return;
        }
        PopResult r = queue_->pop(*mem_);
        switch (r.status) {
            case PopStatus::kEmpty:
                return;
            case PopStatus::kChain:
                core_->handle(r.chain);
                break;
            case PopStatus::kBadChain:
                // No parsable chain, so no status byte to write: hand it back empty.
                ++bad_chains_;
                used_added_ |= queue_->add_used(*mem_, r.chain.head, 0);
                break;
            case PopStatus::kBroken:
                broken_ = true;
                irq_->signal_needs_reset();
                return;
        }
    }
}

void BlockDevice::complete() {
    size_t n = core_->process_completions(
        [this](uint16_t head, uint32_t len) { used_added_ |= queue_->add_used(*mem_, head, len); });
    (void)n;
    if (used_added_ && queue_->needs_interrupt(*mem_)) irq_->signal_used();
    used_added_ = false;
}

void BlockDevice::run() noexcept {
    try {
        pollfd fds[3] = {{stop_.get(), POLLIN, 0},
                         {kick_.get(), POLLIN, 0},
                         {core_->completion_fd(), POLLIN, 0}};
        // Chains made available before activation (e.g. after a restore) get served at once.
        pop_all();
        complete();
        for (;;) {
            if (::poll(fds, 3, -1) < 0) {
                if (errno == EINTR) continue;
                throw_errno("polling the virtio-blk eventfds");
            }
            if (fds[0].revents) return;
            if (fds[1].revents) drain(kick_.get());
            pop_all();
            complete();
        }
    } catch (const std::exception& e) {
        log_(std::string("virtio-block: I/O thread failed: ") + e.what());
        if (irq_) irq_->signal_needs_reset();
    }
}

}  // namespace vessel::virtio::block
