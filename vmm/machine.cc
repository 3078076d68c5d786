#include "machine.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

#include "boot.h"
#include "control_devices.h"
#include "cpu_setup.h"
#include "guest/init/protocol.h"
#include "layout.h"
#include "mptable.h"
#include "seccomp.h"

namespace vessel::vmm {
namespace {

// Delivered to vCPU threads to make KVM_RUN return; the handler does nothing on purpose.
const int kKickSignal = SIGRTMIN + 1;

void on_kick(int) {}

uint64_t host_ram_mib() {
    long pages = ::sysconf(_SC_PHYS_PAGES), psz = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0) return kMaxMemoryMiB;
    return static_cast<uint64_t>(pages) * static_cast<uint64_t>(psz) >> 20;
}

void write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;  // console gone: drop output rather than stall the guest
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
}

}  // namespace

namespace {

void validate_sizes(const MachineConfig& cfg);

// A restored machine's sizes come from its state, which must describe itself consistently.
MachineConfig restore_config(MachineConfig cfg, const MachineState& st) {
    if (st.memory_size == 0 || st.memory_size % (1ull << 20) != 0)
        throw std::invalid_argument("snapshot memory size " + std::to_string(st.memory_size) +
                                    " is not a whole number of MiB");
    if (st.vcpu.size() != st.vcpus)
        throw std::invalid_argument("snapshot has " + std::to_string(st.vcpu.size()) +
                                    " vCPU states for " + std::to_string(st.vcpus) + " vCPUs");
    cfg.memory_mib = st.memory_size >> 20;
    cfg.vcpus = st.vcpus;
    cfg.kernel.clear();
    cfg.initrd.clear();
    validate_sizes(cfg);
    return cfg;
}

GuestMemory restore_memory(const MachineConfig& cfg, RestoreSource& from) {
    const uint64_t size = from.state.memory_size;
    if (from.uffd) {
        // The handler thread enters its seccomp role as it starts, here: the filters must be
        // compiled first (init() does it again, harmlessly).
        if (cfg.seccomp) seccomp::enable();
        GuestMemory m = GuestMemory::restore_uffd(
            from.memory_path, size, std::move(from.overlays),
            from.prefetch.pages.empty() ? nullptr : &from.prefetch, bool(from.on_recorded));
        from.prefetch = {};  // installed: the copy is dead weight
        return m;
    }
    return from.copy_memory ? GuestMemory::load_file(from.memory_path, size)
                            : GuestMemory::map_file(from.memory_path, size);
}

}  // namespace

void validate(const MachineConfig& cfg) {
    if (cfg.kernel.empty()) throw std::invalid_argument("no kernel given");
    validate_sizes(cfg);
}

namespace {
void validate_sizes(const MachineConfig& cfg) {
    uint64_t max_mem = std::min(kMaxMemoryMiB, host_ram_mib());
    if (cfg.memory_mib < kMinMemoryMiB || cfg.memory_mib > max_mem)
        throw std::invalid_argument("memory size " + std::to_string(cfg.memory_mib) +
                                    " MiB out of range (" + std::to_string(kMinMemoryMiB) + " to " +
                                    std::to_string(max_mem) + " MiB)");
    if (cfg.vcpus < 1 || cfg.vcpus > kMaxVcpus)
        throw std::invalid_argument("vCPU count " + std::to_string(cfg.vcpus) +
                                    " out of range (1 to " + std::to_string(kMaxVcpus) + ")");
}
}  // namespace

Machine::Machine(MachineConfig cfg)
    : cfg_((validate(cfg), std::move(cfg))),
      kvm_(cfg_.kvm_path),
      vm_(kvm_),
      mem_(GuestMemory::create(cfg_.memory_mib << 20)) {
    init();
}

Machine::Machine(MachineConfig cfg, RestoreSource from)
    : cfg_(restore_config(std::move(cfg), from.state)),
      kvm_(cfg_.kvm_path),
      vm_(kvm_),
      mem_(restore_memory(cfg_, from)),
      restore_(std::make_unique<RestoreSource>(std::move(from))) {
    if (!restore_->uffd)
        for (const auto& o : restore_->overlays) mem_.overlay(o.path, o.bitmap);
    on_recorded_ = std::move(restore_->on_recorded);
    record_for_ = restore_->record_for;
    init();
    mem_.on_fault_error([this](const std::string& what) {
        request_stop({RunResult::Reason::Error, 0, what});
    });
}

