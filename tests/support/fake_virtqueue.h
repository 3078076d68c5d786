// The driver's side of a split virtqueue, for tests: lays the rings out in a real GuestMemory,
// writes descriptor chains (direct or as an indirect table), publishes them in the avail ring
// and reads back the used ring. Raw accessors craft the malformed chains a hostile guest would.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "virtio/queue.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::testing {

struct RawDesc {
    uint64_t addr = 0;
    uint32_t len = 0;
    uint16_t flags = 0;
    uint16_t next = 0;
};
static_assert(sizeof(RawDesc) == 16);

// One buffer of a chain: device-readable with contents, or device-writable of a length.
struct Buf {
    std::vector<uint8_t> data;
    uint32_t len = 0;
    bool writable = false;

    static Buf readable(std::vector<uint8_t> bytes) {
        Buf b;
        b.len = static_cast<uint32_t>(bytes.size());
        b.data = std::move(bytes);
        return b;
    }
    static Buf writable_len(uint32_t n) {
        Buf b;
        b.len = n;
        b.writable = true;
        return b;
    }
};

struct UsedElem {
    uint32_t id;
    uint32_t len;
};

class FakeVirtqueue {
  public:
    // Rings at `base` (16-aligned): descriptor table, avail ring, used ring, packed tightly
    // with the minimum alignments. Buffers and indirect tables come from `data_base` upwards.
    FakeVirtqueue(const vmm::GuestMemory& mem, uint16_t size, uint64_t base = 0x10000,
                  uint64_t data_base = 0x100000)
        : mem_(mem), size_(size), next_data_(data_base) {
        desc_ = base;
        avail_ = desc_ + 16ull * size;
        used_ = (avail_ + 6 + 2ull * size + 3) & ~3ull;
        std::vector<uint8_t> zero(used_ + 6 + 8ull * size - desc_);
        check(mem_.write(desc_, zero.data(), zero.size()));
    }

    uint16_t size() const { return size_; }
    uint64_t desc_addr() const { return desc_; }
    uint64_t avail_addr() const { return avail_; }
    uint64_t used_addr() const { return used_; }

    // Points `q` at these rings, applies `features` and marks it ready.
    void configure(Queue& q, uint64_t features = 0) const {
        q.set_size(size_);
        q.set_desc_addr(desc_);
        q.set_avail_addr(avail_);
        q.set_used_addr(used_);
        q.set_features(features);
        q.set_ready(true);
    }

    // --- buffers ---
    uint64_t alloc(uint64_t len) {
        uint64_t a = next_data_;
        next_data_ = (next_data_ + len + 15) & ~15ull;
        return a;
    }
    uint64_t put(const std::vector<uint8_t>& bytes) {
        uint64_t a = alloc(bytes.size());
        check(mem_.write(a, bytes.data(), bytes.size()));
        return a;
    }
    std::vector<uint8_t> read(uint64_t gpa, uint64_t len) const {
        std::vector<uint8_t> v(len);
        check(mem_.read(gpa, v.data(), len));
        return v;
    }

    // --- descriptor table ---
    void set_desc(uint16_t idx, const RawDesc& d) { check(mem_.write_obj(desc_ + 16ull * idx, d)); }
    RawDesc desc(uint16_t idx) const {
        RawDesc d;
        check(mem_.read_obj(desc_ + 16ull * idx, d));
        return d;
    }
    // Next free descriptor slot (slots are handed out round-robin and never reclaimed).
    uint16_t take_slot() { return static_cast<uint16_t>(next_slot_++ % size_); }

    // Writes `bufs` as a chain into free slots; returns the head (not yet published).
    uint16_t write_chain(const std::vector<Buf>& bufs) {
        std::vector<uint16_t> slots;
        for (size_t i = 0; i < bufs.size(); ++i) slots.push_back(take_slot());
        for (size_t i = 0; i < bufs.size(); ++i) {
            RawDesc d = to_raw(bufs[i]);
            if (i + 1 < bufs.size()) {
                d.flags |= kDescFNext;
                d.next = slots[i + 1];
            }
            set_desc(slots[i], d);
        }
        return slots.at(0);
    }
    // Writes `entries` as an indirect table in data memory; returns its address.
    uint64_t write_table(const std::vector<RawDesc>& entries) {
        uint64_t a = alloc(16 * entries.size());
        check(mem_.write(a, entries.data(), 16 * entries.size()));
        return a;
    }
    // `bufs` as a well-formed indirect table (entries chained 0 -> 1 -> ...).
    std::vector<RawDesc> table_for(const std::vector<Buf>& bufs) {
        std::vector<RawDesc> t;
        for (size_t i = 0; i < bufs.size(); ++i) {
            RawDesc d = to_raw(bufs[i]);
            if (i + 1 < bufs.size()) {
                d.flags |= kDescFNext;
                d.next = static_cast<uint16_t>(i + 1);
            }
            t.push_back(d);
        }
        return t;
    }

