#include "virtio/queue.h"

#include <bit>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace vessel::virtio {

// virtio 1.x rings are little-endian; we read them in host order.
static_assert(std::endian::native == std::endian::little);

namespace {

struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(RawDesc) == 16);

// Ring field offsets (struct virtq_avail / virtq_used).
constexpr uint64_t kAvailIdx = 2;
constexpr uint64_t kAvailRing = 4;
constexpr uint64_t kUsedIdx = 2;
constexpr uint64_t kUsedRing = 4;
constexpr uint64_t kUsedElemSize = 8;

uint64_t desc_bytes(uint16_t n) {
    return 16ull * n;
}
uint64_t avail_bytes(uint16_t n) {
    return 6 + 2ull * n;
}  // flags, idx, ring[n], used_event
uint64_t used_bytes(uint16_t n) {
    return 6 + 8ull * n;
}  // flags, idx, ring[n], avail_event

// Guest-shared u16 fields that the driver reads or writes concurrently go through atomic_ref:
// the ordering (acquire on avail idx, release on used idx) is the virtio memory model.
uint16_t* field16(const vmm::GuestMemory& mem, uint64_t gpa) {
    uint8_t* p = mem.host_ptr(gpa, 2);
    if (!p || reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) != 0) return nullptr;
    return reinterpret_cast<uint16_t*>(p);
}

bool load16(const vmm::GuestMemory& mem, uint64_t gpa, uint16_t& v, std::memory_order o) {
    uint16_t* p = field16(mem, gpa);
    if (!p) return false;
    v = std::atomic_ref<uint16_t>(*p).load(o);
    return true;
}

bool store16(const vmm::GuestMemory& mem, uint64_t gpa, uint16_t v, std::memory_order o) {
    uint16_t* p = field16(mem, gpa);
    if (!p) return false;
    std::atomic_ref<uint16_t>(*p).store(v, o);
    mem.mark_dirty(gpa, sizeof v);
    return true;
}

}  // namespace

std::string_view to_string(QueueError e) {
    switch (e) {
        case QueueError::kNone:
            return "ok";
        case QueueError::kHeadOutOfRange:
            return "head index out of range";
        case QueueError::kNextOutOfRange:
            return "next index out of range";
        case QueueError::kChainTooLong:
            return "chain longer than its table (loop)";
        case QueueError::kDescOutOfRange:
            return "buffer outside guest memory";
        case QueueError::kReadableAfterWritable:
            return "device-readable after device-writable";
        case QueueError::kTotalLengthTooLarge:
            return "total chain length exceeds 4 GiB";
        case QueueError::kIndirectNotNegotiated:
            return "indirect descriptor not negotiated";
        case QueueError::kIndirectWithNext:
            return "indirect descriptor with NEXT";
        case QueueError::kNestedIndirect:
            return "nested indirect table";
        case QueueError::kIndirectBadLength:
            return "bad indirect table length";
        case QueueError::kIndirectOutOfRange:
            return "indirect table outside guest memory";
        case QueueError::kInvalidLayout:
            return "invalid queue size or ring alignment";
        case QueueError::kRingOutOfRange:
            return "ring outside guest memory";
        case QueueError::kAvailIdxJump:
            return "avail idx moved by more than the queue size";
    }
    return "?";
}

void log_guest_error(const char* fmt, ...) {
    using Clock = std::chrono::steady_clock;
    static std::mutex mu;
    static Clock::time_point window;
    static unsigned in_window = 0;
    static uint64_t suppressed = 0;
    constexpr unsigned kPerSecond = 10;

    std::lock_guard lock(mu);
    auto now = Clock::now();
    if (now - window >= std::chrono::seconds(1)) {
        if (suppressed)
            std::fprintf(stderr, "vessel: virtio: %llu guest error messages suppressed\n",
                         static_cast<unsigned long long>(suppressed));
        window = now;
        in_window = 0;
        suppressed = 0;
    }
    if (in_window >= kPerSecond) {
        ++suppressed;
        return;
    }
    ++in_window;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "vessel: virtio: %s\n", buf);
}

Queue::Queue(uint16_t max_size, std::string name)
    : name_(std::move(name)), max_size_(max_size), size_(max_size) {
    if (max_size == 0 || max_size > kMaxSize || !std::has_single_bit(max_size))
        throw std::invalid_argument("virtio queue: max size must be a power of two <= 32768");
}

void Queue::set_features(uint64_t driver_features) {
    event_idx_ = driver_features & kFeatureEventIdx;
    indirect_ = driver_features & kFeatureIndirectDesc;
}

bool Queue::layout_ok() const {
    return size_ != 0 && size_ <= max_size_ && std::has_single_bit(size_) && desc_addr_ % 16 == 0 &&
           avail_addr_ % 2 == 0 && used_addr_ % 4 == 0;
}

