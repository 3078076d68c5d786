// The guest side of the "root" request (warm start): after a VM is restored from a template
// the agent puts its processes into the container's disk, as vessel-init does at a cold boot
// (guest/init/init.cc, switch_to_disk_root), except that the agent binds the kernel file
// systems instead of moving them (PID 1 keeps its own view) and only the agent chroots.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "guest/agent/agent.h"
#include "guest/init/protocol.h"
#include "guest/init/unique_fd.h"

namespace vessel::agent {
namespace {

std::string failed(const std::string& what, int* err) {
    const int e = errno;
    if (err) *err = e;
    return what + ": " + std::strerror(e);
}

void sleep_ms(long ms) {
    timespec ts{ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, nullptr);
}

}  // namespace

std::string enter_root(const RootRequest& r, int* err) {
    const std::string root(guest::kRootMountPoint);
    {
        guest::UniqueFd dev(open(r.source.c_str(), O_RDONLY | O_CLOEXEC));
        if (!dev) return failed("opening " + r.source, err);
        // The template's kernel read the placeholder disk that was in this slot (partition
        // scan); those cached blocks must not be taken for the container's disk.
        if (ioctl(dev.get(), BLKFLSBUF, 0) < 0) return failed("BLKFLSBUF " + r.source, err);
        if (r.size != 0) {
            // The new capacity arrives with a configuration interrupt the driver handles in
            // a work item: wait (2 s at most) until the device has its size.
            std::uint64_t size = 0;
            for (int i = 0; i < 200; ++i) {
                if (ioctl(dev.get(), BLKGETSIZE64, &size) == 0 && size == r.size) break;
                sleep_ms(10);
            }
            if (size != r.size) {
                if (err) *err = EIO;
                return r.source + " has " + std::to_string(size) + " bytes, not the " +
                       std::to_string(r.size) + " of the disk the host attached";
            }
        }
    }
    mkdir(root.c_str(), 0755);
    unsigned long flags = MS_NOATIME | (r.readonly ? MS_RDONLY : 0);
    if (mount(r.source.c_str(), root.c_str(), r.fstype.c_str(), flags,
              r.options.empty() ? nullptr : r.options.c_str()) < 0)
        return failed("mounting " + r.source + " (" + r.fstype + ")", err);
    std::vector<std::string> done;
    auto undo = [&] {
        for (auto it = done.rbegin(); it != done.rend(); ++it) umount2(it->c_str(), MNT_DETACH);
        umount2(root.c_str(), MNT_DETACH);
    };
    for (const char* fs : {"/proc", "/sys", "/dev"}) {
        const std::string target = root + fs;
        if (mount(fs, target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0) {
            std::string f = failed(std::string("binding ") + fs + " into the root", err);
            undo();
            return f;
        }
        done.push_back(target);
    }
    struct Scratch {
        const char* path;
        const char* data;
    };
    for (const Scratch& s : {Scratch{"/tmp", "mode=1777"}, Scratch{"/run", "mode=0755"}}) {
        const std::string target = root + s.path;
        if (mount("tmpfs", target.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, s.data) < 0) {
            std::string f = failed(std::string("mounting tmpfs on ") + s.path, err);
            undo();
            return f;
        }
        done.push_back(target);
    }
    if (chroot(root.c_str()) < 0 || chdir("/") < 0) {
        std::string f = failed("chroot " + root, err);
        undo();
        return f;
    }
    return {};
}

}  // namespace vessel::agent
