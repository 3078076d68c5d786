// The virtio-blk request path without the transport: parser + engine + status write-back.
//
// Threading: one thread (the VMM's I/O thread) calls everything. The loop is
//
//     on queue notify:         for each chain popped: core.handle(chain);
//                              core.process_completions(add_used); signal the guest if needed
//     on completion_fd() read: core.process_completions(add_used); signal the guest if needed
//
// handle() only queues: operations reach the kernel, and immediate results (errors, GET_ID)
// are reported, in the next process_completions() — so call it after every batch of handle().
//
// State: the block device has no guest-visible state beyond its queues (no config writes, no
// WCE toggle), so there is nothing to snapshot here; requests in flight are drained by the
// device before a snapshot (a later issue), not saved.
//
// Guest-controlled input never throws: a bad request gets VIRTIO_BLK_S_IOERR or UNSUPP (or, with
// no status byte, used_len 0), a counter, and a rate-limited log line.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "virtio/block/engine.h"
#include "virtio/block/request.h"
#include "virtio/descriptor.h"
#include "virtio/io/log.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::block {

class Disk;

struct BlockCounters {
    std::array<uint64_t, kNumRequestErrors> rejected{};  // by RequestError (None unused)
    uint64_t reads = 0, writes = 0, flushes = 0, get_ids = 0, discards = 0, write_zeroes = 0;
    uint64_t read_bytes = 0, write_bytes = 0;
    uint64_t io_errors = 0;  // the host I/O failed: IOERR
    uint64_t busy = 0;       // more than max_in_flight requests: IOERR
    uint64_t log_suppressed = 0;

    uint64_t count(RequestError e) const { return rejected[static_cast<size_t>(e)]; }
};

using io::LogFn;
using io::RateLimitedLog;

struct BlockCoreOptions {
    uint32_t file = 0;            // the disk's index among the engine's files
    size_t max_in_flight = 1024;  // a guest re-posting heads cannot grow host memory past this
    LogFn log;                    // empty: stderr
};

class BlockCore {
  public:
    using UsedFn = std::function<void(uint16_t head, uint32_t used_len)>;

    BlockCore(const vmm::GuestMemory& mem, const DiskInfo& disk,
              const std::array<uint8_t, kIdBytes>& id, IoEngine& engine,
              BlockCoreOptions opts = {});
    BlockCore(const vmm::GuestMemory& mem, const Disk& disk, IoEngine& engine,
              BlockCoreOptions opts = {});
    BlockCore(const BlockCore&) = delete;
    BlockCore& operator=(const BlockCore&) = delete;

    // Parses the chain and queues its I/O, or records its immediate status. Never throws for
    // any chain (std::bad_alloc aside).
    void handle(const DescriptorChain& chain);

    // Commits queued I/O, reaps the engine, writes status bytes into guest memory and reports
    // every finished chain: used_len counts the bytes written into device-writable buffers,
    // status byte included (IN: data + 1, GET_ID: id bytes + 1, others 1, no status byte 0).
    // Returns how many chains it reported.
    size_t process_completions(const UsedFn& used);

    int completion_fd() const { return engine_.completion_fd(); }
    size_t in_flight() const { return active_; }
    const BlockCounters& counters() const { return counters_; }
    const DiskInfo& disk() const { return disk_; }

  private:
    struct Slot {
        ParsedRequest req;
        uint32_t ops_left = 0;
        uint8_t status = 0;
    };
    struct Used {
        uint16_t head;
        uint32_t len;
    };

    uint32_t acquire_slot();
    void release_slot(uint32_t i);
    void reject(const ParsedRequest& r);
    void finish(uint32_t slot);
    void submit(uint32_t slot);

    const vmm::GuestMemory& mem_;
    DiskInfo disk_;
    std::array<uint8_t, kIdBytes> id_;
    IoEngine& engine_;
    BlockCoreOptions opts_;
    RateLimitedLog log_;
    BlockCounters counters_;

    std::vector<Slot> slots_;
    std::vector<uint32_t> free_;
    size_t active_ = 0;
    ParsedRequest overflow_;  // parse target when every slot is busy
    std::vector<Used> ready_, delivering_;
    std::vector<Completion> completions_;
};

}  // namespace vessel::virtio::block
