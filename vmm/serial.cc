#include "serial.h"

#include <utility>

namespace vessel::vmm {
namespace {

constexpr uint8_t kIerRda = 0x01, kIerThri = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirThri = 0x02, kIirRda = 0x04;
constexpr uint8_t kIirFifo = 0xc0;  // FIFOs enabled: Linux then detects a 16550A
constexpr uint8_t kLsrDr = 0x01, kLsrIdle = 0x60;
constexpr size_t kRxMax = 4096;

}  // namespace

void Serial::update_iir() {
    uint8_t old = st_.iir;
    if ((st_.ier & kIerRda) && !rx_.empty())
        st_.iir = kIirRda;
    else if ((st_.ier & kIerThri) && st_.thr_empty_pending)
        st_.iir = kIirThri;
    else
        st_.iir = kIirNone;
    if (st_.iir != kIirNone && st_.iir != old) irq_needed_ = true;
}

uint8_t Serial::read_reg(uint64_t off) {
    switch (off) {
        case 0:
            if (dlab()) return st_.dll;
            {
                uint8_t v = 0;
                if (!rx_.empty()) {
                    v = rx_.front();
                    rx_.pop_front();
                }
                update_iir();
                return v;
            }
        case 1:
            return dlab() ? st_.dlm : st_.ier;
        case 2: {
            uint8_t v = st_.iir | kIirFifo;
            // Reading IIR acknowledges a THR-empty interrupt.
            if (st_.iir == kIirThri) {
                st_.thr_empty_pending = false;
                update_iir();
            }
            return v;
        }
        case 3:
            return st_.lcr;
        case 4:
            return st_.mcr;
        case 5:
            return static_cast<uint8_t>(kLsrIdle | (rx_.empty() ? 0 : kLsrDr));
        case 6:
            if (loopback()) {
                // Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                uint8_t m = st_.mcr;
                return static_cast<uint8_t>(((m & 0x01) << 5) | ((m & 0x02) << 3) |
                                            ((m & 0x04) << 4) | ((m & 0x08) << 4));
            }
            return st_.msr;
        case 7:
            return st_.scr;
        default:
            return 0;
    }
}

void Serial::write_reg(uint64_t off, uint8_t v) {
    switch (off) {
        case 0:
            if (dlab()) {
                st_.dll = v;
            } else if (loopback()) {
                if (rx_.size() < kRxMax) rx_.push_back(v);
                st_.thr_empty_pending = true;
                update_iir();
            } else {
                if (out_) out_(v);
                st_.thr_empty_pending = true;
                update_iir();
            }
            break;
        case 1:
            if (dlab()) {
                st_.dlm = v;
            } else {
                uint8_t old = st_.ier;
                st_.ier = v & 0x0f;
                // Enabling THRI with an empty THR raises the interrupt at once.
                if (!(old & kIerThri) && (st_.ier & kIerThri)) st_.thr_empty_pending = true;
                update_iir();
            }
            break;
        case 2:
            if (v & 0x02) {  // FCR: clear receive FIFO, and with it a pending RX interrupt
                rx_.clear();
                update_iir();
            }
            break;
        case 3:
            st_.lcr = v;
            break;
        case 4:
            st_.mcr = v & 0x1f;
            break;
        case 7:
            st_.scr = v;
            break;
        default:
            break;  // LSR and MSR are read-only
    }
}

void Serial::read(uint64_t offset, std::span<uint8_t> data) {
    bool fire;
    {
        std::lock_guard lk(mu_);
        for (size_t i = 0; i < data.size(); ++i) data[i] = read_reg(offset + i);
        fire = std::exchange(irq_needed_, false);
    }
    if (fire && irq_) irq_();
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data) {
    bool fire;
    {
        std::lock_guard lk(mu_);
        for (size_t i = 0; i < data.size(); ++i) write_reg(offset + i, data[i]);
        fire = std::exchange(irq_needed_, false);
    }
    if (fire && irq_) irq_();
}

void Serial::enqueue_input(std::span<const uint8_t> bytes) {
    bool fire;
    {
        std::lock_guard lk(mu_);
        for (uint8_t b : bytes)
            if (rx_.size() < kRxMax) rx_.push_back(b);
        update_iir();
        fire = std::exchange(irq_needed_, false);
    }
    if (fire && irq_) irq_();
}

Serial::State Serial::state() const {
    std::lock_guard lk(mu_);
    return st_;
}

void Serial::set_state(const State& s) {
    std::lock_guard lk(mu_);
    st_ = s;
}

}  // namespace vessel::vmm
