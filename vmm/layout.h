// Guest physical address map of a vessel micro-VM (x86_64).
#pragma once

#include <cstdint>

namespace vessel::vmm::layout {

inline constexpr uint64_t kGdtAddr = 0x500;
inline constexpr uint64_t kBootParamsAddr = 0x7000;
inline constexpr uint64_t kPml4Addr = 0x9000;
inline constexpr uint64_t kPdptAddr = 0xa000;
inline constexpr uint64_t kPdAddr = 0xb000;
inline constexpr uint64_t kBootStackTop = 0x8ff0;
inline constexpr uint64_t kCmdlineAddr = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;
// The MP table sits at the start of the EBDA, which Linux scans for "_MP_".
inline constexpr uint64_t kEbdaStart = 0x9fc00;
inline constexpr uint64_t kHighMemStart = 0x100000;
// The boot protocol's LOAD_PHYSICAL_ADDR for x86_64 kernels.
inline constexpr uint64_t kKernelLoadAddr = 0x1000000;

// 32-bit hole below 4 GiB for MMIO: virtio-mmio devices, then IOAPIC/LAPIC at the top.
inline constexpr uint64_t kMmioGapStart = 0xc0000000;
inline constexpr uint64_t kMmioGapEnd = 0x100000000;
inline constexpr uint64_t kVirtioMmioBase = 0xd0000000;
inline constexpr uint64_t kVirtioMmioSize = 0x1000;
inline constexpr uint64_t kIoapicAddr = 0xfec00000;
inline constexpr uint64_t kLapicAddr = 0xfee00000;

inline constexpr uint64_t kTssAddr = 0xfffbd000;
inline constexpr uint64_t kIdentityMapAddr = 0xfffbc000;

// I/O ports.
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint32_t kCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;
inline constexpr uint16_t kI8042CmdPort = 0x64;

// First IOAPIC pin handed to virtio-mmio devices (below are the ISA legacy IRQs).
inline constexpr uint32_t kFirstDeviceIrq = 5;
inline constexpr uint32_t kIoapicPins = 24;

}  // namespace vessel::vmm::layout
