// The agent core and the client over socketpairs, running real processes on the host.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "agent_test_util.h"

namespace vessel::agent {
namespace {

using namespace std::chrono_literals;
using test::AgentThread;
using test::collect;
using test::read_until;
using test::sh;

TEST(AgentCore, SeparateStreamsAndExitCode) {
    AgentThread a;
    auto c = a.client();
    EXPECT_EQ(c->version(), 1u);
    const Started p = c->start(sh("echo out; echo err >&2; exit 7"));
    EXPECT_GT(p.pid, 0);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(o.out, "out\n");
    EXPECT_EQ(o.err, "err\n");
    EXPECT_EQ(o.status, (ExitStatus{7, false, 0, false}));
}

TEST(AgentCore, StdinRoundTripAndEof) {
    AgentThread a;
    auto c = a.client();
    const Started p = c->start(ProcessSpec{.argv = {"cat"}});
    std::string input;
    for (int i = 0; i < 20000; ++i) input += "line " + std::to_string(i) + "\n";
    std::size_t sent = 0;
    std::string got;
    char buf[65536];
    while (sent < input.size()) {
        sent += c->write_stdin(p.id, std::string_view(input).substr(sent));
        c->pump(50);
        std::size_t n;
        while ((n = c->read_output(p.id, kStdout, buf, sizeof buf)) > 0) got.append(buf, n);
    }
    c->close_stdin(p.id);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(got + o.out, input);
    EXPECT_EQ(o.status.status, 0);
}

TEST(AgentCore, SigtermIsDelivered) {
    AgentThread a;
    auto c = a.client();
    const Started p =
        c->start(sh("trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done"));
    read_until(*c, p.id, "ready\n");
    c->signal(p.id, SIGTERM);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(o.out, "got TERM\n");
    EXPECT_EQ(o.status, (ExitStatus{3, false, 0, false}));
}

TEST(AgentCore, KilledBySignalIsReportedAsSignal) {
    AgentThread a;
    auto c = a.client();
    const Started p = c->start(ProcessSpec{.argv = {"sleep", "100"}});
    c->signal(p.id, SIGKILL);
    EXPECT_EQ(c->wait(p.id), (ExitStatus{128 + SIGKILL, true, SIGKILL, false}));

    const Started q = c->start(sh("kill -USR1 $$"));
    const auto o = collect(*c, q.id);
    EXPECT_TRUE(o.status.signaled);
    EXPECT_EQ(o.status.signal, SIGUSR1);
    EXPECT_EQ(o.status.status, 128 + SIGUSR1);
    // Signals to an exited process are refused, not sent to whoever reuses the pid.
    try {
        c->signal(q.id, SIGTERM);
        ADD_FAILURE() << "signal to an exited process succeeded";
    } catch (const AgentError& e) {
        EXPECT_TRUE(e.code() == "exited" || e.code() == "not_found") << e.code();
    }
}

TEST(AgentCore, SignalToGroup) {
    AgentThread a;
    auto c = a.client();
    // The shell waits for its child; a signal to the group reaches both.
    const Started p = c->start(sh("sleep 100; echo not reached"));
    c->signal(p.id, SIGTERM, /*group=*/true);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(o.out, "");
    EXPECT_TRUE(o.status.signaled);
    EXPECT_EQ(o.status.signal, SIGTERM);
}

TEST(AgentCore, ConcurrentProcessesOnOneConnectionDoNotMix) {
    AgentThread a;
    auto c = a.client();
    const std::string script =
        "i=0; while [ $i -lt 3000 ]; do echo %S; echo %s >&2; i=$((i+1)); done";
    auto make = [&](char tag) {
        std::string s = script;
        s.replace(s.find("%S"), 2, std::string(40, tag));
        s.replace(s.find("%s"), 2, std::string(40, static_cast<char>(tag + 32)));
        return sh(s);
    };
    const Started pa = c->start(make('A'));
    const Started pb = c->start(make('B'));
    std::string out[2], err[2];
    const Started ps[2] = {pa, pb};
    c->wait_async(pa.id);
    c->wait_async(pb.id);
    char buf[65536];
    auto done = [&](int i) {
        return c->exit_status(ps[i].id) && c->output_eof(ps[i].id, kStdout) &&
               c->output_eof(ps[i].id, kStderr);
    };
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!done(0) || !done(1)) {
        ASSERT_LT(std::chrono::steady_clock::now(), deadline);
        c->pump(100);
        c->check();
        for (int i = 0; i < 2; ++i) {
            std::size_t n;
            while ((n = c->read_output(ps[i].id, kStdout, buf, sizeof buf)) > 0)
                out[i].append(buf, n);
            while ((n = c->read_output(ps[i].id, kStderr, buf, sizeof buf)) > 0)
                err[i].append(buf, n);
        }
    }
    for (int i = 0; i < 2; ++i) {
        const char tag = i == 0 ? 'A' : 'B';
        std::string want_out, want_err;
        for (int k = 0; k < 3000; ++k) {
            want_out += std::string(40, tag) + "\n";
            want_err += std::string(40, static_cast<char>(tag + 32)) + "\n";
        }
        EXPECT_EQ(out[i], want_out) << "process " << i;
        EXPECT_EQ(err[i], want_err) << "process " << i;
        EXPECT_EQ(c->exit_status(ps[i].id)->status, 0);
    }
}

TEST(AgentCore, StalledStreamDoesNotBlockOtherProcesses) {
    AgentThread a;
    ClientOptions opts;
    opts.output_window = 64 << 10;
    auto c = a.client(opts);
    // Nobody consumes this one's output: it must stall in its pipe, not in the agent.
    const Started flood = c->start(ProcessSpec{.argv = {"yes", "flood"}});
    const Started other = c->start(ProcessSpec{.argv = {"seq", "1", "200000"}});
    const auto o = collect(*c, other.id, 60s);
    std::string want;
    for (int i = 1; i <= 200000; ++i) want += std::to_string(i) + "\n";
    EXPECT_EQ(o.out, want);
    EXPECT_EQ(o.status.status, 0);
    // The stalled process got no more than its window, and is still running.
    EXPECT_LE(c->peek_output(flood.id, kStdout).size(), opts.output_window);
    EXPECT_FALSE(c->exit_status(flood.id));
    bool running = false;
    for (const auto& info : c->list())
        if (info.id == flood.id) running = info.running;
    EXPECT_TRUE(running);
    // Draining it lets it continue.
    const std::string before(c->peek_output(flood.id, kStdout));
    c->consume_output(flood.id, kStdout, SIZE_MAX);
    read_until(*c, flood.id, "flood\n");
    c->signal(flood.id, SIGKILL);
    EXPECT_TRUE(c->wait(flood.id).signaled);
}

TEST(AgentCore, UnreadConnectionDoesNotBlockTheAgent) {
    AgentThread a;
    auto stuck = a.client();
    // This client never reads its socket again: its processes and its socket fill up.
    stuck->start(ProcessSpec{.argv = {"yes", "flood"}});
    stuck->start(ProcessSpec{.argv = {"yes", "flood"}});
    std::this_thread::sleep_for(200ms);
    auto c = a.client();
    for (int i = 0; i < 3; ++i) {
        const Started p = c->start(sh("echo hello " + std::to_string(i)));
        EXPECT_EQ(collect(*c, p.id, 20s).out, "hello " + std::to_string(i) + "\n");
    }
}

TEST(AgentCore, ListProcesses) {
    AgentThread a;
    auto c = a.client();
    const Started p1 = c->start(ProcessSpec{.argv = {"cat"}});
    const Started p2 = c->start(ProcessSpec{.argv = {"sleep", "100"}, .tty = true});
    auto list = c->list();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].id, p1.id);
    EXPECT_EQ(list[0].pid, p1.pid);
    EXPECT_EQ(list[0].argv, (std::vector<std::string>{"cat"}));
    EXPECT_TRUE(list[0].running);
    EXPECT_FALSE(list[0].tty);
    EXPECT_EQ(list[1].id, p2.id);
    EXPECT_TRUE(list[1].tty);

    c->close_stdin(p1.id);
    EXPECT_EQ(collect(*c, p1.id).status.status, 0);
    list = c->list();
    ASSERT_EQ(list.size(), 1u);  // waited for and drained: released
    EXPECT_EQ(list[0].id, p2.id);

    // An exited process nobody has waited for stays listed with its status.
    c->signal(p2.id, SIGKILL);
    for (int i = 0; i < 100; ++i) {
        list = c->list();
        if (!list.empty() && !list[0].running) break;
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_EQ(list.size(), 1u);
    EXPECT_FALSE(list[0].running);
    ASSERT_TRUE(list[0].exit);
    EXPECT_EQ(list[0].exit->signal, SIGKILL);
}

