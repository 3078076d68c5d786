// vessel networks and attachments against the real kernel: bridges, nft tables, taps, tc
// redirects and frames through them. The binary moves itself into a fresh network namespace
// before any test runs (see main), so the host's network is never touched; the container-mode
// tests make further namespaces of their own.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/network/attachment.h"
#include "runtime/network/command.h"
#include "runtime/network/ipam.h"
#include "runtime/network/link.h"
#include "runtime/network/manage.h"

namespace vessel::network {
namespace {

namespace fs = std::filesystem;

bool g_private_netns = false;  // set by main once the process has its own namespace

std::string run(const std::vector<std::string>& argv, int netns_fd = -1) {
    CommandOptions o;
    o.netns_fd = netns_fd;
    return check_command("test setup", argv, o).out;
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/var/tmp/vessel-netns-test-XXXXXX";
        path_ = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path_); }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

// A process sitting in a network namespace of its own, as a container's would; the namespace
// is reachable as /proc/PID/ns/net, the path container engines hand to runtimes.
class NsProcess {
  public:
    NsProcess() {
        int p[2];
        if (::pipe(p) < 0) throw_errno("pipe");
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(p[0]);
            char ok = ::unshare(CLONE_NEWNET) == 0 ? 1 : 0;
            [[maybe_unused]] ssize_t n = ::write(p[1], &ok, 1);
            for (;;) ::pause();
        }
        ::close(p[1]);
        char ok = 0;
        bool read_ok = ::read(p[0], &ok, 1) == 1;
        ::close(p[0]);
        if (!read_ok || !ok) throw std::runtime_error("could not make a network namespace");
        fd_ = open_netns(path());
        run({"ip", "link", "set", "lo", "up"}, fd_.get());
    }
    ~NsProcess() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    std::string path() const { return "/proc/" + std::to_string(pid_) + "/ns/net"; }
    int fd() const { return fd_.get(); }

  private:
    pid_t pid_ = -1;
    UniqueFd fd_;
};

std::vector<uint8_t> eth_frame(const Mac& dst, const Mac& src, uint16_t type,
                               const std::vector<uint8_t>& payload) {
    std::vector<uint8_t> f(dst.bytes.begin(), dst.bytes.end());
    f.insert(f.end(), src.bytes.begin(), src.bytes.end());
    f.push_back(static_cast<uint8_t>(type >> 8));
    f.push_back(static_cast<uint8_t>(type));
    f.insert(f.end(), payload.begin(), payload.end());
    while (f.size() < 60) f.push_back(0);
    return f;
}

void put32(std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

std::vector<uint8_t> arp_request(const Mac& mac, Ipv4 ip, Ipv4 target) {
    std::vector<uint8_t> a = {0, 1, 8, 0, 6, 4, 0, 1};
    a.insert(a.end(), mac.bytes.begin(), mac.bytes.end());
    put32(a, ip.value);
    a.insert(a.end(), 6, 0);
    put32(a, target.value);
    return eth_frame(Mac::parse("ff:ff:ff:ff:ff:ff"), mac, 0x0806, a);
}

// IPv4 + UDP (checksum 0: optional for UDP over IPv4).
std::vector<uint8_t> udp_packet(Ipv4 src, Ipv4 dst, uint16_t port, const std::string& data) {
    std::vector<uint8_t> p = {0x45, 0};
    uint16_t total = static_cast<uint16_t>(20 + 8 + data.size());
    p.push_back(static_cast<uint8_t>(total >> 8));
    p.push_back(static_cast<uint8_t>(total));
    p.insert(p.end(), {0, 1, 0x40, 0, 64, 17, 0, 0});
    put32(p, src.value);
    put32(p, dst.value);
    uint32_t sum = 0;
    for (size_t i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    p[10] = static_cast<uint8_t>(~sum >> 8);
    p[11] = static_cast<uint8_t>(~sum);
    uint16_t ulen = static_cast<uint16_t>(8 + data.size());
    p.insert(p.end(), {0x30, 0x39, static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port),
                       static_cast<uint8_t>(ulen >> 8), static_cast<uint8_t>(ulen), 0, 0});
    p.insert(p.end(), data.begin(), data.end());
    return p;
}

constexpr size_t kVnetHdr = 10;  // struct virtio_net_hdr, the tap's default header size

void tap_write(int fd, const std::vector<uint8_t>& frame) {
    std::vector<uint8_t> buf(kVnetHdr, 0);
    buf.insert(buf.end(), frame.begin(), frame.end());
    ASSERT_EQ(::write(fd, buf.data(), buf.size()), static_cast<ssize_t>(buf.size()))
        << std::strerror(errno);
}

// Reads frames from `fd` until `match` accepts one or 3 s pass; `skip` leading bytes (the
// vnet header on a tap) are dropped first.
bool read_until(int fd, size_t skip,
                const std::function<bool(const std::vector<uint8_t>&)>& match) {
    for (int i = 0; i < 300; ++i) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10) <= 0) continue;
        uint8_t buf[65536];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= static_cast<ssize_t>(skip)) continue;
        if (match(std::vector<uint8_t>(buf + skip, buf + n))) return true;
    }
    return false;
}

