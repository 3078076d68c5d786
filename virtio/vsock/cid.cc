#include "virtio/vsock/cid.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <system_error>

namespace vessel::virtio::vsock {

CidLease CidLease::acquire(const std::string& runtime_dir, uint64_t first, uint32_t count) {
    if (first < 3 || first + count > 0xffffffffull)
        throw std::system_error(EINVAL, std::generic_category(),
                                "virtio-vsock: CID range must lie in 3..4294967294");
    if (::mkdir(runtime_dir.c_str(), 0700) < 0 && errno != EEXIST)
        throw_errno("creating the vsock CID directory " + runtime_dir);
    for (uint64_t cid = first; cid < first + count; ++cid) {
        std::string path = runtime_dir + "/vsock-cid-" + std::to_string(cid) + ".lock";
        UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) throw_errno("opening the vsock CID lock " + path);
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0)
            return CidLease(std::move(fd), cid, std::move(path));
        if (errno != EWOULDBLOCK) throw_errno("locking the vsock CID lock " + path);
    }
    throw std::system_error(EADDRINUSE, std::generic_category(),
                            "virtio-vsock: no free guest CID in " + runtime_dir);
}

}  // namespace vessel::virtio::vsock