TEST(AgentCore, TtyProcessSeesResize) {
    AgentThread a;
    auto c = a.client();
    ProcessSpec s =
        sh("stty size; trap 'stty size; exit 0' WINCH; echo ready; "
           "while :; do sleep 0.05; done");
    s.tty = true;
    s.rows = 24;
    s.cols = 80;
    const Started p = c->start(s);
    const std::string first = read_until(*c, p.id, "ready");
    EXPECT_NE(first.find("24 80"), std::string::npos) << first;
    c->resize(p.id, 50, 132);
    const auto o = collect(*c, p.id);
    EXPECT_NE(o.out.find("50 132"), std::string::npos) << o.out;
    EXPECT_EQ(o.err, "");  // a tty has one output stream
    EXPECT_EQ(o.status.status, 0);
}

TEST(AgentCore, TtyIsControllingTerminalWithInput) {
    AgentThread a;
    auto c = a.client();
    ProcessSpec s =
        sh("test -t 0 && test -t 1 && test -t 2 && echo tty; read line; echo \"[$line]\"");
    s.tty = true;
    const Started p = c->start(s);
    read_until(*c, p.id, "tty");
    EXPECT_EQ(c->write_stdin(p.id, "hello\n"), 6u);
    const auto o = collect(*c, p.id);
    EXPECT_NE(o.out.find("[hello]"), std::string::npos) << o.out;
    EXPECT_THROW(c->resize(p.id, 1, 1), AgentError);  // the terminal is gone with the process
}