bool frame_has(const std::vector<uint8_t>& f, const std::string& text) {
    return std::search(f.begin(), f.end(), text.begin(), text.end()) != f.end();
}

class NetworkNetns : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!g_private_netns) GTEST_SKIP() << "needs root to make a private network namespace";
    }
    NetworkRecord create(const std::string& name, const std::string& subnet) {
        CreateOptions o;
        o.name = name;
        o.subnet = subnet;
        return create_network(store_, o);
    }
    AttachOptions opts() const {
        AttachOptions o;
        o.state_root = tmp_.path();
        return o;
    }
    bool nft_table_exists(const std::string& t) {
        return run_command({"nft", "list", "table", "ip", t}).status == 0;
    }
    std::string bridge_ports(const std::string& br) {
        return run({"ip", "-o", "link", "show", "master", br});
    }

    TempDir tmp_;
    NetworkStore store_{tmp_.path()};
};

TEST_F(NetworkNetns, CreateMakesBridgeGatewayNatAndForwarding) {
    NetworkRecord r = create("lab", "10.123.0.0/24");
    EXPECT_EQ(r.bridge, "vsl-lab");
    EXPECT_EQ(r.gateway.str(), "10.123.0.1");
    EXPECT_EQ(link_driver("vsl-lab"), "bridge");
    EXPECT_EQ(link_mac("vsl-lab"), Mac::from_ipv4(r.gateway));
    bool has_addr = false;
    for (const auto& a : ipv4_addresses())
        has_addr |= a.ifname == "vsl-lab" && a.addr.str() == "10.123.0.1/24";
    EXPECT_TRUE(has_addr);
    std::string nft = run({"nft", "list", "table", "ip", "vessel-lab"});
    EXPECT_TRUE(contains(nft, "ip saddr 10.123.0.0/24 oifname != \"vsl-lab\" masquerade")) << nft;
    std::ifstream fwd("/proc/sys/net/ipv4/ip_forward");
    int on = 0;
    fwd >> on;
    EXPECT_EQ(on, 1);
    EXPECT_TRUE(fs::exists(tmp_.path() + "/networks/lab.json"));

    remove_network(store_, "lab");
    EXPECT_FALSE(link_exists("vsl-lab"));
    EXPECT_FALSE(nft_table_exists("vessel-lab"));
    EXPECT_FALSE(fs::exists(tmp_.path() + "/networks/lab.json"));
    EXPECT_THROW(remove_network(store_, "lab"), std::runtime_error);
}

TEST_F(NetworkNetns, CreateRefusesOverlapsAndLeavesNothingBehind) {
    create("one", "10.124.0.0/24");
    run({"ip", "addr", "add", "192.168.77.1/24", "dev", "lo"});
    run({"ip", "route", "add", "blackhole", "172.30.0.0/16"});
    struct Case {
        const char* name;
        const char* subnet;
        const char* want;
    } cases[] = {
        {"two", "10.124.0.0/16", "overlaps network 'one' (10.124.0.0/24)"},
        {"two", "192.168.77.0/28", "overlaps address 192.168.77.1/24 on host interface lo"},
        {"two", "172.30.5.0/24", "overlaps host route 172.30.0.0/16"},
        {"one", "10.125.0.0/24", "network 'one' already exists"},
        {"two", "10.125.0.0/31", "too small"},
        {"two", "10.125.0.1/24", "host bits are set"},
        {"two", "10.125.0.0", "invalid CIDR"},
        {"bad/name", "10.125.0.0/24", "invalid network name"},
    };
    for (const auto& c : cases) {
        try {
            create(c.name, c.subnet);
            ADD_FAILURE() << c.subnet << " accepted";
        } catch (const std::exception& e) {
            EXPECT_TRUE(contains(e.what(), c.want)) << e.what();
        }
    }
    EXPECT_FALSE(link_exists("vsl-two"));
    EXPECT_FALSE(nft_table_exists("vessel-two"));
    EXPECT_EQ(store_.load_all().size(), 1u);
    remove_network(store_, "one");
}

