// virtio-net feature bits and configuration space, as pure functions (no I/O).
//
// Offered: MAC, STATUS (link state, changeable at run time), MTU, MRG_RXBUF, and the offloads a
// vnet-header tap supports. Host offloads (CSUM, HOST_TSO4/6/ECN: the guest sends partially
// checksummed or GSO frames) are always accepted by a tap. Guest offloads (GUEST_CSUM,
// GUEST_TSO4/6/ECN: the guest receives them) are offered only for the TUN_F_* flags the tap
// accepted, and at activation the tap is told exactly the ones the driver took, so the kernel
// never hands us a frame the guest cannot take. No control queue, no multiqueue, no UFO/USO.
// The transport adds VIRTIO_F_VERSION_1, which the device requires (12-byte header).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vessel::virtio::net {

using Mac = std::array<uint8_t, 6>;

// Feature bit numbers (virtio 1.2 section 5.1.3). Defined here: <linux/virtio_net.h> does not
// compile as C++ (a struct member named `class`).
namespace feature {
inline constexpr unsigned kCsum = 0;
inline constexpr unsigned kGuestCsum = 1;
inline constexpr unsigned kMtu = 3;
inline constexpr unsigned kMac = 5;
inline constexpr unsigned kGuestTso4 = 7;
inline constexpr unsigned kGuestTso6 = 8;
inline constexpr unsigned kGuestEcn = 9;
inline constexpr unsigned kGuestUfo = 10;
inline constexpr unsigned kHostTso4 = 11;
inline constexpr unsigned kHostTso6 = 12;
inline constexpr unsigned kHostEcn = 13;
inline constexpr unsigned kHostUfo = 14;
inline constexpr unsigned kMrgRxbuf = 15;
inline constexpr unsigned kStatus = 16;
inline constexpr unsigned kCtrlVq = 17;
inline constexpr unsigned kMq = 22;
}  // namespace feature

inline constexpr uint16_t kStatusLinkUp = 1;  // VIRTIO_NET_S_LINK_UP

inline constexpr uint64_t bit(unsigned n) {
    return 1ull << n;
}

// struct virtio_net_config up to mtu (virtio 1.2 section 5.1.4); the fields after it belong to
// features never offered (SPEED_DUPLEX, RSS, HASH_REPORT) and read as zeros.
struct __attribute__((packed)) NetConfig {
    uint8_t mac[6];
    uint16_t status;               // VIRTIO_NET_S_LINK_UP
    uint16_t max_virtqueue_pairs;  // 1 (VIRTIO_NET_F_MQ not offered)
    uint16_t mtu;                  // VIRTIO_NET_F_MTU
};
static_assert(sizeof(NetConfig) == 12);
static_assert(offsetof(NetConfig, status) == 6);
static_assert(offsetof(NetConfig, mtu) == 10);

// Device-specific feature bits (no ring bits, no VERSION_1) for a tap that accepted the
// TUN_F_* flags in `tap_offloads`. Respects the spec's dependencies (GUEST_TSO* needs
// GUEST_CSUM, *_ECN needs a TSO bit, HOST_TSO* needs CSUM).
uint64_t device_features(unsigned tap_offloads);

// The TUN_F_* flags to give the tap for the features the driver accepted: only what the guest
// can receive, with the tap's own dependencies (TSO needs CSUM, ECN needs TSO).
unsigned tap_offloads_for(uint64_t driver_features);

NetConfig make_config(const Mac& mac, bool link_up, uint16_t mtu);
std::array<uint8_t, sizeof(NetConfig)> config_bytes(const NetConfig& c);

// A locally administered unicast MAC (02:xx:xx:xx:xx:xx) derived from `vm_id`: stable across
// runs of the same VM, different between VMs.
Mac mac_from_id(std::string_view vm_id);
// A random locally administered unicast MAC.
Mac random_mac();
std::string mac_to_string(const Mac& mac);

}  // namespace vessel::virtio::net