TEST(AgentCore, ResizeWithoutTtyIsAnError) {
    AgentThread a;
    auto c = a.client();
    const Started p = c->start(ProcessSpec{.argv = {"sleep", "100"}});
    try {
        c->resize(p.id, 10, 10);
        ADD_FAILURE() << "resize of a pipe process succeeded";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "not_tty");
    }
    c->signal(p.id, SIGKILL);
    c->wait(p.id);
}

TEST(AgentCore, ExecFailuresAreReportedAtStart) {
    AgentThread a;
    auto c = a.client();
    try {
        c->start(ProcessSpec{.argv = {"/no/such/program"}});
        ADD_FAILURE() << "started a missing program";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "exec_failed");
        EXPECT_EQ(e.stage(), "exec");
        EXPECT_EQ(e.error_number(), ENOENT);
        EXPECT_STREQ(e.what(), "/no/such/program: No such file or directory");
    }
    try {
        c->start(ProcessSpec{.argv = {"true"}, .cwd = "/no/such/dir"});
        ADD_FAILURE() << "started in a missing directory";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.stage(), "chdir");
        EXPECT_STREQ(e.what(), "chdir /no/such/dir: No such file or directory");
    }
    EXPECT_TRUE(c->list().empty());  // nothing left behind
}

TEST(AgentCore, EnvironmentCwdCredentialsAndLimits) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to change credentials";
    AgentThread a;
    auto c = a.client();
    ProcessSpec s = sh("echo $FOO; pwd; id -u; id -g; id -G; ulimit -n; ulimit -Hn");
    s.env = {"FOO=bar baz", "PATH=/usr/bin:/bin"};
    s.cwd = "/tmp";
    s.user = User{65534, 65534, {65534, 100}};
    s.rlimits = {{RLIMIT_NOFILE, 100, 200}};
    const Started p = c->start(s);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(o.out, "bar baz\n/tmp\n65534\n65534\n65534 100\n100\n200\n") << o.err;
    EXPECT_EQ(o.status.status, 0);
}

