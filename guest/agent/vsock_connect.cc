// connect_vsock_uds(): the VMM's host-initiated vsock handshake, with retries while the
// guest boots.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>

#include "guest/agent/client.h"

namespace vessel::agent {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxReplyLine = 64;

int ms_left(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
}

// Outcome of one attempt: connected, worth retrying (not listening yet), or fatal.
enum class Attempt { kConnected, kRetry, kFatal };

Attempt try_once(const std::string& path, std::uint32_t port, Clock::time_point deadline,
                 UniqueFd& out, std::string& why) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) {
        why = "socket path too long: " + path;
        return Attempt::kFatal;
    }
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) throw_errno("creating a Unix socket");
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        const int e = errno;
        why = "connect " + path + ": " + strerror(e);
        // The VMM may not have created its socket yet, or its backlog is full.
        if (e == ENOENT || e == ECONNREFUSED || e == EAGAIN) return Attempt::kRetry;
        if (e != EINPROGRESS) return Attempt::kFatal;
    }

    const std::string request = "CONNECT " + std::to_string(port) + "\n";
    std::size_t sent = 0;
    std::string line;
    while (line.empty() || line.back() != '\n') {
        const bool sending = sent < request.size();
        pollfd p{fd.get(), static_cast<short>(sending ? POLLOUT : POLLIN), 0};
        const int n = poll(&p, 1, ms_left(deadline));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("polling " + path);
        if (n == 0) {
            why = "no reply to CONNECT " + std::to_string(port) + " from " + path;
            return Attempt::kRetry;
        }
        if (sending) {
            const ssize_t w = send(fd.get(), request.data() + sent, request.size() - sent,
                                   MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (w < 0) {
                why = "sending CONNECT: " + std::string(strerror(errno));
                return Attempt::kRetry;
            }
            sent += static_cast<std::size_t>(w);
            continue;
        }
        // One byte at a time: whatever follows the newline belongs to the guest's stream.
        char c;
        const ssize_t r = recv(fd.get(), &c, 1, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) {
            // The VMM hangs up when nothing listens on the port in the guest (yet).
            why = "vsock port " + std::to_string(port) + " refused the connection" +
                  (r < 0 ? std::string(" (") + strerror(errno) + ")" : std::string());
            return Attempt::kRetry;
        }
        line += c;
        if (line.size() > kMaxReplyLine) {
            why = "reply to CONNECT too long";
            return Attempt::kFatal;
        }
    }
    line.pop_back();
    const std::string_view digits = std::string_view(line).substr(std::min<size_t>(3, line.size()));
    if (line.rfind("OK ", 0) != 0 || digits.empty() ||
        digits.find_first_not_of("0123456789") != std::string_view::npos) {
        why = "unexpected reply to CONNECT: \"" + line + "\"";
        return Attempt::kFatal;
    }
    out = std::move(fd);
    return Attempt::kConnected;
}

}  // namespace

UniqueFd connect_vsock_uds(const std::string& uds_path, std::uint32_t port,
                           std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    auto backoff = std::chrono::milliseconds(10);
    std::string why;
    for (;;) {
        UniqueFd fd;
        switch (try_once(uds_path, port, deadline, fd, why)) {
            case Attempt::kConnected: {
                // Hand it over blocking; the Client sets its own flags.
                const int flags = fcntl(fd.get(), F_GETFL);
                if (flags >= 0) fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
                return fd;
            }
            case Attempt::kFatal:
                throw std::system_error(ECONNREFUSED, std::generic_category(), why);
            case Attempt::kRetry:
                break;
        }
        const int left = ms_left(deadline);
        if (left == 0)
            throw std::system_error(ETIMEDOUT, std::generic_category(),
                                    "connecting to vsock port " + std::to_string(port) + " via " +
                                        uds_path + ": " + why);
        std::this_thread::sleep_for(std::min(backoff, std::chrono::milliseconds(left)));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
    }
}

}  // namespace vessel::agent
