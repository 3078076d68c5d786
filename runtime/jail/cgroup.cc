// Per-VM cgroups on cgroup v1 (one directory per controller hierarchy) or v2 (one directory).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "runtime/jail/internal.h"
#include "runtime/jail/jail.h"
#include "vmm/fd.h"

namespace vessel::jail {
namespace {

constexpr uint64_t kCpuPeriodUs = 100000;

[[noreturn]] void fail(const std::string& what, int err) {
    throw std::runtime_error("jail: " + what + ": " + std::strerror(err));
}

void write_file(const std::string& path, const std::string& value) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) fail("opening " + path, errno);
    if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
        fail("writing '" + value + "' to " + path, errno);
}

bool exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> needed_controllers(const Limits& l) {
    std::vector<std::string> c;
    if (l.memory_bytes) c.push_back("memory");
    if (l.cpus > 0) c.push_back("cpu");
    if (l.pids) c.push_back("pids");
    return c;
}

// Makes each missing directory of `root/rel` below root; records the ones it made.
void mkdirs(const std::string& root, const std::string& rel, std::vector<std::string>& made) {
    std::string p = root;
    std::stringstream ss(rel);
    std::string part;
    while (std::getline(ss, part, '/')) {
        if (part.empty()) continue;
        p += "/" + part;
        if (::mkdir(p.c_str(), 0755) == 0) {
            made.push_back(p);
        } else if (errno != EEXIST) {
            fail("creating cgroup " + p, errno);
        }
    }
}

// A leaf left by a VMM whose supervisor died: removable once empty.
void clear_stale(const std::string& dir) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (errno == EBUSY)
        throw std::runtime_error("jail: cgroup " + dir +
                                 " exists and has processes (another VM with this name?)");
    fail("removing stale cgroup " + dir, errno);
}

std::string rmdir_wait(const std::string& dir, int wait_ms) {
    for (int waited = 0;; waited += 10) {
        if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return "";
        if (errno != EBUSY || waited >= wait_ms)
            return "removing cgroup " + dir + ": " + std::strerror(errno);
        // Exiting tasks (io_uring workers included) leave the cgroup shortly after the exit.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

}  // namespace

CgroupLayout detect_cgroups() {
    CgroupLayout out;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        std::istringstream ls(line);
        std::string id, parent, dev, root, mnt, opts, f;
        ls >> id >> parent >> dev >> root >> mnt >> opts;
        while (ls >> f && f != "-") {
        }
        std::string fstype, source, super;
        ls >> fstype >> source >> super;
        if (fstype == "cgroup2") {
            if (out.v2_root.empty() || mnt == "/sys/fs/cgroup") out.v2_root = mnt;
        } else if (fstype == "cgroup") {
            std::stringstream ss(super);
            std::string o;
            while (std::getline(ss, o, ','))
                if ((o == "memory" || o == "cpu" || o == "pids") && !out.v1.count(o))
                    out.v1[o] = mnt;
        }
    }
    if (!out.v2_root.empty()) {
        std::ifstream c(out.v2_root + "/cgroup.controllers");
        std::string w;
        while (c >> w) out.v2_controllers.insert(w);
    }
    return out;
}

bool CgroupLayout::use_v1(const std::vector<std::string>& needed) const {
    // A hybrid host binds its controllers to v1 hierarchies and leaves v2 without them.
    for (const std::string& c : needed)
        if (v1.count(c)) return true;
    return v2_root.empty() && !v1.empty();
}

void check_cgroups(const Limits& l) {
    const std::vector<std::string> needed = needed_controllers(l);
    if (needed.empty()) return;
    const CgroupLayout lay = detect_cgroups();
    if (lay.use_v1(needed)) {
        for (const std::string& c : needed)
            if (!lay.v1.count(c))
                throw std::runtime_error("jail: the cgroup v1 controller '" + c +
                                         "' is not mounted (needed for its limit; 0 turns the "
                                         "limit off)");
        return;
    }
    if (lay.v2_root.empty())
        throw std::runtime_error(
            "jail: no cgroup filesystem is mounted (needed for the memory, cpus and pids limits)");
    for (const std::string& c : needed)
        if (!lay.v2_controllers.count(c))
            throw std::runtime_error("jail: the cgroup v2 controller '" + c +
                                     "' is not available in " + lay.v2_root +
                                     "/cgroup.controllers");
}

