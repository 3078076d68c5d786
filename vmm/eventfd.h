// Eventfds as the devices use them: non-blocking, close-on-exec wake-up counters.
#pragma once

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "fd.h"

namespace vessel {

// Throws std::system_error naming `what` (e.g. "creating the virtio-net stop eventfd").
inline UniqueFd make_eventfd(const char* what) {
    UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!fd) throw_errno(what);
    return fd;
}

// Resets the counter (after a poll said readable).
inline void eventfd_drain(int efd) {
    uint64_t v;
    while (::read(efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
}

// Wakes whoever polls it. Fails only when the counter is already huge, i.e. readable anyway.
inline void eventfd_poke(int efd) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(efd, &one, sizeof one);
}

}  // namespace vessel
