#include "runtime/network/manage.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <functional>
#include <stdexcept>

#include "runtime/network/command.h"
#include "runtime/network/ipam.h"
#include "runtime/network/link.h"

namespace vessel::network {

namespace {

// Undo steps run in reverse unless the whole operation succeeded.
class Rollback {
  public:
    ~Rollback() {
        for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
            try {
                (*it)();
            } catch (const std::exception& e) {
                std::fprintf(stderr, "vessel: warning: rollback: %s\n", e.what());
            }
        }
    }
    void add(std::function<void()> f) { steps_.push_back(std::move(f)); }
    void commit() { steps_.clear(); }

  private:
    std::vector<std::function<void()>> steps_;
};

void validate_ifname(const std::string& n, const std::string& what) {
    bool ok = !n.empty() && n.size() < 16 && n != "." && n != "..";
    for (char c : n) ok = ok && c > ' ' && c != '/' && c != ':' && c != 0x7f;
    if (!ok)
        throw std::invalid_argument("invalid " + what + " name '" + n +
                                    "': 1-15 characters, no '/', ':' or spaces");
}

void enable_ip_forward() {
    // /proc/sys/net follows the namespace of the opener.
    UniqueFd fd(::open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), "1\n", 2) != 2) throw_errno("enabling net.ipv4.ip_forward");
}

void apply_nft(const std::string& script, const std::string& what) {
    CommandOptions o;
    o.stdin_data = script;
    check_command(what, {"nft", "-f", "-"}, o);
}

void delete_nft_table(const std::string& table) {
    // add-then-delete in one transaction: removes the table whether or not it exists.
    apply_nft("add table ip " + table + "\ndelete table ip " + table + "\n",
              "removing nft table ip " + table);
}

// Bridge with a fixed MAC (so it does not follow its ports' MACs and guests' ARP entries for
// the gateway stay valid), the gateway address, up; then NAT and forwarding.
void bring_up(const NetworkRecord& r, Rollback& rb) {
    create_bridge(r.bridge);
    rb.add([b = r.bridge] { delete_bridge(b); });
    set_link_mac(r.bridge, Mac::from_ipv4(r.gateway));
    set_link_ipv4(r.bridge, {r.gateway, r.subnet.prefix});
    set_link_up(r.bridge);
    apply_nft(nft_ruleset(r), "setting up NAT for network " + r.name);
    rb.add([t = r.nft_table] { delete_nft_table(t); });
    enable_ip_forward();
}

uint32_t fnv1a(const std::string& s) {
    uint32_t h = 2166136261u;
    for (unsigned char c : s) h = (h ^ c) * 16777619u;
    return h;
}

}  // namespace

std::string bridge_name_for(const std::string& name) {
    std::string b = "vsl-" + name;
    if (b.size() <= 15) return b;
    char hash[5];
    std::snprintf(hash, sizeof hash, "%04x", fnv1a(name) & 0xffff);
    return "vsl-" + name.substr(0, 6) + "-" + hash;
}

std::string nft_table_for(const std::string& name) {
    return "vessel-" + name;
}

std::string nft_ruleset(const NetworkRecord& r) {
    const std::string t = r.nft_table;
    return "add table ip " + t + "\n" + "delete table ip " + t + "\n" + "table ip " + t +
           " {\n"
           "    chain postrouting {\n"
           "        type nat hook postrouting priority srcnat; policy accept;\n"
           "        ip saddr " +
           r.subnet.str() + " oifname != \"" + r.bridge +
           "\" masquerade\n"
           "    }\n"
           "}\n";
}