void Machine::init() {
    if (cfg_.seccomp) seccomp::enable();  // compiles the filters: errors are set-up errors
    if (cfg_.vcpus > kvm_.max_vcpus())
        throw std::invalid_argument("vCPU count " + std::to_string(cfg_.vcpus) +
                                    " exceeds this host's KVM limit of " +
                                    std::to_string(kvm_.max_vcpus()));
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_) throw_errno("creating stop eventfd");
    if (cfg_.track_dirty) mem_.enable_dirty_tracking();
    vm_.set_memory(mem_, cfg_.track_dirty);

    int console = cfg_.console_fd;
    serial_ = std::make_shared<Serial>([console](uint8_t b) { write_all(console, &b, 1); },
                                       [this] { vm_.pulse_irq(layout::kCom1Irq); });
    pio_.insert(layout::kCom1Port, 8, serial_);
    pio_.insert(layout::kI8042DataPort, 5, std::make_shared<I8042>([this] {
                    request_stop({RunResult::Reason::Reset, 0, {}});
                }));
    pio_.insert(guest::kExitPort, guest::kExitPortWidth,
                std::make_shared<ExitDevice>([this](uint32_t status) {
                    request_stop({RunResult::Reason::ExitStatus, static_cast<int>(status), {}});
                }));

    for (uint32_t i = 0; i < cfg_.vcpus; ++i)
        vcpus_.push_back(std::make_unique<Vcpu>(kvm_, vm_, i));
}

Machine::~Machine() {
    io_loop_.stop();
    // The handler thread outlives the members declared after mem_ (stop_fd_ among them).
    mem_.on_fault_error(nullptr);
}

MmioSlot Machine::add_virtio_mmio_device(std::shared_ptr<BusDevice> dev) {
    const uint32_t n = static_cast<uint32_t>(mmio_slots_.size());
    const uint32_t irq = layout::kFirstDeviceIrq + n;
    if (irq >= layout::kIoapicPins)
        throw std::invalid_argument("too many virtio devices (at most " +
                                    std::to_string(layout::kIoapicPins - layout::kFirstDeviceIrq) +
                                    ")");
    MmioSlot slot{layout::kVirtioMmioBase + n * layout::kVirtioMmioSize, layout::kVirtioMmioSize,
                  irq};
    mmio_.insert(slot.base, slot.size, std::move(dev));
    mmio_slots_.push_back(slot);
    char arg[96];
    std::snprintf(arg, sizeof arg, "virtio_mmio.device=%uK@0x%llx:%u",
                  static_cast<unsigned>(slot.size >> 10),
                  static_cast<unsigned long long>(slot.base), slot.irq);
    append_cmdline(arg);
    return slot;
}

void Machine::setup_vcpu(Vcpu& v, const std::vector<kvm_cpuid_entry2>& cpuid, uint64_t entry,
                         uint64_t zero_page) {
    v.set_cpuid(cpuid_for_vcpu(cpuid, v.index(), cfg_.vcpus));
    v.set_msrs(boot_msrs());
    v.setup_lapic_lints();
    if (v.index() != 0) return;  // application processors wait for INIT/SIPI from the BSP
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    v.set_fpu(fpu);
    v.set_sregs(long_mode_sregs(v.get_sregs()));
    kvm_regs r{};
    r.rflags = 0x2;
    r.rip = entry;
    r.rsi = zero_page;
    r.rsp = r.rbp = layout::kBootStackTop;
    v.set_regs(r);
}

void Machine::request_stop(RunResult r) {
    bool expected = false;
    if (result_set_.compare_exchange_strong(expected, true)) result_ = std::move(r);
    stopping_.store(true);
    for (auto& v : vcpus_) v->run_data()->immediate_exit = 1;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
    {
        // Wakes parked vCPUs and a pause() waiting for them.
        std::lock_guard lk(pause_mu_);
        pause_cv_.notify_all();
    }
}

void Machine::park_if_pausing(Vcpu& v) {
    std::unique_lock lk(pause_mu_);
    if (!pause_requested_ || stopping_.load()) return;
    // KVM_RUN returned EINTR with immediate_exit set, so any I/O exit handled before it has
    // been completed into the registers: the state is consistent.
    ++parked_;
    pause_cv_.notify_all();
    pause_cv_.wait(lk, [this] { return !pause_requested_ || stopping_.load(); });
    --parked_;
    // Cleared before the loop re-checks stopping_, so a stop cannot be lost.
    if (!stopping_.load()) v.run_data()->immediate_exit = 0;
}