TEST_F(NetworkNetns, CreateRefusesAnExistingBridgeAndKeepsIt) {
    create_bridge("br-taken");
    CreateOptions o;
    o.name = "taken";
    o.subnet = "10.126.0.0/24";
    o.bridge = "br-taken";
    try {
        create_network(store_, o);
        FAIL() << "existing bridge accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_TRUE(contains(e.what(), "bridge br-taken already exists")) << e.what();
    }
    EXPECT_TRUE(link_exists("br-taken"));
    EXPECT_FALSE(nft_table_exists("vessel-taken"));
    delete_bridge("br-taken");
}

TEST_F(NetworkNetns, FailedCreateRollsBackBridgeAndNatTable) {
    // The record cannot be written (its path is a directory): the last step fails, after the
    // bridge and the table were made.
    fs::create_directories(tmp_.path() + "/networks/roll.json");
    try {
        create("roll", "10.127.0.0/24");
        FAIL() << "create succeeded";
    } catch (const std::system_error& e) {
        EXPECT_TRUE(contains(e.what(), "roll.json")) << e.what();
    }
    EXPECT_FALSE(link_exists("vsl-roll"));
    EXPECT_FALSE(nft_table_exists("vessel-roll"));
}

TEST_F(NetworkNetns, NetworkAttachmentsGetDistinctLeasesAndTapsOnTheBridge) {
    NetworkRecord r = create("att", "10.128.0.0/24");
    auto a = NetAttachment::attach(NetSpec::parse("network=att,dns=9.9.9.9"), opts());
    auto b = NetAttachment::attach(NetSpec::parse("network=att,ip=10.128.0.50"), opts());
    EXPECT_EQ(a.mode(), NetMode::Network);
    ASSERT_GE(a.tap_fd(), 0);
    EXPECT_EQ(a.guest().address->str(), "10.128.0.2/24");
    EXPECT_EQ(b.guest().address->str(), "10.128.0.50/24");
    EXPECT_EQ(a.guest().gateway->str(), "10.128.0.1");
    EXPECT_EQ(a.guest().mac, Mac::from_ipv4(Ipv4::parse("10.128.0.2")));
    EXPECT_EQ(a.kernel_ip_param(), "ip=10.128.0.2::10.128.0.1:255.255.255.0::eth0:off:9.9.9.9");
    EXPECT_NE(a.tap_name(), b.tap_name());
    EXPECT_EQ(link_driver(a.tap_name()), "tun");
    std::string ports = bridge_ports("vsl-att");
    EXPECT_TRUE(contains(ports, a.tap_name()) && contains(ports, b.tap_name())) << ports;
    EXPECT_TRUE(contains(a.describe(), "on bridge vsl-att")) << a.describe();

    auto st = inspect_network(store_, "att");
    EXPECT_EQ(st.leases_in_use, 2u);
    ASSERT_EQ(st.record.leases.size(), 2u);
    EXPECT_EQ(st.record.leases[0].owner.pid, ::getpid());
    EXPECT_EQ(st.record.leases[0].tap, a.tap_name());

    // A requested address already leased is refused, and that failed attach leaves no tap.
    auto taps_before = bridge_ports("vsl-att");
    EXPECT_THROW(NetAttachment::attach(NetSpec::parse("network=att,ip=10.128.0.50"), opts()),
                 std::runtime_error);
    EXPECT_EQ(bridge_ports("vsl-att"), taps_before);

    // The device takes the fd; the tap lives exactly as long as it.
    std::string tap = a.tap_name();
    UniqueFd fd = a.take_tap_fd();
    EXPECT_EQ(a.tap_fd(), -1);
    a.detach();
    EXPECT_EQ(inspect_network(store_, "att").leases_in_use, 1u);
    EXPECT_TRUE(link_exists(tap));
    fd.reset();
    EXPECT_FALSE(link_exists(tap));

    try {
        remove_network(store_, "att");
        FAIL() << "removed a network in use";
    } catch (const std::runtime_error& e) {
        EXPECT_TRUE(contains(
            e.what(), "network 'att' is in use by 1 VM(s) (pid " + std::to_string(::getpid())))
            << e.what();
    }
    EXPECT_TRUE(link_exists("vsl-att"));
    b.detach();
    remove_network(store_, "att");
    EXPECT_FALSE(link_exists("vsl-att"));
    EXPECT_FALSE(nft_table_exists("vessel-att"));
}

