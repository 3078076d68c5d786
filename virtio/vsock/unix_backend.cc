#include "virtio/vsock/unix_backend.h"

#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace vessel::virtio::vsock {

namespace {

constexpr std::string_view kConnect = "CONNECT ";
constexpr size_t kMaxPortSuffix = 11;  // "_4294967295"

sockaddr_un make_addr(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());  // callers checked the length
    return a;
}

UniqueFd make_socket(const std::string& what) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("creating a Unix socket for " + what);
    return fd;
}

// A socket file nobody accepts on: left behind by a VMM that died.
bool is_stale_socket(const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) < 0 || !S_ISSOCK(st.st_mode)) return false;
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return false;
    sockaddr_un a = make_addr(path);
    return ::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 &&
           errno == ECONNREFUSED;
}

}  // namespace

std::optional<uint32_t> parse_connect_line(std::string_view line) {
    if (line.size() > kMaxConnectLine || !line.starts_with(kConnect) || !line.ends_with('\n'))
        return std::nullopt;
    std::string_view digits = line.substr(kConnect.size(), line.size() - kConnect.size() - 1);
    if (digits.empty() || digits.size() > 10) return std::nullopt;
    uint64_t v = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (v >= 0xffffffffull) return std::nullopt;
    return static_cast<uint32_t>(v);
}

std::string ok_line(uint32_t port) {
    return "OK " + std::to_string(port) + "\n";
}

size_t max_uds_path_length() {
    return sizeof(sockaddr_un::sun_path) - 1 - kMaxPortSuffix;
}

UnixListener::UnixListener(std::string path) : path_(std::move(path)) {
    if (path_.empty())
        throw std::system_error(EINVAL, std::generic_category(),
                                "virtio-vsock: the Unix socket path is empty");
    if (path_.size() > max_uds_path_length())
        throw std::system_error(ENAMETOOLONG, std::generic_category(),
                                "virtio-vsock: Unix socket path " + path_ + " is longer than " +
                                    std::to_string(max_uds_path_length()) + " bytes");
    fd_ = make_socket("the vsock listener " + path_);
    sockaddr_un a = make_addr(path_);
    auto do_bind = [&] { return ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a); };
    if (do_bind() < 0) {
        if (errno != EADDRINUSE) throw_errno("binding the vsock socket " + path_);
        if (!is_stale_socket(path_))
            throw_errno("binding the vsock socket " + path_ + " (in use)", EADDRINUSE);
        if (::unlink(path_.c_str()) < 0 && errno != ENOENT)
            throw_errno("removing the stale vsock socket " + path_);
        if (do_bind() < 0) throw_errno("binding the vsock socket " + path_);
    }
    struct stat st;
    if (::stat(path_.c_str(), &st) == 0) {
        dev_ = st.st_dev;
        ino_ = st.st_ino;
    }
    if (::listen(fd_.get(), 128) < 0) {
        const int err = errno;
        ::unlink(path_.c_str());
        throw_errno("listening on the vsock socket " + path_, err);
    }
}

UnixListener::~UnixListener() {
    struct stat st;
    // Leave the path alone if someone replaced our socket with something else.
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
        ::unlink(path_.c_str());
}

UniqueFd UnixListener::accept() const {
    for (;;) {
        int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0 || errno != EINTR) return UniqueFd(fd);
    }
}

namespace {

UniqueFd connect_to(const std::string& base, uint32_t port, int& err) {
    const std::string target = base + "_" + std::to_string(port);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        err = errno;
        return fd;
    }
    sockaddr_un a = make_addr(target);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        err = errno;
        return UniqueFd();
    }
    err = 0;
    return fd;
}

}  // namespace

UniqueFd UnixListener::connect_port(uint32_t port, int& err) const {
    return broker_ >= 0 ? broker_connect(broker_, port, err) : connect_to(path_, port, err);
}

UniqueFd broker_connect(int broker, uint32_t port, int& err) {
    iovec req{&port, sizeof port};
    msghdr rm{};
    rm.msg_iov = &req;
    rm.msg_iovlen = 1;
    ssize_t n;
    do n = ::sendmsg(broker, &rm, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != sizeof port) {
        err = EIO;
        return UniqueFd();
    }
    int answer = 0;
    iovec iov{&answer, sizeof answer};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    do n = ::recvmsg(broker, &m, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    UniqueFd fd;
    for (cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&m) : nullptr; c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int))) {
            int got;
            std::memcpy(&got, CMSG_DATA(c), sizeof got);
            fd.reset(got);
        }
    }
    if (n != sizeof answer || (answer == 0) != static_cast<bool>(fd)) {
        err = n == sizeof answer && answer != 0 ? answer : EIO;
        return UniqueFd();
    }
    err = answer;
    return fd;
}

bool broker_serve_one(int broker, const std::string& base) {
    uint32_t port = 0;
    ssize_t n;
    do n = ::recv(broker, &port, sizeof port, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    int err = EINVAL;
    UniqueFd fd;
    if (n == sizeof port) fd = connect_to(base, port, err);
    iovec iov{&err, sizeof err};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (fd) {
        m.msg_control = ctl;
        m.msg_controllen = sizeof ctl;
        cmsghdr* c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        const int raw = fd.get();
        std::memcpy(CMSG_DATA(c), &raw, sizeof raw);
    }
    do n = ::sendmsg(broker, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == sizeof err;
}

ssize_t send_iov(int fd, const iovec* iov, size_t n) {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(iov);
    m.msg_iovlen = std::min<size_t>(n, IOV_MAX);
    for (;;) {
        ssize_t r = ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r >= 0 || errno != EINTR) return r;
    }
}

ssize_t recv_iov(int fd, const iovec* iov, size_t n) {
    for (;;) {
        ssize_t r = ::readv(fd, iov, static_cast<int>(std::min<size_t>(n, IOV_MAX)));
        if (r >= 0 || errno != EINTR) return r;
    }
}

void WriteBuffer::append(const iovec* iov, size_t n, size_t skip) {
    // Compact before growing: the buffer stays near its bound instead of creeping.
    if (off_ > 0 && off_ >= data_.size() / 2) {
        data_.erase(data_.begin(), data_.begin() + static_cast<ptrdiff_t>(off_));
        off_ = 0;
    }
    for (size_t i = 0; i < n; ++i) {
        const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        data_.insert(data_.end(), p + skip, p + len);
        skip = 0;
    }
}

void WriteBuffer::append(std::string_view s) {
    iovec v{const_cast<char*>(s.data()), s.size()};
    append(&v, 1, 0);
}

ssize_t WriteBuffer::flush(int fd) {
    size_t total = 0;
    while (!empty()) {
        iovec v{data_.data() + off_, size()};
        ssize_t r = send_iov(fd, &v, 1);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        off_ += static_cast<size_t>(r);
        total += static_cast<size_t>(r);
    }
    if (empty()) clear();
    return static_cast<ssize_t>(total);
}

void WriteBuffer::clear() {
    data_.clear();
    off_ = 0;
}

}  // namespace vessel::virtio::vsock
