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
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, FlexHeader);
// Values as C computes them from the kernel headers.
static_assert(kGetSupportedCpuid == 0xc008ae05);
static_assert(kSetCpuid2 == 0x4008ae90);
static_assert(kSetMsrs == 0x4008ae89);

template <typename Entry, uint32_t N>
struct FlexArray {
    FlexHeader hdr{};
    Entry entries[N];
};
using CpuidProbe = FlexArray<kvm_cpuid_entry2, 1>;
static_assert(offsetof(CpuidProbe, entries) == 8);

}  // namespace vessel::vmm::abi
