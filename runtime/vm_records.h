// What `vessel boot` and `vessel restore` put into a snapshot about the VM (meta, the
// configuration of its network interfaces) and how `restore` attaches those interfaces
// again: the same address and MAC for a restore, new ones for a clone (docs/snapshot-format.md,
// "Device records").
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "guest/agent/spec.h"
#include "runtime/container/container.h"
#include "runtime/network/attachment.h"
#include "virtio/io/engine.h"
#include "virtio/net/device.h"
#include "vmm/machine.h"

namespace vessel::cli {

// The snapshot meta of a VM: its kernel command line and, when it runs the guest agent, the
// agent's vsock port (restore --agent/--clone need one).
nlohmann::json snapshot_meta(const vmm::MachineConfig& cfg, bool agent);

// A net device record's config: the --net text it was attached with, the engine, the tap,
// and what the guest was told (address, gateway, dns, mtu).
nlohmann::json net_record(const std::string& spec_text, const network::NetAttachment& a,
                          const std::string& tap, virtio::io::EnginePreference engine);
nlohmann::json net_state_to_json(const virtio::net::NetDevice::State& s);
// Throws nlohmann::json::exception or std::invalid_argument on a bad record.
virtio::net::NetDevice::State net_state_from_json(const nlohmann::json& j);

// How restore attaches a recorded interface again. `override_text`: a --net given to restore
// for this interface (replaces the recorded one). A clone gets a fresh lease and MAC; a plain
// restore asks for the recorded address and MAC. Throws std::invalid_argument (bad text, or a
// clone whose interface has a static address that only --net can replace).
network::NetSpec restore_net_spec(const nlohmann::json& config, const nlohmann::json& state,
                                  const std::optional<std::string>& override_text, bool clone,
                                  const std::string& ifname);
virtio::io::EnginePreference net_engine(const nlohmann::json& config);

using container::interface_identity;

}  // namespace vessel::cli