TEST_F(NetworkNetns, GuestFramesReachTheGatewayAndLeaveThroughNat) {
    create("dp", "10.129.0.0/24");
    // An "outside" host behind an uplink veth.
    NsProcess outside;
    run({"ip", "link", "add", "up0", "type", "veth", "peer", "name", "o0", "netns",
         outside.path()});
    run({"ip", "addr", "add", "10.250.0.1/24", "dev", "up0"});
    run({"ip", "link", "set", "up0", "up"});
    run({"ip", "addr", "add", "10.250.0.2/24", "dev", "o0"}, outside.fd());
    run({"ip", "link", "set", "o0", "up"}, outside.fd());
    UniqueFd udp;
    run_in_netns(outside.fd(), [&] {
        udp.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(4242);
        sin.sin_addr.s_addr = htonl(Ipv4::parse("10.250.0.2").value);
        if (::bind(udp.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) < 0)
            throw_errno("bind");
    });

    auto att = NetAttachment::attach(NetSpec::parse("network=dp"), opts());
    const GuestConfig& g = att.guest();
    int fd = att.tap_fd();

    // ARP for the gateway: the bridge answers with its fixed MAC.
    tap_write(fd, arp_request(g.mac, g.address->addr, *g.gateway));
    Mac gw_mac = Mac::from_ipv4(*g.gateway);
    EXPECT_TRUE(read_until(fd, kVnetHdr, [&](const std::vector<uint8_t>& f) {
        return f.size() >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 2 &&
               std::equal(gw_mac.bytes.begin(), gw_mac.bytes.end(), f.begin() + 22);
    })) << "no ARP reply from the gateway";

    // A UDP datagram to the outside host arrives from the uplink's address (masqueraded).
    tap_write(fd, eth_frame(gw_mac, g.mac, 0x0800,
                            udp_packet(g.address->addr, Ipv4::parse("10.250.0.2"), 4242,
                                       "hello from the guest")));
    pollfd p{udp.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 3000), 1) << "datagram not forwarded";
    char buf[64] = {};
    sockaddr_in from{};
    socklen_t fl = sizeof from;
    ssize_t n = ::recvfrom(udp.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
    EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "hello from the guest");
    EXPECT_EQ(Ipv4{ntohl(from.sin_addr.s_addr)}.str(), "10.250.0.1");

    att.detach();
    remove_network(store_, "dp");
}

TEST_F(NetworkNetns, LeaseOfAKilledVmmIsReclaimedAndItsTapIsGone) {
    create("kill", "10.130.0.0/30");  // room for exactly one guest
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    pid_t child = ::fork();
    if (child == 0) {
        ::close(p[0]);
        std::string msg;
        try {
            auto att = NetAttachment::attach(NetSpec::parse("network=kill"), opts());
            msg = att.tap_name();
        } catch (const std::exception& e) {
            msg = std::string("error: ") + e.what();
        }
        // The attachment above was destroyed cleanly; attach again and be killed holding it.
        auto att = NetAttachment::attach(NetSpec::parse("network=kill"), opts());
        msg = att.tap_name();
        [[maybe_unused]] ssize_t n = ::write(p[1], msg.data(), msg.size());
        ::close(p[1]);
        for (;;) ::pause();
    }
    ::close(p[1]);
    char buf[64] = {};
    ssize_t n = ::read(p[0], buf, sizeof buf - 1);
    ::close(p[0]);
    ASSERT_GT(n, 0);
    std::string tap(buf);
    ASSERT_TRUE(link_exists(tap)) << tap;
    EXPECT_EQ(inspect_network(store_, "kill").leases_in_use, 1u);
    EXPECT_THROW(NetAttachment::attach(NetSpec::parse("network=kill"), opts()), std::runtime_error);

    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    EXPECT_FALSE(link_exists(tap)) << "the kernel should delete a non-persistent tap";
    auto st = inspect_network(store_, "kill");
    EXPECT_EQ(st.record.leases.size(), 1u);  // still recorded, but its owner is dead
    EXPECT_EQ(st.leases_in_use, 0u);
    auto att = NetAttachment::attach(NetSpec::parse("network=kill"), opts());
    EXPECT_EQ(att.guest().address->str(), "10.130.0.2/30");
    auto rec = store_.load("kill");
    ASSERT_EQ(rec->leases.size(), 1u);
    EXPECT_EQ(rec->leases[0].owner.pid, ::getpid());
    att.detach();
    remove_network(store_, "kill");
}