Cgroup Cgroup::create(const std::string& parent, const std::string& name, const Limits& l) {
    check_cgroups(l);
    Cgroup cg;
    const std::vector<std::string> needed = needed_controllers(l);
    if (needed.empty()) return cg;
    const CgroupLayout lay = detect_cgroups();
    std::vector<std::string> made;  // parents this call made, for the rollback
    try {
        const std::string quota = std::to_string(
            static_cast<uint64_t>(std::llround(l.cpus * static_cast<double>(kCpuPeriodUs))));
        if (lay.use_v1(needed)) {
            for (const std::string& c : needed) {
                const std::string root = lay.v1.at(c);
                mkdirs(root, parent, made);
                const std::string dir = root + "/" + parent + "/" + name;
                clear_stale(dir);
                if (::mkdir(dir.c_str(), 0755) != 0) fail("creating cgroup " + dir, errno);
                cg.dirs_.push_back(dir);
                cg.controllers_.push_back(c);
                if (c == "memory") {
                    write_file(dir + "/memory.limit_in_bytes", std::to_string(l.memory_bytes));
                    // With swap accounting, swap counts too: the limit is on RAM + swap.
                    if (exists(dir + "/memory.memsw.limit_in_bytes"))
                        write_file(dir + "/memory.memsw.limit_in_bytes",
                                   std::to_string(l.memory_bytes));
                } else if (c == "cpu") {
                    write_file(dir + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs));
                    write_file(dir + "/cpu.cfs_quota_us", quota);
                } else if (c == "pids") {
                    write_file(dir + "/pids.max", std::to_string(l.pids));
                }
            }
        } else {
            cg.v2_ = true;
            // Each level down to the VM's directory delegates the controllers to the next.
            std::string p = lay.v2_root;
            auto enable = [&](const std::string& dir) {
                for (const std::string& c : needed)
                    write_file(dir + "/cgroup.subtree_control", "+" + c);
            };
            enable(p);
            std::stringstream ss(parent);
            std::string part;
            while (std::getline(ss, part, '/')) {
                if (part.empty()) continue;
                p += "/" + part;
                if (::mkdir(p.c_str(), 0755) == 0)
                    made.push_back(p);
                else if (errno != EEXIST)
                    fail("creating cgroup " + p, errno);
                enable(p);
            }
            const std::string dir = p + "/" + name;
            clear_stale(dir);
            if (::mkdir(dir.c_str(), 0755) != 0) fail("creating cgroup " + dir, errno);
            cg.dirs_.push_back(dir);
            cg.controllers_.push_back("");
            if (l.memory_bytes) {
                write_file(dir + "/memory.max", std::to_string(l.memory_bytes));
                if (exists(dir + "/memory.swap.max")) write_file(dir + "/memory.swap.max", "0");
            }
            if (l.cpus > 0)
                write_file(dir + "/cpu.max", quota + " " + std::to_string(kCpuPeriodUs));
            if (l.pids) write_file(dir + "/pids.max", std::to_string(l.pids));
        }
    } catch (...) {
        cg.remove(0);
        // Parents are shared by every VM: only the ones made here, and only if still empty.
        for (auto it = made.rbegin(); it != made.rend(); ++it) ::rmdir(it->c_str());
        throw;
    }
    return cg;
}

Cgroup::Cgroup(Cgroup&& o) noexcept
    : v2_(o.v2_), dirs_(std::move(o.dirs_)), controllers_(std::move(o.controllers_)) {
    o.dirs_.clear();
}

Cgroup& Cgroup::operator=(Cgroup&& o) noexcept {
    v2_ = o.v2_;
    dirs_ = std::move(o.dirs_);
    controllers_ = std::move(o.controllers_);
    o.dirs_.clear();
    return *this;
}

Cgroup::~Cgroup() = default;

void Cgroup::add(pid_t pid) const {
    // "0" is the writer itself, whatever PID namespace it is in.
    for (const std::string& d : dirs_) write_file(d + "/cgroup.procs", std::to_string(pid));
}

std::string Cgroup::remove(int wait_ms) {
    std::string err;
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
        std::string e = rmdir_wait(*it, wait_ms);
        if (!e.empty() && err.empty()) err = e;
    }
    if (err.empty()) dirs_.clear();
    return err;
}

std::string Cgroup::memory_dir() const {
    for (size_t i = 0; i < dirs_.size(); ++i)
        if (v2_ || controllers_[i] == "memory") return dirs_[i];
    return "";
}

std::string remove_cgroup(const std::string& parent, const std::string& name, int wait_ms) {
    const CgroupLayout lay = detect_cgroups();
    std::vector<std::string> roots;
    for (const auto& [c, mnt] : lay.v1) roots.push_back(mnt);
    if (!lay.v2_root.empty()) roots.push_back(lay.v2_root);
    std::string err;
    for (const std::string& r : roots) {
        std::string e = rmdir_wait(r + "/" + parent + "/" + name, wait_ms);
        if (!e.empty() && err.empty()) err = e;
    }
    return err;
}

}  // namespace vessel::jail