NetworkRecord create_network(const NetworkStore& store, const CreateOptions& opt) {
    validate_network_name(opt.name);
    Cidr subnet = Cidr::parse(opt.subnet);
    if (subnet.has_host_bits())
        throw std::invalid_argument("invalid CIDR '" + opt.subnet + "': host bits are set (did " +
                                    "you mean " + subnet.canonical().str() + "?)");
    if (subnet.prefix > 30)
        throw std::invalid_argument("subnet " + subnet.str() +
                                    " is too small: a network needs a gateway and at least one "
                                    "guest (prefix /30 or shorter)");
    if (subnet.prefix < 8)
        throw std::invalid_argument("subnet " + subnet.str() +
                                    " is too large (prefix /8 or longer)");
    if (opt.dns.size() > 2) throw std::invalid_argument("at most 2 DNS servers (--dns)");

    NetworkRecord r;
    r.name = opt.name;
    r.subnet = subnet;
    r.gateway = subnet.first_host();
    r.bridge = opt.bridge.empty() ? bridge_name_for(opt.name) : opt.bridge;
    validate_ifname(r.bridge, "bridge");
    r.nft_table = nft_table_for(opt.name);
    for (const auto& d : opt.dns) r.dns.push_back(Ipv4::parse(d));
    r.created = static_cast<int64_t>(std::time(nullptr));

    auto lock = store.lock(true);
    for (const auto& o : store.load_all()) {
        if (o.name == r.name) throw std::runtime_error("network '" + r.name + "' already exists");
        if (o.subnet.overlaps(r.subnet))
            throw std::runtime_error("subnet " + r.subnet.str() + " overlaps network '" + o.name +
                                     "' (" + o.subnet.str() + ")");
        if (o.bridge == r.bridge)
            throw std::runtime_error("bridge " + r.bridge + " is already used by network '" +
                                     o.name + "'");
    }
    for (const auto& a : ipv4_addresses())
        if (a.addr.overlaps(r.subnet))
            throw std::runtime_error("subnet " + r.subnet.str() + " overlaps address " +
                                     a.addr.str() + " on host interface " + a.ifname);
    for (const auto& rt : ipv4_routes())
        if (rt.dest.prefix > 0 && rt.dest.overlaps(r.subnet))
            throw std::runtime_error("subnet " + r.subnet.str() + " overlaps host route " +
                                     rt.dest.str() + (rt.ifname == "*" ? "" : " dev " + rt.ifname));
    if (link_exists(r.bridge))
        throw std::runtime_error("bridge " + r.bridge +
                                 " already exists (choose another name or --bridge)");

    Rollback rb;
    bring_up(r, rb);
    store.save(r);
    rb.commit();
    return r;
}

void remove_network(const NetworkStore& store, const std::string& name) {
    validate_network_name(name);
    auto lock = store.lock(true);
    auto r = store.load(name);
    if (!r) throw std::runtime_error("network '" + name + "' not found");
    reclaim_dead_leases(*r);
    if (!r->leases.empty()) {
        std::string pids;
        for (const auto& l : r->leases)
            pids += (pids.empty() ? "" : ", ") + std::to_string(l.owner.pid);
        throw std::runtime_error("network '" + name + "' is in use by " +
                                 std::to_string(r->leases.size()) + " VM(s) (pid " + pids +
                                 "); stop them first");
    }
    delete_nft_table(r->nft_table);
    if (link_exists(r->bridge)) {
        if (link_driver(r->bridge) != "bridge")
            throw std::runtime_error("interface " + r->bridge + " of network '" + name +
                                     "' is not a bridge; not deleting it");
        delete_bridge(r->bridge);
    }
    store.remove(name);
}

std::vector<NetworkStatus> list_networks(const NetworkStore& store) {
    auto lock = store.lock(false);
    std::vector<NetworkStatus> out;
    for (auto& r : store.load_all()) {
        NetworkStatus s;
        s.leases_in_use = live_lease_count(r);
        s.bridge_present = link_exists(r.bridge);
        s.record = std::move(r);
        out.push_back(std::move(s));
    }
    return out;
}

NetworkStatus inspect_network(const NetworkStore& store, const std::string& name) {
    validate_network_name(name);
    auto lock = store.lock(false);
    auto r = store.load(name);
    if (!r) throw std::runtime_error("network '" + name + "' not found");
    NetworkStatus s;
    s.leases_in_use = live_lease_count(*r);
    s.bridge_present = link_exists(r->bridge);
    s.record = std::move(*r);
    return s;
}

void ensure_network_up(const NetworkRecord& r) {
    if (!link_exists(r.bridge)) {
        Rollback rb;
        bring_up(r, rb);
        rb.commit();
        return;
    }
    if (link_driver(r.bridge) != "bridge")
        throw std::runtime_error("interface " + r.bridge + " of network '" + r.name +
                                 "' is not a bridge");
    set_link_up(r.bridge);
    // A firewall reload (`nft flush ruleset`) drops the table while the bridge stays.
    if (run_command({"nft", "list", "table", "ip", r.nft_table}).status != 0)
        apply_nft(nft_ruleset(r), "restoring NAT for network " + r.name);
    enable_ip_forward();
}

}  // namespace vessel::network
