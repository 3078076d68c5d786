// Address allocation inside a vessel network's subnet. Pure functions on a NetworkRecord: the
// caller holds the store's exclusive lock around load, change and save, which is what makes an
// address go to one owner at a time across processes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "runtime/network/store.h"

namespace vessel::network {

using AliveFn = std::function<bool(const ProcessId&)>;

// Drops leases whose owner process is gone (killed VMMs included); returns how many.
size_t reclaim_dead_leases(NetworkRecord& r, const AliveFn& alive = process_alive);

size_t live_lease_count(const NetworkRecord& r, const AliveFn& alive = process_alive);

// Leases an address to `owner`: `requested` if given (it must be a free host address of the
// subnet other than the gateway), otherwise the next free one after the last allocated,
// wrapping around. The MAC is Mac::from_ipv4. Reclaims dead leases first. Throws
// std::runtime_error naming the network when the subnet is exhausted or `requested` is taken,
// std::invalid_argument when `requested` is outside the usable range.
Lease allocate_lease(NetworkRecord& r, const ProcessId& owner, std::optional<Ipv4> requested,
                     const std::string& label, int64_t now, const AliveFn& alive = process_alive);

// Removes the lease of `ip` held by `owner`; false if there is none.
bool release_lease(NetworkRecord& r, Ipv4 ip, const ProcessId& owner);

}  // namespace vessel::network
