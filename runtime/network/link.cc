#include "runtime/network/link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/ethtool.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/nsfs.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <thread>

namespace vessel::network {

namespace {

// A socket in the calling thread's namespace: interface ioctls act on the socket's namespace.
UniqueFd ioctl_socket() {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("opening an AF_INET socket for interface ioctls");
    return s;
}

ifreq make_ifreq(const std::string& name) {
    if (name.empty() || name.size() >= IFNAMSIZ)
        throw std::system_error(EINVAL, std::generic_category(),
                                "interface name '" + name + "' (must be 1-15 characters)");
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.c_str(), name.size());
    return ifr;
}

void if_ioctl(unsigned long req, ifreq& ifr, const std::string& what) {
    UniqueFd s = ioctl_socket();
    if (::ioctl(s.get(), req, &ifr) < 0) throw_errno(what);
}

sockaddr_in inet_sockaddr(Ipv4 a) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(a.value);
    return sin;
}

}  // namespace

bool link_exists(const std::string& name) {
    if (name.empty() || name.size() >= IFNAMSIZ) return false;
    ifreq ifr = make_ifreq(name);
    UniqueFd s = ioctl_socket();
    return ::ioctl(s.get(), SIOCGIFINDEX, &ifr) == 0;
}

std::string link_driver(const std::string& name) {
    ifreq ifr = make_ifreq(name);
    ethtool_drvinfo info{};
    info.cmd = ETHTOOL_GDRVINFO;
    ifr.ifr_data = reinterpret_cast<char*>(&info);
    UniqueFd s = ioctl_socket();
    if (::ioctl(s.get(), SIOCETHTOOL, &ifr) < 0) {
        if (errno == ENODEV) throw_errno("interface " + name);
        return "";
    }
    return std::string(info.driver, strnlen(info.driver, sizeof info.driver));
}

void set_link_up(const std::string& name, bool up) {
    ifreq ifr = make_ifreq(name);
    UniqueFd s = ioctl_socket();
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) < 0) throw_errno("reading flags of " + name);
    if (up)
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    else
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags & ~IFF_UP);
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) < 0)
        throw_errno(std::string("setting ") + name + (up ? " up" : " down"));
}

Mac link_mac(const std::string& name) {
    ifreq ifr = make_ifreq(name);
    if_ioctl(SIOCGIFHWADDR, ifr, "reading the MAC address of " + name);
    Mac m;
    std::memcpy(m.bytes.data(), ifr.ifr_hwaddr.sa_data, 6);
    return m;
}

void set_link_mac(const std::string& name, const Mac& mac) {
    ifreq ifr = make_ifreq(name);
    ifr.ifr_hwaddr.sa_family = 1;  // ARPHRD_ETHER
    std::memcpy(ifr.ifr_hwaddr.sa_data, mac.bytes.data(), 6);
    if_ioctl(SIOCSIFHWADDR, ifr, "setting the MAC address of " + name);
}

unsigned link_mtu(const std::string& name) {
    ifreq ifr = make_ifreq(name);
    if_ioctl(SIOCGIFMTU, ifr, "reading the MTU of " + name);
    return static_cast<unsigned>(ifr.ifr_mtu);
}

void set_link_mtu(const std::string& name, unsigned mtu) {
    ifreq ifr = make_ifreq(name);
    ifr.ifr_mtu = static_cast<int>(mtu);
    if_ioctl(SIOCSIFMTU, ifr, "setting the MTU of " + name);
}

void set_link_ipv4(const std::string& name, const Cidr& addr) {
    UniqueFd s = ioctl_socket();
    auto set = [&](unsigned long req, Ipv4 a, const char* what) {
        ifreq ifr = make_ifreq(name);
        sockaddr_in sin = inet_sockaddr(a);
        std::memcpy(&ifr.ifr_addr, &sin, sizeof sin);
        if (::ioctl(s.get(), req, &ifr) < 0)
            throw_errno(std::string("setting the ") + what + " of " + name + " to " + a.str());
    };
    set(SIOCSIFADDR, addr.addr, "address");
    set(SIOCSIFNETMASK, addr.netmask(), "netmask");
    set(SIOCSIFBRDADDR, addr.broadcast(), "broadcast address");
}

