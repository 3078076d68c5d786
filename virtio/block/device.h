// virtio-blk as a virtio::Device: one request queue, served by the device's own I/O thread.
//
// Threads (see virtio/device.h):
// - Construction (VMM set-up thread): opens and locks the image and creates the I/O engine;
//   host errors throw std::system_error. engine_reason() is the line to log.
// - vCPU threads, through the transport: activate() starts the I/O thread, reset() stops it and
//   waits for I/O in flight (requests still in the kernel write into guest memory, which the
//   driver may reuse after the reset), notify() writes the kick eventfd. read_config() serves
//   an immutable byte image; write_config() is ignored (nothing in it is writable).
// - The I/O thread polls three eventfds: kick (driver notifications), the engine's completion
//   fd, and stop. On each wake-up it pops every available chain into BlockCore, then reaps
//   completions, adds used entries and raises the interrupt when Queue::needs_interrupt says
//   so. It is the only thread that touches the Queue, BlockCore and the engine while active.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <thread>

#include "virtio/block/block_core.h"
#include "virtio/block/config.h"
#include "virtio/block/disk.h"
#include "virtio/block/engine.h"
#include "virtio/device.h"
#include "vmm/fd.h"

namespace vessel::virtio::block {

struct BlockDeviceOptions {
    DiskOptions disk;
    EnginePreference engine = EnginePreference::Auto;
    uint16_t queue_size = 256;  // power of two; also the engine's ring size
    LogFn log;                  // empty: stderr
};

class BlockDevice final : public Device {
  public:
    explicit BlockDevice(BlockDeviceOptions opts);
    ~BlockDevice() override;
    BlockDevice(const BlockDevice&) = delete;
    BlockDevice& operator=(const BlockDevice&) = delete;

    uint32_t device_type() const override { return device_id::kBlock; }
    uint64_t device_features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return {queue_size_}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    bool activate(const vmm::GuestMemory& mem, std::span<Queue* const> queues,
                  uint64_t driver_features, Interrupt& irq) override;
    void reset() override;
    void notify(uint16_t queue) override;

    // The kick eventfd notify() writes. The VMM may bind the queue's KVM ioeventfd straight to
    // it (skipping a hop through MmioTransport::notify_queue): the I/O thread only reads it
    // while active, and activate() drops stale kicks.
    int notify_fd() const { return kick_.get(); }
    const std::string& engine_reason() const { return engine_reason_; }
    const Disk& disk() const { return disk_; }
    // Chains the queue reported malformed (completed with used_len 0). I/O thread only.
    uint64_t bad_chains() const { return bad_chains_; }

  private:
    void run() noexcept;
    void pop_all();
    void complete();

    const uint16_t queue_size_;
    LogFn log_;
    Disk disk_;
    std::unique_ptr<IoEngine> engine_;
    std::string engine_reason_;
    std::array<uint8_t, sizeof(BlkConfig)> config_;
    UniqueFd kick_, stop_;

    // Set by activate(), cleared by reset(); used by the I/O thread in between.
    const vmm::GuestMemory* mem_ = nullptr;
    Queue* queue_ = nullptr;
    Interrupt* irq_ = nullptr;
    std::unique_ptr<BlockCore> core_;
    bool broken_ = false;
    bool used_added_ = false;
    uint64_t bad_chains_ = 0;
    std::thread thread_;
};

}  // namespace vessel::virtio::block