TEST(AgentCore, DefaultEnvironment) {
    AgentThread a;
    auto c = a.client();
    const auto o = collect(*c, c->start(sh("echo $PATH; echo $HOME; pwd")).id);
    EXPECT_EQ(o.out, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/root\n/\n");
}

TEST(AgentCore, NullStdio) {
    AgentThread a;
    auto c = a.client();
    ProcessSpec s = sh("cat; echo gone; echo err >&2; exit 4");
    s.stdin_mode = StdioMode::kNull;
    s.stdout_mode = StdioMode::kNull;
    const Started p = c->start(s);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(o.out, "");
    EXPECT_EQ(o.err, "err\n");
    EXPECT_EQ(o.status.status, 4);
    EXPECT_FALSE(c->stdin_open(p.id));  // the agent said so right after the start
    EXPECT_EQ(c->stdin_room(p.id), 0u);
}

TEST(AgentCore, KillGroupOnExitEndsBackgroundHolders) {
    AgentThread a;
    auto c = a.client();
    // Without it, the background sleep would hold stdout open for 100 s.
    ProcessSpec s = sh("sleep 100 & echo started");
    s.kill_group_on_exit = true;
    const auto start = std::chrono::steady_clock::now();
    const auto o = collect(*c, c->start(s).id, 20s);
    EXPECT_EQ(o.out, "started\n");
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(AgentCore, DisconnectClosesStreamsAndStatusStaysWaitable) {
    AgentThread a;
    std::uint32_t id;
    {
        auto c1 = a.client();
        id = c1->start(ProcessSpec{.argv = {"cat"}}).id;
    }  // connection closed: cat's stdin ends, so it exits 0
    auto c2 = a.client();
    EXPECT_EQ(c2->wait(id), (ExitStatus{0, false, 0, false}));
    // The status was handed out once; the record is gone now.
    for (int i = 0; i < 100 && !c2->list().empty(); ++i) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(c2->list().empty());
}

// A container's process across a checkpoint and restore: its connection goes, another
// takes over its streams, and nothing it wrote or was sent in between is lost.
TEST(AgentCore, DetachableProcessKeepsItsStreamsForAnAttach) {
    AgentThread a;
    std::uint32_t id;
    {
        auto c1 = a.client();
        ProcessSpec s = sh("echo one; read x; echo \"got $x\"; echo two >&2; read y; exit 3");
        s.detachable = true;
        id = c1->start(s).id;
        read_until(*c1, id, "one");
    }  // connection closed: the process keeps running, blocked on its stdin
    auto c2 = a.client();
    std::vector<ProcessInfo> procs;
    for (int i = 0; i < 200; ++i) {
        procs = c2->list();
        if (procs.size() == 1 && procs[0].attachable) break;
        std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(procs.size(), 1u);
    EXPECT_TRUE(procs[0].attachable);
    EXPECT_TRUE(procs[0].running);
    EXPECT_EQ(c2->attach(id).id, id);
    EXPECT_FALSE(c2->list()[0].attachable);
    // A second connection cannot take the streams away from a live one.
    auto c3 = a.client();
    try {
        c3->attach(id);
        ADD_FAILURE() << "attached twice";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "not_attachable");
    }
    EXPECT_EQ(c2->write_stdin(id, "hello\n"), 6u);
    read_until(*c2, id, "got hello");
    c2->write_stdin(id, "bye\n");
    const auto o = collect(*c2, id);
    EXPECT_EQ(o.err, "two\n");
    EXPECT_EQ(o.status.status, 3);
}

TEST(AgentCore, AttachNeedsADetachableProcessWithoutConnection) {
    AgentThread a;
    auto c1 = a.client();
    const Started plain = c1->start(sh("read x"));
    ProcessSpec s = sh("read x");
    s.detachable = true;
    const Started held = c1->start(s);
    auto c2 = a.client();
    for (const std::uint32_t id : {plain.id, held.id}) {
        try {
            c2->attach(id);
            ADD_FAILURE() << "attached to " << id;
        } catch (const AgentError& e) {
            EXPECT_EQ(e.code(), "not_attachable") << e.what();
        }
    }
    try {
        c2->attach(999);
        ADD_FAILURE() << "attached to an unknown process";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "not_found");
    }
    c1->close_stdin(plain.id);
    c1->close_stdin(held.id);
    EXPECT_EQ(collect(*c1, plain.id).status.status, 1);
    EXPECT_EQ(collect(*c1, held.id).status.status, 1);
}

TEST(AgentCore, DisconnectHangsUpATerminal) {
    AgentThread a;
    std::uint32_t id;
    {
        auto c1 = a.client();
        ProcessSpec s = sh("trap 'exit 9' HUP; echo ready; while :; do sleep 0.05; done");
        s.tty = true;
        id = c1->start(s).id;
        read_until(*c1, id, "ready");
    }
    auto c2 = a.client();
    const ExitStatus st = c2->wait(id);
    EXPECT_TRUE(st.status == 9 || (st.signaled && st.signal == SIGHUP)) << st.status;
}

TEST(AgentCore, DiscardedOutputGivesTheWriterEpipe) {
    AgentThread a;
    auto c = a.client();
    const Started p =
        c->start(sh("trap '' PIPE; echo first; sleep 0.2; "
                    "while echo more 2>/dev/null; do :; done; echo epipe >&2"));
    read_until(*c, p.id, "first");
    c->discard_output(p.id, kStdout);
    const auto o = collect(*c, p.id);
    EXPECT_EQ(o.err, "epipe\n");
}

TEST(AgentCore, WaitFromSecondConnectionAndManyWaiters) {
    AgentThread a;
    auto c1 = a.client();
    auto c2 = a.client();
    const Started p = c1->start(sh("read x; exit 5"));
    std::thread waiter([&] { EXPECT_EQ(c2->wait(p.id).status, 5); });
    std::this_thread::sleep_for(100ms);
    c1->write_stdin(p.id, "go\n");
    EXPECT_EQ(collect(*c1, p.id).status.status, 5);
    waiter.join();
}

TEST(AgentCore, UnknownProcessIsNotFound) {
    AgentThread a;
    auto c = a.client();
    for (auto call : {+[](Client& cl) { cl.wait(12345); }, +[](Client& cl) { cl.signal(12345, 9); },
                      +[](Client& cl) { cl.resize(12345, 1, 1); }}) {
        try {
            call(*c);
            ADD_FAILURE() << "no error for an unknown process";
        } catch (const AgentError& e) {
            EXPECT_EQ(e.code(), "not_found");
        }
    }
}

TEST(AgentCore, ProcessLimit) {
    AgentOptions o = test::quiet_options();
    o.max_processes = 3;
    AgentThread a(std::move(o));
    auto c = a.client();
    std::vector<Started> ps;
    for (int i = 0; i < 3; ++i) ps.push_back(c->start(ProcessSpec{.argv = {"sleep", "100"}}));
    try {
        c->start(ProcessSpec{.argv = {"true"}});
        ADD_FAILURE() << "started beyond the limit";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "limit");
    }
    // Waiting releases a slot.
    c->signal(ps[0].id, SIGKILL);
    c->wait(ps[0].id);
    const auto o2 = collect(*c, c->start(sh("echo again")).id);
    EXPECT_EQ(o2.out, "again\n");
}

