#include "guest/agent/guest_main.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
// clang-format off: vm_sockets.h needs sockaddr from sys/socket.h first.
#include <linux/vm_sockets.h>
// clang-format on

#include <exception>
#include <string_view>

#include "guest/agent/agent.h"
#include "guest/init/protocol.h"

namespace vessel::agent {
namespace {

using guest::UniqueFd;

void say(std::string_view a, std::string_view b = {}) {
    std::string s = "vessel-agent: ";
    s.append(a);
    s.append(b);
    s += '\n';
    (void)!write(STDERR_FILENO, s.data(), s.size());
}

UniqueFd listen_vsock(std::uint32_t port) {
    UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        say("socket(AF_VSOCK): ", strerror(errno));
        return {};
    }
    sockaddr_vm addr{};
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = VMADDR_CID_ANY;
    addr.svm_port = port;
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
        say("bind vsock port " + std::to_string(port) + ": ", strerror(errno));
        return {};
    }
    if (listen(fd.get(), 64) < 0) {
        say("listen: ", strerror(errno));
        return {};
    }
    return fd;
}

UniqueFd listen_unix(const std::string& path) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    if (!fd || path.size() >= sizeof addr.sun_path) {
        say("cannot listen on ", path);
        return {};
    }
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    unlink(path.c_str());
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0 ||
        listen(fd.get(), 64) < 0) {
        say("listen on " + path + ": ", strerror(errno));
        return {};
    }
    return fd;
}

}  // namespace

int serve_guest(const ListenAddress& address) {
    try {
        AgentOptions opts;
        opts.listen_fd = address.unix_path.empty() ? listen_vsock(address.vsock_port)
                                                   : listen_unix(address.unix_path);
        if (!opts.listen_fd) return guest::kStatusInitFailure;
        opts.raise_nofile = true;
        opts.apply_identity = apply_identity;
        if (address.unix_path.empty()) {
            // Guest processes can reach this port too (vsock loopback, CID 1 or our own CID);
            // only the host may command the agent, which runs everything as root.
            opts.accept_filter = [](const sockaddr_storage& peer, socklen_t len) {
                const auto* vm = reinterpret_cast<const sockaddr_vm*>(&peer);
                return len >= sizeof(sockaddr_vm) && vm->svm_family == AF_VSOCK &&
                       vm->svm_cid == VMADDR_CID_HOST;
            };
        }
        Agent agent(std::move(opts));
        say(address.unix_path.empty()
                ? "listening on vsock port " + std::to_string(address.vsock_port)
                : "listening on " + address.unix_path);
        const int status = agent.run();
        sync();
        // No unwinding: the processes still running are init's to terminate gracefully,
        // where the agent's destructor would SIGKILL them.
        _exit(status < 0 ? guest::kStatusInitFailure : status);
    } catch (const std::exception& e) {
        say("fatal: ", e.what());
    }
    return guest::kStatusInitFailure;
}

}  // namespace vessel::agent
