// A snapshot directory: DIR/state.vsnap (the container of format.h: machine configuration,
// vCPU and VM state, serial and virtio devices, the memory reference) and DIR/memory (guest
// RAM as a sparse file, written by vmm::Machine::save_memory). See docs/snapshot-format.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "snapshot/format.h"
#include "virtio/mmio.h"
#include "vmm/machine.h"

namespace vessel::snapshot {

inline constexpr const char* kStateFile = "state.vsnap";
inline constexpr const char* kMemoryFile = "memory";

// One virtio-mmio device. `config` is what the runtime needs to re-create the device (a
// disk's path, a tap's name, a vsock CID); `state` is the device's own State.
struct DeviceRecord {
    uint32_t slot = 0;  // virtio-mmio window index, in attach order
    std::string kind;   // "block", "net", "vsock"
    nlohmann::json config = nlohmann::json::object();
    virtio::MmioTransport::State transport;
    nlohmann::json state = nlohmann::json::object();
};

struct Snapshot {
    // Runtime-defined machine configuration (command line, console, agent...). save() adds
    // "vessel_version" and "created" (seconds since the epoch).
    nlohmann::json meta = nlohmann::json::object();
    vmm::MachineState machine;
    std::vector<DeviceRecord> devices;
    std::string memory_file = kMemoryFile;  // relative to the directory
};

std::vector<uint8_t> encode_snapshot(const Snapshot& s);
// Checks every section and their consistency (one meta, vm, serial and memory section, one
// vCPU section per vCPU, distinct device slots). Throws SnapshotError.
Snapshot decode_snapshot(std::span<const uint8_t> bytes);

// Writes DIR/state.vsnap atomically. The memory file must already be in DIR.
void save(const std::string& dir, Snapshot s);
// Reads and checks DIR/state.vsnap, and that the memory file exists with the right size.
// Throws SnapshotError before anything could be restored.
Snapshot load(const std::string& dir);
std::string memory_path(const std::string& dir, const Snapshot& s);

nlohmann::json transport_to_json(const virtio::MmioTransport::State& s);
virtio::MmioTransport::State transport_from_json(const nlohmann::json& j);

}  // namespace vessel::snapshot