TEST(AgentCore, ConnectionLimit) {
    AgentOptions o = test::quiet_options();
    o.max_connections = 2;
    AgentThread a(std::move(o));
    auto c1 = a.client();
    auto c2 = a.client();
    EXPECT_THROW(a.client(), ProtocolError);
    c1.reset();
    std::this_thread::sleep_for(50ms);
    EXPECT_NO_THROW(a.client());
}

TEST(AgentCore, ShutdownReturnsStatusAfterAcknowledging) {
    AgentThread a;
    auto c = a.client();
    auto other = a.client();
    c->start(ProcessSpec{.argv = {"sleep", "100"}});
    c->shutdown(42);
    EXPECT_EQ(a.join(), 42);
    EXPECT_THROW(other->list(), ProtocolError);
}

TEST(AgentCore, ListeningSocketAndAcceptFilter) {
    test::TempPath dir;
    const std::string path = dir.path + "/agent.sock";
    auto listen_at = [&](std::function<bool(const sockaddr_storage&, socklen_t)> filter) {
        guest::UniqueFd l(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        unlink(path.c_str());
        EXPECT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        EXPECT_EQ(listen(l.get(), 8), 0);
        AgentOptions o = test::quiet_options();
        o.listen_fd = std::move(l);
        o.accept_filter = std::move(filter);
        return o;
    };
    auto dial = [&] {
        UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        return fd;
    };
    {
        int seen_family = -1;
        AgentThread a(listen_at([&](const sockaddr_storage& peer, socklen_t) {
            seen_family = peer.ss_family;
            return true;
        }));
        Client c(dial());
        EXPECT_EQ(collect(c, c.start(sh("echo accepted")).id).out, "accepted\n");
        EXPECT_EQ(seen_family, AF_UNIX);
    }
    {
        AgentThread a(listen_at([](const sockaddr_storage&, socklen_t) { return false; }));
        EXPECT_THROW(Client{dial()}, ProtocolError);
    }
}

// Hostnames are VM-wide, so this agent runs in a child process with its own UTS namespace.
TEST(AgentCore, HostnameInOwnUtsNamespace) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a UTS namespace";
    auto [host, guest] = test::socket_pair();
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        host.reset();
        if (unshare(CLONE_NEWUTS) < 0) _exit(3);
        int status;
        {
            Agent agent(test::quiet_options());
            agent.add_connection(std::move(guest));
            status = agent.run();
        }
        _exit(status == 0 ? 0 : 4);
    }
    guest.reset();
    {
        Client c(std::move(host));
        ProcessSpec s{.argv = {"hostname"}, .hostname = "vessel-test-box"};
        EXPECT_EQ(collect(c, c.start(s).id).out, "vessel-test-box\n");
        c.shutdown(0);
    }
    int ws;
    ASSERT_EQ(waitpid(pid, &ws, 0), pid);
    EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
    char name[256] = {};
    gethostname(name, sizeof name - 1);
    EXPECT_STRNE(name, "vessel-test-box");
}

