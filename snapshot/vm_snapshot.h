// Taking a snapshot of a running vmm::Machine with its virtio devices, and the device-side
// fix-ups of a restore. The runtime lists what it attached (AttachedDevice); re-creating
// devices from DeviceRecord::config on restore is the runtime's job (runtime/cmd_restore.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "snapshot/snapshot.h"
#include "virtio/mmio.h"
#include "vmm/machine.h"

namespace vessel::snapshot {

struct AttachedDevice {
    std::string kind;                                  // "block", "net", "vsock"
    nlohmann::json config = nlohmann::json::object();  // how to re-create it (path, tap, CID)
    std::shared_ptr<virtio::MmioTransport> transport;
    std::function<nlohmann::json()> state;  // the device's own State as JSON; may be empty
    // Queues whose buffers the device takes ahead of need (receive queues): buffers taken
    // but not used are handed back in the saved state (next_avail = next_used) instead of
    // being waited for. Every other queue must have no request in flight.
    std::vector<uint16_t> prefetch_queues;
};

struct CreateStats {
    uint64_t memory_bytes = 0;  // bytes of guest RAM written (holes and zero pages skipped)
    uint64_t disk_bytes = 0;    // copy_disks: data copied (0 for reflinks)
    std::chrono::nanoseconds pause{0}, drain{0}, capture{0}, disks{0}, memory{0}, state{0};
};

// Pauses `m` (if it is not already), waits until no device has a request in flight, then
// writes DIR/memory and DIR/state.vsnap (DIR is created; it must not hold a snapshot yet).
// The machine is left paused: the caller resumes or stops it. Throws SnapshotError or
// std::system_error; a partly written DIR is removed.
//
// `diff_parent` non-empty: a diff snapshot on top of that snapshot directory (the previous
// snapshot of this machine, or the one it was restored from): DIR/memory holds only the pages
// written since (the machine must track dirty pages), DIR/memory.bitmap says which, and the
// meta names the parent (docs/snapshot-format.md). A full snapshot of a tracking machine
// starts a new interval.
//
// `copy_disks`: each writable disk image is copied into DIR (disk-<slot>.img, a reflink where
// the file system can) while the VM is paused, and its record names the copy ("copy"), for
// `vessel restore --revert-disks`. A disk that is a block device is refused.
CreateStats create(vmm::Machine& m, const std::vector<AttachedDevice>& devices,
                   const std::string& dir, nlohmann::json meta,
                   std::chrono::milliseconds drain_timeout = std::chrono::seconds(10),
                   const std::string& diff_parent = {}, bool copy_disks = false);

// Restore side, after the devices are re-created and attached in slot order and before
// Machine::run(): restores each transport from its record. Devices of kind "vsock" get a
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on their event queue (their connections are gone).
// Throws SnapshotError when a record does not fit the device attached in its slot.
void restore_devices(const vmm::GuestMemory& mem, const std::vector<DeviceRecord>& records,
                     const std::vector<std::shared_ptr<virtio::MmioTransport>>& transports);

// For a vsock device restored by restore_devices (record `r`, guest memory `mem`): a test
// that becomes true once the guest has handled the transport-reset event, i.e. its driver
// has given the event buffer back (the event queue's available index moved past where it was
// at the restore). A host connection made before that would be reset when the guest gets to
// the event. Always true when no event was sent (the device was not active).
std::function<bool()> vsock_reset_handled(const vmm::GuestMemory& mem, const DeviceRecord& r);

// Raises a used-buffer interrupt on every active transport: after a restore, an interrupt
// that was in flight at the save (an irqfd not yet injected) is not lost; drivers treat a
// spurious one as a no-op. Call once the irqchip state is in place (Machine::after_restore).
void kick_devices(const std::vector<std::shared_ptr<virtio::MmioTransport>>& transports);

}  // namespace vessel::snapshot
