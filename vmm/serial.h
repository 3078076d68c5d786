// 16550A UART as Linux's 8250 driver expects it: enough of the register set for probing,
// THR-empty and receive interrupts, and loopback for the driver's self-test.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

#include "bus.h"

namespace vessel::vmm {

class Serial : public BusDevice {
  public:
    // Plain register state, saved and restored by snapshots.
    struct State {
        uint8_t ier = 0;
        uint8_t iir = 0x01;  // no interrupt pending
        uint8_t lcr = 0x03;  // 8N1
        uint8_t mcr = 0x08;  // OUT2
        uint8_t lsr = 0x60;  // THR and transmitter empty
        uint8_t msr = 0xb0;  // DCD, DSR, CTS
        uint8_t scr = 0;
        uint8_t dll = 0x0c;  // 9600 baud
        uint8_t dlm = 0;
        bool thr_empty_pending = false;
    };

    using Output = std::function<void(uint8_t)>;
    using Interrupt = std::function<void()>;

    Serial(Output out, Interrupt irq) : out_(std::move(out)), irq_(std::move(irq)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host input for the guest (console stdin).
    void enqueue_input(std::span<const uint8_t> bytes);

    State state() const;
    void set_state(const State& s);

  private:
    uint8_t read_reg(uint64_t off);
    void write_reg(uint64_t off, uint8_t v);
    void update_iir();  // recomputes IIR; returns with irq_needed_ set when it rose
    bool dlab() const { return st_.lcr & 0x80; }
    bool loopback() const { return st_.mcr & 0x10; }

    mutable std::mutex mu_;
    State st_;
    std::deque<uint8_t> rx_;
    Output out_;
    Interrupt irq_;
    bool irq_needed_ = false;
};

}  // namespace vessel::vmm
