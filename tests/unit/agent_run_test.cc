// run() (the high-level pump the CLI uses) and connect_vsock_uds() against a fake VMM socket.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "agent_test_util.h"

namespace vessel::agent {
namespace {

using namespace std::chrono_literals;
using test::AgentThread;
using test::sh;

UniqueFd memfd(const char* name) {
    UniqueFd fd(memfd_create(name, MFD_CLOEXEC));
    if (!fd) throw_errno("memfd_create");
    return fd;
}

std::string contents(int fd) {
    std::string out;
    char buf[1 << 16];
    ssize_t n;
    off_t off = 0;
    while ((n = pread(fd, buf, sizeof buf, off)) > 0) {
        out.append(buf, static_cast<std::size_t>(n));
        off += n;
    }
    return out;
}

void write_all(int fd, std::string_view s) {
    while (!s.empty()) {
        const ssize_t n = write(fd, s.data(), s.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        s.remove_prefix(static_cast<std::size_t>(n));
    }
}

std::pair<UniqueFd, UniqueFd> make_pipe() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) throw_errno("pipe2");
    return {UniqueFd(p[0]), UniqueFd(p[1])};
}

std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

// Reads a pipe on a thread until EOF, and can wait for a marker in what arrived.
class PipeReader {
  public:
    explicit PipeReader(UniqueFd fd) : fd_(std::move(fd)) {
        thread_ = std::thread([this] {
            char buf[4096];
            ssize_t n;
            while ((n = read(fd_.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
                if (n <= 0) continue;
                std::lock_guard<std::mutex> l(mu_);
                data_.append(buf, static_cast<std::size_t>(n));
            }
        });
    }
    ~PipeReader() {
        if (thread_.joinable()) thread_.join();
    }
    bool wait_for(const std::string& what, std::chrono::milliseconds timeout = 10s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            {
                std::lock_guard<std::mutex> l(mu_);
                if (data_.find(what) != std::string::npos) return true;
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
    std::string finish() {
        thread_.join();
        return data_;
    }

  private:
    UniqueFd fd_;
    std::thread thread_;
    std::mutex mu_;
    std::string data_;
};

TEST(AgentRun, SeparateStreamsAndStatus) {
    AgentThread a;
    auto c = a.client();
    UniqueFd out = memfd("out"), err = memfd("err");
    const ExitStatus st = run(*c, sh("echo out; echo err >&2; exit 7"), -1, out.get(), err.get());
    EXPECT_EQ(st, (ExitStatus{7, false, 0, false}));
    EXPECT_EQ(contents(out.get()), "out\n");
    EXPECT_EQ(contents(err.get()), "err\n");
}

TEST(AgentRun, SixtyFourMiBThroughCat) {
    AgentThread a;
    auto c = a.client();
    std::string data(64u << 20, '\0');
    std::mt19937_64 rng(42);
    for (std::size_t i = 0; i + 8 <= data.size(); i += 8) {
        const std::uint64_t v = rng();
        memcpy(data.data() + i, &v, 8);
    }
    UniqueFd in = memfd("in"), out = memfd("out");
    write_all(in.get(), data);
    ASSERT_EQ(lseek(in.get(), 0, SEEK_SET), 0);
    const ExitStatus st = run(*c, ProcessSpec{.argv = {"cat"}}, in.get(), out.get(), -1);
    EXPECT_EQ(st.status, 0);
    const std::string got = contents(out.get());
    ASSERT_EQ(got.size(), data.size());
    EXPECT_EQ(fnv1a(got), fnv1a(data));
    EXPECT_TRUE(got == data);
}

TEST(AgentRun, PipesBothWays) {
    AgentThread a;
    auto c = a.client();
    auto [in_r, in_w] = make_pipe();
    auto [out_r, out_w] = make_pipe();
    std::string data;
    for (int i = 0; data.size() < (8u << 20); ++i) data += std::to_string(i) + "\n";
    std::thread writer([&, w = std::move(in_w)]() mutable {
        write_all(w.get(), data);
        w.reset();
    });
    PipeReader reader(std::move(out_r));
    const ExitStatus st = run(*c, ProcessSpec{.argv = {"cat"}}, in_r.get(), out_w.get(), -1);
    out_w.reset();
    writer.join();
    EXPECT_EQ(st.status, 0);
    EXPECT_TRUE(reader.finish() == data);
}

TEST(AgentRun, ExecFailureLooksLikeAShell) {
    AgentThread a;
    auto c = a.client();
    UniqueFd err = memfd("err");
    EXPECT_EQ(run(*c, ProcessSpec{.argv = {"/no/such/cmd"}}, -1, -1, err.get()).status, 127);
    EXPECT_EQ(contents(err.get()), "vessel: /no/such/cmd: No such file or directory\n");
    EXPECT_EQ(run(*c, ProcessSpec{.argv = {"/etc/passwd"}}, -1, -1, -1).status, 126);
}

TEST(AgentRun, ClosedStdoutGivesTheProcessEpipe) {
    AgentThread a;  // also ignores SIGPIPE in this process
    auto c = a.client();
    auto [r, w] = make_pipe();
    r.reset();
    const ExitStatus st = run(*c, ProcessSpec{.argv = {"yes"}}, -1, w.get(), -1);
    EXPECT_TRUE(st.signaled);
    EXPECT_EQ(st.signal, SIGPIPE);
}

TEST(AgentRun, ForwardsSignals) {
    AgentThread a;
    auto c = a.client();
    auto [out_r, out_w] = make_pipe();
    PipeReader reader(std::move(out_r));
    ExitStatus st;
    RunOptions opts;
    opts.forward_signals = {SIGTERM, SIGUSR1};
    std::thread runner([&, w = std::move(out_w)]() mutable {
        st = run(*c,
                 sh("trap 'echo usr1' USR1; trap 'echo term; exit 3' TERM; echo ready; "
                    "while :; do sleep 0.05; done"),
                 -1, w.get(), -1, opts);
    });
    ASSERT_TRUE(reader.wait_for("ready"));
    // Thread-directed, so it reaches run()'s signalfd and not another thread of this test.
    pthread_kill(runner.native_handle(), SIGUSR1);
    ASSERT_TRUE(reader.wait_for("usr1"));
    pthread_kill(runner.native_handle(), SIGTERM);
    runner.join();
    EXPECT_EQ(st.status, 3);
    EXPECT_EQ(reader.finish(), "ready\nusr1\nterm\n");
}

TEST(AgentRun, TtyFollowsTheHostTerminalSize) {
    AgentThread a;
    auto c = a.client();
    int master = -1, slave = -1;
    winsize ws{};
    ws.ws_row = 30;
    ws.ws_col = 100;
    ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, &ws), 0);
    UniqueFd host_master(master), host_slave(slave);
    auto [out_r, out_w] = make_pipe();
    PipeReader reader(std::move(out_r));
    ExitStatus st;
    RunOptions opts;
    opts.winsize_fd = host_slave.get();
    ProcessSpec spec =
        sh("stty size; trap 'stty size; exit 0' WINCH; echo ready; "
           "while :; do sleep 0.05; done");
    spec.tty = true;
    std::thread runner(
        [&, w = std::move(out_w)]() mutable { st = run(*c, spec, -1, w.get(), -1, opts); });
    ASSERT_TRUE(reader.wait_for("ready"));
    ws.ws_row = 40;
    ws.ws_col = 120;
    ASSERT_EQ(ioctl(host_master.get(), TIOCSWINSZ, &ws), 0);
    pthread_kill(runner.native_handle(), SIGWINCH);
    runner.join();
    EXPECT_EQ(st.status, 0);
    const std::string out = reader.finish();
    EXPECT_NE(out.find("30 100"), std::string::npos) << out;
    EXPECT_NE(out.find("40 120"), std::string::npos) << out;
}

TEST(AgentRun, ConcurrentRunsOnSeparateConnections) {
    AgentThread a;
    constexpr int kRuns = 4;
    std::string outs[kRuns];
    std::thread threads[kRuns];
    for (int i = 0; i < kRuns; ++i) {
        threads[i] = std::thread([&, i] {
            auto c = a.client();
            UniqueFd out = memfd("out");
            const std::string tag = "run" + std::to_string(i);
            run(*c, sh("for k in $(seq 1 2000); do echo " + tag + "; done"), -1, out.get(), -1);
            outs[i] = contents(out.get());
        });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kRuns; ++i) {
        std::string want;
        for (int k = 0; k < 2000; ++k) want += "run" + std::to_string(i) + "\n";
        EXPECT_TRUE(outs[i] == want) << "run " << i;
    }
}

// ---- connect_vsock_uds against a fake VMM socket ------------------------------------------

class FakeVmm {
  public:
    explicit FakeVmm(const std::string& path) : path_(path) {}
    ~FakeVmm() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    // handler(fd, requested line) decides what happens to each accepted connection.
    void serve(std::function<void(UniqueFd, const std::string&)> handler) {
        UniqueFd l(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
        if (bind(l.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
            listen(l.get(), 16) < 0)
            throw_errno("fake vmm listen");
        thread_ = std::thread([this, l = std::move(l), handler]() mutable {
            while (!stop_) {
                pollfd p{l.get(), POLLIN, 0};
                if (poll(&p, 1, 50) <= 0) continue;
                UniqueFd fd(accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (!fd) continue;
                std::string line;
                char ch;
                while (line.size() < 100 && read(fd.get(), &ch, 1) == 1 && ch != '\n') line += ch;
                ++accepted;
                handler(std::move(fd), line);
            }
        });
    }
    std::atomic<int> accepted{0};

  private:
    std::string path_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
};

struct TempSock {
    test::TempPath dir;
    std::string path = dir.path + "/vsock.sock";
};

TEST(AgentVsockConnect, RetriesUntilTheGuestListens) {
    TempSock t;
    FakeVmm vmm(t.path);
    std::atomic<int> refusals{3};
    std::string requested;
    vmm.serve([&](UniqueFd fd, const std::string& line) {
        requested = line;
        if (refusals-- > 0) return;  // hang up, as for a port nobody listens on yet
        const std::string reply = "OK 1073741824\nstream-bytes";
        write_all(fd.get(), reply);
        std::this_thread::sleep_for(200ms);
    });
    UniqueFd fd = connect_vsock_uds(t.path, 1024, 5s);
    EXPECT_EQ(requested, "CONNECT 1024");
    EXPECT_EQ(vmm.accepted.load(), 4);
    char buf[32] = {};
    ASSERT_EQ(read(fd.get(), buf, 12), 12);  // nothing after the OK line was swallowed
    EXPECT_STREQ(buf, "stream-bytes");
}

TEST(AgentVsockConnect, WaitsForTheSocketToAppear) {
    TempSock t;
    FakeVmm vmm(t.path);
    std::thread later([&] {
        std::this_thread::sleep_for(300ms);
        vmm.serve([](UniqueFd fd, const std::string&) {
            write_all(fd.get(), "OK 5\n");
            std::this_thread::sleep_for(100ms);
        });
    });
    EXPECT_NO_THROW(connect_vsock_uds(t.path, 7, 5s));
    later.join();
}

TEST(AgentVsockConnect, TimesOut) {
    TempSock t;
    FakeVmm vmm(t.path);
    vmm.serve([](UniqueFd, const std::string&) {});
    const auto start = std::chrono::steady_clock::now();
    try {
        connect_vsock_uds(t.path, 1024, 300ms);
        ADD_FAILURE() << "connected to nothing";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ETIMEDOUT);
        EXPECT_NE(std::string(e.what()).find("1024"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(AgentVsockConnect, GarbageReplyIsFatal) {
    TempSock t;
    FakeVmm vmm(t.path);
    vmm.serve([](UniqueFd fd, const std::string&) {
        write_all(fd.get(), "HELLO THERE\n");
        std::this_thread::sleep_for(100ms);
    });
    EXPECT_THROW(connect_vsock_uds(t.path, 1, 5s), std::system_error);
    EXPECT_EQ(vmm.accepted.load(), 1);
}

// The whole host path: CLI-side handshake, then the agent behind the "VMM".
TEST(AgentVsockConnect, EndToEndThroughFakeVmm) {
    TempSock t;
    AgentThread a;
    FakeVmm vmm(t.path);
    vmm.serve([&](UniqueFd fd, const std::string& line) {
        if (line != "CONNECT 1024") return;
        write_all(fd.get(), "OK 99\n");
        a.agent().add_connection(guest::UniqueFd(fd.release()));
    });
    Client c(connect_vsock_uds(t.path, 1024, 5s));
    UniqueFd out = memfd("out");
    EXPECT_EQ(run(c, sh("echo through the vmm"), -1, out.get(), -1).status, 0);
    EXPECT_EQ(contents(out.get()), "through the vmm\n");
}

}  // namespace
}  // namespace vessel::agent
