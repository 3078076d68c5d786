// libFuzzer target for the split virtqueue (virtio/queue.h): arbitrary bytes become the
// descriptor table, the avail ring and whatever the descriptors point at, and every available
// chain is popped and completed. Checks that nothing crashes, hangs or reads outside guest RAM
// (ASan/UBSan), and that every chain handed out obeys the documented guarantees.
//
// Input: an 8-byte header, then the avail ring (6 + 2 * size bytes), the descriptor table
// (16 * size bytes), then data memory (buffers, indirect tables) at 0x3000; short inputs leave
// the rest zero. Header:
//   [0] log2 of the queue size (mod 9: 1..256)
//   [1] flags: 1 INDIRECT, 2 EVENT_IDX, 4 fold descriptor addresses into [0, 2 * RAM) so they
//       hit real buffers about half the time, 8 make avail idx = start + (idx mod size+1)
//   [2..3] starting next_avail/next_used    [4..7] unused
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "virtio/queue.h"
#include "vmm/guest_memory.h"

namespace {

using vessel::virtio::PopResult;
using vessel::virtio::PopStatus;
using vessel::virtio::Queue;

constexpr uint64_t kMemSize = 64 << 10;
constexpr uint64_t kAvail = 0x0;
constexpr uint64_t kDesc = 0x1000;  // up to 256 * 16 bytes
constexpr uint64_t kUsed = 0x2000;
constexpr uint64_t kData = 0x3000;

// Copies up to `len` input bytes to guest address `gpa` and advances the input.
void take(uint8_t* ram, uint64_t gpa, uint64_t len, const uint8_t*& data, size_t& size) {
    size_t n = size < len ? size : len;
    std::memcpy(ram + gpa, data, n);
    data += n;
    size -= n;
}

void fold(uint8_t* ram, uint64_t from, uint64_t to) {
    for (uint64_t off = from; off + 8 <= to; off += 16) {
        uint64_t v;
        std::memcpy(&v, ram + off, 8);
        v %= 2 * kMemSize;
        std::memcpy(ram + off, &v, 8);
    }
}

void require(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static vessel::vmm::GuestMemory mem = vessel::vmm::GuestMemory::create(kMemSize);
    static uint8_t* ram = mem.host_ptr(0, kMemSize);
    if (size < 8) return 0;

    const uint16_t qsize = static_cast<uint16_t>(1u << (data[0] % 9));
    const uint8_t flags = data[1];
    uint16_t start;
    std::memcpy(&start, data + 2, 2);
    data += 8;
    size -= 8;

    std::memset(ram, 0, kMemSize);
    take(ram, kAvail, 6 + 2ull * qsize, data, size);
    take(ram, kDesc, 16ull * qsize, data, size);
    take(ram, kData, kMemSize - kData, data, size);
    if (flags & 4) {
        fold(ram, kDesc, kDesc + 16ull * qsize);
        fold(ram, kData, kMemSize);
    }
    if (flags & 8) {
        uint16_t idx;
        std::memcpy(&idx, ram + kAvail + 2, 2);
        idx = static_cast<uint16_t>(start + idx % (qsize + 1u));
        std::memcpy(ram + kAvail + 2, &idx, 2);
    }

    Queue q(256, "fuzz");
    Queue::State s = q.state();
    s.size = qsize;
    s.ready = true;
    s.desc_addr = kDesc;
    s.avail_addr = kAvail;
    s.used_addr = kUsed;
    s.next_avail = s.next_used = start;
    s.indirect = flags & 1;
    s.event_idx = flags & 2;
    q.restore(s);
    require(q.is_valid(mem));

    // Each pop consumes one entry and at most qsize are pending, so this terminates; the bound
    // catches a queue that stops advancing.
    for (unsigned i = 0; i <= qsize + 1u; ++i) {
        PopResult r = q.pop(mem);
        if (r.status == PopStatus::kEmpty || r.status == PopStatus::kBroken) break;
        require(i < qsize);
        if (r.status == PopStatus::kChain) {
            require(!r.chain.descs.empty());
            require(r.chain.head < qsize);
            uint64_t total = 0;
            bool writable = false;
            for (const auto& d : r.chain.descs) {
                require(mem.host_ptr(d.addr, d.len) != nullptr);
                require(!writable || d.device_writable);
                writable = d.device_writable;
                total += d.len;
                // Touch the bytes as a device would: ASan would flag a bad mapping.
                if (d.len) {
                    volatile uint8_t sink = *mem.host_ptr(d.addr + d.len - 1, 1);
                    (void)sink;
                }
            }
            require(total <= UINT32_MAX);
            require(r.chain.descs.size() <= qsize + Queue::kMaxIndirectEntries);
            require(q.add_used(mem, r.chain.head, static_cast<uint32_t>(total)));
        } else {
            require(r.chain.descs.empty());
            q.add_used(mem, r.chain.head, 0);
        }
        q.needs_interrupt(mem);
    }
    return 0;
}
