// The agent as a guest service: listen, serve, and hand the shutdown status to init.
#pragma once

#include <cstdint>
#include <string>

namespace vessel::agent {

struct ListenAddress {
    std::uint32_t vsock_port = 0;  // AF_VSOCK, any CID
    std::string unix_path;         // instead of vsock when non-empty (init tests on the host)
};

// The body of init's agent child. Serves until a shutdown request, then sync()s and
// _exit()s with its status (0..255); returns kStatusInitFailure (125) if it cannot listen.
int serve_guest(const ListenAddress& address);

}  // namespace vessel::agent