    // --- avail ring ---
    void publish(uint16_t head) {
        uint16_t idx = avail_idx();
        check(mem_.write_obj(avail_ + 4 + 2ull * (idx % size_), head));
        set_avail_idx(static_cast<uint16_t>(idx + 1));
    }
    uint16_t add_chain(const std::vector<Buf>& bufs) {
        uint16_t head = write_chain(bufs);
        publish(head);
        return head;
    }
    // The chain as an indirect table behind one ring descriptor.
    uint16_t add_indirect_chain(const std::vector<Buf>& bufs) {
        return add_indirect_raw(table_for(bufs));
    }
    // One ring descriptor with VIRTQ_DESC_F_INDIRECT (plus `extra_flags`) pointing at `table`.
    uint16_t add_indirect_raw(const std::vector<RawDesc>& table, uint16_t extra_flags = 0) {
        uint64_t a = write_table(table);
        return add_raw(RawDesc{a, static_cast<uint32_t>(16 * table.size()),
                               static_cast<uint16_t>(kDescFIndirect | extra_flags), 0});
    }
    // A one-descriptor chain exactly as given (any address, length, flags, next).
    uint16_t add_raw(const RawDesc& d) {
        uint16_t head = take_slot();
        set_desc(head, d);
        publish(head);
        return head;
    }

    uint16_t avail_idx() const { return get16(avail_ + 2); }
    void set_avail_idx(uint16_t v) { put16(avail_ + 2, v); }
    void set_avail_flags(uint16_t v) { put16(avail_, v); }
    void set_used_event(uint16_t v) { put16(avail_ + 4 + 2ull * size_, v); }
    // Overwrites ring slot `slot` (not idx) with `head`, for crafted heads.
    void set_avail_ring(uint16_t slot, uint16_t head) { put16(avail_ + 4 + 2ull * slot, head); }

    // --- used ring ---
    uint16_t used_idx() const { return get16(used_ + 2); }
    uint16_t avail_event() const { return get16(used_ + 4 + 8ull * size_); }
    // The element written for the n-th completion (n is a free-running used index).
    UsedElem used(uint16_t n) const {
        UsedElem e;
        check(mem_.read_obj(used_ + 4 + 8ull * (n % size_), e));
        return e;
    }

    // --- malformed chains ---
    // n descriptors whose last points back to the first.
    uint16_t add_loop_chain(uint16_t n) {
        std::vector<uint16_t> slots;
        for (uint16_t i = 0; i < n; ++i) slots.push_back(take_slot());
        for (uint16_t i = 0; i < n; ++i) {
            uint64_t a = alloc(16);
            set_desc(slots[i], RawDesc{a, 16, kDescFNext, slots[(i + 1) % n]});
        }
        publish(slots[0]);
        return slots[0];
    }
    // A descriptor whose NEXT index is past the table.
    uint16_t add_bad_next_chain() { return add_raw(RawDesc{alloc(16), 16, kDescFNext, size_}); }
    // An indirect table holding another indirect descriptor.
    uint16_t add_nested_indirect_chain() {
        uint64_t inner = write_table({RawDesc{alloc(16), 16, 0, 0}});
        return add_indirect_raw({RawDesc{inner, 16, kDescFIndirect, 0}});
    }

  private:
    RawDesc to_raw(const Buf& b) {
        RawDesc d;
        d.len = b.len;
        d.addr = b.data.empty() ? alloc(b.len) : put(b.data);
        d.flags = b.writable ? kDescFWrite : 0;
        return d;
    }
    uint16_t get16(uint64_t gpa) const {
        uint16_t v;
        check(mem_.read_obj(gpa, v));
        return v;
    }
    void put16(uint64_t gpa, uint16_t v) { check(mem_.write_obj(gpa, v)); }
    static void check(bool ok) {
        if (!ok) throw std::out_of_range("fake virtqueue: address outside guest memory");
    }

    const vmm::GuestMemory& mem_;
    uint16_t size_;
    uint64_t desc_ = 0, avail_ = 0, used_ = 0;
    uint64_t next_data_;
    uint32_t next_slot_ = 0;
};

}  // namespace vessel::virtio::testing
