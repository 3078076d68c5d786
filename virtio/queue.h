// Split virtqueue (virtio 1.2 section 2.7), device side.
//
// The rings live in guest memory and the guest may rewrite them at any time, so every ring
// access goes through GuestMemory::host_ptr, every descriptor is copied once before it is
// checked, and nothing here throws or trusts an index. A malformed chain is consumed and
// reported with its head index; a ring that makes no sense (avail idx jumping past the queue
// size, rings outside RAM) breaks the queue until the driver resets the device.
//
// Threads: the transport configures a Queue (setters, reset, restore) only while the device is
// not active; between activate() and reset() the device's I/O thread alone calls pop/add_used/
// needs_interrupt. error_count() may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "virtio/descriptor.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio {

// Descriptor flags (struct virtq_desc).
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
// struct virtq_avail flags.
inline constexpr uint16_t kAvailFNoInterrupt = 1;

// Ring feature bits the queue implements (the transport passes the negotiated ones on).
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;      // VIRTIO_F_EVENT_IDX

enum class QueueError : uint8_t {
    kNone = 0,
    // Chain errors: the chain was consumed; PopResult::chain.head names it.
    kHeadOutOfRange,         // head index >= queue size (add_used refuses it)
    kNextOutOfRange,         // VIRTQ_DESC_F_NEXT points past the (indirect) table
    kChainTooLong,           // more descriptors than the table holds: a loop
    kDescOutOfRange,         // buffer not wholly inside one guest RAM region
    kReadableAfterWritable,  // the spec orders device-readable before device-writable
    kTotalLengthTooLarge,    // sum of lengths does not fit the used ring's u32
    kIndirectNotNegotiated,  // VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC
    kIndirectWithNext,       // INDIRECT and NEXT on the same descriptor
    kNestedIndirect,         // INDIRECT inside an indirect table
    kIndirectBadLength,      // table length zero, not a multiple of 16 or too large
    kIndirectOutOfRange,     // table not wholly inside guest RAM
    // Queue errors: the queue is broken until reset; the device should ask for a reset.
    kInvalidLayout,   // size not a power of two or misaligned ring (not validated)
    kRingOutOfRange,  // a ring is not inside guest RAM
    kAvailIdxJump,    // avail idx ran more than the queue size ahead of us
};

std::string_view to_string(QueueError e);

enum class PopStatus : uint8_t {
    kEmpty,     // nothing available (or queue not ready)
    kChain,     // chain holds a valid chain
    kBadChain,  // a malformed chain was consumed: error says why, chain.head names it
    kBroken,    // the queue is unusable until reset: error says why
};

struct PopResult {
    PopStatus status = PopStatus::kEmpty;
    QueueError error = QueueError::kNone;
    // kChain: the walked chain. kBadChain: only head is meaningful (descs is empty); the
    // device either completes it, add_used(head, 0) with an error status where the device
    // type has one, or calls Interrupt::signal_needs_reset().
    DescriptorChain chain;
};

class Queue {
  public:
    static constexpr uint16_t kMaxSize = 32768;
    // Indirect tables are bounded on their own: a table can be longer than the ring.
    static constexpr uint32_t kMaxIndirectEntries = 32768;

    // Plain state for snapshots. The device-side "last signalled used idx" is not saved: the
    // first needs_interrupt() after a restore answers true, and one spurious interrupt is
    // harmless.
    struct State {
        uint16_t max_size = 0;
        uint16_t size = 0;
        bool ready = false;
        uint64_t desc_addr = 0;
        uint64_t avail_addr = 0;
        uint64_t used_addr = 0;
        uint16_t next_avail = 0;
        uint16_t next_used = 0;
        bool event_idx = false;
        bool indirect = false;
        bool operator==(const State&) const = default;
    };

    // max_size: a power of two <= kMaxSize (throws std::invalid_argument otherwise). `name`
    // labels log lines, e.g. "blk q0".
    explicit Queue(uint16_t max_size, std::string name = "virtq");
    Queue(const Queue&) = delete;
    Queue& operator=(const Queue&) = delete;

