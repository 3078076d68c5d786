// Tap set-up on the real /dev/net/tun, inside a network namespace of the test's own (every net
// test process enters a fresh one before its first test, so nothing leaks into the host).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <system_error>

#include "tests/unit/net_test_util.h"
#include "virtio/net/packet.h"
#include "virtio/net/tap.h"

namespace vessel::virtio::net::testing {

namespace {
bool g_netns = false;
std::string g_netns_error = "not set up";

class NetnsEnvironment : public ::testing::Environment {
  public:
    void SetUp() override {
        if (::unshare(CLONE_NEWNET) < 0) {
            g_netns_error = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno) +
                            " (the tap tests need root)";
            return;
        }
        if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
            g_netns_error = "/dev/net/tun not usable";
            return;
        }
        // No IPv6 autoconfiguration chatter on the test taps.
        std::ofstream("/proc/sys/net/ipv6/conf/default/disable_ipv6") << "1\n";
        g_netns = true;
    }
};
[[maybe_unused]] auto* const kEnv = ::testing::AddGlobalTestEnvironment(new NetnsEnvironment);
}  // namespace

bool in_private_netns() {
    return g_netns;
}
const std::string& netns_error() {
    return g_netns_error;
}

namespace {

bool exists(const std::string& ifname) {
    return ::if_nametoindex(ifname.c_str()) != 0;
}

// A raw tun fd attached to `name` with `flags`, for the adoption and persistence tests.
UniqueFd raw_tap(const std::string& name, short flags, bool persist = false) {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) throw_errno("open /dev/net/tun");
    ifreq ifr{};
    ifr.ifr_flags = flags;
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) throw_errno("TUNSETIFF " + name);
    if (persist && ::ioctl(fd.get(), TUNSETPERSIST, 1) < 0) throw_errno("TUNSETPERSIST");
    return fd;
}

TapSpec fd_spec(int fd) {
    TapSpec s;
    s.fd = fd;
    return s;
}

template <typename F>
std::system_error expect_system_error(F f) {
    try {
        f();
    } catch (const std::system_error& e) {
        return e;
    }
    ADD_FAILURE() << "no std::system_error";
    return std::system_error(0, std::generic_category());
}

class TapTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!in_private_netns()) GTEST_SKIP() << netns_error();
    }
};

TEST_F(TapTest, CreatesAKernelNamedTapThatGoesAwayWithIt) {
    std::string name;
    {
        Tap t = Tap::open({});
        name = t.name();
        EXPECT_EQ(name.rfind("tap", 0), 0u) << name;
        EXPECT_TRUE(t.created());
        EXPECT_TRUE(exists(name));
        EXPECT_GE(t.fd(), 0);
        EXPECT_EQ(::fcntl(t.fd(), F_GETFL) & O_NONBLOCK, O_NONBLOCK);
        EXPECT_EQ(::fcntl(t.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        EXPECT_TRUE(t.supported_offloads() & TUN_F_CSUM);
        EXPECT_EQ(t.offloads(), 0u);  // nothing until a driver negotiates
        EXPECT_EQ(t.mtu(), 1500);
        ifreq ifr{};
        ASSERT_EQ(::ioctl(t.fd(), TUNGETIFF, &ifr), 0);
        EXPECT_EQ(ifr.ifr_flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
                  IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        int hdr = 0;
        ASSERT_EQ(::ioctl(t.fd(), TUNGETVNETHDRSZ, &hdr), 0);
        EXPECT_EQ(hdr, static_cast<int>(kHdrSize));
        t.set_offloads(TUN_F_CSUM | TUN_F_TSO4);
        EXPECT_EQ(t.offloads(), unsigned{TUN_F_CSUM | TUN_F_TSO4});
        EXPECT_TRUE(t.set_carrier(false));
        EXPECT_TRUE(t.set_carrier(true));
    }
    EXPECT_FALSE(exists(name)) << "a tap vessel created must not outlive it";
}

TEST_F(TapTest, NamedTapIsCreatedOrAttached) {
    {
        Tap t = Tap::open({.name = "vtest0"});
        EXPECT_EQ(t.name(), "vtest0");
        EXPECT_TRUE(t.created());
    }
    EXPECT_FALSE(exists("vtest0"));

    // A persistent tap made by someone else: attached to, and left in place.
    raw_tap("vpers0", IFF_TAP | IFF_NO_PI, /*persist=*/true).reset();
    ASSERT_TRUE(exists("vpers0"));
    {
        Tap t = Tap::open({.name = "vpers0", .must_exist = true});
        EXPECT_FALSE(t.created());
        EXPECT_EQ(t.name(), "vpers0");
    }
    EXPECT_TRUE(exists("vpers0"));
    UniqueFd fd = raw_tap("vpers0", IFF_TAP | IFF_NO_PI);
    ASSERT_EQ(::ioctl(fd.get(), TUNSETPERSIST, 0), 0);
    fd.reset();
    EXPECT_FALSE(exists("vpers0"));
}

TEST_F(TapTest, ClearErrors) {
    auto e = expect_system_error([] { Tap::open({.name = "nosuch0", .must_exist = true}); });
    EXPECT_EQ(e.code().value(), ENODEV);
    EXPECT_NE(std::string(e.what()).find("tap nosuch0: not found"), std::string::npos) << e.what();
    EXPECT_FALSE(exists("nosuch0"));

    Tap busy = Tap::open({.name = "vbusy0"});
    e = expect_system_error([] { Tap::open({.name = "vbusy0"}); });
    EXPECT_EQ(e.code().value(), EBUSY);
    EXPECT_NE(std::string(e.what()).find("tap vbusy0: busy"), std::string::npos) << e.what();

    e = expect_system_error([] { Tap::open({.name = "lo"}); });
    EXPECT_NE(std::string(e.what()).find("tap lo: exists and is not a tap"), std::string::npos)
        << e.what();

    e = expect_system_error([] { Tap::open({.name = "a-name-much-too-long"}); });
    EXPECT_EQ(e.code().value(), EINVAL);
}

TEST_F(TapTest, AdoptsAnOpenFd) {
    UniqueFd raw = raw_tap("vadopt0", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    ASSERT_EQ(::fcntl(raw.get(), F_SETFL, O_RDWR), 0);
    {
        Tap t = Tap::open(fd_spec(raw.get()));
        EXPECT_EQ(t.name(), "vadopt0");
        EXPECT_FALSE(t.created());
        EXPECT_NE(t.fd(), raw.get());
        // Non-blocking, so io_uring tries reads and writes inline (see Tap).
        EXPECT_EQ(::fcntl(t.fd(), F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    }
    EXPECT_TRUE(exists("vadopt0")) << "the caller's fd still holds it";
    raw.reset();
    EXPECT_FALSE(exists("vadopt0"));

    UniqueFd novnet = raw_tap("vadopt1", IFF_TAP | IFF_NO_PI);
    auto e = expect_system_error([&] { Tap::open(fd_spec(novnet.get())); });
    EXPECT_EQ(e.code().value(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("IFF_VNET_HDR"), std::string::npos) << e.what();

    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    UniqueFd r(p[0]), w(p[1]);
    e = expect_system_error([&] { Tap::open(fd_spec(r.get())); });
    EXPECT_NE(std::string(e.what()).find("not an attached tun/tap"), std::string::npos) << e.what();
}

}  // namespace
}  // namespace vessel::virtio::net::testing
