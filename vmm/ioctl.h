// ioctl retried on EINTR, for the KVM wrappers in vmm/.
#pragma once

#include <sys/ioctl.h>

#include <cerrno>

namespace vessel::vmm {

template <typename... A>
int xioctl(int fd, unsigned long req, A... args) {
    int r;
    do {
        r = ::ioctl(fd, req, args...);
    } while (r < 0 && errno == EINTR);
    return r;
}

}  // namespace vessel::vmm
