// 16550A UART register behaviour as Linux's 8250 driver relies on it (vmm/serial.h).
#include "vmm/serial.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

namespace vessel::vmm {
namespace {

// Register offsets (DLAB = 0 unless noted).
constexpr uint64_t kRbrThr = 0, kIer = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                   kScr = 7;
constexpr uint64_t kDll = 0, kDlm = 1;  // DLAB = 1

constexpr uint8_t kIerRda = 0x01, kIerThri = 0x02;
constexpr uint8_t kIirNoInt = 0x01, kIirThri = 0x02, kIirRda = 0x04, kIirFifos = 0xc0;
constexpr uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;

class SerialTest : public ::testing::Test {
  protected:
    std::vector<uint8_t> out_;
    int irqs_ = 0;
    Serial uart_{[this](uint8_t b) { out_.push_back(b); }, [this] { ++irqs_; }};

    void wr(uint64_t off, uint8_t v) {
        uint8_t b = v;
        uart_.write(off, std::span<const uint8_t>(&b, 1));
    }
    uint8_t rd(uint64_t off) {
        uint8_t b = 0xee;
        uart_.read(off, std::span<uint8_t>(&b, 1));
        return b;
    }
    void input(const std::string& s) {
        uart_.enqueue_input(
            std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
    }
};

TEST_F(SerialTest, ResetState) {
    EXPECT_EQ(rd(kIer), 0);
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
    EXPECT_EQ(rd(kLcr), 0x03) << "8N1";
    EXPECT_EQ(rd(kLsr), kLsrThre | kLsrTemt) << "transmitter idle, nothing received";
    EXPECT_EQ(rd(kMsr) & (kMsrDcd | kMsrDsr | kMsrCts), kMsrDcd | kMsrDsr | kMsrCts);
    EXPECT_EQ(irqs_, 0);
}

TEST_F(SerialTest, TransmittedBytesReachTheSink) {
    for (char c : std::string("hello\n")) wr(kRbrThr, static_cast<uint8_t>(c));
    EXPECT_EQ(std::string(out_.begin(), out_.end()), "hello\n");
    EXPECT_EQ(irqs_, 0) << "no interrupts while IER is 0";
    EXPECT_EQ(rd(kLsr) & (kLsrThre | kLsrTemt), kLsrThre | kLsrTemt) << "always ready again";
}

TEST_F(SerialTest, DlabSelectsDivisorLatch) {
    wr(kIer, kIerRda);
    wr(kLcr, 0x03 | kLcrDlab);
    wr(kDll, 0x01);  // 115200 baud
    wr(kDlm, 0x00);
    EXPECT_EQ(rd(kDll), 0x01);
    EXPECT_EQ(rd(kDlm), 0x00);
    wr(kDlm, 0x42);
    EXPECT_EQ(rd(kDlm), 0x42);
    EXPECT_TRUE(out_.empty()) << "DLL writes are not data";
    wr(kLcr, 0x03);
    EXPECT_EQ(rd(kIer), kIerRda) << "IER untouched by the DLM write";
    wr(kRbrThr, 'x');
    EXPECT_EQ(out_, std::vector<uint8_t>{'x'});
    auto st = uart_.state();
    EXPECT_EQ(st.dll, 0x01);
    EXPECT_EQ(st.dlm, 0x42);
}

TEST_F(SerialTest, EnablingThriRaisesInterruptAndIirReadAcknowledges) {
    wr(kIer, kIerThri);
    EXPECT_EQ(irqs_, 1);
    EXPECT_EQ(rd(kIirFcr), kIirThri | kIirFifos);
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos) << "IIR read cleared THRI";
    EXPECT_EQ(irqs_, 1);
}

TEST_F(SerialTest, EachAcknowledgedThrWriteRaisesOneInterrupt) {
    wr(kIer, kIerThri);
    ASSERT_EQ(rd(kIirFcr), kIirThri | kIirFifos);
    int base = irqs_;
    for (int i = 1; i <= 5; ++i) {
        wr(kRbrThr, static_cast<uint8_t>('0' + i));
        EXPECT_EQ(irqs_, base + i);
        EXPECT_EQ(rd(kIirFcr), kIirThri | kIirFifos);
        EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
    }
    EXPECT_EQ(std::string(out_.begin(), out_.end()), "12345");
}

TEST_F(SerialTest, DisablingThriClearsPendingAndReenablingRaisesAgain) {
    // serial8250's start_tx sets IER.THRI and expects the interrupt at once.
    wr(kIer, kIerThri);
    EXPECT_EQ(irqs_, 1);
    wr(kIer, 0);
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
    wr(kIer, kIerThri);
    EXPECT_EQ(irqs_, 2);
    EXPECT_EQ(rd(kIirFcr), kIirThri | kIirFifos);
}

TEST_F(SerialTest, LinuxThreReassertTestPasses) {
    // serial8250_do_startup: a UART that does not re-assert THRE after IER is toggled gets
    // UART_BUG_THRE and a polling timer.
    wr(kIer, kIerThri);
    uint8_t iir1 = rd(kIirFcr);
    wr(kIer, 0);
    wr(kIer, kIerThri);
    uint8_t iir = rd(kIirFcr);
    wr(kIer, 0);
    EXPECT_FALSE(iir1 & kIirNoInt);
    EXPECT_FALSE(iir & kIirNoInt);
}

TEST_F(SerialTest, LoopbackModemStatusMirrorsMcr) {
    // Linux autoconfig: LOOP | OUT2 | RTS must read back as DCD | CTS.
    wr(kMcr, kMcrLoop | kMcrOut2 | kMcrRts);
    EXPECT_EQ(rd(kMsr) & 0xf0, kMsrDcd | kMsrCts);
    ASSERT_EQ(kMcrLoop | kMcrOut2 | kMcrRts, 0x1a);
    wr(kMcr, 0x1f);
    EXPECT_EQ(rd(kMsr) & 0xf0, 0xf0);
    wr(kMcr, kMcrLoop);
    EXPECT_EQ(rd(kMsr) & 0xf0, 0);
    wr(kMcr, kMcrLoop | kMcrDtr);
    EXPECT_EQ(rd(kMsr) & 0xf0, kMsrDsr);
    wr(kMcr, kMcrLoop | kMcrOut1);
    EXPECT_EQ(rd(kMsr) & 0xf0, kMsrRi);
    // Out of loopback the real modem lines show again.
    wr(kMcr, kMcrOut2 | kMcrRts | kMcrDtr);
    EXPECT_EQ(rd(kMsr) & (kMsrDcd | kMsrDsr | kMsrCts), kMsrDcd | kMsrDsr | kMsrCts);
    EXPECT_EQ(rd(kMcr), kMcrOut2 | kMcrRts | kMcrDtr);
}

TEST_F(SerialTest, LoopbackBytesComeBackInRbrNotOnTheSink) {
    wr(kMcr, kMcrLoop | kMcrOut2);
    wr(kRbrThr, 'A');
    wr(kRbrThr, 'B');
    EXPECT_TRUE(out_.empty());
    EXPECT_TRUE(rd(kLsr) & kLsrDr);
    EXPECT_EQ(rd(kRbrThr), 'A');
    EXPECT_EQ(rd(kRbrThr), 'B');
    EXPECT_FALSE(rd(kLsr) & kLsrDr);
    wr(kMcr, kMcrOut2);
    wr(kRbrThr, 'C');
    EXPECT_EQ(out_, std::vector<uint8_t>{'C'});
    EXPECT_FALSE(rd(kLsr) & kLsrDr) << "normal-mode output does not loop back";
}

TEST_F(SerialTest, InputSetsDataReadyAndRaisesRxInterrupt) {
    wr(kIer, kIerRda);
    ASSERT_EQ(irqs_, 0) << "nothing to receive yet";
    input("xy");
    EXPECT_EQ(irqs_, 1);
    EXPECT_TRUE(rd(kLsr) & kLsrDr);
    EXPECT_EQ(rd(kIirFcr), kIirRda | kIirFifos);
    EXPECT_EQ(rd(kIirFcr), kIirRda | kIirFifos) << "IIR read does not clear RDA";
    EXPECT_EQ(rd(kRbrThr), 'x');
    EXPECT_EQ(rd(kIirFcr), kIirRda | kIirFifos) << "one byte left";
    EXPECT_EQ(rd(kRbrThr), 'y');
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
    EXPECT_FALSE(rd(kLsr) & kLsrDr);
    EXPECT_EQ(irqs_, 1);
}

TEST_F(SerialTest, InputWithoutRdaEnabledIsPolledAndRaisesOnEnable) {
    input("z");
    EXPECT_EQ(irqs_, 0);
    EXPECT_TRUE(rd(kLsr) & kLsrDr);
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
    wr(kIer, kIerRda);  // data already waiting: the interrupt fires now
    EXPECT_EQ(irqs_, 1);
    EXPECT_EQ(rd(kIirFcr), kIirRda | kIirFifos);
    EXPECT_EQ(rd(kRbrThr), 'z');
}

TEST_F(SerialTest, ReceiveHasPriorityOverThri) {
    wr(kIer, kIerRda | kIerThri);
    input("q");
    EXPECT_EQ(rd(kIirFcr), kIirRda | kIirFifos);
    EXPECT_EQ(rd(kRbrThr), 'q');
    // THRI was never acknowledged (the IIR read reported RDA), so it surfaces now.
    EXPECT_EQ(rd(kIirFcr), kIirThri | kIirFifos);
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
}

TEST_F(SerialTest, FifoClearDropsInputAndItsInterrupt) {
    wr(kIer, kIerRda);
    input("abc");
    ASSERT_EQ(rd(kIirFcr), kIirRda | kIirFifos);
    wr(kIirFcr, 0x01 | 0x02);  // FCR: enable FIFOs, clear receive FIFO
    EXPECT_FALSE(rd(kLsr) & kLsrDr);
    // The receive-data interrupt goes with the data (16550 datasheet, FCR bit 1).
    EXPECT_EQ(rd(kIirFcr), kIirNoInt | kIirFifos);
}

TEST_F(SerialTest, ScratchRegister) {
    wr(kScr, 0x5a);
    EXPECT_EQ(rd(kScr), 0x5a);
    wr(kScr, 0xa5);
    EXPECT_EQ(rd(kScr), 0xa5);
    EXPECT_EQ(uart_.state().scr, 0xa5);
}

TEST_F(SerialTest, LsrAndMsrAreReadOnly) {
    uint8_t lsr = rd(kLsr), msr = rd(kMsr);
    wr(kLsr, 0x00);
    wr(kMsr, 0x00);
    EXPECT_EQ(rd(kLsr), lsr);
    EXPECT_EQ(rd(kMsr), msr);
    EXPECT_TRUE(out_.empty());
}

TEST_F(SerialTest, StateRoundTrip) {
    wr(kLcr, 0x03 | kLcrDlab);
    wr(kDll, 0x01);
    wr(kDlm, 0x02);
    wr(kLcr, 0x1b);  // 8 bits, 2 stop bits, even parity
    wr(kMcr, kMcrOut2 | kMcrRts | kMcrDtr);
    wr(kScr, 0x77);
    wr(kIer, kIerThri);  // leaves a THRI pending
    Serial::State st = uart_.state();
    EXPECT_EQ(st.lcr, 0x1b);
    EXPECT_EQ(st.ier, kIerThri);
    EXPECT_TRUE(st.thr_empty_pending);

    std::vector<uint8_t> out2;
    int irqs2 = 0;
    Serial copy([&](uint8_t b) { out2.push_back(b); }, [&] { ++irqs2; });
    copy.set_state(st);
    Serial::State got = copy.state();
    EXPECT_EQ(got.ier, st.ier);
    EXPECT_EQ(got.iir, st.iir);
    EXPECT_EQ(got.lcr, st.lcr);
    EXPECT_EQ(got.mcr, st.mcr);
    EXPECT_EQ(got.lsr, st.lsr);
    EXPECT_EQ(got.msr, st.msr);
    EXPECT_EQ(got.scr, st.scr);
    EXPECT_EQ(got.dll, st.dll);
    EXPECT_EQ(got.dlm, st.dlm);
    EXPECT_EQ(got.thr_empty_pending, st.thr_empty_pending);

    // The restored UART behaves like the original: registers and the pending THRI.
    auto rd2 = [&](uint64_t off) {
        uint8_t b = 0;
        copy.read(off, std::span<uint8_t>(&b, 1));
        return b;
    };
    EXPECT_EQ(rd2(kLcr), 0x1b);
    EXPECT_EQ(rd2(kScr), 0x77);
    EXPECT_EQ(rd2(kMcr), kMcrOut2 | kMcrRts | kMcrDtr);
    EXPECT_EQ(rd2(kIirFcr), kIirThri | kIirFifos);
    EXPECT_EQ(rd2(kIirFcr), kIirNoInt | kIirFifos);
    uint8_t lcr = 0x1b | kLcrDlab;
    copy.write(kLcr, std::span<const uint8_t>(&lcr, 1));
    EXPECT_EQ(rd2(kDll), 0x01);
    EXPECT_EQ(rd2(kDlm), 0x02);
}

TEST_F(SerialTest, MultiByteAccessCoversConsecutiveRegisters) {
    // A 16-bit OUT to the base port writes THR then IER.
    const uint8_t two[2] = {'k', kIerThri};
    uart_.write(kRbrThr, two);
    EXPECT_EQ(out_, std::vector<uint8_t>{'k'});
    EXPECT_EQ(rd(kIer), kIerThri);
    EXPECT_EQ(irqs_, 1);
    uint8_t regs[2] = {};
    uart_.read(kLcr, regs);
    EXPECT_EQ(regs[0], 0x03);
    EXPECT_EQ(regs[1], uart_.state().mcr);
}

TEST(SerialConcurrencyTest, ConcurrentWritersLoseNoBytes) {
    std::vector<uint8_t> out;
    Serial uart([&](uint8_t b) { out.push_back(b); }, nullptr);
    auto writer = [&](uint8_t c) {
        for (int i = 0; i < 2000; ++i) uart.write(0, std::span<const uint8_t>(&c, 1));
    };
    std::thread a(writer, 'a'), b(writer, 'b');
    a.join();
    b.join();
    ASSERT_EQ(out.size(), 4000u);
    EXPECT_EQ(std::count(out.begin(), out.end(), 'a'), 2000);
    EXPECT_EQ(std::count(out.begin(), out.end(), 'b'), 2000);
}

}  // namespace
}  // namespace vessel::vmm
