#include "virtio/net/config.h"

#include <linux/if_tun.h>
#include <sys/random.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>

namespace vessel::virtio::net {

uint64_t device_features(unsigned tap_offloads) {
    uint64_t f =
        bit(feature::kMac) | bit(feature::kStatus) | bit(feature::kMtu) | bit(feature::kMrgRxbuf);
    // Guest -> host: the tap takes partial checksums and GSO frames whatever TUNSETOFFLOAD says.
    f |= bit(feature::kCsum) | bit(feature::kHostTso4) | bit(feature::kHostTso6) |
         bit(feature::kHostEcn);
    // Host -> guest: only what the tap agreed to produce.
    if (tap_offloads & TUN_F_CSUM) {
        f |= bit(feature::kGuestCsum);
        if (tap_offloads & TUN_F_TSO4) f |= bit(feature::kGuestTso4);
        if (tap_offloads & TUN_F_TSO6) f |= bit(feature::kGuestTso6);
        if ((tap_offloads & TUN_F_TSO_ECN) && (tap_offloads & (TUN_F_TSO4 | TUN_F_TSO6)))
            f |= bit(feature::kGuestEcn);
    }
    return f;
}

unsigned tap_offloads_for(uint64_t driver_features) {
    if (!(driver_features & bit(feature::kGuestCsum))) return 0;
    unsigned t = TUN_F_CSUM;
    if (driver_features & bit(feature::kGuestTso4)) t |= TUN_F_TSO4;
    if (driver_features & bit(feature::kGuestTso6)) t |= TUN_F_TSO6;
    if ((driver_features & bit(feature::kGuestEcn)) && (t & (TUN_F_TSO4 | TUN_F_TSO6)))
        t |= TUN_F_TSO_ECN;
    return t;
}

NetConfig make_config(const Mac& mac, bool link_up, uint16_t mtu) {
    NetConfig c;
    std::memset(&c, 0, sizeof c);
    std::memcpy(c.mac, mac.data(), 6);
    c.status = link_up ? kStatusLinkUp : 0;
    c.max_virtqueue_pairs = 1;
    c.mtu = mtu;
    return c;
}

std::array<uint8_t, sizeof(NetConfig)> config_bytes(const NetConfig& c) {
    std::array<uint8_t, sizeof(NetConfig)> b;
    std::memcpy(b.data(), &c, sizeof c);
    return b;
}

namespace {

Mac local_unicast(uint64_t v) {
    Mac m;
    m[0] = 0x02;  // locally administered, unicast
    for (int i = 1; i < 6; ++i) m[i] = static_cast<uint8_t>(v >> (8 * (i - 1)));
    return m;
}

}  // namespace

Mac mac_from_id(std::string_view vm_id) {
    // FNV-1a: stable across builds and hosts (std::hash is not), good enough to spread ids.
    uint64_t h = 0xcbf29ce484222325ull;
    for (char ch : std::string_view("vessel-net:"))
        h = (h ^ static_cast<uint8_t>(ch)) * 0x100000001b3ull;
    for (char ch : vm_id) h = (h ^ static_cast<uint8_t>(ch)) * 0x100000001b3ull;
    h ^= h >> 29;
    return local_unicast(h);
}

Mac random_mac() {
    uint64_t v = 0;
    if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v))
        v = std::random_device{}() * 0x9e3779b97f4a7c15ull;
    return local_unicast(v);
}

std::string mac_to_string(const Mac& m) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                  m[5]);
    return buf;
}

}  // namespace vessel::virtio::net
