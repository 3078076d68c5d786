#include "kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "ioctl.h"
#include "kvm_abi.h"
#include "layout.h"

namespace vessel::vmm {
namespace {

// KVM caps CPUID at 256 entries; its MSR index list is a few hundred entries.
constexpr uint32_t kMaxCpuidEntries = 256;
constexpr uint32_t kMaxMsrs = 1024;

}  // namespace

Kvm::Kvm(const std::string& path) {
    fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd_) {
        int e = errno;
        if (e == ENOENT) throw_errno("opening " + path + " (KVM is not available on this host)", e);
        if (e == EACCES || e == EPERM)
            throw_errno("opening " + path + " (no permission; run as root or join group kvm)", e);
        throw_errno("opening " + path, e);
    }
    int v = xioctl(fd_.get(), KVM_GET_API_VERSION, 0);
    if (v != KVM_API_VERSION)
        throw std::system_error(ENOTSUP, std::generic_category(),
                                "KVM API version " + std::to_string(v) + " is not 12");
    int sz = xioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0) throw_errno("KVM_GET_VCPU_MMAP_SIZE");
    vcpu_mmap_size_ = static_cast<size_t>(sz);
}

int Kvm::check_extension(long cap) const {
    int r = xioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

uint32_t Kvm::max_vcpus() const {
    int n = check_extension(KVM_CAP_MAX_VCPUS);
    if (n <= 0) n = check_extension(KVM_CAP_NR_VCPUS);
    if (n <= 0) n = 4;
    return static_cast<uint32_t>(n);
}

std::vector<kvm_cpuid_entry2> Kvm::supported_cpuid() const {
    auto a = std::make_unique<abi::FlexArray<kvm_cpuid_entry2, kMaxCpuidEntries>>();
    a->hdr.count = kMaxCpuidEntries;
    if (xioctl(fd_.get(), abi::kGetSupportedCpuid, a.get()) < 0)
        throw_errno("KVM_GET_SUPPORTED_CPUID");
    return {a->entries, a->entries + a->hdr.count};
}

Vm::Vm(const Kvm& kvm) {
    int fd;
    do {
        fd = ::ioctl(kvm.fd(), KVM_CREATE_VM, 0);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) throw_errno("creating KVM VM");
    fd_ = UniqueFd(fd);
    if (xioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(layout::kTssAddr)) < 0)
        throw_errno("KVM_SET_TSS_ADDR");
    uint64_t idmap = layout::kIdentityMapAddr;
    if (kvm.check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) &&
        xioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        throw_errno("KVM_SET_IDENTITY_MAP_ADDR");
    if (xioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) throw_errno("creating in-kernel irqchip");
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    if (xioctl(fd_.get(), KVM_CREATE_PIT2, &pit) < 0) throw_errno("creating in-kernel PIT");
}

void Vm::set_memory(const GuestMemory& mem, bool log_dirty) {
    for (const auto& r : mem.regions()) {
        kvm_userspace_memory_region reg{};
        reg.slot = next_slot_++;
        if (log_dirty) {
            reg.flags = KVM_MEM_LOG_DIRTY_PAGES;
            logged_.push_back({reg.slot, r.file_offset / GuestMemory::kPageSize,
                               r.size / GuestMemory::kPageSize});
        }
        reg.guest_phys_addr = r.gpa;
        reg.memory_size = r.size;
        reg.userspace_addr = reinterpret_cast<uint64_t>(r.host);
        if (xioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &reg) < 0)
            throw_errno("registering guest memory slot " + std::to_string(reg.slot));
    }
}

void Vm::take_dirty_log(std::vector<uint64_t>& bitmap) const {
    for (const Slot& s : logged_) {
        std::vector<uint64_t> bits((s.pages + 63) / 64, 0);
        kvm_dirty_log log{};
        log.slot = s.slot;
        log.dirty_bitmap = bits.data();
        if (xioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) < 0)
            throw_errno("reading KVM's dirty-page log of slot " + std::to_string(s.slot));
        GuestMemory::or_bitmap(bitmap, s.first_page, bits, s.pages);
    }
}

