#include "virtio/net/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "virtio/net/packet.h"

namespace vessel::virtio::net {

namespace {

constexpr short kTapFlags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;

[[noreturn]] void fail(const std::string& what, int err) {
    throw std::system_error(err, std::generic_category(), what);
}

std::string label(const std::string& name) {
    return name.empty() ? std::string("tap") : "tap " + name;
}

int read_mtu(const std::string& name) {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) return 1500;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFMTU, &ifr) < 0 || ifr.ifr_mtu <= 0) return 1500;
    return ifr.ifr_mtu;
}

// Finds the richest set of guest offloads the tap takes, from full TSO down to checksums only.
unsigned probe_offloads(int fd) {
    const unsigned candidates[] = {
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
        TUN_F_CSUM,
    };
    for (unsigned c : candidates)
        if (::ioctl(fd, TUNSETOFFLOAD, c) == 0) return c;
    return 0;
}

}  // namespace

Tap Tap::open(const TapSpec& spec) {
    Tap t;
    ifreq ifr{};
    if (spec.fd >= 0) {
        const std::string what = "tap fd " + std::to_string(spec.fd);
        t.fd_ = UniqueFd(::fcntl(spec.fd, F_DUPFD_CLOEXEC, 3));
        if (!t.fd_) throw_errno(what + ": duplicating it");
        if (::ioctl(t.fd_.get(), TUNGETIFF, &ifr) < 0)
            fail(what + ": not an attached tun/tap device (TUNGETIFF)", errno);
        if ((ifr.ifr_flags & kTapFlags) != kTapFlags)
            fail(what + " (" + ifr.ifr_name + "): not a tap set up with IFF_TAP|IFF_NO_PI|" +
                     "IFF_VNET_HDR",
                 EINVAL);
        t.name_ = ifr.ifr_name;
    } else {
        if (spec.name.size() >= IFNAMSIZ)
            fail("tap " + spec.name + ": name longer than " + std::to_string(IFNAMSIZ - 1) +
                     " characters",
                 EINVAL);
        const bool existed = !spec.name.empty() && ::if_nametoindex(spec.name.c_str()) != 0;
        if (spec.must_exist && !existed) fail(label(spec.name) + ": not found", ENODEV);
        t.fd_ = UniqueFd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
        if (!t.fd_) {
            int e = errno;
            if (e == EACCES || e == EPERM) fail("/dev/net/tun: permission denied", e);
            if (e == ENOENT || e == ENODEV || e == ENXIO)
                fail("/dev/net/tun: not found (is the tun module loaded?)", e);
            fail("opening /dev/net/tun", e);
        }
        ifr.ifr_flags = kTapFlags;
        std::strncpy(ifr.ifr_name, spec.name.c_str(), IFNAMSIZ - 1);
        if (::ioctl(t.fd_.get(), TUNSETIFF, &ifr) < 0) {
            int e = errno;
            const std::string l = label(spec.name);
            if (e == EBUSY) fail(l + ": busy (attached to another process)", e);
            if (e == EPERM || e == EACCES)
                fail(l + ": permission denied (needs CAP_NET_ADMIN or to own the tap)", e);
            if (e == EINVAL && existed) fail(l + ": exists and is not a tap", e);
            fail(l + ": creating or attaching (TUNSETIFF)", e);
        }
        t.name_ = ifr.ifr_name;
        t.created_ = !existed;
    }
    const std::string l = label(t.name_);
    // Non-blocking, so io_uring tries reads and writes inline instead of in io-wq threads.
    int fl = ::fcntl(t.fd_.get(), F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && ::fcntl(t.fd_.get(), F_SETFL, fl | O_NONBLOCK) < 0))
        throw_errno(l + ": setting O_NONBLOCK");
    // No send-buffer limit, as QEMU sets it: with the default (wmem_default, ~200 KiB) a
    // non-blocking write fails with EAGAIN while that much of our frames still sits in a slow
    // peer's queue, and every such drop costs the guest's TCP a retransmission timeout.
    int sndbuf = INT_MAX;
    if (::ioctl(t.fd_.get(), TUNSETSNDBUF, &sndbuf) < 0)
        throw_errno(l + ": lifting the send-buffer limit (TUNSETSNDBUF)");
    int hdr = static_cast<int>(kHdrSize);
    if (::ioctl(t.fd_.get(), TUNSETVNETHDRSZ, &hdr) < 0)
        throw_errno(l + ": setting the vnet header size (TUNSETVNETHDRSZ)");
    t.supported_offloads_ = probe_offloads(t.fd_.get());
    // Nothing offloaded until a driver says what it takes.
    t.set_offloads(0);
    t.mtu_ = read_mtu(t.name_);
    return t;
}

void Tap::set_offloads(unsigned tun_flags) {
    if (::ioctl(fd_.get(), TUNSETOFFLOAD, tun_flags) < 0)
        throw_errno(label(name_) + ": setting offloads (TUNSETOFFLOAD " +
                    std::to_string(tun_flags) + ")");
    offloads_ = tun_flags;
}

bool Tap::set_carrier(bool up) {
    int v = up ? 1 : 0;
    return ::ioctl(fd_.get(), TUNSETCARRIER, &v) == 0;
}

}  // namespace vessel::virtio::net
