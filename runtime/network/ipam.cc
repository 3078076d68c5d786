#include "runtime/network/ipam.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_set>

namespace vessel::network {

size_t reclaim_dead_leases(NetworkRecord& r, const AliveFn& alive) {
    size_t before = r.leases.size();
    std::erase_if(r.leases, [&](const Lease& l) { return !alive(l.owner); });
    return before - r.leases.size();
}

size_t live_lease_count(const NetworkRecord& r, const AliveFn& alive) {
    return static_cast<size_t>(std::count_if(r.leases.begin(), r.leases.end(),
                                             [&](const Lease& l) { return alive(l.owner); }));
}

Lease allocate_lease(NetworkRecord& r, const ProcessId& owner, std::optional<Ipv4> requested,
                     const std::string& label, int64_t now, const AliveFn& alive) {
    reclaim_dead_leases(r, alive);
    std::unordered_set<uint32_t> taken;
    for (const auto& l : r.leases) taken.insert(l.ip.value);
    const Ipv4 first = r.subnet.first_host(), last = r.subnet.last_host();
    auto usable = [&](Ipv4 a) {
        return r.subnet.host_count() > 0 && a >= first && a <= last && a != r.gateway;
    };

    Ipv4 ip;
    if (requested) {
        if (!usable(*requested))
            throw std::invalid_argument("network " + r.name + ": " + requested->str() +
                                        " is not a guest address of " + r.subnet.str() +
                                        " (gateway " + r.gateway.str() + ")");
        if (taken.count(requested->value))
            throw std::runtime_error("network " + r.name + ": address " + requested->str() +
                                     " is already leased");
        ip = *requested;
    } else {
        uint64_t capacity = r.subnet.host_count() - (r.subnet.contains(r.gateway) ? 1 : 0);
        if (r.subnet.host_count() == 0 || taken.size() >= capacity)
            throw std::runtime_error("network " + r.name + ": subnet " + r.subnet.str() +
                                     " is exhausted (all " + std::to_string(capacity) +
                                     " guest addresses are leased)");
        // Resume after the last handed-out address so a just-freed one is not reused at once
        // (stale conntrack entries and neighbour caches get time to expire).
        uint64_t span = uint64_t{last.value} - first.value + 1;
        uint64_t start = r.last_allocated >= first && r.last_allocated <= last
                             ? r.last_allocated.value - first.value + 1
                             : 0;
        bool found = false;
        for (uint64_t i = 0; i < span; ++i) {
            Ipv4 a{static_cast<uint32_t>(first.value + (start + i) % span)};
            if (usable(a) && !taken.count(a.value)) {
                ip = a;
                found = true;
                break;
            }
        }
        if (!found)  // unreachable given the capacity check; kept as a guard
            throw std::runtime_error("network " + r.name + ": subnet " + r.subnet.str() +
                                     " is exhausted");
        r.last_allocated = ip;
    }
    Lease l{ip, Mac::from_ipv4(ip), "", owner, label, now};
    r.leases.push_back(l);
    return l;
}

bool release_lease(NetworkRecord& r, Ipv4 ip, const ProcessId& owner) {
    auto n =
        std::erase_if(r.leases, [&](const Lease& l) { return l.ip == ip && l.owner == owner; });
    return n > 0;
}

}  // namespace vessel::network
