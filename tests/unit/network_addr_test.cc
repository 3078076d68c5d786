#include <gtest/gtest.h>

#include <stdexcept>

#include "runtime/network/addr.h"

namespace vessel::network {
namespace {

TEST(NetworkAddr, ParsesAndFormatsIpv4) {
    EXPECT_EQ(Ipv4::parse("10.88.0.1").value, 0x0a580001u);
    EXPECT_EQ(Ipv4::parse("0.0.0.0").value, 0u);
    EXPECT_EQ(Ipv4::parse("255.255.255.255").value, 0xffffffffu);
    EXPECT_EQ(Ipv4{0xc0a80105}.str(), "192.168.1.5");
    for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", "a.b.c.d",
                            "01.2.3.4", "1..2.3", "-1.2.3.4", "1.2.3.1234"})
        EXPECT_THROW(Ipv4::parse(bad), std::invalid_argument) << bad;
}

TEST(NetworkAddr, ParsesCidr) {
    Cidr c = Cidr::parse("10.88.0.0/24");
    EXPECT_EQ(c.addr.str(), "10.88.0.0");
    EXPECT_EQ(c.prefix, 24u);
    EXPECT_EQ(c.netmask().str(), "255.255.255.0");
    EXPECT_EQ(c.broadcast().str(), "10.88.0.255");
    EXPECT_EQ(c.first_host().str(), "10.88.0.1");
    EXPECT_EQ(c.last_host().str(), "10.88.0.254");
    EXPECT_EQ(c.host_count(), 254u);
    EXPECT_FALSE(c.has_host_bits());
    EXPECT_EQ(c.str(), "10.88.0.0/24");

    Cidr h = Cidr::parse("10.88.0.7/24");
    EXPECT_TRUE(h.has_host_bits());
    EXPECT_EQ(h.canonical().str(), "10.88.0.0/24");
    EXPECT_EQ(Cidr::parse("0.0.0.0/0").mask(), 0u);
    EXPECT_EQ(Cidr::parse("1.2.3.4/32").host_count(), 0u);
    EXPECT_EQ(Cidr::parse("1.2.3.4/31").host_count(), 0u);
    EXPECT_EQ(Cidr::parse("1.2.3.4/30").host_count(), 2u);
    EXPECT_EQ(Cidr::parse("10.0.0.0/8").host_count(), (1u << 24) - 2);
    EXPECT_EQ(Cidr::parse("1.2.3.4", true).prefix, 32u);
}

TEST(NetworkAddr, RejectsBadCidrWithTheTextInTheMessage) {
    for (const char* bad : {"10.0.0.0", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0/8",
                            "10.0.0.0/2a", "10.0.0.0/240", "foo", "/24", "10.0.0.0/24/1"}) {
        try {
            Cidr::parse(bad);
            ADD_FAILURE() << bad << " parsed";
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(std::string("invalid CIDR '") + bad + "'"),
                      std::string::npos)
                << e.what();
        }
    }
}

TEST(NetworkAddr, Overlaps) {
    auto c = [](const char* s) { return Cidr::parse(s); };
    EXPECT_TRUE(c("10.0.0.0/8").overlaps(c("10.88.0.0/24")));
    EXPECT_TRUE(c("10.88.0.0/24").overlaps(c("10.0.0.0/8")));
    EXPECT_TRUE(c("10.88.0.0/24").overlaps(c("10.88.0.128/25")));
    EXPECT_FALSE(c("10.88.0.0/24").overlaps(c("10.88.1.0/24")));
    EXPECT_FALSE(c("10.88.0.0/25").overlaps(c("10.88.0.128/25")));
    EXPECT_TRUE(c("0.0.0.0/0").overlaps(c("192.168.0.0/16")));
    // An interface address with host bits overlaps its own subnet.
    EXPECT_TRUE(c("192.168.77.1/24").overlaps(c("192.168.77.0/28")));
    EXPECT_TRUE(c("10.88.0.0/24").contains(Ipv4::parse("10.88.0.255")));
    EXPECT_FALSE(c("10.88.0.0/24").contains(Ipv4::parse("10.88.1.0")));
}

TEST(NetworkAddr, Mac) {
    Mac m = Mac::parse("02:76:0A:58:00:02");
    EXPECT_EQ(m.str(), "02:76:0a:58:00:02");
    EXPECT_EQ(Mac::from_ipv4(Ipv4::parse("10.88.0.2")), m);
    EXPECT_FALSE(m.is_multicast());
    EXPECT_TRUE(Mac::parse("01:00:5e:00:00:01").is_multicast());
    EXPECT_TRUE(Mac{}.is_zero());
    for (const char* bad :
         {"", "02:76:0a:58:00", "02:76:0a:58:00:0g", "02-76-0a-58-00-02", "02:76:0a:58:00:021"})
        EXPECT_THROW(Mac::parse(bad), std::invalid_argument) << bad;
}

}  // namespace
}  // namespace vessel::network