TEST_F(NetworkNetns, AttachRestoresAMissingBridgeOrNatTable) {
    create("boot", "10.131.0.0/24");
    // What a host reboot does to a network: state survives, bridge and table do not.
    delete_bridge("vsl-boot");
    run({"nft", "delete", "table", "ip", "vessel-boot"});
    EXPECT_FALSE(list_networks(store_)[0].bridge_present);
    auto att = NetAttachment::attach(NetSpec::parse("network=boot"), opts());
    EXPECT_EQ(link_driver("vsl-boot"), "bridge");
    EXPECT_TRUE(nft_table_exists("vessel-boot"));
    EXPECT_TRUE(contains(bridge_ports("vsl-boot"), att.tap_name()));
    // What a firewall reload does: the table goes, the bridge (with a guest on it) stays.
    run({"nft", "flush", "ruleset"});
    auto again = NetAttachment::attach(NetSpec::parse("network=boot"), opts());
    EXPECT_TRUE(nft_table_exists("vessel-boot"));
    EXPECT_TRUE(contains(bridge_ports("vsl-boot"), att.tap_name()));
    again.detach();
    att.detach();
    remove_network(store_, "boot");
}

TEST_F(NetworkNetns, AttachErrorsNameTheMissingThing) {
    auto err = [&](const std::string& spec) -> std::string {
        try {
            NetAttachment::attach(NetSpec::parse(spec), opts());
        } catch (const std::exception& e) {
            return e.what();
        }
        return "(attached)";
    };
    EXPECT_TRUE(contains(err("network=nope"), "network 'nope' not found"));
    EXPECT_TRUE(contains(err("bridge=br-nope"), "bridge br-nope not found"));
    EXPECT_TRUE(contains(err("bridge=lo"), "lo is not a bridge"));
    EXPECT_TRUE(contains(err("tap=tap-nope"), "tap tap-nope not found"));
    EXPECT_TRUE(contains(err("tap=lo"), "lo is not a tap device"));
    EXPECT_TRUE(
        contains(err("netns=/nonexistent/ns"), "opening network namespace /nonexistent/ns"));
    EXPECT_TRUE(contains(err("netns=/proc/self/ns/uts"), "is not a network namespace"));
    NsProcess empty;
    EXPECT_TRUE(contains(err("netns=" + empty.path()), "no interface with an IPv4 address"));
}

TEST_F(NetworkNetns, TapDeviceNeedsCapNetAdmin) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    pid_t child = ::fork();
    if (child == 0) {
        ::close(p[0]);
        std::string msg = "(created)";
        if (::setgroups(0, nullptr) < 0 || ::setgid(65534) < 0 || ::setuid(65534) < 0)
            msg = "(setuid failed)";
        else
            try {
                create_tap("vsl-tap%d");
            } catch (const std::exception& e) {
                msg = e.what();
            }
        [[maybe_unused]] ssize_t n = ::write(p[1], msg.data(), msg.size());
        ::_exit(0);
    }
    ::close(p[1]);
    char buf[256] = {};
    [[maybe_unused]] ssize_t n = ::read(p[0], buf, sizeof buf - 1);
    ::close(p[0]);
    ::waitpid(child, nullptr, 0);
    EXPECT_TRUE(contains(buf, "CAP_NET_ADMIN") && contains(buf, "Operation not permitted")) << buf;
}

