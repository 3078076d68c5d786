// The guest side of the "identity" request: a clone restored from a snapshot takes the MAC,
// address, hostname and RNG state that are its own. Runs in the guest only (the host's unit
// tests give the agent a recording hook instead).
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "guest/agent/agent.h"
#include "guest/init/unique_fd.h"

namespace vessel::agent {
namespace {

using guest::UniqueFd;

std::string failed(const std::string& what, int* err) {
    const int e = errno;
    if (err) *err = e;
    return what + ": " + std::strerror(e);
}

sockaddr ipv4_sockaddr(const std::string& text) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    inet_pton(AF_INET, text.c_str(), &in.sin_addr);  // validated by identity_from_json
    sockaddr out{};
    std::memcpy(&out, &in, sizeof in);
    return out;
}

std::string prefix_mask(int prefix) {
    const uint32_t m = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
    in_addr a{htonl(m)};
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    return buf;
}

std::string set_interface(int sock, const InterfaceIdentity& i, int* err) {
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, i.name.c_str(), i.name.size());  // <= 15 bytes, validated
    if (!i.mac.empty()) {
        // virtio-net allows a live change (IFF_LIVE_ADDR_CHANGE); the device does not filter.
        ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
        for (int b = 0; b < 6; ++b)
            ifr.ifr_hwaddr.sa_data[b] =
                static_cast<char>(std::stoi(i.mac.substr(3 * b, 2), nullptr, 16));
        if (ioctl(sock, SIOCSIFHWADDR, &ifr) < 0) return failed(i.name + ": setting the MAC", err);
    }
    if (i.address.empty()) return {};
    // A template's interface was never configured: up, or the address would carry nothing.
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) return failed(i.name + ": reading its flags", err);
    if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) return failed(i.name + ": bringing it up", err);
    }
    const auto slash = i.address.find('/');
    ifr.ifr_addr = ipv4_sockaddr(i.address.substr(0, slash));
    if (ioctl(sock, SIOCSIFADDR, &ifr) < 0) return failed(i.name + ": setting the address", err);
    ifr.ifr_netmask = ipv4_sockaddr(prefix_mask(std::stoi(i.address.substr(slash + 1))));
    if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0) return failed(i.name + ": setting the netmask", err);
    if (!i.gateway.empty()) {
        // Replacing the address flushed the interface's routes, the default one included.
        rtentry rt{};
        rt.rt_dst = ipv4_sockaddr("0.0.0.0");
        rt.rt_genmask = ipv4_sockaddr("0.0.0.0");
        rt.rt_gateway = ipv4_sockaddr(i.gateway);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        std::string dev = i.name;
        rt.rt_dev = dev.data();
        if (ioctl(sock, SIOCADDRT, &rt) < 0 && errno != EEXIST)
            return failed(i.name + ": adding the default route", err);
    }
    if (!i.dns.empty()) {
        std::string text;
        for (const auto& d : i.dns) text += "nameserver " + d + "\n";
        UniqueFd f(open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!f || write(f.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
            return failed("writing /etc/resolv.conf", err);
    }
    return {};
}

std::string reseed(const std::vector<std::uint8_t>& seed, int* err) {
    UniqueFd f(open("/dev/urandom", O_WRONLY | O_CLOEXEC));
    if (!f) return failed("opening /dev/urandom", err);
    std::vector<unsigned char> buf(sizeof(rand_pool_info) + seed.size());
    auto* info = reinterpret_cast<rand_pool_info*>(buf.data());
    info->entropy_count = static_cast<int>(seed.size() * 8);
    info->buf_size = static_cast<int>(seed.size());
    std::memcpy(buf.data() + sizeof(rand_pool_info), seed.data(), seed.size());
    if (ioctl(f.get(), RNDADDENTROPY, info) < 0) return failed("RNDADDENTROPY", err);
    // Mixing alone would leave the clone's output stream as it was until the next scheduled
    // reseed: every clone of one snapshot would print the same bytes until then.
    if (ioctl(f.get(), RNDRESEEDCRNG) < 0) return failed("RNDRESEEDCRNG", err);
    return {};
}

}  // namespace

std::string apply_identity(const Identity& id, int* err) {
    if (!id.interfaces.empty()) {
        UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (!sock) return failed("socket(AF_INET)", err);
        for (const auto& i : id.interfaces)
            if (std::string f = set_interface(sock.get(), i, err); !f.empty()) return f;
    }
    if (!id.hostname.empty() && sethostname(id.hostname.data(), id.hostname.size()) < 0)
        return failed("sethostname", err);
    if (!id.seed.empty())
        if (std::string f = reseed(id.seed, err); !f.empty()) return f;
    return {};
}

}  // namespace vessel::agent