bool Machine::pause() {
    std::unique_lock lk(pause_mu_);
    if (!running_ || stopping_.load()) return false;
    const bool already = pause_requested_;
    if (!pause_requested_) {
        pause_requested_ = true;
        for (size_t i = 0; i < vcpus_.size(); ++i) {
            vcpus_[i]->run_data()->immediate_exit = 1;
            pthread_kill(vcpu_threads_[i], kKickSignal);
        }
    }
    pause_cv_.wait(lk, [this] { return fully_paused() || stopping_.load(); });
    if (stopping_.load()) return false;
    // Guest time stands still while paused (as QEMU's stopped state): the clock value is
    // written back on resume and saved in snapshots. Read once per pause: a second snapshot
    // of a paused machine is of the same moment.
    if (!already) paused_clock_ = vm_.get_clock();
    return true;
}

void Machine::resume() {
    std::lock_guard lk(pause_mu_);
    if (!pause_requested_) return;
    if (fully_paused() && !stopping_.load()) vm_.set_clock(paused_clock_);
    pause_requested_ = false;
    pause_cv_.notify_all();
}

MachineState Machine::capture() {
    std::lock_guard lk(pause_mu_);
    if (!fully_paused() || stopping_.load())
        throw std::logic_error("capturing a machine that is not paused");
    if (msr_list_.empty()) msr_list_ = vcpus_[0]->readable_msrs(kvm_.msr_index_list());
    MachineState s;
    s.vcpus = cfg_.vcpus;
    s.memory_size = mem_.size();
    for (auto& v : vcpus_) s.vcpu.push_back(v->save_state(msr_list_));
    s.vm = vm_.save_state();
    s.vm.clock = paused_clock_;
    s.serial = serial_->state();
    return s;
}

uint64_t Machine::save_memory(const std::string& path) {
    std::lock_guard lk(pause_mu_);
    if (!fully_paused() || stopping_.load())
        throw std::logic_error("saving the memory of a machine that is not paused");
    return mem_.save(path);
}

std::vector<uint64_t> Machine::take_dirty_pages() {
    std::lock_guard lk(pause_mu_);
    if (!fully_paused() || stopping_.load())
        throw std::logic_error("reading the dirty pages of a machine that is not paused");
    if (!cfg_.track_dirty) return {};
    std::vector<uint64_t> bitmap = mem_.take_dirty();
    vm_.take_dirty_log(bitmap);
    return bitmap;
}

uint64_t Machine::save_memory_pages(const std::string& path, const std::vector<uint64_t>& bitmap) {
    std::lock_guard lk(pause_mu_);
    if (!fully_paused() || stopping_.load())
        throw std::logic_error("saving the memory of a machine that is not paused");
    return mem_.save_pages(path, bitmap);
}

void Machine::apply_restored_state() {
    auto t0 = std::chrono::steady_clock::now();
    const MachineState& st = restore_->state;
    // Irqchip and PIT first (the LAPICs restored next may have interrupts routed from
    // them), then each vCPU, then the clock last so no time passes for the guest in between.
    vm_.restore_state(st.vm);
    for (size_t i = 0; i < vcpus_.size(); ++i) vcpus_[i]->restore_state(st.vcpu[i]);
    serial_->set_state(st.serial);
    vm_.set_clock(st.vm.clock);
    restore_.reset();
    if (after_restore_) after_restore_();
    restore_apply_ns_ = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
}

bool Machine::handle_exit(Vcpu& v) {
    kvm_run* run = v.run_data();
    switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            auto* base = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
            for (uint32_t i = 0; i < run->io.count; ++i) {
                std::span<uint8_t> d(base + i * run->io.size, run->io.size);
                if (run->io.direction == KVM_EXIT_IO_OUT)
                    pio_.write(run->io.port, d);
                else
                    pio_.read(run->io.port, d);
            }
            return true;
        }
        case KVM_EXIT_MMIO: {
            std::span<uint8_t> d(run->mmio.data, std::min<uint32_t>(run->mmio.len, 8));
            if (run->mmio.is_write)
                mmio_.write(run->mmio.phys_addr, d);
            else
                mmio_.read(run->mmio.phys_addr, d);
            return true;
        }
        case KVM_EXIT_SHUTDOWN:  // triple fault: the guest reset itself
        case KVM_EXIT_HLT:
        case KVM_EXIT_SYSTEM_EVENT:
            request_stop({RunResult::Reason::Reset, 0, {}});
            return false;
        case KVM_EXIT_FAIL_ENTRY:
            request_stop({RunResult::Reason::Error, 0,
                          "vCPU " + std::to_string(v.index()) +
                              ": KVM entry failed, hardware reason " +
                              std::to_string(run->fail_entry.hardware_entry_failure_reason)});
            return false;
        case KVM_EXIT_INTERNAL_ERROR:
            request_stop({RunResult::Reason::Error, 0,
                          "vCPU " + std::to_string(v.index()) + ": KVM internal error, suberror " +
                              std::to_string(run->internal.suberror)});
            return false;
        default:
            request_stop({RunResult::Reason::Error, 0,
                          "vCPU " + std::to_string(v.index()) + ": unhandled KVM exit " +
                              std::to_string(run->exit_reason)});
            return false;
    }
}

