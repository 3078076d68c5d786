// How vessel-init finds and starts the agent: the kernel command line parsing, resolv.conf
// from /proc/net/pnp, and the real vessel-init booted as PID 1 of a PID namespace with the
// agent on a Unix socket (VESSEL_INIT_TEST_AGENT), which a host client drives to shutdown.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <thread>

#include "agent_test_util.h"
#include "cpio_test_util.h"
#include "guest/init/proto.h"

namespace vessel {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using agent::Client;
using agent::ExitStatus;
using agent::ProcessSpec;
using test::run_shell;
using test::sh_quote;

TEST(AgentCmdline, Values) {
    using guest::cmdline_value;
    EXPECT_EQ(cmdline_value("console=ttyS0 vessel.agent=1024 quiet", "vessel.agent"), "1024");
    EXPECT_EQ(cmdline_value("vessel.agent", "vessel.agent"), "");
    EXPECT_EQ(cmdline_value("vessel.agents=1 xvessel.agent=2", "vessel.agent"), std::nullopt);
    EXPECT_EQ(cmdline_value("a=1 a=2", "a"), "2");  // the last one wins, as in the kernel
    EXPECT_EQ(cmdline_value("x=\"a b\" y=1", "x"), "a b");
    EXPECT_EQ(cmdline_value("\"x=a b\" y=1", "x"), "a b");
    EXPECT_EQ(cmdline_value("x=\"a b\" y=1", "y"), "1");
    EXPECT_EQ(cmdline_value("quiet -- vessel.agent=5", "vessel.agent"), std::nullopt);
    EXPECT_EQ(cmdline_value("  \tvessel.agent=7\n", "vessel.agent"), "7");
    EXPECT_EQ(cmdline_value("", "x"), std::nullopt);
}

TEST(AgentCmdline, AgentPort) {
    using guest::agent_port_from_cmdline;
    std::string err;
    EXPECT_EQ(agent_port_from_cmdline("quiet", &err), std::nullopt);
    EXPECT_EQ(err, "");
    EXPECT_EQ(agent_port_from_cmdline("vessel.agent=1024", &err), 1024u);
    EXPECT_EQ(agent_port_from_cmdline("vessel.agent", &err), guest::kDefaultAgentPort);
    EXPECT_EQ(agent_port_from_cmdline("vessel.agent=4294967294", &err), 4294967294u);
    for (const char* bad : {"vessel.agent=0", "vessel.agent=4294967295", "vessel.agent=-1",
                            "vessel.agent=12a", "vessel.agent=99999999999", "vessel.agent=0x10"}) {
        err.clear();
        EXPECT_EQ(agent_port_from_cmdline(bad, &err), std::nullopt) << bad;
        EXPECT_NE(err, "") << bad;
    }
}

TEST(AgentCmdline, ResolvConfFromPnp) {
    using guest::resolv_conf_from_pnp;
    const std::string pnp = "#PROTO: MANUAL\ndomain example.org\nnameserver 10.0.2.3\n";
    EXPECT_EQ(resolv_conf_from_pnp(pnp), pnp);
    EXPECT_EQ(resolv_conf_from_pnp("#MANUAL\n"), std::nullopt);
    EXPECT_EQ(resolv_conf_from_pnp("#MANUAL\nbootserver 1.2.3.4\n"), std::nullopt);
    EXPECT_EQ(resolv_conf_from_pnp("nameservers 1.1.1.1\n"), std::nullopt);
    EXPECT_EQ(resolv_conf_from_pnp("nameserver\t1.1.1.1"), "nameserver\t1.1.1.1");
    EXPECT_EQ(resolv_conf_from_pnp(""), std::nullopt);
}

constexpr const char* kUnshare = "unshare --fork --pid --mount --uts --net --propagation private";

// vessel-init as PID 1 of fresh namespaces, chrooted into the extracted base initramfs.
class AgentInit : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (geteuid() != 0) return;
        if (run_shell(std::string(kUnshare) + " true >/dev/null 2>&1") != 0) return;
        root_ = std::make_unique<test::TempDir>();
        if (run_shell("cd " + sh_quote(root_->str()) + " && cpio -idm --quiet < " +
                      sh_quote(VESSEL_TEST_INITRAMFS)) != 0)
            root_.reset();
    }
    static void TearDownTestSuite() { root_.reset(); }

    void SetUp() override {
        if (!root_) GTEST_SKIP() << "needs root, unshare(1) and cpio";
        fs::remove_all(root_->path() / "vessel");
        fs::create_directory(root_->path() / "vessel");
        sock_ = root_->path() / "vessel" / "agent.sock";
    }

    // Starts init in the background; the future yields its exit status.
    std::future<int> boot() {
        const std::string cmd =
            "VESSEL_INIT_TEST_EXIT=1 VESSEL_INIT_TEST_AGENT=/vessel/agent.sock " +
            std::string(kUnshare) + " chroot " + sh_quote(root_->str()) + " /init < /dev/null > " +
            sh_quote((io_.path() / "out").string()) + " 2> " +
            sh_quote((io_.path() / "err").string());
        return std::async(std::launch::async, [cmd] { return run_shell(cmd); });
    }

    std::unique_ptr<Client> connect() {
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        for (;;) {
            UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
            sockaddr_un addr{};
            addr.sun_family = AF_UNIX;
            strncpy(addr.sun_path, sock_.c_str(), sizeof addr.sun_path - 1);
            if (connect_unix(fd.get(), addr)) return std::make_unique<Client>(std::move(fd));
            if (std::chrono::steady_clock::now() > deadline)
                throw std::runtime_error("agent socket never appeared; init stderr: " + err());
            std::this_thread::sleep_for(20ms);
        }
    }
    static bool connect_unix(int fd, const sockaddr_un& addr) {
        return ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    }
    std::string err() const {
        std::error_code ec;
        return fs::exists(io_.path() / "err", ec) ? test::read_file(io_.path() / "err") : "";
    }

    static std::unique_ptr<test::TempDir> root_;
    test::TempDir io_;
    fs::path sock_;
};

