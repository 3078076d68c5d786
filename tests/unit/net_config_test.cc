// virtio-net features, offload mapping, config space and MACs: pure functions.
#include <gtest/gtest.h>
#include <linux/if_tun.h>

#include <cstring>
#include <set>

#include "virtio/net/config.h"

namespace vessel::virtio::net {
namespace {

using namespace feature;

constexpr unsigned kAllTap = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

TEST(NetFeatures, AlwaysOfferedAndNever) {
    for (unsigned tap : {0u, unsigned{TUN_F_CSUM}, kAllTap}) {
        uint64_t f = device_features(tap);
        for (unsigned b : {kMac, kStatus, kMtu, kMrgRxbuf, kCsum, kHostTso4, kHostTso6, kHostEcn})
            EXPECT_TRUE(f & bit(b)) << "bit " << b << " tap " << tap;
        // No control queue, no multiqueue, no UFO either way.
        for (unsigned b : {kCtrlVq, kMq, kGuestUfo, kHostUfo})
            EXPECT_FALSE(f & bit(b)) << "bit " << b;
        EXPECT_FALSE(f & (1ull << 32)) << "VERSION_1 is the transport's";
    }
}

TEST(NetFeatures, GuestOffloadsFollowTheTap) {
    uint64_t none = device_features(0);
    for (unsigned b : {kGuestCsum, kGuestTso4, kGuestTso6, kGuestEcn}) EXPECT_FALSE(none & bit(b));

    uint64_t csum = device_features(TUN_F_CSUM);
    EXPECT_TRUE(csum & bit(kGuestCsum));
    EXPECT_FALSE(csum & bit(kGuestTso4));

    uint64_t all = device_features(kAllTap);
    for (unsigned b : {kGuestCsum, kGuestTso4, kGuestTso6, kGuestEcn}) EXPECT_TRUE(all & bit(b));

    // Dependencies: TSO without checksum offload, ECN without TSO are never offered.
    EXPECT_FALSE(device_features(TUN_F_TSO4 | TUN_F_TSO6) & bit(kGuestTso4));
    EXPECT_FALSE(device_features(TUN_F_CSUM | TUN_F_TSO_ECN) & bit(kGuestEcn));
}

TEST(NetFeatures, TapOffloadsFromDriverFeatures) {
    EXPECT_EQ(tap_offloads_for(0), 0u);
    // TSO without GUEST_CSUM is not a thing the tap accepts (nor the spec allows).
    EXPECT_EQ(tap_offloads_for(bit(kGuestTso4)), 0u);
    EXPECT_EQ(tap_offloads_for(bit(kGuestCsum)), unsigned{TUN_F_CSUM});
    EXPECT_EQ(tap_offloads_for(bit(kGuestCsum) | bit(kGuestTso6)),
              unsigned{TUN_F_CSUM | TUN_F_TSO6});
    EXPECT_EQ(tap_offloads_for(bit(kGuestCsum) | bit(kGuestEcn)), unsigned{TUN_F_CSUM});
    EXPECT_EQ(tap_offloads_for(device_features(kAllTap)), kAllTap);
    // Host-side bits do not turn on anything the guest would have to receive.
    EXPECT_EQ(tap_offloads_for(bit(kCsum) | bit(kHostTso4) | bit(kHostEcn)), 0u);
}

TEST(NetConfigSpace, Layout) {
    Mac mac = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
    auto b = config_bytes(make_config(mac, true, 1500));
    ASSERT_EQ(b.size(), 12u);
    EXPECT_EQ(0, std::memcmp(b.data(), mac.data(), 6));
    EXPECT_EQ(b[6] | b[7] << 8, kStatusLinkUp);
    EXPECT_EQ(b[8] | b[9] << 8, 1);  // max_virtqueue_pairs
    EXPECT_EQ(b[10] | b[11] << 8, 1500);
    auto down = config_bytes(make_config(mac, false, 9000));
    EXPECT_EQ(down[6] | down[7] << 8, 0);
    EXPECT_EQ(down[10] | down[11] << 8, 9000);
}

bool local_unicast(const Mac& m) {
    return (m[0] & 0x03) == 0x02;
}

TEST(NetMac, DerivedFromTheVmIdStably) {
    Mac a = mac_from_id("vm-1");
    EXPECT_EQ(a, mac_from_id("vm-1"));
    EXPECT_TRUE(local_unicast(a));
    std::set<Mac> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(mac_from_id("vm-" + std::to_string(i)));
    EXPECT_EQ(seen.size(), 1000u);
    // Pinned: a MAC that changed with the build or the host would break DHCP leases and
    // neighbour caches across upgrades.
    EXPECT_EQ(mac_to_string(a), "02:be:95:c8:ff:46");
    EXPECT_EQ(mac_to_string(mac_from_id("")), "02:fc:23:c9:7f:e8");
    EXPECT_EQ(mac_to_string(Mac{0x02, 0xab, 0, 1, 0x10, 0xff}), "02:ab:00:01:10:ff");
}

TEST(NetMac, RandomIsLocalUnicastAndVaries) {
    Mac a = random_mac(), b = random_mac();
    EXPECT_TRUE(local_unicast(a));
    EXPECT_TRUE(local_unicast(b));
    EXPECT_NE(a, b);
}

}  // namespace
}  // namespace vessel::virtio::net