    // --- configuration (transport; device not active) ---
    uint16_t max_size() const { return max_size_; }
    uint16_t size() const { return size_; }
    void set_size(uint16_t n) { size_ = n; }
    bool ready() const { return ready_; }
    void set_ready(bool r) { ready_ = r; }
    uint64_t desc_addr() const { return desc_addr_; }
    uint64_t avail_addr() const { return avail_addr_; }
    uint64_t used_addr() const { return used_addr_; }
    void set_desc_addr(uint64_t a) { desc_addr_ = a; }
    void set_avail_addr(uint64_t a) { avail_addr_ = a; }
    void set_used_addr(uint64_t a) { used_addr_ = a; }
    bool event_idx() const { return event_idx_; }
    bool indirect() const { return indirect_; }
    // Applies the negotiated ring features (kFeatureEventIdx, kFeatureIndirectDesc).
    void set_features(uint64_t driver_features);

    // Size is a power of two in [1, max_size], rings aligned (desc 16, avail 2, used 4) and
    // wholly inside guest RAM. The transport checks this at DRIVER_OK for every ready queue.
    bool is_valid(const vmm::GuestMemory& mem) const;

    // Back to the power-on state (size = max_size, not ready, indices 0). Keeps error_count.
    void reset();

    State state() const;
    // Throws std::system_error (EINVAL) if the state does not fit this queue.
    void restore(const State& s);

    // --- runtime (device I/O thread) ---

    // Takes the next available chain. Under EVENT_IDX it also publishes avail_event, and
    // when it finds the ring empty it re-arms driver notifications (store avail_event, full
    // fence, re-check): so a device must pop until kEmpty before it sleeps.
    PopResult pop(const vmm::GuestMemory& mem);
    // Gives back the chain just popped as kChain (e.g. an RX buffer the device cannot fill
    // yet); only valid right after that pop.
    void undo_pop() { --next_avail_; }
    // Writes a used element and publishes used idx (release). False if the queue is not
    // usable or `head` is out of range (then nothing is written).
    bool add_used(const vmm::GuestMemory& mem, uint16_t head, uint32_t len);
    struct UsedElem {
        uint16_t head;
        uint32_t len;
    };
    // Writes every element, then publishes used idx once (release), so the driver sees all of
    // them or none: one received frame spread over several buffers (virtio-net MRG_RXBUF) must
    // not be seen half-delivered. False, and nothing published, if the queue is unusable or
    // any head is out of range.
    bool add_used_batch(const vmm::GuestMemory& mem, std::span<const UsedElem> elems);
    // Whether the driver wants an interrupt for the used entries added since the last call:
    // vring_need_event() on used_event under EVENT_IDX, else !VIRTQ_AVAIL_F_NO_INTERRUPT.
    bool needs_interrupt(const vmm::GuestMemory& mem);

    uint16_t next_avail() const { return next_avail_; }
    uint16_t next_used() const { return next_used_; }
    bool broken() const { return broken_ != QueueError::kNone; }
    // Malformed chains and queue breakages seen since construction.
    uint64_t error_count() const { return errors_.load(std::memory_order_relaxed); }
    const std::string& name() const { return name_; }

  private:
    bool layout_ok() const;
    QueueError walk(const vmm::GuestMemory& mem, const uint8_t* table, uint16_t head,
                    std::vector<Descriptor>& out) const;
    PopResult fail_queue(QueueError e);

    std::string name_;
    uint16_t max_size_;
    uint16_t size_;
    bool ready_ = false;
    uint64_t desc_addr_ = 0;
    uint64_t avail_addr_ = 0;
    uint64_t used_addr_ = 0;
    uint16_t next_avail_ = 0;
    uint16_t next_used_ = 0;
    // Dirty tracking on (GuestMemory::dirty_tracking): each popped chain's device-writable
    // ranges, by head, marked dirty again when the chain is used. A device may hold a chain
    // across a snapshot (RX buffers) and write it in the next diff's epoch.
    std::vector<std::vector<std::pair<uint64_t, uint32_t>>> writable_;
    void mark_used_dirty(const vmm::GuestMemory& mem, uint16_t head);
    bool event_idx_ = false;
    bool indirect_ = false;
    uint16_t signalled_used_ = 0;
    bool signalled_valid_ = false;
    QueueError broken_ = QueueError::kNone;
    std::atomic<uint64_t> errors_{0};
};

// Rate-limited stderr line for guest misbehaviour (at most 10 per second, then a count of the
// suppressed ones): a hostile guest must not be able to flood the host's logs.
void log_guest_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace vessel::virtio
