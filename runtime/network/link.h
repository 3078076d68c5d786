// Host network interfaces through ioctls (bridges, taps, addresses, flags) and /proc. Every
// call acts on the network namespace of the calling thread; run_in_netns moves a call into
// another one. Failures throw std::system_error naming the interface and the operation.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/network/addr.h"
#include "vmm/fd.h"

namespace vessel::network {

bool link_exists(const std::string& name);
// The driver name ethtool reports ("bridge", "tun", "veth", ...), "" if it reports none.
std::string link_driver(const std::string& name);
void set_link_up(const std::string& name, bool up = true);
Mac link_mac(const std::string& name);
void set_link_mac(const std::string& name, const Mac& mac);
unsigned link_mtu(const std::string& name);
void set_link_mtu(const std::string& name, unsigned mtu);
// Adds `addr` (with its prefix and broadcast) as the interface's IPv4 address.
void set_link_ipv4(const std::string& name, const Cidr& addr);

void create_bridge(const std::string& name);
// Takes the bridge down and deletes it; its ports are released by the kernel.
void delete_bridge(const std::string& name);
void bridge_add_port(const std::string& bridge, const std::string& port);

struct Tap {
    UniqueFd fd;
    std::string name;
};
// A non-persistent tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) from /dev/net/tun, opened
// O_CLOEXEC and blocking. `name_template` may hold "%d" for the kernel to number it. The
// kernel deletes the device when the last fd to it closes.
Tap create_tap(const std::string& name_template);

struct IfAddr {
    std::string ifname;
    Cidr addr;  // with host bits: the interface's address and prefix
};
std::vector<IfAddr> ipv4_addresses();

struct Route {
    std::string ifname;  // "*" for routes without a device (blackhole, unreachable)
    Cidr dest;
    Ipv4 gateway;  // 0.0.0.0 when on-link
};
// IPv4 routes of the main table (/proc/thread-self/net/route).
std::vector<Route> ipv4_routes();

// Opens a network namespace file (/proc/PID/ns/net, /run/netns/NAME) and checks that it is
// one. Throws std::system_error naming `path` otherwise.
UniqueFd open_netns(const std::string& path);

// Runs `fn` on a short-lived thread that has joined the network namespace `netns_fd`; fds
// opened there (sockets, taps) keep belonging to that namespace afterwards. Exceptions from
// `fn` are rethrown in the caller.
void run_in_netns(int netns_fd, const std::function<void()>& fn);

}  // namespace vessel::network