TEST_F(NetworkNetns, BridgeAndTapModes) {
    create_bridge("br-user");
    set_link_mtu("br-user", 1400);
    {
        auto att = NetAttachment::attach(
            NetSpec::parse("bridge=br-user,ip=192.168.50.7/24,gw=192.168.50.1,dns=1.1.1.1"),
            opts());
        EXPECT_EQ(att.mode(), NetMode::Bridge);
        EXPECT_TRUE(contains(bridge_ports("br-user"), att.tap_name()));
        EXPECT_EQ(link_mtu(att.tap_name()), 1400u);
        EXPECT_EQ(att.guest().mtu, 1400u);
        EXPECT_EQ(att.kernel_ip_param(),
                  "ip=192.168.50.7::192.168.50.1:255.255.255.0::eth0:off:1.1.1.1");
        EXPECT_EQ(att.guest().mac.bytes[0] & 3, 2);  // random, local, unicast
        auto dhcp = NetAttachment::attach(NetSpec::parse("bridge=br-user,ip=dhcp"), opts());
        EXPECT_EQ(dhcp.kernel_ip_param(), "ip=:::::eth0:dhcp");
    }
    EXPECT_EQ(bridge_ports("br-user"), "");
    delete_bridge("br-user");

    run({"ip", "tuntap", "add", "tap-user", "mode", "tap"});
    {
        auto att = NetAttachment::attach(
            NetSpec::parse("tap=tap-user,ip=10.9.0.2/24,mac=02:00:00:00:00:42"), opts());
        EXPECT_EQ(att.tap_fd(), -1);  // the device opens it by name
        EXPECT_EQ(att.tap_name(), "tap-user");
        EXPECT_EQ(att.guest().mac.str(), "02:00:00:00:00:42");
        EXPECT_EQ(att.kernel_ip_param(), "ip=10.9.0.2:::255.255.255.0::eth0:off");
    }
    EXPECT_TRUE(link_exists("tap-user"));  // not vessel's: left alone
    run({"ip", "tuntap", "del", "tap-user", "mode", "tap"});
}

