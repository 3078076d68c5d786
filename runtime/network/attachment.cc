#include "runtime/network/attachment.h"

#include <sys/random.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "runtime/network/command.h"
#include "runtime/network/ipam.h"
#include "runtime/network/link.h"
#include "runtime/network/manage.h"

namespace vessel::network {

struct NetAttachment::Impl {
    NetMode mode = NetMode::Network;
    std::string target;
    Tap tap;  // fd invalid in tap mode or once taken
    GuestConfig guest;

    // Network mode: the lease to give back.
    std::string state_root, network, bridge;
    std::optional<Ipv4> leased;
    ProcessId owner;

    // Netns mode: the namespace and the veth whose ingress qdisc vessel installed.
    UniqueFd netns;
    std::string veth;
    bool veth_qdisc = false;

    bool detached = false;

    // Undoes everything; returns the first error message ("" if none).
    std::string teardown();
    // Also the rollback of a failed attach.
    ~Impl() {
        std::string err = teardown();
        if (!err.empty()) std::fprintf(stderr, "vessel: network teardown: %s\n", err.c_str());
    }
};

namespace {

Mac random_mac() {
    Mac m;
    if (::getrandom(m.bytes.data(), m.bytes.size(), 0) != 6) throw_errno("getrandom");
    m.bytes[0] = static_cast<uint8_t>((m.bytes[0] & 0xfe) | 0x02);  // local, unicast
    return m;
}

std::vector<Ipv4> host_nameservers() {
    std::ifstream f("/etc/resolv.conf");
    if (!f) return {};
    std::stringstream ss;
    ss << f.rdbuf();
    return nameservers_from_resolv_conf(ss.str());
}

void tc(int netns_fd, const std::string& what, std::vector<std::string> args) {
    args.insert(args.begin(), "tc");
    CommandOptions o;
    o.netns_fd = netns_fd;
    check_command(what, args, o);
}

// Matches every frame (u32 with an empty mask; cls_matchall is not on every kernel) and moves
// it to the egress of `to`, so frames cross between the tap and the veth without the
// namespace's stack seeing them.
void redirect_all(int netns_fd, const std::string& from, const std::string& to) {
    tc(netns_fd, "redirecting " + from + " to " + to,
       {"filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match", "u32",
        "0", "0", "action", "mirred", "egress", "redirect", "dev", to});
}

bool has_ingress_qdisc(int netns_fd, const std::string& dev) {
    CommandOptions o;
    o.netns_fd = netns_fd;
    auto r = check_command("reading qdiscs of " + dev,
                           {"tc", "qdisc", "show", "dev", dev, "ingress"}, o);
    return r.out.find("ingress") != std::string::npos;
}

struct NsInterface {
    std::string dev;
    Cidr addr;
    std::optional<Ipv4> gateway;
    Mac mac;
    unsigned mtu = 1500;
};

// Runs inside the namespace: picks the interface (dev=, else the default route's, else the
// only non-loopback one with an IPv4 address) and reads its address, gateway, MAC and MTU.
NsInterface read_ns_interface(const std::string& want, const std::string& path) {
    auto addrs = ipv4_addresses();
    auto routes = ipv4_routes();
    NsInterface n;
    n.dev = want;
    if (n.dev.empty()) {
        for (const auto& r : routes)
            if (r.dest.prefix == 0 && r.ifname != "*") {
                n.dev = r.ifname;
                break;
            }
    }
    if (n.dev.empty()) {
        std::vector<std::string> cands;
        for (const auto& a : addrs)
            if (a.ifname != "lo") cands.push_back(a.ifname);
        if (cands.size() != 1)
            throw std::runtime_error("network namespace " + path + ": " +
                                     (cands.empty() ? "no interface with an IPv4 address"
                                                    : "several interfaces; choose one with dev=") +
                                     " (and no default route)");
        n.dev = cands[0];
    }
    if (!link_exists(n.dev))
        throw std::runtime_error("interface " + n.dev + " not found in network namespace " + path);
    bool found = false;
    for (const auto& a : addrs)
        if (a.ifname == n.dev) {
            n.addr = a.addr;
            found = true;
            break;
        }
    if (!found)
        throw std::runtime_error("interface " + n.dev + " in network namespace " + path +
                                 " has no IPv4 address");
    for (const auto& r : routes)
        if (r.dest.prefix == 0 && r.ifname == n.dev && r.gateway.value != 0) {
            n.gateway = r.gateway;
            break;
        }
    n.mac = link_mac(n.dev);
    n.mtu = link_mtu(n.dev);
    return n;
}

}  // namespace

std::vector<Ipv4> nameservers_from_resolv_conf(const std::string& text) {
    std::vector<Ipv4> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line) && out.size() < 2) {
        std::istringstream ls(line);
        std::string key, val;
        if (!(ls >> key >> val) || key != "nameserver") continue;
        try {
            Ipv4 a = Ipv4::parse(val);
            if ((a.value >> 24) != 127 && a.value != 0) out.push_back(a);
        } catch (const std::invalid_argument&) {
            // IPv6 servers: the guest's ip= parameter carries IPv4 only.
        }
    }
    return out;
}

