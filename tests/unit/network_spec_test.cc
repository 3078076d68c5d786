#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "runtime/network/attachment.h"

namespace vessel::network {
namespace {

std::string parse_error(const std::string& text) {
    try {
        NetSpec::parse(text);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(parsed)";
}

TEST(NetworkSpec, ParsesEachMode) {
    NetSpec n = NetSpec::parse("network=default");
    EXPECT_EQ(n.mode, NetMode::Network);
    EXPECT_EQ(n.target, "default");
    EXPECT_FALSE(n.ip);

    n = NetSpec::parse("network=lab,ip=10.88.0.9,mac=02:00:00:00:00:09,dns=1.1.1.1,dns=8.8.8.8");
    EXPECT_EQ(n.ip->str(), "10.88.0.9");
    EXPECT_EQ(n.mac->str(), "02:00:00:00:00:09");
    ASSERT_EQ(n.dns.size(), 2u);
    EXPECT_EQ(n.dns[1].str(), "8.8.8.8");

    n = NetSpec::parse("bridge=br0,ip=192.168.1.5/24,gw=192.168.1.1");
    EXPECT_EQ(n.mode, NetMode::Bridge);
    EXPECT_EQ(n.ip_cidr->str(), "192.168.1.5/24");
    EXPECT_EQ(n.gateway->str(), "192.168.1.1");

    n = NetSpec::parse("tap=tap7,ip=dhcp");
    EXPECT_EQ(n.mode, NetMode::Tap);
    EXPECT_TRUE(n.dhcp);

    n = NetSpec::parse("netns=/proc/123/ns/net,dev=eth1");
    EXPECT_EQ(n.mode, NetMode::Netns);
    EXPECT_EQ(n.target, "/proc/123/ns/net");
    EXPECT_EQ(n.dev, "eth1");
}

TEST(NetworkSpec, RejectsBadSpecsNamingTheProblem) {
    struct Case {
        const char* text;
        const char* want;
    } cases[] = {
        {"", "empty"},
        {"ip=10.0.0.2/24", "missing network=NAME"},
        {"network=a,bridge=b", "exactly one of"},
        {"network=a,network=b", "'network' given twice"},
        {"network=a,colour=blue", "unknown key 'colour'"},
        {"network=a,", "expected key=value"},
        {"network=a,ip", "expected key=value"},
        {"network=", "expected key=value"},
        {"network=a,ip=10.0.0.2/24", "bare address"},
        {"network=a,ip=10.0.0.300", "invalid CIDR '10.0.0.300'"},
        {"network=a,gw=10.0.0.1", "gateway is the network's"},
        {"network=a,mac=zz:00:00:00:00:00", "invalid MAC address"},
        {"network=a,mac=01:00:00:00:00:01", "not a unicast address"},
        {"network=a,dns=1.1.1.1,dns=1.0.0.1,dns=8.8.8.8", "at most 2"},
        {"network=a,dev=eth0", "dev= only applies to netns="},
        {"bridge=br0,ip=10.0.0.2", "needs a prefix length"},
        {"bridge=br0,ip=10.0.0.0/24", "not a host address"},
        {"bridge=br0,ip=10.0.0.255/24", "not a host address"},
        {"bridge=br0,gw=10.0.0.1", "needs a static ip="},
        {"bridge=br0,ip=10.0.0.2/24,gw=10.0.1.1", "not another host of 10.0.0.0/24"},
        {"bridge=averyveryverylongbridge", "longer than 15"},
        {"netns=relative/path", "absolute path"},
        {"netns=/run/netns/x,ip=10.0.0.2/24", "the address is the namespace's"},
        {"netns=/run/netns/x,gw=10.0.0.1", "the gateway is the namespace's"},
    };
    for (const auto& c : cases) {
        std::string err = parse_error(c.text);
        EXPECT_NE(err.find(std::string("--net '") + c.text + "'"), std::string::npos) << err;
        EXPECT_NE(err.find(c.want), std::string::npos) << c.text << " -> " << err;
    }
}

TEST(NetworkSpec, RendersKernelIpParameter) {
    GuestConfig g;
    g.address = Cidr::parse("10.88.0.2/24");
    g.gateway = Ipv4::parse("10.88.0.1");
    g.dns = {Ipv4::parse("1.1.1.1")};
    EXPECT_EQ(g.kernel_ip_param(), "ip=10.88.0.2::10.88.0.1:255.255.255.0::eth0:off:1.1.1.1");
    g.dns.push_back(Ipv4::parse("8.8.8.8"));
    EXPECT_EQ(g.kernel_ip_param("eth1", "box"),
              "ip=10.88.0.2::10.88.0.1:255.255.255.0:box:eth1:off:1.1.1.1:8.8.8.8");
    g.dns.clear();
    g.gateway.reset();
    g.address = Cidr::parse("172.16.5.9/20");
    EXPECT_EQ(g.kernel_ip_param(), "ip=172.16.5.9:::255.255.240.0::eth0:off");

    GuestConfig d;
    d.dhcp = true;
    EXPECT_EQ(d.kernel_ip_param(), "ip=:::::eth0:dhcp");
    EXPECT_EQ(GuestConfig{}.kernel_ip_param(), "");
}

TEST(NetworkSpec, NameserversFromResolvConf) {
    auto ns = nameservers_from_resolv_conf(
        "# comment\nnameserver 127.0.0.53\nsearch example\nnameserver 10.0.0.2\n"
        "nameserver fe80::1\nnameserver 9.9.9.9\nnameserver 1.1.1.1\n");
    ASSERT_EQ(ns.size(), 2u);
    EXPECT_EQ(ns[0].str(), "10.0.0.2");
    EXPECT_EQ(ns[1].str(), "9.9.9.9");
    EXPECT_TRUE(nameservers_from_resolv_conf("nameserver 127.0.0.1\n").empty());
}

}  // namespace
}  // namespace vessel::network
