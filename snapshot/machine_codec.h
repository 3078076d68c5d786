// Binary encoding of the KVM state structs (vmm/vcpu_state.h) as tagged records: each record
// is a u32 tag, a u32 length and the kernel struct's bytes, so a size that does not match
// this build's struct is refused by name rather than misread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmm/serial.h"
#include "vmm/vcpu_state.h"

namespace vessel::snapshot {

std::vector<uint8_t> encode_vcpu(const vmm::VcpuState& s);
vmm::VcpuState decode_vcpu(std::span<const uint8_t> b);  // SnapshotError when malformed

std::vector<uint8_t> encode_vm(const vmm::VmState& s);
vmm::VmState decode_vm(std::span<const uint8_t> b);

nlohmann::json serial_to_json(const vmm::Serial::State& s);
vmm::Serial::State serial_from_json(const nlohmann::json& j);

}  // namespace vessel::snapshot
