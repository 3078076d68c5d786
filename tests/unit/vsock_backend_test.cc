// The virtio-vsock host side (virtio/vsock/unix_backend.h, cid.h) on real Unix sockets: the
// handshake line, the listener's set-up rules, connects to <uds>_<port>, the write buffer, and
// CID leases.
#include "virtio/vsock/unix_backend.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "tests/unit/vsock_test_util.h"
#include "virtio/vsock/cid.h"

namespace vessel::virtio::vsock {
namespace {

using testing::TempDir;

TEST(ConnectLineTest, Valid) {
    EXPECT_EQ(parse_connect_line("CONNECT 52\n"), 52u);
    EXPECT_EQ(parse_connect_line("CONNECT 0\n"), 0u);
    EXPECT_EQ(parse_connect_line("CONNECT 007\n"), 7u);
    EXPECT_EQ(parse_connect_line("CONNECT 4294967294\n"), 4294967294u);
    EXPECT_EQ(ok_line(1073741824), "OK 1073741824\n");
}

TEST(ConnectLineTest, Invalid) {
    for (const char* bad :
         {"CONNECT 4294967295\n", "CONNECT 99999999999\n", "CONNECT\n", "CONNECT \n", "CONNECT 12",
          "CONNECT 12\r\n", "connect 12\n", "CONNECT -1\n", "CONNECT +1\n", "CONNECT  1\n",
          "CONNECT 1 \n", "CONNECT 0x10\n", "CONNECT 1\n\n", "", "\n",
          "CONNECT 00000000000000000000000001\n"}) {
        EXPECT_FALSE(parse_connect_line(bad)) << bad;
    }
}

TEST(UnixListenerTest, ListensAcceptsAndCleansUp) {
    TempDir dir;
    const std::string path = dir.path() + "/v.sock";
    {
        UnixListener l(path);
        struct stat st;
        ASSERT_EQ(::stat(path.c_str(), &st), 0);
        EXPECT_TRUE(S_ISSOCK(st.st_mode));
        errno = 0;
        EXPECT_FALSE(l.accept());
        EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
        UniqueFd client = testing::connect_unix(path);
        UniqueFd server = l.accept();
        ASSERT_TRUE(server);
        EXPECT_TRUE(::fcntl(server.get(), F_GETFL) & O_NONBLOCK);
        EXPECT_TRUE(::fcntl(server.get(), F_GETFD) & FD_CLOEXEC);
        // A second listener on a live socket is refused.
        try {
            UnixListener again(path);
            ADD_FAILURE() << "bound a live socket twice";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EADDRINUSE);
            EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
        }
    }
    struct stat st;
    EXPECT_NE(::stat(path.c_str(), &st), 0) << "socket file left behind";
}

TEST(UnixListenerTest, ReplacesAStaleSocketButNotOtherFiles) {
    TempDir dir;
    const std::string path = dir.path() + "/v.sock";
    {
        // A socket file whose owner died.
        UniqueFd dead = testing::listen_unix(path);
    }
    EXPECT_NO_THROW(UnixListener l(path));

    const std::string file = dir.path() + "/plain";
    std::ofstream(file) << "data";
    EXPECT_THROW(UnixListener l(file), std::system_error);
    std::ifstream in(file);
    std::string s;
    in >> s;
    EXPECT_EQ(s, "data");
}

TEST(UnixListenerTest, LeavesAReplacedPathAlone) {
    TempDir dir;
    const std::string path = dir.path() + "/v.sock";
    auto l = std::make_unique<UnixListener>(path);
    ::unlink(path.c_str());
    std::ofstream(path) << "mine";
    l.reset();
    struct stat st;
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
}

TEST(UnixListenerTest, PathChecks) {
    try {
        UnixListener l("");
        ADD_FAILURE();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EINVAL);
    }
    try {
        UnixListener l("/tmp/" + std::string(max_uds_path_length(), 'x'));
        ADD_FAILURE();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENAMETOOLONG);
    }
    try {
        UnixListener l("/nonexistent-dir/v.sock");
        ADD_FAILURE();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), ENOENT);
    }
}

