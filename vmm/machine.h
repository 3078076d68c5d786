// A whole micro-VM: memory, vCPU threads, legacy devices and the boot of a Linux kernel.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus.h"
#include "event_loop.h"
#include "fd.h"
#include "guest_memory.h"
#include "kvm.h"
#include "serial.h"
#include "vcpu_state.h"

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
    // Per-thread seccomp filters (vmm/seccomp.h): the constructor enables them for the
    // process (for good), and every vCPU and device thread enters its role. Off by default
    // for library users and tests; the CLI turns it on.
    bool seccomp = false;
    // With seccomp: run() confines its own thread too (Role::Supervisor) once the VM is set
    // up, for callers that do nothing after run() but exit (a jailed container VMM).
    bool confine_supervisor = false;
    // Dirty-page tracking for diff snapshots: KVM's dirty log on every memory slot plus the
    // VMM's own writes (GuestMemory::mark_dirty). Costs a write fault per page and interval.
    bool track_dirty = false;
};

// Where an MMIO device was placed: its window, its interrupt line.
struct MmioSlot {
    uint64_t base;
    uint64_t size;
    uint32_t irq;
};

// Throws std::invalid_argument naming the bad value.
void validate(const MachineConfig& cfg);

// Everything of a paused machine except guest RAM and the virtio devices (which belong to
// the caller that attached them): what snapshot/ saves.
struct MachineState {
    uint32_t vcpus = 0;
    uint64_t memory_size = 0;  // bytes
    std::vector<VcpuState> vcpu;
    VmState vm;
    Serial::State serial;
};

// A machine to rebuild from a snapshot instead of booting a kernel.
struct RestoreSource {
    MachineState state;
    std::string memory_path;   // sparse file of state.memory_size bytes, mapped MAP_PRIVATE
    bool copy_memory = false;  // read it into a memfd instead (GuestMemory::load_file)
    // Diff snapshots on top of memory_path, oldest first: each file's pages set in its bitmap
    // are copied over guest RAM (GuestMemory::overlay), or served from it with uffd.
    using Overlay = MemoryLayer;
    std::vector<Overlay> overlays = {};
    // Guest RAM behind a userfaultfd instead (GuestMemory::restore_uffd): pages are filled
    // on first touch by a handler thread; `prefetch` (a recorded working set) is installed
    // before any vCPU runs, then freed.
    bool uffd = false;
    Prefetch prefetch = {};
    // uffd: records the pages filled on faults, in order, and hands them to `on_recorded`
    // once, on the thread that called run(), `record_for` after the vCPUs started or when
    // they stopped, whichever comes first (the VM goes on running meanwhile).
    std::function<void(const GuestMemory&, std::vector<uint64_t>)> on_recorded = {};
    std::chrono::milliseconds record_for = std::chrono::milliseconds(5000);
};

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
    // A machine rebuilt from `from`: guest RAM is the memory file (copy-on-write), vCPU and
    // VM state are applied by run() instead of a kernel boot. cfg.kernel, memory_mib and
    // vcpus are ignored (taken from the state).
    Machine(MachineConfig cfg, RestoreSource from);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    // Boots the kernel and runs until the guest stops. Must be called once.
    RunResult run();

    const GuestMemory& memory() const { return mem_; }
    const MachineConfig& config() const { return cfg_; }
    const Vm& vm() const { return vm_; }
    // Makes run() return `r` (the first stop request wins). Any thread.
    void stop(RunResult r) { request_stop(std::move(r)); }

    // Takes every vCPU out of KVM_RUN (completing any pending I/O exit) and parks it, so
    // that capture() sees a stable state; the kvmclock is frozen until resume(), so the
    // guest's clock does not jump by the pause. Any thread but a vCPU's, while run() is
    // running. Returns false when the machine is not running or is stopping.
    bool pause();
    void resume();
    // The paused machine's state. Throws std::logic_error when not paused.
    MachineState capture();
    // Guest RAM to a sparse file (see GuestMemory::save); returns bytes written. Paused only.
    uint64_t save_memory(const std::string& path);
    // Pages written since the last call (or since the start), guest and VMM writes together;
    // empty when the machine was not made with track_dirty. Paused only.
    std::vector<uint64_t> take_dirty_pages();
    bool tracks_dirty() const { return cfg_.track_dirty; }
    // Only the pages set in `bitmap` to a sparse file (GuestMemory::save_pages). Paused only.
    uint64_t save_memory_pages(const std::string& path, const std::vector<uint64_t>& bitmap);
    // Called by run() right after a restored state is applied, before any vCPU runs (e.g.
    // to raise device interrupts once the irqchip holds its saved state). Call before run().
    void set_after_restore(std::function<void()> fn) { after_restore_ = std::move(fn); }
    // Nanoseconds run() spent applying a restored state (0 for a boot).
    uint64_t restore_apply_ns() const { return restore_apply_ns_; }
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
    void park_if_pausing(Vcpu& v);
    void init();
    void boot();
    RunResult run_vcpus();
    void apply_restored_state();
    bool fully_paused() const { return pause_requested_ && parked_ == vcpus_.size(); }
    bool handle_exit(Vcpu& v);
    void request_stop(RunResult r);
    void finish_recording();

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

    std::unique_ptr<RestoreSource> restore_;  // consumed by run()
    uint64_t restore_apply_ns_ = 0;
    std::function<void()> after_restore_;
    // restore --uffd's working-set recording (RestoreSource::on_recorded), until handed over.
    std::function<void(const GuestMemory&, std::vector<uint64_t>)> on_recorded_;
    std::chrono::milliseconds record_for_{0};
    std::vector<uint32_t> msr_list_;  // MSRs to save, found at the first capture

    // Pause handshake between pause()/resume() and the vCPU threads.
    std::mutex pause_mu_;
    std::condition_variable pause_cv_;
    bool running_ = false;  // vCPU threads started and not yet told to stop
    bool pause_requested_ = false;
    size_t parked_ = 0;
    std::vector<pthread_t> vcpu_threads_;
    kvm_clock_data paused_clock_{};
};

}  // namespace vessel::vmm