void Machine::vcpu_loop(Vcpu& v) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, kKickSignal);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    while (!stopping_.load()) {
        int r = v.run();
        if (r == -EINTR || r == -EAGAIN) {
            park_if_pausing(v);
            continue;
        }
        if (r < 0) {
            request_stop(
                {RunResult::Reason::Error, 0,
                 "vCPU " + std::to_string(v.index()) + ": KVM_RUN failed: " + std::strerror(-r)});
            break;
        }
        if (!handle_exit(v)) break;
    }
}

RunResult Machine::run() {
    if (restore_)
        apply_restored_state();
    else
        boot();
    return run_vcpus();
}

void Machine::finish_recording() {
    auto fn = std::exchange(on_recorded_, nullptr);
    // A working set is an optimisation: failing to keep one must not stop the VM.
    try {
        fn(mem_, mem_.take_recorded());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vessel: working set not kept: %s\n", e.what());
    }
}

void Machine::boot() {
    KernelImage k = load_kernel(mem_, cfg_.kernel);
    if (!write_long_mode_tables(mem_)) throw BootError("guest memory too small for page tables");
    std::vector<uint8_t> mp = build_mptable(cfg_.vcpus);
    if (!mem_.write(kMpTableAddr, mp.data(), mp.size()))
        throw BootError("guest memory too small for the MP table");
    uint64_t zero_page = write_boot_data(mem_, k, cfg_.cmdline, cfg_.initrd);
    // The initramfs now lives in guest memory; the host copy is dead weight.
    std::vector<uint8_t>().swap(cfg_.initrd);

    auto cpuid = kvm_.supported_cpuid();
    for (auto& v : vcpus_) setup_vcpu(*v, cpuid, k.entry, zero_page);
}

RunResult Machine::run_vcpus() {
    // Signals that stop the VM are taken synchronously by this thread only.
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    if (cfg_.stop_on_signals)
        for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop_sigs, s);
    sigset_t block = stop_sigs;
    sigaddset(&block, kKickSignal);
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, &block, &old);
    struct sigaction sa {};
    sa.sa_handler = on_kick;
    sigaction(kKickSignal, &sa, nullptr);
    UniqueFd sfd(::signalfd(-1, &stop_sigs, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd) throw_errno("creating signalfd");

    io_loop_.start();
    std::vector<std::thread> threads;
    // This thread starts the device threads that confined vCPU threads ask for
    // (vmm/seccomp.h). It stays unconfined unless its caller has nothing to tear down.
    seccomp::SpawnService spawns;
    if (cfg_.seccomp && cfg_.confine_supervisor) seccomp::enter(seccomp::Role::Supervisor);
    for (auto& v : vcpus_)
        threads.push_back(seccomp::spawn(seccomp::Role::Vcpu, [this, &v] { vcpu_loop(*v); }));
    {
        std::lock_guard lk(pause_mu_);
        for (auto& t : threads) vcpu_threads_.push_back(t.native_handle());
        running_ = true;
    }

    pollfd fds[3] = {{stop_fd_.get(), POLLIN, 0}, {sfd.get(), POLLIN, 0}, {spawns.fd(), POLLIN, 0}};
    const auto started = std::chrono::steady_clock::now();
    while (!stopping_.load()) {
        int timeout = -1;
        if (on_recorded_) {
            const auto left = record_for_ - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::steady_clock::now() - started);
            if (left.count() <= 0) {
                finish_recording();
                continue;
            }
            timeout = static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX));
        }
        int n = ::poll(fds, 3, timeout);
        if (n < 0 && errno != EINTR) break;
        if (fds[2].revents & POLLIN) spawns.serve();
        if (fds[1].revents & POLLIN) {
            signalfd_siginfo si{};
            if (::read(sfd.get(), &si, sizeof si) == sizeof si)
                request_stop({RunResult::Reason::Signal, static_cast<int>(si.ssi_signo), {}});
        }
    }
    {
        std::lock_guard lk(pause_mu_);
        running_ = false;
    }
    spawns.close();  // a vCPU activating a device now gets an error instead of waiting forever
    for (size_t i = 0; i < threads.size(); ++i) {
        vcpus_[i]->run_data()->immediate_exit = 1;
        pthread_kill(threads[i].native_handle(), kKickSignal);
    }
    for (auto& t : threads) t.join();
    io_loop_.stop();
    if (on_recorded_) finish_recording();  // the VM stopped before the recording time was up
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return result_;
}

}  // namespace vessel::vmm
