// vessel networks: a Linux bridge holding the gateway address, one nftables table doing NAT for
// the subnet, ip_forward on, and the state record (store.h). Used by `vessel network` and, to
// bring a network back after a host reboot, by NetAttachment.
#pragma once

#include <string>
#include <vector>

#include "runtime/network/store.h"

namespace vessel::network {

struct CreateOptions {
    std::string name;
    std::string subnet;            // CIDR text, no host bits, prefix 0..30
    std::string bridge;            // empty: bridge_name_for(name)
    std::vector<std::string> dns;  // at most 2 addresses
};

// "vsl-NAME" when it fits IFNAMSIZ, else "vsl-" + 6 characters of the name + "-" + 4 hex
// digits of a hash of the whole name.
std::string bridge_name_for(const std::string& network_name);

// Creates the bridge, its address, the NAT table and the record. Refuses (std::runtime_error
// or std::invalid_argument naming the conflict) an existing name or bridge, a subnet
// overlapping another vessel network, a host interface address or a host route (the default
// route excepted). A leftover nft table of the same name is replaced: tables named vessel-*
// belong to vessel. On failure everything created so far is removed again.
NetworkRecord create_network(const NetworkStore& store, const CreateOptions& opt);

// Removes the network's NAT table, bridge and record. Refuses while a lease is held by a live
// process; leases of dead processes are dropped.
void remove_network(const NetworkStore& store, const std::string& name);

struct NetworkStatus {
    NetworkRecord record;
    size_t leases_in_use = 0;  // leases whose owner is alive
    bool bridge_present = false;
};
std::vector<NetworkStatus> list_networks(const NetworkStore& store);
NetworkStatus inspect_network(const NetworkStore& store, const std::string& name);

// Recreates the bridge, address and NAT table when the bridge is missing (host reboot), the
// NAT table alone when it is missing (firewall reload), and makes sure the bridge is up and
// forwarding is on. The caller holds the store's exclusive lock.
void ensure_network_up(const NetworkRecord& r);

// The nft script that (re)creates the network's table atomically.
std::string nft_ruleset(const NetworkRecord& r);

// Name of the nft table of network `name` (family ip).
std::string nft_table_for(const std::string& network_name);

}  // namespace vessel::network