TEST(AgentCore, IdentityRequestsReachTheHookAndErrorsComeBack) {
    std::vector<Identity> seen;
    AgentOptions o = test::quiet_options();
    o.apply_identity = [&seen](const Identity& id, int* err) -> std::string {
        seen.push_back(id);
        if (id.hostname == "fail") {
            *err = EPERM;
            return "sethostname: Operation not permitted";
        }
        return {};
    };
    AgentThread a(std::move(o));
    auto c = a.client();
    Identity id;
    id.hostname = "clone-1";
    id.seed = {1, 2, 3};
    c->set_identity(id);
    id.hostname = "fail";
    try {
        c->set_identity(id);
        ADD_FAILURE() << "no error";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "identity_failed");
        EXPECT_EQ(e.error_number(), EPERM);
        EXPECT_NE(std::string(e.what()).find("sethostname"), std::string::npos);
    }
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].hostname, "clone-1");
    EXPECT_EQ(seen[0].seed, (std::vector<std::uint8_t>{1, 2, 3}));

    AgentThread plain;  // no hook: refused, not silently ignored
    auto p = plain.client();
    EXPECT_THROW(p->set_identity(Identity{.hostname = "x"}), AgentError);
}

TEST(AgentCore, RootRequestReachesTheHookOnce) {
    std::vector<RootRequest> seen;
    AgentOptions o = test::quiet_options();
    o.enter_root = [&seen](const RootRequest& r, int*) -> std::string {
        seen.push_back(r);
        return {};
    };
    AgentThread a(std::move(o));
    auto c = a.client();
    c->enter_root(RootRequest{.source = "/dev/vda", .readonly = true});
    try {
        c->enter_root(RootRequest{.source = "/dev/vdb"});
        ADD_FAILURE() << "a second root was accepted";
    } catch (const AgentError& e) {
        EXPECT_EQ(e.code(), "root_failed");
    }
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].source, "/dev/vda");
    EXPECT_TRUE(seen[0].readonly);
    AgentThread plain;
    EXPECT_THROW(plain.client()->enter_root(RootRequest{.source = "/dev/vda"}), AgentError);
}

// The real apply_identity() on a veth in private UTS, network and mount
// namespaces (root only): what a clone sees after `vessel restore --clone`.
TEST(AgentCore, ApplyIdentityChangesMacAddressRouteHostnameAndResolvConf) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, a veth pair)";
    test::TempPath dir;
    const std::string resolv = dir.path + "/resolv.conf", out = dir.path + "/out";
    { std::ofstream(resolv) << "nameserver 192.0.2.99\n"; }
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (unshare(CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWNS) < 0) _exit(3);
        if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) _exit(4);
        if (mount(resolv.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) < 0) _exit(5);
        if (std::system("ip link add d0 type veth peer name d1 && ip link set d1 up && ip link set "
                        "d0 up && "
                        "ip addr add 192.0.2.2/24 dev d0 && ip route add default via 192.0.2.1") !=
            0)
            _exit(6);
        Identity id;
        id.hostname = "clone-42";
        id.seed.assign(64, 0x5a);
        id.interfaces = {
            {"d0", "02:76:73:00:00:2a", "198.51.100.42/24", "198.51.100.1", {"198.51.100.53"}}};
        int err = 0;
        const std::string failed = apply_identity(id, &err);
        if (!failed.empty()) {
            std::fprintf(stderr, "apply_identity: %s\n", failed.c_str());
            _exit(7);
        }
        const std::string cmd =
            "{ ip -o link show d0 | sed 's/.*link.ether \\([^ ]*\\).*/\\1/'; hostname; ip -4 -o "
            "addr show "
            "d0 | awk '{print $4}'; ip route show default; cat "
            "/etc/resolv.conf; } > " +
            out;
        _exit(std::system(cmd.c_str()) == 0 ? 0 : 8);
    }
    int ws;
    ASSERT_EQ(waitpid(pid, &ws, 0), pid);
    ASSERT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text,
              "02:76:73:00:00:2a\nclone-42\n198.51.100.42/24\n"
              "default via 198.51.100.1 dev d0 \nnameserver 198.51.100.53\n");
}

}  // namespace
}  // namespace vessel::agent
