// Address-range dispatch of port I/O and MMIO exits to devices. Devices lock themselves:
// several vCPU threads may call into the same bus at once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>

namespace vessel::vmm {

class BusDevice {
  public:
    virtual ~BusDevice() = default;
    // `offset` is relative to the device's base. Guest-controlled: must not throw.
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
  public:
    void insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
        // Inclusive ends, so that a range may end exactly at the top of the address space.
        if (len == 0 || base + (len - 1) < base) throw std::invalid_argument("bus: bad range");
        const uint64_t last = base + (len - 1);
        auto next = ranges_.lower_bound(base);
        if (next != ranges_.end() && next->first <= last)
            throw std::invalid_argument("bus: overlapping device ranges");
        if (next != ranges_.begin()) {
            auto prev = std::prev(next);
            if (prev->first + (prev->second.len - 1) >= base)
                throw std::invalid_argument("bus: overlapping device ranges");
        }
        ranges_[base] = Range{len, std::move(dev)};
    }

    // Returns false when no device claims the address (reads then see zeros).
    bool read(uint64_t addr, std::span<uint8_t> data) const {
        uint64_t off;
        if (BusDevice* d = find(addr, off)) {
            d->read(off, data);
            return true;
        }
        std::fill(data.begin(), data.end(), 0);
        return false;
    }
    bool write(uint64_t addr, std::span<const uint8_t> data) const {
        uint64_t off;
        if (BusDevice* d = find(addr, off)) {
            d->write(off, data);
            return true;
        }
        return false;
    }

  private:
    struct Range {
        uint64_t len;
        std::shared_ptr<BusDevice> dev;
    };

    BusDevice* find(uint64_t addr, uint64_t& off) const {
        auto it = ranges_.upper_bound(addr);
        if (it == ranges_.begin()) return nullptr;
        --it;
        if (addr - it->first >= it->second.len) return nullptr;
        off = addr - it->first;
        return it->second.dev.get();
    }

    std::map<uint64_t, Range> ranges_;
};

}  // namespace vessel::vmm