bool Queue::is_valid(const vmm::GuestMemory& mem) const {
    return layout_ok() && mem.host_ptr(desc_addr_, desc_bytes(size_)) &&
           mem.host_ptr(avail_addr_, avail_bytes(size_)) &&
           mem.host_ptr(used_addr_, used_bytes(size_));
}

void Queue::reset() {
    size_ = max_size_;
    ready_ = false;
    desc_addr_ = avail_addr_ = used_addr_ = 0;
    next_avail_ = next_used_ = 0;
    event_idx_ = indirect_ = false;
    signalled_used_ = 0;
    signalled_valid_ = false;
    broken_ = QueueError::kNone;
}

Queue::State Queue::state() const {
    return State{max_size_,  size_,       ready_,     desc_addr_, avail_addr_,
                 used_addr_, next_avail_, next_used_, event_idx_, indirect_};
}

void Queue::restore(const State& s) {
    if (s.max_size != max_size_ || s.size > max_size_)
        throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                                "restoring virtio queue " + name_ + ": size does not fit");
    size_ = s.size;
    ready_ = s.ready;
    desc_addr_ = s.desc_addr;
    avail_addr_ = s.avail_addr;
    used_addr_ = s.used_addr;
    next_avail_ = s.next_avail;
    next_used_ = s.next_used;
    event_idx_ = s.event_idx;
    indirect_ = s.indirect;
    signalled_valid_ = false;
    broken_ = QueueError::kNone;
}

PopResult Queue::fail_queue(QueueError e) {
    if (broken_ == QueueError::kNone) {
        broken_ = e;
        errors_.fetch_add(1, std::memory_order_relaxed);
        log_guest_error("%s: queue broken: %s", name_.c_str(), std::string(to_string(e)).c_str());
    }
    PopResult r;
    r.status = PopStatus::kBroken;
    r.error = broken_;
    return r;
}

PopResult Queue::pop(const vmm::GuestMemory& mem) {
    if (!ready_) return {};
    if (broken_ != QueueError::kNone) return fail_queue(broken_);
    if (!layout_ok()) return fail_queue(QueueError::kInvalidLayout);

    const uint64_t avail_event = used_addr_ + kUsedRing + kUsedElemSize * size_;
    uint16_t avail_idx;
    if (!load16(mem, avail_addr_ + kAvailIdx, avail_idx, std::memory_order_acquire))
        return fail_queue(QueueError::kRingOutOfRange);
    uint16_t pending = avail_idx - next_avail_;
    if (pending == 0 && event_idx_) {
        // Ask for a notification when the next buffer arrives, then look again: the driver
        // may have published one before it could see our avail_event (lost wake-up).
        if (!store16(mem, avail_event, next_avail_, std::memory_order_relaxed))
            return fail_queue(QueueError::kRingOutOfRange);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (!load16(mem, avail_addr_ + kAvailIdx, avail_idx, std::memory_order_acquire))
            return fail_queue(QueueError::kRingOutOfRange);
        pending = avail_idx - next_avail_;
    }
    if (pending > size_) return fail_queue(QueueError::kAvailIdxJump);
    if (pending == 0) return {};

    // The descriptor table is checked as a whole once; entries are then indexed below size.
    const uint8_t* table = mem.host_ptr(desc_addr_, desc_bytes(size_));
    uint16_t head;
    const uint64_t slot = avail_addr_ + kAvailRing + 2ull * (next_avail_ & (size_ - 1));
    if (!table || !mem.read_obj(slot, head)) return fail_queue(QueueError::kRingOutOfRange);
    ++next_avail_;
    if (event_idx_ && !store16(mem, avail_event, next_avail_, std::memory_order_relaxed))
        return fail_queue(QueueError::kRingOutOfRange);

    PopResult r;
    r.chain.head = head;
    QueueError e = walk(mem, table, head, r.chain.descs);
    if (e != QueueError::kNone) {
        errors_.fetch_add(1, std::memory_order_relaxed);
        log_guest_error("%s: bad descriptor chain (head %u): %s", name_.c_str(), head,
                        std::string(to_string(e)).c_str());
        r.status = PopStatus::kBadChain;
        r.error = e;
        r.chain.descs.clear();
        return r;
    }
    r.status = PopStatus::kChain;
    // The device may write any device-writable buffer it was handed: a diff snapshot must
    // hold those pages (KVM's dirty log sees only the guest's own writes).
    if (mem.dirty_tracking()) {
        if (writable_.size() != size_) writable_.assign(size_, {});
        auto& w = writable_[head];
        w.clear();
        for (const Descriptor& d : r.chain.descs) {
            if (!d.device_writable) continue;
            mem.mark_dirty(d.addr, d.len);
            w.emplace_back(d.addr, d.len);
        }
    }
    return r;
}

