// A whole micro-VM: memory, vCPU threads, legacy devices and the boot of a Linux kernel.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bus.h"
#include "event_loop.h"
#include "fd.h"
#include "guest_memory.h"
#include "kvm.h"
#include "serial.h"

namespace vessel::vmm {

inline constexpr uint64_t kMinMemoryMiB = 32;
inline constexpr uint64_t kMaxMemoryMiB = 1ull << 20;  // 1 TiB; also capped by host RAM

struct MachineConfig {
    std::string kvm_path = "/dev/kvm";
    std::string kernel;
    std::vector<uint8_t> initrd;
    std::string cmdline;
    uint32_t vcpus = 1;
    uint64_t memory_mib = 256;
    int console_fd = 1;  // serial output goes here
    // SIGINT, SIGTERM and SIGHUP stop the VM (RunResult::Signal). Off when another thread
    // takes them instead (e.g. to forward them to a process in the guest); that thread must
    // block them before the machine starts its threads.
    bool stop_on_signals = true;
};

// Where an MMIO device was placed: its window, its interrupt line.
struct MmioSlot {
    uint64_t base;
    uint64_t size;
    uint32_t irq;
};

// Throws std::invalid_argument naming the bad value.
void validate(const MachineConfig& cfg);

struct RunResult {
    enum class Reason {
        ExitStatus,  // guest init reported a status on the exit port
        Reset,       // guest reset or powered off without a status (reboot, panic)
        Signal,      // the VMM got SIGINT/SIGTERM/SIGHUP
        Error,       // KVM failure or an exit vessel cannot handle
    };
    Reason reason = Reason::Error;
    int status = 0;      // ExitStatus: the status; Signal: the signal number
    std::string detail;  // Error: what happened
};

class Machine {
  public:
    explicit Machine(MachineConfig cfg);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // Boots the kernel and runs until the guest stops. Must be called once.
    RunResult run();

    const GuestMemory& memory() const { return mem_; }
    const Vm& vm() const { return vm_; }
    // Makes run() return `r` (the first stop request wins). Any thread.
    void stop(RunResult r) { request_stop(std::move(r)); }
    // The device I/O thread; started by run(), stopped before run() returns.
    EventLoop& io_loop() { return io_loop_; }

    // Places a virtio-mmio device: the next free window and IOAPIC pin, announced to the
    // guest on the kernel command line. Call before run().
    MmioSlot add_virtio_mmio_device(std::shared_ptr<BusDevice> dev);
    // Appends to the kernel command line. Call before run().
    void append_cmdline(const std::string& args) { cfg_.cmdline += " " + args; }
    // Objects that must live as long as the machine (device back ends, adapters).
    void keep_alive(std::shared_ptr<void> obj) { keep_alive_.push_back(std::move(obj)); }

  private:
    void setup_vcpu(Vcpu& v, const std::vector<kvm_cpuid_entry2>& cpuid, uint64_t entry,
                    uint64_t zero_page);
    void vcpu_loop(Vcpu& v);
    bool handle_exit(Vcpu& v);
    void request_stop(RunResult r);

    MachineConfig cfg_;
    Kvm kvm_;
    Vm vm_;
    GuestMemory mem_;
    Bus pio_;
    Bus mmio_;
    std::shared_ptr<Serial> serial_;
    std::vector<MmioSlot> mmio_slots_;
    std::vector<std::shared_ptr<void>> keep_alive_;
    EventLoop io_loop_;
    std::vector<std::unique_ptr<Vcpu>> vcpus_;
    UniqueFd stop_fd_;
    std::atomic<bool> stopping_{false};
    RunResult result_;
    std::atomic<bool> result_set_{false};
};

}  // namespace vessel::vmm
