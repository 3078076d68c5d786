// KVM structures that end in flexible arrays, declared with their C layout.
// linux-libc-dev 6.1's __DECLARE_FLEX_ARRAY, compiled as C++, makes sizeof(kvm_cpuid2) and
// sizeof(kvm_msrs) 12 instead of 8 and moves `entries` to offset 12, which corrupts both the
// ioctl numbers derived from them and the buffers. Use these instead of <linux/kvm.h>'s.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

namespace vessel::vmm::abi {

struct FlexHeader {
    uint32_t count;
    uint32_t padding;
};
static_assert(sizeof(FlexHeader) == 8);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, FlexHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);
// kvm_msr_list's header is a lone u32 (no padding), unlike kvm_msrs and kvm_cpuid2.
struct MsrListHeader {
    uint32_t count;
};
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
// kvm_xsave is 4096 bytes plus a flexible tail (KVM_CAP_XSAVE2); C++ adds 4 to its sizeof.
struct XsaveRegion {
    uint32_t region[1024];
};
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveRegion);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveRegion);
inline constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveRegion);
// Values as C computes them from the kernel headers.
static_assert(kGetSupportedCpuid == 0xc008ae05);
static_assert(kSetCpuid2 == 0x4008ae90);
static_assert(kSetMsrs == 0x4008ae89);
static_assert(kGetMsrIndexList == 0xc004ae02);
static_assert(kGetXsave == 0x9000aea4);
static_assert(kSetXsave == 0x5000aea5);
static_assert(kGetXsave2 == 0x9000aecf);

template <typename Entry, uint32_t N>
struct FlexArray {
    FlexHeader hdr{};
    Entry entries[N];
};
using CpuidProbe = FlexArray<kvm_cpuid_entry2, 1>;
static_assert(offsetof(CpuidProbe, entries) == 8);

}  // namespace vessel::vmm::abi