std::unique_ptr<test::TempDir> AgentInit::root_;

TEST_F(AgentInit, ServesProcessesAndShutdownStatusBecomesInitsExitStatus) {
    auto init = boot();
    {
        auto c = connect();
        agent::Started p = c->start(agent::test::sh("echo $$; cat /proc/1/comm; hostname; pwd"));
        const auto o = agent::test::collect(*c, p.id);
        EXPECT_EQ(o.status.status, 0) << o.err;
        EXPECT_EQ(o.out, std::to_string(p.pid) + "\ninit\nvessel\n/\n");
        EXPECT_GT(p.pid, 2);  // 1 is init, the agent comes next

        // Processes left running do not hold the shutdown up: init terminates them.
        c->start(ProcessSpec{.argv = {"sleep", "100"}});
        c->shutdown(42);
    }
    ASSERT_EQ(init.wait_for(20s), std::future_status::ready) << err();
    EXPECT_EQ(init.get(), 42) << err();
    EXPECT_NE(err().find("shutdown requested, status 42"), std::string::npos) << err();
}

TEST_F(AgentInit, TwoClientsAtOnce) {
    auto init = boot();
    {
        auto c1 = connect();
        auto c2 = connect();
        const auto p1 = c1->start(ProcessSpec{.argv = {"cat"}});
        const auto p2 = c2->start(agent::test::sh("echo two"));
        EXPECT_EQ(agent::test::collect(*c2, p2.id).out, "two\n");
        c1->write_stdin(p1.id, "one\n");
        c1->close_stdin(p1.id);
        EXPECT_EQ(agent::test::collect(*c1, p1.id).out, "one\n");
        c2->shutdown(0);
    }
    ASSERT_EQ(init.wait_for(20s), std::future_status::ready) << err();
    EXPECT_EQ(init.get(), 0) << err();
}

}  // namespace
}  // namespace vessel