TEST(UnixListenerTest, ConnectsToPortSockets) {
    TempDir dir;
    const std::string path = dir.path() + "/v.sock";
    UnixListener l(path);
    int err = 0;
    EXPECT_FALSE(l.connect_port(5000, err));
    EXPECT_EQ(err, ENOENT);
    UniqueFd server = testing::listen_unix(path + "_5000");
    UniqueFd c = l.connect_port(5000, err);
    ASSERT_TRUE(c) << std::strerror(err);
    EXPECT_EQ(err, 0);
    EXPECT_TRUE(::fcntl(c.get(), F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(testing::accept_within(server.get(), std::chrono::milliseconds(1000)));
    server.reset();  // file left, nobody listening
    EXPECT_FALSE(l.connect_port(5000, err));
    EXPECT_EQ(err, ECONNREFUSED);
}

// A jailed VMM's listener connects through the broker on the other side of a socket pair
// (the jailer's parent): the same results as a direct connect, errors included.
TEST(UnixListenerTest, ConnectsThroughTheBroker) {
    TempDir dir;
    const std::string path = dir.path() + "/v.sock";
    int sp[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
    UniqueFd jailed(sp[0]), outside(sp[1]);
    std::thread broker([&] {
        while (broker_serve_one(outside.get(), path)) {
        }
    });
    {
        UnixListener l(dir.path() + "/other.sock");  // its own path does not matter now
        l.set_broker(jailed.get());
        int err = 0;
        EXPECT_FALSE(l.connect_port(5000, err));
        EXPECT_EQ(err, ENOENT);
        UniqueFd server = testing::listen_unix(path + "_5000");
        UniqueFd c = l.connect_port(5000, err);
        ASSERT_TRUE(c) << std::strerror(err);
        EXPECT_EQ(err, 0);
        EXPECT_TRUE(::fcntl(c.get(), F_GETFL) & O_NONBLOCK);
        EXPECT_TRUE(::fcntl(c.get(), F_GETFD) & FD_CLOEXEC);
        EXPECT_TRUE(testing::accept_within(server.get(), std::chrono::milliseconds(1000)));
        server.reset();
        EXPECT_FALSE(l.connect_port(5000, err));
        EXPECT_EQ(err, ECONNREFUSED);
    }
    jailed.reset();  // the VMM is gone: the broker stops
    broker.join();
    // A broker that is gone is an I/O error, not a hang.
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
    UniqueFd a(sp[0]), b(sp[1]);
    b.reset();
    int err = 0;
    EXPECT_FALSE(broker_connect(a.get(), 1, err));
    EXPECT_EQ(err, EIO);
}

TEST(WriteBufferTest, AppendsSkipsAndFlushes) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    WriteBuffer w;
    EXPECT_TRUE(w.empty());
    uint8_t x[] = {1, 2, 3}, y[] = {4, 5};
    iovec iov[] = {{x, 3}, {y, 2}};
    w.append(iov, 2, 2);  // skips 1, 2
    w.append("ab");
    EXPECT_EQ(w.size(), 5u);
    EXPECT_EQ(w.flush(a.get()), 5);
    EXPECT_TRUE(w.empty());
    uint8_t got[8];
    ASSERT_EQ(::read(b.get(), got, sizeof got), 5);
    EXPECT_EQ(std::vector<uint8_t>(got, got + 5), (std::vector<uint8_t>{3, 4, 5, 'a', 'b'}));
}

TEST(WriteBufferTest, PartialFlushWhenThePeerIsFullAndEpipeWithoutSignal) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    UniqueFd a(sv[0]), b(sv[1]);
    auto data = testing::random_bytes(8 << 20, 1);
    WriteBuffer w;
    iovec v{data.data(), data.size()};
    w.append(&v, 1, 0);
    ssize_t n = w.flush(a.get());
    ASSERT_GT(n, 0);
    ASSERT_LT(static_cast<size_t>(n), data.size());
    EXPECT_EQ(w.size(), data.size() - static_cast<size_t>(n));
    EXPECT_EQ(w.flush(a.get()), 0);  // still full: EAGAIN is not an error
    // Read everything back in order.
    std::vector<uint8_t> back;
    std::vector<uint8_t> buf(1 << 16);
    while (back.size() < data.size()) {
        ssize_t r = ::read(b.get(), buf.data(), buf.size());
        if (r > 0) back.insert(back.end(), buf.begin(), buf.begin() + r);
        ASSERT_GE(w.flush(a.get()), 0);
    }
    EXPECT_EQ(back, data);
    // The peer goes away: EPIPE, and the process is still here (no SIGPIPE).
    b.reset();
    w.append("more");
    errno = 0;
    EXPECT_EQ(w.flush(a.get()), -1);
    EXPECT_EQ(errno, EPIPE);
    uint8_t z = 0;
    iovec zv{&z, 1};
    EXPECT_EQ(send_iov(a.get(), &zv, 1), -1);
}

TEST(CidLeaseTest, DistinctWhileHeldReusedAfter) {
    TempDir dir;
    const std::string runtime = dir.path() + "/run";
    auto a = std::make_unique<CidLease>(CidLease::acquire(runtime));
    EXPECT_EQ(a->cid(), 3u);
    CidLease b = CidLease::acquire(runtime);
    EXPECT_EQ(b.cid(), 4u);
    struct stat st;
    ASSERT_EQ(::stat(runtime.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    a.reset();
    CidLease c = CidLease::acquire(runtime);
    EXPECT_EQ(c.cid(), 3u);
    try {
        CidLease::acquire(runtime, 3, 2);
        ADD_FAILURE() << "range exhausted";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EADDRINUSE);
    }
    EXPECT_THROW(CidLease::acquire(runtime, 2, 5), std::system_error);
}

}  // namespace
}  // namespace vessel::virtio::vsock
