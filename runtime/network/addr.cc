#include "runtime/network/addr.h"

#include <cstdio>
#include <stdexcept>

namespace vessel::network {

namespace {

// Strict dotted quad: four decimal fields 0..255, no signs, no leading zeros (inet_aton reads
// "010" as octal, so such input is refused rather than guessed at).
bool parse_quad(std::string_view s, uint32_t& out) {
    uint32_t v = 0;
    size_t i = 0;
    for (int field = 0; field < 4; ++field) {
        if (field > 0) {
            if (i >= s.size() || s[i] != '.') return false;
            ++i;
        }
        size_t start = i;
        unsigned n = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 3) {
            n = n * 10 + static_cast<unsigned>(s[i] - '0');
            ++i;
        }
        if (i == start || n > 255 || (i - start > 1 && s[start] == '0')) return false;
        v = (v << 8) | n;
    }
    if (i != s.size()) return false;
    out = v;
    return true;
}

}  // namespace

Ipv4 Ipv4::parse(std::string_view s) {
    uint32_t v;
    if (!parse_quad(s, v))
        throw std::invalid_argument("invalid IPv4 address '" + std::string(s) + "'");
    return {v};
}

std::string Ipv4::str() const {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", value >> 24, (value >> 16) & 0xff,
                  (value >> 8) & 0xff, value & 0xff);
    return buf;
}

Cidr Cidr::parse(std::string_view s, bool allow_bare) {
    auto bad = [&](const std::string& why) -> std::invalid_argument {
        return std::invalid_argument("invalid CIDR '" + std::string(s) + "': " + why);
    };
    size_t slash = s.find('/');
    if (slash == std::string_view::npos && !allow_bare)
        throw bad("expected ADDRESS/PREFIX, e.g. 10.88.0.0/24");
    uint32_t v;
    if (!parse_quad(s.substr(0, slash), v)) throw bad("not an IPv4 address");
    if (slash == std::string_view::npos) return {{v}, 32};
    std::string_view p = s.substr(slash + 1);
    if (p.empty() || p.size() > 2) throw bad("prefix length must be 0..32");
    unsigned n = 0;
    for (char c : p) {
        if (c < '0' || c > '9') throw bad("prefix length must be 0..32");
        n = n * 10 + static_cast<unsigned>(c - '0');
    }
    if (n > 32) throw bad("prefix length must be 0..32");
    return {{v}, n};
}

std::string Cidr::str() const {
    return addr.str() + "/" + std::to_string(prefix);
}

Mac Mac::parse(std::string_view s) {
    Mac m;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    bool ok = s.size() == 17;
    for (size_t i = 0; ok && i < 6; ++i) {
        int hi = hex(s[i * 3]), lo = hex(s[i * 3 + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
            ok = false;
        else
            m.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (!ok) throw std::invalid_argument("invalid MAC address '" + std::string(s) + "'");
    return m;
}

Mac Mac::from_ipv4(Ipv4 ip) {
    Mac m;
    m.bytes = {0x02,
               0x76,
               static_cast<uint8_t>(ip.value >> 24),
               static_cast<uint8_t>(ip.value >> 16),
               static_cast<uint8_t>(ip.value >> 8),
               static_cast<uint8_t>(ip.value)};
    return m;
}

std::string Mac::str() const {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", bytes[0], bytes[1], bytes[2],
                  bytes[3], bytes[4], bytes[5]);
    return buf;
}

}  // namespace vessel::network
