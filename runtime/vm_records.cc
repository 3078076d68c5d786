#include "runtime/vm_records.h"

#include <stdexcept>

#include "guest/init/protocol.h"
#include "virtio/net/config.h"

namespace vessel::cli {

nlohmann::json snapshot_meta(const vmm::MachineConfig& cfg, bool agent) {
    nlohmann::json meta = {{"cmdline", cfg.cmdline}};
    if (agent) meta["agent_port"] = guest::kDefaultAgentPort;
    return meta;
}

nlohmann::json net_record(const std::string& spec_text, const network::NetAttachment& a,
                          const std::string& tap, virtio::io::EnginePreference engine) {
    const network::GuestConfig& g = a.guest();
    nlohmann::json j = {{"tap", tap},
                        {"spec", spec_text},
                        {"mode", network::mode_name(a.mode())},
                        {"mtu", g.mtu},
                        {"engine", engine == virtio::io::EnginePreference::Sync      ? "sync"
                                   : engine == virtio::io::EnginePreference::IoUring ? "uring"
                                                                                     : "auto"}};
    if (g.address) j["address"] = g.address->str();
    if (g.gateway) j["gateway"] = g.gateway->str();
    nlohmann::json dns = nlohmann::json::array();
    for (const auto& d : g.dns) dns.push_back(d.str());
    j["dns"] = std::move(dns);
    j["dhcp"] = g.dhcp;
    return j;
}

nlohmann::json net_state_to_json(const virtio::net::NetDevice::State& s) {
    return {{"mac", virtio::net::mac_to_string(s.mac)}, {"link_up", s.link_up}};
}

virtio::net::NetDevice::State net_state_from_json(const nlohmann::json& j) {
    virtio::net::NetDevice::State s;
    s.mac = network::Mac::parse(j.at("mac").get<std::string>()).bytes;
    s.link_up = j.value("link_up", true);
    return s;
}

virtio::io::EnginePreference net_engine(const nlohmann::json& config) {
    const std::string e = config.value("engine", "auto");
    return e == "sync"    ? virtio::io::EnginePreference::Sync
           : e == "uring" ? virtio::io::EnginePreference::IoUring
                          : virtio::io::EnginePreference::Auto;
}

network::NetSpec restore_net_spec(const nlohmann::json& config, const nlohmann::json& state,
                                  const std::optional<std::string>& override_text, bool clone,
                                  const std::string& ifname) {
    if (override_text) return network::NetSpec::parse(*override_text);
    network::NetSpec spec = network::NetSpec::parse(config.at("spec").get<std::string>());
    if (clone) {
        // A clone is a new machine on the same network: a lease and MAC of its own.
        spec.ip.reset();
        spec.mac.reset();
        if (spec.ip_cidr)
            throw std::invalid_argument(ifname + " has the static address " + spec.ip_cidr->str() +
                                        " (" + network::mode_name(spec.mode) + "=" + spec.target +
                                        "); a clone needs its own: give it with --net");
        return spec;
    }
    // The same machine again: the address and MAC it had (the guest still uses them).
    if (spec.mode == network::NetMode::Network && config.contains("address"))
        spec.ip = network::Cidr::parse(config.at("address").get<std::string>()).addr;
    if (spec.mode != network::NetMode::Netns)
        spec.mac = network::Mac::parse(state.at("mac").get<std::string>());
    return spec;
}

}  // namespace vessel::cli