std::string NetAttachment::Impl::teardown() {
    if (detached) return "";
    detached = true;
    std::string first_error;
    auto attempt = [&](const std::function<void()>& f) {
        try {
            f();
        } catch (const std::exception& e) {
            if (first_error.empty()) first_error = e.what();
        }
    };
    if (veth_qdisc)
        attempt([&] {
            // Takes the veth's redirect filter with it; the tap's vanish with the tap.
            tc(netns.get(), "removing the ingress qdisc of " + veth,
               {"qdisc", "del", "dev", veth, "ingress"});
        });
    tap.fd.reset();
    netns.reset();
    if (leased)
        attempt([&] {
            NetworkStore store(state_root);
            auto lock = store.lock(true);
            auto r = store.load(network);
            if (r && release_lease(*r, *leased, owner)) store.save(*r);
        });
    return first_error;
}

NetAttachment::NetAttachment(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NetAttachment::NetAttachment(NetAttachment&&) noexcept = default;
NetAttachment& NetAttachment::operator=(NetAttachment&&) noexcept = default;
NetAttachment::~NetAttachment() = default;

void NetAttachment::detach() {
    if (!impl_) return;
    std::string err = impl_->teardown();
    if (!err.empty()) throw std::runtime_error("network teardown: " + err);
}

NetMode NetAttachment::mode() const {
    return impl_->mode;
}
const std::string& NetAttachment::tap_name() const {
    return impl_->tap.name;
}
int NetAttachment::tap_fd() const {
    return impl_->tap.fd.get();
}
UniqueFd NetAttachment::take_tap_fd() {
    return std::move(impl_->tap.fd);
}
const GuestConfig& NetAttachment::guest() const {
    return impl_->guest;
}

std::string NetAttachment::describe() const {
    const Impl& i = *impl_;
    std::string s = std::string(mode_name(i.mode)) + " " + i.target + ": tap " + i.tap.name;
    if (i.mode == NetMode::Network) s += " on bridge " + i.bridge;
    if (i.mode == NetMode::Netns) s += " <-> " + i.veth + " (tc redirect)";
    s += ", guest mac " + i.guest.mac.str();
    if (i.guest.address) s += " ip " + i.guest.address->str();
    if (i.guest.dhcp) s += " ip dhcp";
    if (i.guest.gateway) s += " gw " + i.guest.gateway->str();
    for (const auto& d : i.guest.dns) s += " dns " + d.str();
    return s;
}

NetAttachment NetAttachment::attach(const NetSpec& spec, const AttachOptions& opt) {
    auto impl = std::make_unique<Impl>();
    Impl& i = *impl;
    i.mode = spec.mode;
    i.target = spec.target;
    i.guest.dns = spec.dns;
    // An exception destroys impl, whose teardown undoes what was done so far: the tap fd
    // closes (the kernel deletes the tap), the veth's qdisc goes; the lease is saved last.
    switch (spec.mode) {
        case NetMode::Network: {
            i.state_root = opt.state_root;
            i.network = spec.target;
            i.owner = opt.owner ? *opt.owner : self_process();
            NetworkStore store(opt.state_root);
            validate_network_name(spec.target);
            auto lock = store.lock(true);
            auto r = store.load(spec.target);
            if (!r) throw std::runtime_error("network '" + spec.target + "' not found");
            reclaim_dead_leases(*r);
            ensure_network_up(*r);
            i.bridge = r->bridge;
            i.tap = create_tap(opt.tap_template);
            bridge_add_port(r->bridge, i.tap.name);
            set_link_up(i.tap.name);
            i.guest.mtu = link_mtu(r->bridge);
            Lease l = allocate_lease(*r, i.owner, spec.ip, opt.label,
                                     static_cast<int64_t>(std::time(nullptr)));
            if (spec.mac) l.mac = *spec.mac;
            l.tap = i.tap.name;
            r->leases.back() = l;
            store.save(*r);
            i.leased = l.ip;
            i.guest.address = Cidr{l.ip, r->subnet.prefix};
            i.guest.gateway = r->gateway;
            i.guest.mac = l.mac;
            if (i.guest.dns.empty()) i.guest.dns = r->dns;
            if (i.guest.dns.empty()) i.guest.dns = host_nameservers();
            break;
        }
        case NetMode::Bridge: {
            if (!link_exists(spec.target))
                throw std::runtime_error("bridge " + spec.target + " not found");
            if (link_driver(spec.target) != "bridge")
                throw std::runtime_error(spec.target + " is not a bridge");
            i.bridge = spec.target;
            i.tap = create_tap(opt.tap_template);
            unsigned mtu = link_mtu(spec.target);
            set_link_mtu(i.tap.name, mtu);
            bridge_add_port(spec.target, i.tap.name);
            set_link_up(i.tap.name);
            i.guest.address = spec.ip_cidr;
            i.guest.dhcp = spec.dhcp;
            i.guest.gateway = spec.gateway;
            i.guest.mac = spec.mac ? *spec.mac : random_mac();
            i.guest.mtu = mtu;
            break;
        }
        case NetMode::Tap: {
            if (!link_exists(spec.target))
                throw std::runtime_error("tap " + spec.target + " not found");
            if (link_driver(spec.target) != "tun")
                throw std::runtime_error(spec.target + " is not a tap device");
            i.tap.name = spec.target;
            i.guest.address = spec.ip_cidr;
            i.guest.dhcp = spec.dhcp;
            i.guest.gateway = spec.gateway;
            i.guest.mac = spec.mac ? *spec.mac : random_mac();
            i.guest.mtu = link_mtu(spec.target);
            break;
        }
        case NetMode::Netns: {
            i.netns = open_netns(spec.target);
            NsInterface ns;
            run_in_netns(i.netns.get(), [&] {
                ns = read_ns_interface(spec.dev, spec.target);
                // /dev/net/tun binds a tap to the namespace of the thread that opens it.
                i.tap = create_tap(opt.tap_template);
                set_link_mtu(i.tap.name, ns.mtu);
                set_link_up(i.tap.name);
            });
            i.veth = ns.dev;
            // A VMM killed earlier leaves its veth redirect behind (pointing at a tap that no
            // longer exists); the veth belongs to this sandbox, so its ingress is replaced.
            if (has_ingress_qdisc(i.netns.get(), i.veth))
                tc(i.netns.get(), "removing a stale ingress qdisc of " + i.veth,
                   {"qdisc", "del", "dev", i.veth, "ingress"});
            tc(i.netns.get(), "adding an ingress qdisc to " + i.veth,
               {"qdisc", "add", "dev", i.veth, "ingress"});
            i.veth_qdisc = true;
            tc(i.netns.get(), "adding an ingress qdisc to " + i.tap.name,
               {"qdisc", "add", "dev", i.tap.name, "ingress"});
            redirect_all(i.netns.get(), i.veth, i.tap.name);
            redirect_all(i.netns.get(), i.tap.name, i.veth);
            i.guest.address = ns.addr;
            i.guest.gateway = ns.gateway;
            i.guest.mac = spec.mac ? *spec.mac : ns.mac;
            i.guest.mtu = ns.mtu;
            break;
        }
    }
    return NetAttachment(std::move(impl));
}

}  // namespace vessel::network
