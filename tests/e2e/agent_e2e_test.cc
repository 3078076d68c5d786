// Guest agent over virtio-vsock end to end: `vessel boot --agent` and the host client library
// talking to a real guest through vessel's vsock device.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include "guest/agent/client.h"
#include "tests/e2e/e2e_util.h"

namespace vessel::test {
namespace {

class AgentE2E : public E2ETest {
  protected:
    ProcResult boot_agent(const std::vector<std::string>& cmd, int timeout_s = 300) {
        std::vector<std::string> opts = {"--agent"};
        return boot(opts, cmd, timeout_s);
    }
};

TEST_F(AgentE2E, StdoutAndStderrArriveApartWithTheExitStatus) {
    ProcResult r = boot_agent({"sh", "-c", "echo out; echo err >&2; exit 7"});
    EXPECT_EQ(r.status, 7) << r.out << r.err;
    EXPECT_EQ(r.out, "out\n");
    EXPECT_EQ(r.err, "err\n");
}

TEST_F(AgentE2E, SixtyFourMiBThroughCatKeepsItsChecksum) {
    TempDir dir;
    std::string in = dir / "in";
    ASSERT_EQ(std::system(("head -c 67108864 /dev/urandom > " + in).c_str()), 0);
    ProcResult host = run_process({"sh", "-c", "md5sum < " + in + " | cut -c1-32"}, 60);
    ProcResult r = run_process({"sh", "-c",
                                std::string(VESSEL_BIN) + " boot --kernel " + e2e_kernel() +
                                    " --agent -- cat < " + in + " | md5sum | cut -c1-32"},
                               600);
    EXPECT_EQ(r.status, 0) << r.err;
    ASSERT_EQ(host.out.size(), 33u);
    EXPECT_EQ(r.out, host.out) << r.err;
}

TEST_F(AgentE2E, SigtermReachesTheProcessAndSignalDeathsAre128PlusN) {
    ProcOptions o;
    o.timeout_s = 300;
    o.marker = "READY";
    o.on_marker = [](pid_t pid) { ::kill(pid, SIGTERM); };
    ProcResult r =
        run_process({VESSEL_BIN, "boot", "--kernel", e2e_kernel(), "--agent", "--", "sh", "-c",
                     "trap 'echo got-term; exit 3' TERM; echo READY; "
                     "while :; do sleep 0.1; done"},
                    o);
    EXPECT_EQ(r.status, 3) << r.out << r.err;
    EXPECT_NE(r.out.find("got-term"), std::string::npos) << r.out << r.err;

    ProcResult k = boot_agent({"sh", "-c", "kill -KILL $$"});
    EXPECT_EQ(k.status, 128 + SIGKILL) << k.out << k.err;
}

TEST_F(AgentE2E, ConcurrentProcessesKeepTheirStreamsAndATtySeesResize) {
    TempDir dir;
    const std::string uds = dir / "vm.vsock";
    std::promise<void> ready;
    auto ready_f = ready.get_future();
    ProcResult vm;
    std::atomic<pid_t> vessel_pid{-1};
    std::thread t([&] {
        ProcOptions o;
        o.timeout_s = 300;
        o.marker = "VM-UP";
        o.on_marker = [&](pid_t pid) {
            vessel_pid = pid;
            ready.set_value();
        };
        vm = run_process(
            {VESSEL_BIN, "boot", "--kernel", e2e_kernel(), "--agent", "--vsock-socket", uds, "--",
             "sh", "-c", "echo VM-UP; trap 'exit 0' TERM; while :; do sleep 0.1; done"},
            o);
    });
    bool main_listed = false;
    ASSERT_EQ(ready_f.wait_for(std::chrono::seconds(200)), std::future_status::ready);
    {
        auto client = std::make_unique<agent::Client>(
            agent::connect_vsock_uds(uds, 1024, std::chrono::seconds(30)));
        // Two writers at once, each a distinct line, 2000 times.
        agent::ProcessSpec a, b;
        a.argv = {"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo AAAAAAAA; i=$((i+1)); done"};
        b.argv = {"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo BBBBBBBB; i=$((i+1)); done"};
        agent::Started pa = client->start(a), pb = client->start(b);
        std::vector<agent::ProcessInfo> listed = client->list();
        size_t ours = 0;
        for (const auto& p : listed) ours += p.id == pa.id || p.id == pb.id;
        EXPECT_EQ(ours, 2u);
        std::string out_a, out_b;
        client->wait_async(pa.id);
        client->wait_async(pb.id);
        auto drained = [&](uint32_t id) {
            return client->output_eof(id, agent::Stream::kStdout) && client->exit_status(id);
        };
        auto take = [&](uint32_t id, std::string& into) {
            std::string_view v = client->peek_output(id, agent::Stream::kStdout);
            into.append(v);
            client->consume_output(id, agent::Stream::kStdout, v.size());
        };
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        while (!(drained(pa.id) && drained(pb.id)) && std::chrono::steady_clock::now() < deadline) {
            client->pump(100);
            take(pa.id, out_a);
            take(pb.id, out_b);
        }
        take(pa.id, out_a);
        take(pb.id, out_b);
        std::string want_a, want_b;
        for (int i = 0; i < 2000; ++i) want_a += "AAAAAAAA\n", want_b += "BBBBBBBB\n";
        EXPECT_EQ(out_a, want_a);
        EXPECT_EQ(out_b, want_b);
        ASSERT_TRUE(client->exit_status(pa.id));
        EXPECT_EQ(client->exit_status(pa.id)->status, 0);

        // A tty process reports its size, then again after a resize.
        agent::ProcessSpec tty;
        tty.tty = true;
        tty.rows = 24;
        tty.cols = 80;
        tty.argv = {"sh", "-c",
                    "stty size; trap 'stty size; exit 0' WINCH; echo WAITING; "
                    "while :; do sleep 0.1; done"};
        agent::Started pt = client->start(tty);
        std::string out_t;
        bool resized = false;
        client->wait_async(pt.id);
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (!drained(pt.id) && std::chrono::steady_clock::now() < deadline) {
            client->pump(100);
            take(pt.id, out_t);
            if (!resized && out_t.find("WAITING") != std::string::npos) {
                client->resize(pt.id, 40, 100);
                resized = true;
            }
        }
        take(pt.id, out_t);
        EXPECT_NE(out_t.find("24 80"), std::string::npos) << out_t;
        EXPECT_NE(out_t.find("40 100"), std::string::npos) << out_t;
        // The main command, started by vessel's own connection, is visible from ours too.
        for (const auto& p : client->list())
            main_listed |=
                p.running && p.argv.size() == 3 && p.argv[2].find("VM-UP") != std::string::npos;
    }
    EXPECT_TRUE(main_listed) << "the main command is listed as running";
    // The main command ends on SIGTERM, which vessel forwards to it.
    ::kill(vessel_pid.load(), SIGTERM);
    t.join();
    EXPECT_EQ(vm.status, 0) << vm.out << vm.err;
}

}  // namespace
}  // namespace vessel::test
