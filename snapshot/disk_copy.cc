#include "snapshot/disk_copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <vector>

#include "vmm/fd.h"

namespace vessel::snapshot {
namespace {

[[noreturn]] void fail(const std::string& what, int e = errno) {
    throw std::system_error(e, std::generic_category(), what);
}

// Data ranges of `in` copied to the same offsets of `out`; holes are skipped.
uint64_t sparse_copy(int in, int out, off_t size, const std::string& from) {
    uint64_t copied = 0;
    off_t pos = 0;
    std::vector<char> buf(1 << 20);
    while (pos < size) {
        off_t data = ::lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // only a hole is left
            fail("finding data in " + from);
        }
        off_t hole = ::lseek(in, data, SEEK_HOLE);
        if (hole < 0) fail("finding a hole in " + from);
        off_t off_in = data, off_out = data;
        while (off_in < hole) {
            ssize_t n = ::copy_file_range(in, &off_in, out, &off_out,
                                          static_cast<size_t>(hole - off_in), 0);
            if (n < 0 && (errno == EXDEV || errno == EOPNOTSUPP || errno == EINVAL)) {
                // Between file systems of different kinds (tmpfs to overlay, ...) the kernel
                // does not copy for us.
                n = ::pread(in, buf.data(), std::min<size_t>(buf.size(), hole - off_in), off_in);
                if (n > 0 && ::pwrite(out, buf.data(), static_cast<size_t>(n), off_out) != n)
                    fail("writing the copy of " + from);
                if (n > 0) {
                    off_in += n;
                    off_out += n;
                }
            }
            if (n < 0) fail("copying " + from);
            if (n == 0) break;  // the file shrank under us
            copied += static_cast<uint64_t>(n);
        }
        pos = hole;
    }
    return copied;
}

}  // namespace

uint64_t copy_disk(const std::string& from, const std::string& to) {
    UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) fail("opening disk " + from);
    struct stat st {};
    if (::fstat(in.get(), &st) < 0) fail("stat " + from);
    if (!S_ISREG(st.st_mode))
        fail("disk " + from + " is not an image file (block devices are not copied)", EINVAL);
    UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) fail("creating " + to);
    try {
        uint64_t copied = 0;
        if (::ioctl(out.get(), FICLONE, in.get()) != 0) {
            // No shared extents here (ext4, tmpfs, another file system): copy the data.
            if (::ftruncate(out.get(), st.st_size) < 0) fail("sizing " + to);
            copied = sparse_copy(in.get(), out.get(), st.st_size, from);
        }
        if (::fsync(out.get()) < 0) fail("syncing " + to);
        return copied;
    } catch (...) {
        ::unlink(to.c_str());
        throw;
    }
}

bool disk_in_use(const std::string& path) {
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    return f && ::flock(f.get(), LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

void revert_disk(const std::string& copy, const std::string& path) {
    // The lock a running VM's disk holds (virtio/block/disk.cc): shared for read-only
    // disks, exclusive otherwise. Either way, its disk must not change under it.
    UniqueFd cur(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (cur && ::flock(cur.get(), LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK) fail("disk " + path + " is in use by a running VM", EBUSY);
        fail("locking disk " + path);
    }
    const std::string tmp = path + ".vessel-revert";
    ::unlink(tmp.c_str());  // left by a revert that was killed
    copy_disk(copy, tmp);
    if (::rename(tmp.c_str(), path.c_str()) < 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        fail("replacing disk " + path, e);
    }
}

}  // namespace vessel::snapshot
