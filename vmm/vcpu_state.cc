// Saving and restoring a vCPU's KVM state (see vcpu_state.h).
#include <cpuid.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "ioctl.h"
#include "kvm.h"
#include "kvm_abi.h"

namespace vessel::vmm {
namespace {

// KVM's MSR index list is a few hundred entries at most.
constexpr uint32_t kMaxMsrList = 1024;
constexpr uint32_t kMaxCpuid = 256;
using MsrArray = abi::FlexArray<kvm_msr_entry, kMaxMsrList>;

std::string vcpu_what(uint32_t index, const std::string& what) {
    return what + " on vCPU " + std::to_string(index);
}

// KVM_GET_MSRS / KVM_SET_MSRS stop at the first MSR they refuse and return how many they
// handled.
int msr_ioctl(int fd, unsigned long req, MsrArray& a) {
    return xioctl(fd, req, &a);
}

// SVM without FLUSHBYASID: no AMD CPU with SVM lacks it, QEMU's TCG emulation of SVM does
// (the nested test harness's level 1).
bool emulated_svm() {
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000001, &a, &b, &c, &d) || !(c & (1u << 2))) return false;
    if (!__get_cpuid(0x8000000a, &a, &b, &c, &d)) return false;
    return !(d & (1u << 6));
}

}  // namespace

std::vector<uint32_t> Kvm::msr_index_list() const {
    struct {
        abi::MsrListHeader hdr;
        uint32_t indices[kMaxMsrList];
    } list{};
    list.hdr.count = kMaxMsrList;
    if (xioctl(fd_.get(), abi::kGetMsrIndexList, &list) < 0) throw_errno("KVM_GET_MSR_INDEX_LIST");
    return {list.indices, list.indices + std::min(list.hdr.count, kMaxMsrList)};
}

std::vector<uint32_t> Vcpu::readable_msrs(const std::vector<uint32_t>& candidates) const {
    auto a = std::make_unique<MsrArray>();
    std::vector<uint32_t> ok;
    size_t i = 0;
    while (i < candidates.size()) {
        uint32_t n = static_cast<uint32_t>(std::min<size_t>(candidates.size() - i, kMaxMsrList));
        a->hdr.count = n;
        for (uint32_t k = 0; k < n; ++k) a->entries[k] = kvm_msr_entry{candidates[i + k], 0, 0};
        int got = msr_ioctl(fd_.get(), abi::kGetMsrs, *a);
        if (got < 0) throw_errno(vcpu_what(index_, "KVM_GET_MSRS"));
        for (int k = 0; k < got; ++k) ok.push_back(candidates[i + static_cast<size_t>(k)]);
        i += static_cast<size_t>(got);
        if (static_cast<uint32_t>(got) < n) ++i;  // skip the refused one
    }
    return ok;
}

VcpuState Vcpu::save_state(const std::vector<uint32_t>& msrs) const {
    VcpuState s;
    const int fd = fd_.get();
    {
        auto c = std::make_unique<abi::FlexArray<kvm_cpuid_entry2, kMaxCpuid>>();
        c->hdr.count = kMaxCpuid;
        if (xioctl(fd, abi::kGetCpuid2, c.get()) < 0)
            throw_errno(vcpu_what(index_, "KVM_GET_CPUID2"));
        s.cpuid.assign(c->entries, c->entries + c->hdr.count);
    }
    if (xioctl(fd, KVM_GET_REGS, &s.regs) < 0) throw_errno(vcpu_what(index_, "KVM_GET_REGS"));
    if (xioctl(fd, KVM_GET_SREGS, &s.sregs) < 0) throw_errno(vcpu_what(index_, "KVM_GET_SREGS"));
    if (xsave_size_) {
        s.xsave.assign(xsave_size_, 0);
        unsigned long req = xsave_size_ > 4096 ? abi::kGetXsave2 : abi::kGetXsave;
        if (xioctl(fd, req, s.xsave.data()) < 0) throw_errno(vcpu_what(index_, "KVM_GET_XSAVE"));
    } else if (xioctl(fd, KVM_GET_FPU, &s.fpu) < 0) {
        throw_errno(vcpu_what(index_, "KVM_GET_FPU"));
    }
    if (xioctl(fd, KVM_GET_XCRS, &s.xcrs) == 0)
        s.has_xcrs = true;
    else if (errno != EINVAL && errno != ENOTTY)
        throw_errno(vcpu_what(index_, "KVM_GET_XCRS"));
    if (!msrs.empty()) {
        if (msrs.size() > kMaxMsrList) throw std::length_error("too many MSRs to save");
        auto a = std::make_unique<MsrArray>();
        a->hdr.count = static_cast<uint32_t>(msrs.size());
        for (size_t k = 0; k < msrs.size(); ++k) a->entries[k] = kvm_msr_entry{msrs[k], 0, 0};
        int got = msr_ioctl(fd, abi::kGetMsrs, *a);
        if (got < 0) throw_errno(vcpu_what(index_, "KVM_GET_MSRS"));
        if (static_cast<size_t>(got) != msrs.size())
            throw std::system_error(EIO, std::generic_category(),
                                    vcpu_what(index_, "KVM_GET_MSRS") + ": MSR " +
                                        std::to_string(msrs[static_cast<size_t>(got)]) +
                                        " unreadable");
        for (size_t k = 0; k < msrs.size(); ++k)
            s.msrs.push_back({a->entries[k].index, a->entries[k].data});
    }
    if (xioctl(fd, KVM_GET_LAPIC, &s.lapic) < 0) throw_errno(vcpu_what(index_, "KVM_GET_LAPIC"));
    if (xioctl(fd, KVM_GET_VCPU_EVENTS, &s.events) < 0)
        throw_errno(vcpu_what(index_, "KVM_GET_VCPU_EVENTS"));
    if (xioctl(fd, KVM_GET_DEBUGREGS, &s.debugregs) < 0)
        throw_errno(vcpu_what(index_, "KVM_GET_DEBUGREGS"));
    if (xioctl(fd, KVM_GET_MP_STATE, &s.mp_state) < 0)
        throw_errno(vcpu_what(index_, "KVM_GET_MP_STATE"));
    int khz = xioctl(fd, KVM_GET_TSC_KHZ, 0);
    s.tsc_khz = khz > 0 ? static_cast<uint32_t>(khz) : 0;
    return s;
}