void create_bridge(const std::string& name) {
    make_ifreq(name);  // validates the length
    UniqueFd s = ioctl_socket();
    if (::ioctl(s.get(), SIOCBRADDBR, name.c_str()) < 0) throw_errno("creating bridge " + name);
}

void delete_bridge(const std::string& name) {
    if (link_exists(name)) set_link_up(name, false);
    make_ifreq(name);
    UniqueFd s = ioctl_socket();
    if (::ioctl(s.get(), SIOCBRDELBR, name.c_str()) < 0) throw_errno("deleting bridge " + name);
}

void bridge_add_port(const std::string& bridge, const std::string& port) {
    ifreq idx = make_ifreq(port);
    UniqueFd s = ioctl_socket();
    if (::ioctl(s.get(), SIOCGIFINDEX, &idx) < 0) throw_errno("interface " + port);
    ifreq ifr = make_ifreq(bridge);
    ifr.ifr_ifindex = idx.ifr_ifindex;
    if (::ioctl(s.get(), SIOCBRADDIF, &ifr) < 0)
        throw_errno("adding " + port + " to bridge " + bridge);
}

Tap create_tap(const std::string& name_template) {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) {
        int e = errno;
        throw_errno(e == EACCES || e == EPERM
                        ? "opening /dev/net/tun (needs read-write access and CAP_NET_ADMIN)"
                        : "opening /dev/net/tun",
                    e);
    }
    ifreq ifr = make_ifreq(name_template);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) {
        int e = errno;
        throw_errno("creating tap " + name_template +
                        (e == EPERM ? " (TUNSETIFF needs CAP_NET_ADMIN)" : " (TUNSETIFF)"),
                    e);
    }
    return {std::move(fd), std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ))};
}

std::vector<IfAddr> ipv4_addresses() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) < 0) throw_errno("listing interface addresses");
    std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> guard(list, ::freeifaddrs);
    std::vector<IfAddr> out;
    for (ifaddrs* a = list; a; a = a->ifa_next) {
        if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || !a->ifa_netmask) continue;
        sockaddr_in addr, mask;
        std::memcpy(&addr, a->ifa_addr, sizeof addr);
        std::memcpy(&mask, a->ifa_netmask, sizeof mask);
        unsigned prefix = static_cast<unsigned>(__builtin_popcount(ntohl(mask.sin_addr.s_addr)));
        out.push_back({a->ifa_name, {{ntohl(addr.sin_addr.s_addr)}, prefix}});
    }
    return out;
}

std::vector<Route> ipv4_routes() {
    // thread-self, not self: /proc/self/net is the namespace of the thread-group leader.
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen("/proc/thread-self/net/route", "re"),
                                            std::fclose);
    if (!f) throw_errno("reading /proc/thread-self/net/route");
    std::vector<Route> out;
    char line[512];
    bool header = true;
    while (std::fgets(line, sizeof line, f.get())) {
        if (header) {
            header = false;
            continue;
        }
        char ifname[IFNAMSIZ + 1] = {};
        unsigned dest, gw, flags, refcnt, use, metric, mask;
        if (std::sscanf(line, "%16s %x %x %x %u %u %u %x", ifname, &dest, &gw, &flags, &refcnt,
                        &use, &metric, &mask) != 8)
            continue;
        // The file prints addresses as raw network-order words.
        out.push_back({ifname,
                       {{ntohl(dest)}, static_cast<unsigned>(__builtin_popcount(ntohl(mask)))},
                       {ntohl(gw)}});
    }
    return out;
}

UniqueFd open_netns(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("opening network namespace " + path);
    int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
    if (type < 0 || type != CLONE_NEWNET)
        throw std::system_error(EINVAL, std::generic_category(),
                                path + " is not a network namespace");
    return fd;
}

void run_in_netns(int netns_fd, const std::function<void()>& fn) {
    std::exception_ptr error;
    // A thread of its own: the namespace switch must not leak into a thread that goes on
    // running the VMM, and the thread is discarded afterwards.
    std::thread t([&] {
        try {
            if (::setns(netns_fd, CLONE_NEWNET) < 0) throw_errno("joining network namespace");
            fn();
        } catch (...) {
            error = std::current_exception();
        }
    });
    t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace vessel::network