void Queue::mark_used_dirty(const vmm::GuestMemory& mem, uint16_t head) {
    if (head >= writable_.size()) return;
    for (auto [addr, len] : writable_[head]) mem.mark_dirty(addr, len);
    writable_[head].clear();
}

QueueError Queue::walk(const vmm::GuestMemory& mem, const uint8_t* table, uint16_t head,
                       std::vector<Descriptor>& out) const {
    if (head >= size_) return QueueError::kHeadOutOfRange;
    uint32_t table_len = size_;  // entries in the table being walked
    bool in_indirect = false;
    uint32_t idx = head;
    uint32_t walked = 0;  // descriptors taken from this table: more than its size is a loop
    uint64_t total = 0;
    bool seen_writable = false;
    for (;;) {
        // Copy first: the guest can change the descriptor while we look at it.
        RawDesc d;
        std::memcpy(&d, table + 16ull * idx, sizeof d);
        if (++walked > table_len) return QueueError::kChainTooLong;

        if (d.flags & kDescFIndirect) {
            if (!indirect_) return QueueError::kIndirectNotNegotiated;
            if (in_indirect) return QueueError::kNestedIndirect;
            if (d.flags & kDescFNext) return QueueError::kIndirectWithNext;
            if (d.len == 0 || d.len % 16 != 0 || d.len / 16 > kMaxIndirectEntries)
                return QueueError::kIndirectBadLength;
            table = mem.host_ptr(d.addr, d.len);
            if (!table) return QueueError::kIndirectOutOfRange;
            table_len = d.len / 16;
            in_indirect = true;
            idx = 0;
            walked = 0;
            continue;
        }

        if (!mem.host_ptr(d.addr, d.len)) return QueueError::kDescOutOfRange;
        const bool writable = d.flags & kDescFWrite;
        if (!writable && seen_writable) return QueueError::kReadableAfterWritable;
        seen_writable |= writable;
        total += d.len;
        if (total > UINT32_MAX) return QueueError::kTotalLengthTooLarge;
        out.push_back(Descriptor{d.addr, d.len, writable});

        if (!(d.flags & kDescFNext)) return QueueError::kNone;
        if (d.next >= table_len) return QueueError::kNextOutOfRange;
        idx = d.next;
    }
}

bool Queue::add_used(const vmm::GuestMemory& mem, uint16_t head, uint32_t len) {
    if (!ready_ || !layout_ok() || head >= size_) return false;
    const uint64_t elem = used_addr_ + kUsedRing + kUsedElemSize * (next_used_ & (size_ - 1));
    const uint32_t v[2] = {head, len};
    if (!mem.write(elem, v, sizeof v)) return false;
    if (mem.dirty_tracking()) mark_used_dirty(mem, head);
    ++next_used_;
    // Release: the element must be visible before the driver sees the new idx.
    return store16(mem, used_addr_ + kUsedIdx, next_used_, std::memory_order_release);
}

bool Queue::add_used_batch(const vmm::GuestMemory& mem, std::span<const UsedElem> elems) {
    if (!ready_ || !layout_ok()) return false;
    for (const UsedElem& e : elems)
        if (e.head >= size_) return false;
    uint16_t next = next_used_;
    for (const UsedElem& e : elems) {
        const uint64_t elem = used_addr_ + kUsedRing + kUsedElemSize * (next & (size_ - 1));
        const uint32_t v[2] = {e.head, e.len};
        if (!mem.write(elem, v, sizeof v)) return false;
        if (mem.dirty_tracking()) mark_used_dirty(mem, e.head);
        ++next;
    }
    if (!store16(mem, used_addr_ + kUsedIdx, next, std::memory_order_release)) return false;
    next_used_ = next;
    return true;
}

bool Queue::needs_interrupt(const vmm::GuestMemory& mem) {
    if (!ready_ || !layout_ok()) return false;
    // Our used idx store must be globally visible before we read the driver's suppression
    // state, or we could miss a driver that just re-enabled interrupts.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!event_idx_) {
        uint16_t flags;
        if (!load16(mem, avail_addr_, flags, std::memory_order_relaxed)) return true;
        return !(flags & kAvailFNoInterrupt);
    }
    uint16_t used_event;
    if (!load16(mem, avail_addr_ + kAvailRing + 2ull * size_, used_event,
                std::memory_order_relaxed))
        return true;
    const uint16_t new_idx = next_used_;
    const uint16_t old_idx = signalled_used_;
    const bool known = signalled_valid_;
    signalled_used_ = new_idx;
    signalled_valid_ = true;
    if (!known) return true;
    // Interrupt iff used_event lies in [old_idx, new_idx), in 16-bit modular arithmetic.
    return static_cast<uint16_t>(new_idx - used_event - 1) <
           static_cast<uint16_t>(new_idx - old_idx);
}

}  // namespace vessel::virtio