// Container mode: a namespace with a configured veth, its peer in another namespace.
class ContainerNetns : public NetworkNetns {
  protected:
    void SetUp() override {
        NetworkNetns::SetUp();
        if (IsSkipped()) return;
        run({"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns",
             peer_.path()},
            box_.fd());
        run({"ip", "addr", "add", "10.200.0.2/24", "dev", "eth0"}, box_.fd());
        run({"ip", "link", "set", "eth0", "mtu", "1450", "up"}, box_.fd());
        run({"ip", "route", "add", "default", "via", "10.200.0.1"}, box_.fd());
        run({"ip", "addr", "add", "10.200.0.1/24", "dev", "peer0"}, peer_.fd());
        run({"ip", "link", "set", "peer0", "mtu", "1450", "up"}, peer_.fd());
        run_in_netns(box_.fd(), [&] { veth_mac_ = link_mac("eth0"); });
        run_in_netns(peer_.fd(), [&] {
            peer_mac_ = link_mac("peer0");
            packet_.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
            if (!packet_) throw_errno("AF_PACKET socket");
            sockaddr_ll sll{};
            sll.sll_family = AF_PACKET;
            sll.sll_protocol = htons(ETH_P_ALL);
            sll.sll_ifindex = static_cast<int>(if_nametoindex("peer0"));
            if (::bind(packet_.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0)
                throw_errno("bind AF_PACKET");
        });
    }
    std::string tc_show(const std::string& what, const std::string& dev) {
        return run({"tc", what, "show", "dev", dev, "ingress"}, box_.fd());
    }

    NsProcess box_, peer_;
    Mac veth_mac_, peer_mac_;
    UniqueFd packet_;  // on peer0
};

TEST_F(ContainerNetns, TapInsideTheNamespaceIsWiredToTheVeth) {
    auto att = NetAttachment::attach(NetSpec::parse("netns=" + box_.path()), opts());
    EXPECT_EQ(att.mode(), NetMode::Netns);
    const GuestConfig& g = att.guest();
    EXPECT_EQ(g.address->str(), "10.200.0.2/24");
    EXPECT_EQ(g.gateway->str(), "10.200.0.1");
    EXPECT_EQ(g.mac, veth_mac_);
    EXPECT_EQ(g.mtu, 1450u);
    EXPECT_EQ(att.kernel_ip_param(), "ip=10.200.0.2::10.200.0.1:255.255.255.0::eth0:off");
    ASSERT_GE(att.tap_fd(), 0);

    // The tap lives in the container's namespace, not ours.
    EXPECT_FALSE(link_exists(att.tap_name()));
    bool in_box = false;
    run_in_netns(box_.fd(), [&] { in_box = link_exists(att.tap_name()); });
    EXPECT_TRUE(in_box);
    std::string veth_filters = tc_show("filter", "eth0");
    EXPECT_TRUE(contains(veth_filters, "Egress Redirect to device " + att.tap_name()))
        << veth_filters;
    std::string tap_filters = tc_show("filter", att.tap_name());
    EXPECT_TRUE(contains(tap_filters, "Egress Redirect to device eth0")) << tap_filters;

    // Guest -> tap -> veth -> peer.
    tap_write(att.tap_fd(),
              eth_frame(peer_mac_, g.mac, 0x88b5, {'v', 'e', 's', 's', 'e', 'l', '-', 'o'}));
    EXPECT_TRUE(read_until(packet_.get(), 0, [](const auto& f) {
        return frame_has(f, "vessel-o");
    })) << "frame from the tap did not reach the veth peer";
    // Peer -> veth -> tap -> guest.
    auto in = eth_frame(g.mac, peer_mac_, 0x88b5, {'v', 'e', 's', 's', 'e', 'l', '-', 'i'});
    ASSERT_EQ(::send(packet_.get(), in.data(), in.size(), 0), static_cast<ssize_t>(in.size()));
    EXPECT_TRUE(read_until(att.tap_fd(), kVnetHdr, [](const auto& f) {
        return frame_has(f, "vessel-i");
    })) << "frame from the veth peer did not reach the tap";
    // The peer's own stack reaches the guest address: its ARP request arrives at the tap.
    run_in_netns(peer_.fd(), [] {
        UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(9);
        to.sin_addr.s_addr = htonl(Ipv4::parse("10.200.0.2").value);
        if (::sendto(s.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
            throw_errno("sendto");
    });
    EXPECT_TRUE(read_until(att.tap_fd(), kVnetHdr, [](const std::vector<uint8_t>& f) {
        return f.size() >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 1 && f[38] == 10 &&
               f[39] == 200 && f[40] == 0 && f[41] == 2;
    })) << "ARP for the guest address did not reach the tap";

    std::string tap = att.tap_name();
    att.detach();
    EXPECT_EQ(tc_show("qdisc", "eth0"), "");
    run_in_netns(box_.fd(), [&] { in_box = link_exists(tap); });
    EXPECT_FALSE(in_box);
    // The veth keeps its address: vessel does not flush it.
    std::string addrs = run({"ip", "-4", "-o", "addr", "show", "dev", "eth0"}, box_.fd());
    EXPECT_TRUE(contains(addrs, "10.200.0.2/24")) << addrs;
}

TEST_F(ContainerNetns, ReplacesTheStaleRedirectOfAKilledVmm) {
    run({"tc", "qdisc", "add", "dev", "eth0", "ingress"}, box_.fd());
    auto att = NetAttachment::attach(NetSpec::parse("netns=" + box_.path() + ",dev=eth0"), opts());
    EXPECT_TRUE(contains(tc_show("filter", "eth0"), "Redirect to device " + att.tap_name()));
    att.detach();
    EXPECT_EQ(tc_show("qdisc", "eth0"), "");
}

TEST_F(ContainerNetns, UnknownDeviceIsNamed) {
    try {
        NetAttachment::attach(NetSpec::parse("netns=" + box_.path() + ",dev=eth9"), opts());
        FAIL() << "attached to a missing device";
    } catch (const std::runtime_error& e) {
        EXPECT_TRUE(contains(e.what(), "interface eth9 not found in network namespace"))
            << e.what();
    }
}

}  // namespace
}  // namespace vessel::network

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    // Before any thread exists: unshare changes only the calling thread's namespace, and every
    // thread and child created later inherits it.
    if (::unshare(CLONE_NEWNET) == 0) {
        vessel::network::g_private_netns = true;
        vessel::network::set_link_up("lo");
    }
    return RUN_ALL_TESTS();
}
