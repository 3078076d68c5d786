// Devices through which the guest stops the VM: the i8042 reset line (reboot=k) and
// vessel's exit port, where guest init reports the workload's exit status.
#pragma once

#include <cstdint>
#include <functional>

#include "bus.h"

namespace vessel::vmm {

// Port 0x60/0x64. Only the CPU reset command matters; everything else reads as idle.
class I8042 : public BusDevice {
  public:
    explicit I8042(std::function<void()> reset) : reset_(std::move(reset)) {}
    void read(uint64_t, std::span<uint8_t> data) override {
        std::fill(data.begin(), data.end(), 0);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        // Command port is 0x64, four above the data port at the device base.
        if (offset == 4 && !data.empty() && data[0] == 0xfe && reset_) reset_();
    }

  private:
    std::function<void()> reset_;
};

// A 32-bit write carries the guest workload's exit status (0-255).
class ExitDevice : public BusDevice {
  public:
    explicit ExitDevice(std::function<void(uint32_t)> on_exit) : on_exit_(std::move(on_exit)) {}
    void read(uint64_t, std::span<uint8_t> data) override {
        std::fill(data.begin(), data.end(), 0);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (offset != 0 || data.empty() || !on_exit_) return;
        uint32_t v = 0;
        for (size_t i = 0; i < data.size() && i < 4; ++i) v |= uint32_t{data[i]} << (8 * i);
        on_exit_(v & 0xff);
    }

  private:
    std::function<void(uint32_t)> on_exit_;
};

}  // namespace vessel::vmm
