// Helpers for the virtio-net tests: the network namespace every net test process runs in, and
// the host side of a tap (an AF_PACKET socket on it).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "vmm/fd.h"

namespace vessel::virtio::net::testing {

// A local experimental EtherType (IEEE 802 "local experimental 1"): frames the tests send are
// told apart from anything the kernel emits on its own.
inline constexpr uint16_t kTestEtherType = 0x88b5;

// Whether this process runs in its own network namespace (set up once, by the global test
// environment in net_tap_test.cc); the reason otherwise.
bool in_private_netns();
const std::string& netns_error();

// Brings interface `name` up (SIOCSIFFLAGS). Throws std::system_error.
inline void link_up(const std::string& name) {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) < 0) throw_errno("SIOCGIFFLAGS " + name);
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) < 0) throw_errno("SIOCSIFFLAGS " + name);
}

// A frame: dst, src, kTestEtherType, then `payload_len` bytes of a pattern seeded by `seed`.
inline std::vector<uint8_t> test_frame(size_t payload_len, uint8_t seed,
                                       const uint8_t dst[6] = nullptr) {
    std::vector<uint8_t> f(14 + payload_len);
    const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x42};
    std::memcpy(f.data(), dst ? dst : bcast, 6);
    std::memcpy(f.data() + 6, src, 6);
    f[12] = kTestEtherType >> 8;
    f[13] = kTestEtherType & 0xff;
    for (size_t i = 0; i < payload_len; ++i) f[14 + i] = static_cast<uint8_t>(seed + i * 7);
    return f;
}

inline bool is_test_frame(const std::vector<uint8_t>& f) {
    return f.size() >= 14 && f[12] == (kTestEtherType >> 8) && f[13] == (kTestEtherType & 0xff);
}

// The host's side of a tap: frames sent here go to the guest (tap xmit -> our reads), frames
// the device writes to the tap are received here.
class PacketSocket {
  public:
    explicit PacketSocket(const std::string& ifname) {
        fd_ = UniqueFd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
        if (!fd_) throw_errno("AF_PACKET socket");
        ifindex_ = static_cast<int>(::if_nametoindex(ifname.c_str()));
        if (ifindex_ == 0) throw_errno("if_nametoindex " + ifname);
        sockaddr_ll a{};
        a.sll_family = AF_PACKET;
        a.sll_protocol = htons(ETH_P_ALL);
        a.sll_ifindex = ifindex_;
        if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
            throw_errno("binding AF_PACKET to " + ifname);
        // Only frames the tap received (written by the device), not the ones we send on it.
        int one = 1;
        ::setsockopt(fd_.get(), SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    }

    void send(const std::vector<uint8_t>& frame) const {
        sockaddr_ll a{};
        a.sll_family = AF_PACKET;
        a.sll_ifindex = ifindex_;
        a.sll_halen = 6;
        std::memcpy(a.sll_addr, frame.data(), 6);
        ssize_t n = ::sendto(fd_.get(), frame.data(), frame.size(), 0,
                             reinterpret_cast<sockaddr*>(&a), sizeof a);
        if (n != static_cast<ssize_t>(frame.size())) throw_errno("sendto on AF_PACKET");
    }

    // The next test frame received within `timeout`, skipping everything else.
    std::optional<std::vector<uint8_t>> recv_test_frame(
        std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        std::vector<uint8_t> buf(70000);
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
            if (n <= 0) continue;
            std::vector<uint8_t> f(buf.begin(), buf.begin() + n);
            if (is_test_frame(f)) return f;
        }
    }

  private:
    UniqueFd fd_;
    int ifindex_ = 0;
};

}  // namespace vessel::virtio::net::testing
