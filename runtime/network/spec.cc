// NetSpec parsing and the guest's kernel ip= parameter: pure, no I/O.
#include <set>
#include <stdexcept>

#include "runtime/network/attachment.h"

namespace vessel::network {

const char* mode_name(NetMode m) {
    switch (m) {
        case NetMode::Network:
            return "network";
        case NetMode::Bridge:
            return "bridge";
        case NetMode::Tap:
            return "tap";
        case NetMode::Netns:
            return "netns";
    }
    return "?";
}

NetSpec NetSpec::parse(std::string_view text) {
    const std::string whole(text);
    auto fail = [&](const std::string& why) -> std::invalid_argument {
        return std::invalid_argument("--net '" + whole + "': " + why);
    };
    NetSpec s;
    bool have_mode = false;
    std::string ip_text;
    std::set<std::string> seen;
    if (text.empty()) throw fail("empty; expected network=NAME, bridge=BR, tap=TAP or netns=PATH");
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t end = text.find(',', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string item(text.substr(pos, end - pos));
        pos = end + 1;
        size_t eq = item.find('=');
        if (item.empty() || eq == std::string::npos || eq == 0 || eq + 1 == item.size())
            throw fail("expected key=value, got '" + item + "'");
        std::string key = item.substr(0, eq), val = item.substr(eq + 1);
        if (key != "dns" && !seen.insert(key).second) throw fail("'" + key + "' given twice");
        try {
            if (key == "network" || key == "bridge" || key == "tap" || key == "netns") {
                if (have_mode) throw fail("give exactly one of network=, bridge=, tap=, netns=");
                have_mode = true;
                s.mode = key == "network"  ? NetMode::Network
                         : key == "bridge" ? NetMode::Bridge
                         : key == "tap"    ? NetMode::Tap
                                           : NetMode::Netns;
                s.target = val;
            } else if (key == "ip") {
                ip_text = val;
            } else if (key == "gw") {
                s.gateway = Ipv4::parse(val);
            } else if (key == "mac") {
                s.mac = Mac::parse(val);
                if (s.mac->is_multicast() || s.mac->is_zero())
                    throw fail("mac " + val + " is not a unicast address");
            } else if (key == "dns") {
                if (s.dns.size() == 2) throw fail("at most 2 dns= servers");
                s.dns.push_back(Ipv4::parse(val));
            } else if (key == "dev") {
                s.dev = val;
            } else {
                throw fail("unknown key '" + key + "' (known: network, bridge, tap, netns, ip, " +
                           "gw, mac, dns, dev)");
            }
        } catch (const std::invalid_argument& e) {
            std::string m = e.what();
            if (m.rfind("--net ", 0) == 0) throw;
            throw fail(m);
        }
        if (end == text.size()) break;
    }
    if (!have_mode) throw fail("missing network=NAME, bridge=BR, tap=TAP or netns=PATH");
    if (s.target.size() >= 16 && (s.mode == NetMode::Bridge || s.mode == NetMode::Tap))
        throw fail("interface name '" + s.target + "' is longer than 15 characters");
    if (s.mode == NetMode::Netns && s.target.front() != '/')
        throw fail("netns= needs an absolute path such as /proc/PID/ns/net or /run/netns/NAME");
    if (!s.dev.empty() && s.mode != NetMode::Netns) throw fail("dev= only applies to netns=");

    if (!ip_text.empty()) {
        try {
            switch (s.mode) {
                case NetMode::Network: {
                    Cidr c = Cidr::parse(ip_text, true);
                    if (ip_text.find('/') != std::string::npos)
                        throw fail(
                            "ip= takes a bare address with network= (the prefix is the "
                            "network's)");
                    s.ip = c.addr;
                    break;
                }
                case NetMode::Bridge:
                case NetMode::Tap:
                    if (ip_text == "dhcp") {
                        s.dhcp = true;
                        break;
                    }
                    if (ip_text.find('/') == std::string::npos)
                        throw fail(
                            "ip= needs a prefix length, e.g. ip=192.168.1.5/24 (or ip=dhcp)");
                    s.ip_cidr = Cidr::parse(ip_text);
                    if (s.ip_cidr->prefix > 30 || !s.ip_cidr->has_host_bits() ||
                        s.ip_cidr->addr == s.ip_cidr->broadcast())
                        throw fail("ip=" + ip_text + " is not a host address of its subnet");
                    break;
                case NetMode::Netns:
                    throw fail("ip= cannot be set with netns=: the address is the namespace's");
            }
        } catch (const std::invalid_argument& e) {
            std::string m = e.what();
            if (m.rfind("--net ", 0) == 0) throw;
            throw fail(m);
        }
    }
    if (s.gateway) {
        if (s.mode == NetMode::Network)
            throw fail("gw= cannot be set with network=: the gateway is the network's");
        if (s.mode == NetMode::Netns)
            throw fail("gw= cannot be set with netns=: the gateway is the namespace's");
        if (!s.ip_cidr) throw fail("gw= needs a static ip=ADDR/PREFIX");
        if (!s.ip_cidr->contains(*s.gateway) || *s.gateway == s.ip_cidr->addr)
            throw fail("gateway " + s.gateway->str() + " is not another host of " +
                       s.ip_cidr->canonical().str());
    }
    return s;
}

std::string GuestConfig::kernel_ip_param(std::string_view device, std::string_view hostname) const {
    // ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>
    const std::string dev(device), host(hostname);
    if (dhcp) return "ip=::::" + host + ":" + dev + ":dhcp";
    if (!address) return "";
    std::string p = "ip=" + address->addr.str() + "::" + (gateway ? gateway->str() : "") + ":" +
                    address->netmask().str() + ":" + host + ":" + dev + ":off";
    for (const auto& d : dns) p += ":" + d.str();
    return p;
}

}  // namespace vessel::network
