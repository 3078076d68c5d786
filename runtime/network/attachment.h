// A VM's network attachment on the host side: which tap, on which bridge or in which network
// namespace, with which guest address. This is the API `vessel boot --net` uses:
//
//   NetSpec spec = NetSpec::parse(option_text);          // std::invalid_argument on bad text
//   NetAttachment net = NetAttachment::attach(spec);     // std::system_error/runtime_error
//   device.open(net.tap_fd() >= 0 ? net.take_tap_fd() : open_tap(net.tap_name()));
//   cmdline += " " + net.kernel_ip_param();              // guest address via CONFIG_IP_PNP
//   ... run the VM ...                                   // ~NetAttachment undoes everything
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/network/addr.h"
#include "runtime/network/process.h"
#include "runtime/network/store.h"
#include "vmm/fd.h"

namespace vessel::network {

enum class NetMode {
    Network,  // network=NAME: a vessel network (bridge + NAT + address from its IPAM)
    Bridge,   // bridge=BR: a tap on an existing bridge; the address is the caller's (ip=)
    Tap,      // tap=TAP: an existing (persistent) tap; the device opens it by name
    Netns,    // netns=PATH: container mode, a tap inside the namespace wired to its veth
};
const char* mode_name(NetMode m);

// One --net option: "MODE=VALUE[,key=value]...".
//   network=NAME   [ip=ADDR] [mac=MAC] [dns=IP]...
//   bridge=BR      [ip=CIDR|dhcp] [gw=IP] [mac=MAC] [dns=IP]...
//   tap=TAP        [ip=CIDR|dhcp] [gw=IP] [mac=MAC] [dns=IP]...
//   netns=PATH     [dev=IFNAME] [mac=MAC] [dns=IP]...
// dns= may be given twice. Unknown keys, repeated keys, a missing or second mode, and values
// that make no sense for the mode are errors.
struct NetSpec {
    NetMode mode = NetMode::Network;
    std::string target;           // network name, bridge, tap or namespace path
    std::optional<Ipv4> ip;       // network mode: a specific address to lease
    std::optional<Cidr> ip_cidr;  // bridge/tap mode: static guest address
    bool dhcp = false;            // bridge/tap mode: ip=dhcp
    std::optional<Ipv4> gateway;
    std::optional<Mac> mac;
    std::vector<Ipv4> dns;
    std::string dev;  // netns mode: the namespace's interface (default: the default route's)

    // Throws std::invalid_argument("--net '<text>': <problem>").
    static NetSpec parse(std::string_view text);
};

// What the guest is told about its interface.
struct GuestConfig {
    std::optional<Cidr> address;  // guest address and prefix; none: unconfigured or DHCP
    bool dhcp = false;
    std::optional<Ipv4> gateway;
    std::vector<Ipv4> dns;  // at most 2
    Mac mac;
    unsigned mtu = 1500;

    // The Linux `ip=` parameter (CONFIG_IP_PNP) configuring `device` in the guest, e.g.
    // "ip=10.88.0.2::10.88.0.1:255.255.255.0::eth0:off:1.1.1.1"; "ip=:::::eth0:dhcp" for
    // DHCP; "" when there is nothing to configure. The kernel lists the DNS servers in
    // /proc/net/pnp, which vessel-init copies to /etc/resolv.conf.
    std::string kernel_ip_param(std::string_view device = "eth0",
                                std::string_view hostname = "") const;
};

struct AttachOptions {
    std::string state_root = default_state_root();
    std::string label;                       // recorded in the network lease (VM or container id)
    std::optional<ProcessId> owner;          // lease owner; default: this process
    std::string tap_template = "vsl-tap%d";  // taps vessel creates; "%d" is numbered by Linux
};

class NetAttachment {
  public:
    // Sets up the host side for `spec`. Errors name what is missing or wrong ("network 'x'
    // not found", "bridge br0 not found", "opening /dev/net/tun ...: Permission denied");
    // on error nothing is left behind.
    static NetAttachment attach(const NetSpec& spec, const AttachOptions& opt = {});

    NetAttachment(NetAttachment&&) noexcept;
    NetAttachment& operator=(NetAttachment&&) noexcept;
    // Releases the lease, removes the tc plumbing and closes the tap fd if still held (a tap
    // vessel created disappears with its last fd). Never throws; problems go to stderr.
    ~NetAttachment();

    NetMode mode() const;
    // The tap's name: host-side for network/bridge/tap mode, inside the namespace for netns.
    const std::string& tap_name() const;
    // A ready tap fd (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, O_CLOEXEC, blocking), or -1 in tap
    // mode, where the device opens tap_name() itself.
    int tap_fd() const;
    // Hands the fd to the device; the tap lives as long as that fd.
    UniqueFd take_tap_fd();
    const GuestConfig& guest() const;
    std::string kernel_ip_param(std::string_view device = "eth0") const {
        return guest().kernel_ip_param(device);
    }
    // One line for --verbose logs.
    std::string describe() const;
    // Tears down now (what the destructor does), reporting the first failure by throwing.
    void detach();

    struct Impl;

  private:
    explicit NetAttachment(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Non-loopback IPv4 nameservers of a resolv.conf text, at most 2 (guests cannot reach a
// host-local resolver such as 127.0.0.53).
std::vector<Ipv4> nameservers_from_resolv_conf(const std::string& text);

}  // namespace vessel::network