int Vm::check_extension(long cap) const {
    int r = xioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

void Vm::set_irq_line(uint32_t irq, bool level) const {
    kvm_irq_level l{};
    l.irq = irq;
    l.level = level ? 1 : 0;
    // Failure here means the VM fd is gone; nothing a device could do about it.
    xioctl(fd_.get(), KVM_IRQ_LINE, &l);
}

void Vm::add_ioeventfd(uint64_t addr, uint32_t len, uint64_t datamatch, int event_fd) const {
    kvm_ioeventfd io{};
    io.addr = addr;
    io.len = len;
    io.datamatch = datamatch;
    io.fd = event_fd;
    io.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (xioctl(fd_.get(), KVM_IOEVENTFD, &io) < 0)
        throw_errno("registering ioeventfd at " + std::to_string(addr));
}

void Vm::add_irqfd(int event_fd, uint32_t gsi) const {
    kvm_irqfd f{};
    f.fd = static_cast<uint32_t>(event_fd);
    f.gsi = gsi;
    if (xioctl(fd_.get(), KVM_IRQFD, &f) < 0)
        throw_errno("registering irqfd for GSI " + std::to_string(gsi));
}

Vcpu::Vcpu(const Kvm& kvm, const Vm& vm, uint32_t index) : index_(index) {
    if (kvm.check_extension(KVM_CAP_XSAVE)) {
        int sz = vm.check_extension(KVM_CAP_XSAVE2);
        xsave_size_ = sz > 4096 ? static_cast<size_t>(sz) : 4096;
    }
    int fd = xioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(index));
    if (fd < 0) throw_errno("creating vCPU " + std::to_string(index));
    fd_ = UniqueFd(fd);
    run_ = Mapping::map(kvm.vcpu_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0,
                        "mapping kvm_run of vCPU " + std::to_string(index));
}

int Vcpu::run() const {
    int r = ::ioctl(fd_.get(), KVM_RUN, 0);
    return r < 0 ? -errno : 0;
}

void Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) const {
    auto a = std::make_unique<abi::FlexArray<kvm_cpuid_entry2, kMaxCpuidEntries>>();
    if (entries.size() > kMaxCpuidEntries) throw std::length_error("too many CPUID entries");
    a->hdr.count = static_cast<uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), a->entries);
    if (xioctl(fd_.get(), abi::kSetCpuid2, a.get()) < 0) throw_errno("KVM_SET_CPUID2");
}

void Vcpu::set_msrs(const std::vector<MsrValue>& msrs) const {
    auto a = std::make_unique<abi::FlexArray<kvm_msr_entry, kMaxMsrs>>();
    if (msrs.size() > kMaxMsrs) throw std::length_error("too many MSRs");
    a->hdr.count = static_cast<uint32_t>(msrs.size());
    for (size_t i = 0; i < msrs.size(); ++i) {
        a->entries[i] = kvm_msr_entry{};
        a->entries[i].index = msrs[i].index;
        a->entries[i].data = msrs[i].value;
    }
    int n = xioctl(fd_.get(), abi::kSetMsrs, a.get());
    if (n < 0) throw_errno("KVM_SET_MSRS");
    if (static_cast<size_t>(n) != msrs.size())
        throw std::system_error(EINVAL, std::generic_category(),
                                "KVM_SET_MSRS: MSR " + std::to_string(msrs[n].index) + " refused");
}

kvm_sregs Vcpu::get_sregs() const {
    kvm_sregs s{};
    if (xioctl(fd_.get(), KVM_GET_SREGS, &s) < 0) throw_errno("KVM_GET_SREGS");
    return s;
}
void Vcpu::set_sregs(const kvm_sregs& s) const {
    if (xioctl(fd_.get(), KVM_SET_SREGS, &s) < 0) throw_errno("KVM_SET_SREGS");
}
kvm_regs Vcpu::get_regs() const {
    kvm_regs r{};
    if (xioctl(fd_.get(), KVM_GET_REGS, &r) < 0) throw_errno("KVM_GET_REGS");
    return r;
}
void Vcpu::set_regs(const kvm_regs& r) const {
    if (xioctl(fd_.get(), KVM_SET_REGS, &r) < 0) throw_errno("KVM_SET_REGS");
}
void Vcpu::set_fpu(const kvm_fpu& f) const {
    if (xioctl(fd_.get(), KVM_SET_FPU, &f) < 0) throw_errno("KVM_SET_FPU");
}

void Vcpu::setup_lapic_lints() const {
    kvm_lapic_state st{};
    if (xioctl(fd_.get(), KVM_GET_LAPIC, &st) < 0) throw_errno("KVM_GET_LAPIC");
    auto set_lvt = [&](size_t off, uint32_t mode) {
        uint32_t v;
        std::memcpy(&v, st.regs + off, 4);
        v = (v & ~0x700u) | (mode << 8);
        std::memcpy(st.regs + off, &v, 4);
    };
    set_lvt(0x350, 0x7);  // LINT0: ExtINT
    set_lvt(0x360, 0x4);  // LINT1: NMI
    if (xioctl(fd_.get(), KVM_SET_LAPIC, &st) < 0) throw_errno("KVM_SET_LAPIC");
}

}  // namespace vessel::vmm
