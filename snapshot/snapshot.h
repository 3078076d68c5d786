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
inline constexpr const char* kBitmapFile = "memory.bitmap";  // diff snapshots only

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

// Diff snapshots (docs/snapshot-format.md): the page bitmap file, one bit per 4 KiB page of
// the memory file, 64 pages a little-endian u64 word.
void write_bitmap(const std::string& path, const std::vector<uint64_t>& bitmap);
uint32_t bitmap_crc(const std::vector<uint64_t>& bitmap);

// A snapshot to restore: the directory's own, or for a diff its chain resolved. memory_path
// is the full snapshot at the root; overlays are the diffs on top, oldest first, each with
// its bitmap read and checked. Throws SnapshotError (missing or corrupted parent or bitmap,
// a parent of another size, a chain longer than 64 or with a loop).
struct Resolved {
    Snapshot snap;  // the newest: machine state, devices, meta
    std::string memory_path;
    std::vector<vmm::RestoreSource::Overlay> overlays;
};
Resolved resolve(const std::string& dir);

// Writes a full snapshot to OUT from snapshot `dir` (a diff: its chain merged; a full one:
// copied), without the diff's parent link. OUT must not hold a snapshot. Returns the bytes
// of memory written.
uint64_t merge(const std::string& dir, const std::string& out);

nlohmann::json transport_to_json(const virtio::MmioTransport::State& s);
virtio::MmioTransport::State transport_from_json(const nlohmann::json& j);

}  // namespace vessel::snapshot
