// IPv4 addresses, CIDR prefixes and MAC addresses: parsing, formatting, arithmetic. No I/O.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace vessel::network {

// An IPv4 address in host byte order.
struct Ipv4 {
    uint32_t value = 0;

    // Dotted quad only ("10.0.0.1"); throws std::invalid_argument naming `s` otherwise.
    static Ipv4 parse(std::string_view s);
    std::string str() const;
    auto operator<=>(const Ipv4&) const = default;
};

// An address with a prefix length. `addr` may have host bits set (an interface address).
struct Cidr {
    Ipv4 addr;
    unsigned prefix = 32;

    // "A.B.C.D/N" (N 0..32). With `allow_bare`, "A.B.C.D" means /32. Throws
    // std::invalid_argument("invalid CIDR '...': ...").
    static Cidr parse(std::string_view s, bool allow_bare = false);
    std::string str() const;

    uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
    Ipv4 netmask() const { return {mask()}; }
    Ipv4 network() const { return {addr.value & mask()}; }
    Ipv4 broadcast() const { return {addr.value | ~mask()}; }
    Cidr canonical() const { return {network(), prefix}; }
    bool has_host_bits() const { return (addr.value & ~mask()) != 0; }
    bool contains(Ipv4 a) const { return (a.value & mask()) == network().value; }
    bool overlaps(const Cidr& o) const {
        unsigned p = prefix < o.prefix ? prefix : o.prefix;
        uint32_t m = p == 0 ? 0 : ~uint32_t{0} << (32 - p);
        return (addr.value & m) == (o.addr.value & m);
    }
    // Usable host addresses (network and broadcast excluded); /31 and /32 have none here,
    // since a vessel network needs a gateway and at least one guest.
    uint64_t host_count() const { return prefix >= 31 ? 0 : (uint64_t{1} << (32 - prefix)) - 2; }
    Ipv4 first_host() const { return {network().value + 1}; }
    Ipv4 last_host() const { return {broadcast().value - 1}; }
    bool operator==(const Cidr&) const = default;
};

struct Mac {
    std::array<uint8_t, 6> bytes{};

    // "aa:bb:cc:dd:ee:ff"; throws std::invalid_argument otherwise.
    static Mac parse(std::string_view s);
    // Locally administered unicast MAC derived from an IPv4 address: 02:76:<a>:<b>:<c>:<d>.
    // Unique wherever the address is, and stable, so a reused address keeps its MAC and
    // neighbours' ARP caches stay right.
    static Mac from_ipv4(Ipv4 ip);
    std::string str() const;
    bool is_zero() const { return bytes == std::array<uint8_t, 6>{}; }
    bool is_multicast() const { return bytes[0] & 1; }
    bool operator==(const Mac&) const = default;
};

}  // namespace vessel::network
