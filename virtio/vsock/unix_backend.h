// The host side of virtio-vsock: Unix stream sockets ("hybrid vsock", as Firecracker calls it).
//
// - Host -> guest: the device listens on `uds_path`. A host program connects, writes
//   "CONNECT <port>\n" (port in decimal) and waits. The device sends REQUEST to that guest
//   port; on the guest's RESPONSE the host reads "OK <host_port>\n" (the port the device
//   assigned to the host end), and from then on the socket is a plain byte stream. If the
//   guest refuses (RST) or does not answer in time, the socket is closed without a reply.
// - Guest -> host: a guest connect() to CID 2 port P makes the device connect to the Unix
//   socket "<uds_path>_<P>"; if nothing accepts there, the guest gets RST (ECONNRESET).
//
// - A jailed VMM cannot see "<uds_path>_<P>" (its root holds only uds_path itself): a broker
//   outside the jail (the jailer's parent, `vessel boot --jail`) connects for it and passes
//   the socket back over a SOCK_SEQPACKET pair (UnixListener::set_broker).
//
// Every socket is non-blocking and close-on-exec, and writes use MSG_NOSIGNAL: a host peer
// that goes away gives EPIPE, never SIGPIPE.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/fd.h"

namespace vessel::virtio::vsock {

// The handshake line a host client sends (without reading past it, data may follow at once).
inline constexpr size_t kMaxConnectLine = 32;
// "CONNECT <port>\n": exactly one space, then 1 to 10 decimal digits of a value below
// 0xffffffff (VMADDR_PORT_ANY), then '\n' (included in `line`); nothing else.
std::optional<uint32_t> parse_connect_line(std::string_view line);
// "OK <port>\n".
std::string ok_line(uint32_t port);

// Longest uds_path that leaves room for "_4294967295" in sockaddr_un.sun_path.
size_t max_uds_path_length();

// The listening socket on uds_path. Owned by the device for its whole life.
class UnixListener {
  public:
    // Binds and listens. A stale socket file (nobody accepting) is replaced; a live one, or any
    // other file, is an error. Throws std::system_error naming the path.
    explicit UnixListener(std::string path);
    ~UnixListener();  // unlinks the socket file if it is still the one we bound
    UnixListener(const UnixListener&) = delete;
    UnixListener& operator=(const UnixListener&) = delete;

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }

    // The next pending connection (non-blocking), or an invalid fd with errno set (EAGAIN when
    // none is pending).
    UniqueFd accept() const;
    // Connects (non-blocking) to "<path>_<port>". Invalid fd and `err` set on failure (Unix
    // stream connects do not go in progress: a full backlog is EAGAIN, a refusal immediate).
    UniqueFd connect_port(uint32_t port, int& err) const;
    // From now on connect_port() asks the broker at `fd` (not owned; it outlives the listener).
    void set_broker(int fd) { broker_ = fd; }

  private:
    std::string path_;
    UniqueFd fd_;
    int broker_ = -1;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

// The broker's protocol: a request is the port (u32, host order); the answer is an errno (int,
// 0 on success) with the connected socket attached (SCM_RIGHTS) on success.
// Asks the broker on `broker` to connect to "<uds_path>_<port>"; an invalid fd and `err` on
// failure (EIO when the broker is gone or answers nonsense).
UniqueFd broker_connect(int broker, uint32_t port, int& err);
// Answers one request read from `broker` by connecting to "<base>_<port>" (non-blocking, as
// connect_port does). False when the peer has gone (EOF or an error): stop serving. Only
// ports are accepted, never paths, so the jailed side cannot name another socket.
bool broker_serve_one(int broker, const std::string& base);

// sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT) of an iovec array (at most IOV_MAX entries are used).
ssize_t send_iov(int fd, const iovec* iov, size_t n);
// readv (non-blocking fds only), at most IOV_MAX entries.
ssize_t recv_iov(int fd, const iovec* iov, size_t n);

// Bytes owed to a host socket that would not take them yet. The device bounds it: guest bytes
// by the credit it advertised, plus the short "OK" line.
class WriteBuffer {
  public:
    bool empty() const { return off_ == data_.size(); }
    size_t size() const { return data_.size() - off_; }
    // Appends bytes [skip, end) of the iovec array.
    void append(const iovec* iov, size_t n, size_t skip);
    void append(std::string_view s);
    // Writes as much as the socket takes. Returns the bytes written, or -1 with errno for an
    // error other than EAGAIN.
    ssize_t flush(int fd);
    void clear();

  private:
    std::vector<uint8_t> data_;
    size_t off_ = 0;
};

}  // namespace vessel::virtio::vsock