void Vcpu::restore_state(const VcpuState& s) const {
    const int fd = fd_.get();
    set_cpuid(s.cpuid);
    if (s.tsc_khz) {
        int khz = xioctl(fd, KVM_GET_TSC_KHZ, 0);
        // A different TSC rate would make the guest's clocks run fast or slow.
        if (khz > 0 && static_cast<uint32_t>(khz) != s.tsc_khz &&
            xioctl(fd, KVM_SET_TSC_KHZ, static_cast<unsigned long>(s.tsc_khz)) < 0)
            throw_errno(vcpu_what(index_, "KVM_SET_TSC_KHZ to " + std::to_string(s.tsc_khz) +
                                              " (snapshot from a host with another TSC rate?)"));
    }
    kvm_sregs sregs = s.sregs;
    // KVM reports TR as busy (type 11) whatever the VMCB holds. SVM hardware ignores the
    // busy bit, but QEMU's emulated SVM then refuses every I/O permission check (its TR must
    // be an available TSS, as its own `ltr` leaves it), so a restored guest could not use
    // ioperm(). Only there is TR restored as available.
    static const bool fix_tr = emulated_svm();
    if (fix_tr && sregs.tr.type == 11) sregs.tr.type = 9;
    if (xioctl(fd, KVM_SET_SREGS, &sregs) < 0) throw_errno(vcpu_what(index_, "KVM_SET_SREGS"));
    if (xioctl(fd, KVM_SET_REGS, &s.regs) < 0) throw_errno(vcpu_what(index_, "KVM_SET_REGS"));
    if (!s.xsave.empty()) {
        if (!xsave_size_ || s.xsave.size() > xsave_size_)
            throw std::system_error(EINVAL, std::generic_category(),
                                    vcpu_what(index_, "restoring XSAVE") + ": saved image of " +
                                        std::to_string(s.xsave.size()) +
                                        " bytes does not fit this host's " +
                                        std::to_string(xsave_size_));
        // KVM_SET_XSAVE reads xsave_size_ bytes; a shorter image is padded with zeros.
        std::vector<uint8_t> buf(xsave_size_, 0);
        std::memcpy(buf.data(), s.xsave.data(), s.xsave.size());
        if (xioctl(fd, abi::kSetXsave, buf.data()) < 0)
            throw_errno(vcpu_what(index_, "KVM_SET_XSAVE"));
    } else if (xioctl(fd, KVM_SET_FPU, &s.fpu) < 0) {
        throw_errno(vcpu_what(index_, "KVM_SET_FPU"));
    }
    if (s.has_xcrs && xioctl(fd, KVM_SET_XCRS, &s.xcrs) < 0)
        throw_errno(vcpu_what(index_, "KVM_SET_XCRS"));

    std::vector<MsrValue> early, late;
    for (const auto& m : s.msrs) (m.index == kMsrTscDeadline ? late : early).push_back(m);
    if (!early.empty()) set_msrs(early);
    if (xioctl(fd, KVM_SET_LAPIC, &s.lapic) < 0) throw_errno(vcpu_what(index_, "KVM_SET_LAPIC"));
    if (!late.empty()) set_msrs(late);
    kvm_vcpu_events ev = s.events;
    // Only the fields KVM reported valid are written back.
    ev.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
                KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD |
                KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
    if (xioctl(fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
        throw_errno(vcpu_what(index_, "KVM_SET_VCPU_EVENTS"));
    if (xioctl(fd, KVM_SET_DEBUGREGS, &s.debugregs) < 0)
        throw_errno(vcpu_what(index_, "KVM_SET_DEBUGREGS"));
    if (xioctl(fd, KVM_SET_MP_STATE, &s.mp_state) < 0)
        throw_errno(vcpu_what(index_, "KVM_SET_MP_STATE"));
}

}  // namespace vessel::vmm
