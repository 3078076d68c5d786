// The jailer (jail.h): namespaces, the per-VM root, the uid drop, rlimits, fds, environment.
#include "runtime/jail/jail.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "runtime/jail/internal.h"
#include "vmm/fd.h"

extern char** environ;

namespace vessel::jail {
namespace {

[[noreturn]] void sys_fail(const std::string& what, int err = errno) {
    throw std::system_error(err, std::generic_category(), "jail: " + what);
}

bool all_digits(std::string_view s) {
    return !s.empty() && s.size() <= 10 &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

uint64_t parse_number(std::string_view key, std::string_view v) {
    if (!all_digits(v))
        throw std::invalid_argument("jail: " + std::string(key) + "='" + std::string(v) +
                                    "' is not a number");
    return std::stoull(std::string(v));
}

// SIZE: a number of MiB, or with a K/M/G suffix (KiB, MiB, GiB); 0 or "none" for no limit.
uint64_t parse_size(std::string_view key, std::string_view v) {
    if (v == "none") return 0;
    std::string_view num = v;
    uint64_t shift = 20;
    if (!v.empty()) {
        switch (v.back()) {
            case 'K':
            case 'k':
                shift = 10;
                num.remove_suffix(1);
                break;
            case 'M':
            case 'm':
                shift = 20;
                num.remove_suffix(1);
                break;
            case 'G':
            case 'g':
                shift = 30;
                num.remove_suffix(1);
                break;
            default:
                break;
        }
    }
    if (!all_digits(num))
        throw std::invalid_argument("jail: " + std::string(key) + "='" + std::string(v) +
                                    "' is not a size (MiB, or a K/M/G suffix)");
    return std::stoull(std::string(num)) << shift;
}

bool safe_component(std::string_view s) {
    return !s.empty() && s != "." && s != ".." && s.size() < 200 &&
           std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
           });
}

bool safe_relative_path(std::string_view p) {
    if (p.empty() || p.front() == '/') return false;
    size_t start = 0;
    while (start <= p.size()) {
        size_t slash = p.find('/', start);
        std::string_view part = p.substr(
            start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
        if (!safe_component(part)) return false;
        if (slash == std::string_view::npos) break;
        start = slash + 1;
    }
    return true;
}

int thread_count() {
    DIR* d = ::opendir("/proc/self/task");
    if (!d) sys_fail("reading /proc/self/task");
    int n = 0;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n;
}

// Returns the highest open fd. A directory fd (an O_PATH handle that keeps a long socket path
// short, say) would let openat() walk the host's tree from inside the jail: each becomes a
// /dev/null fd under the same number, so that its owner can still close it.
int neutralise_open_fds() {
    UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null) sys_fail("opening /dev/null");
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) sys_fail("reading /proc/self/fd");
    int hi = 2;
    std::vector<int> dirs;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        const int fd = std::atoi(e->d_name);
        hi = std::max(hi, fd);
        struct stat st;
        if (fd != ::dirfd(d) && ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) dirs.push_back(fd);
    }
    ::closedir(d);
    for (int fd : dirs) {
        const int cloexec = ::fcntl(fd, F_GETFD) & FD_CLOEXEC ? O_CLOEXEC : 0;
        if (::dup3(null.get(), fd, cloexec) < 0)
            sys_fail("replacing directory fd " + std::to_string(fd));
    }
    return hi;
}

void mkdir_p(const std::string& path, mode_t mode) {
    for (size_t i = 1; i <= path.size(); ++i) {
        if (i != path.size() && path[i] != '/') continue;
        const std::string p = path.substr(0, i);
        if (::mkdir(p.c_str(), mode) != 0 && errno != EEXIST) sys_fail("creating " + p);
    }
}

void set_limit(int res, const char* name, rlim_t v) {
    rlimit r{v, v};
    if (::setrlimit(res, &r) != 0) sys_fail(std::string("setting ") + name);
}

// The calling thread's effective and permitted capabilities are all gone.
bool no_capabilities() {
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[2]{};
    if (::syscall(SYS_capget, &h, d) != 0) return false;
    for (const auto& c : d)
        if (c.effective || c.permitted) return false;
    return true;
}

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

struct Item {
    std::string target;  // inside the new root, before pivot_root
    std::string source;  // resolved host path
    bool dir = false;
    bool device = false;
    bool writable = false;
};

}  // namespace

Options default_options(std::string name) {
    Options o;
    o.name = std::move(name);
    passwd pw{}, *res = nullptr;
    char buf[4096];
    if (::getpwnam_r("vessel", &pw, buf, sizeof buf, &res) == 0 && res && pw.pw_uid != 0) {
        o.uid = pw.pw_uid;
        o.gid = pw.pw_gid;
    }
    return o;
}

void apply_spec(Options& o, std::string_view spec) {
    bool gid_given = false;
    std::optional<gid_t> user_gid;
    size_t start = 0;
    while (start < spec.size()) {
        size_t comma = spec.find(',', start);
        std::string_view item = spec.substr(
            start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        start = comma == std::string_view::npos ? spec.size() : comma + 1;
        if (item.empty()) continue;
        const size_t eq = item.find('=');
        if (eq == std::string_view::npos)
            throw std::invalid_argument("jail: '" + std::string(item) + "' is not KEY=VALUE");
        const std::string key(item.substr(0, eq)), v(item.substr(eq + 1));
        if (key == "uid") {
            if (all_digits(v)) {
                o.uid = static_cast<uid_t>(parse_number(key, v));
            } else {
                passwd pw{}, *res = nullptr;
                char buf[4096];
                if (::getpwnam_r(v.c_str(), &pw, buf, sizeof buf, &res) != 0 || !res)
                    throw std::invalid_argument("jail: uid=" + v + ": no such user");
                o.uid = pw.pw_uid;
                user_gid = pw.pw_gid;
            }
        } else if (key == "gid") {
            gid_given = true;
            if (all_digits(v)) {
                o.gid = static_cast<gid_t>(parse_number(key, v));
            } else {
                group gr{}, *res = nullptr;
                char buf[4096];
                if (::getgrnam_r(v.c_str(), &gr, buf, sizeof buf, &res) != 0 || !res)
                    throw std::invalid_argument("jail: gid=" + v + ": no such group");
                o.gid = gr.gr_gid;
            }
        } else if (key == "mem") {
            o.limits.memory_bytes = parse_size(key, v);
        } else if (key == "cpus") {
            char* end = nullptr;
            const double c = std::strtod(v.c_str(), &end);
            if (v.empty() || *end || !std::isfinite(c) || c < 0 || c > 4096)
                throw std::invalid_argument("jail: cpus='" + v + "' is not a CPU count");
            o.limits.cpus = c;
        } else if (key == "pids") {
            o.limits.pids = parse_number(key, v);
        } else if (key == "cgroup") {
            if (!safe_relative_path(v))
                throw std::invalid_argument("jail: cgroup='" + v +
                                            "' is not a relative path of [A-Za-z0-9_.-] names");
            o.cgroup_parent = v;
        } else if (key == "dir") {
            if (v.size() < 2 || v.front() != '/' || v.find("/..") != std::string::npos)
                throw std::invalid_argument("jail: dir='" + v + "' is not an absolute path");
            o.mount_point = v;
        } else if (key == "nofile") {
            o.nofile = parse_number(key, v);
            if (o.nofile < 64) throw std::invalid_argument("jail: nofile=" + v + " is below 64");
        } else if (key == "fsize") {
            o.fsize = parse_size(key, v);
        } else {
            throw std::invalid_argument(
                "jail: unknown option '" + key +
                "' (uid, gid, mem, cpus, pids, cgroup, dir, nofile, fsize)");
        }
    }
    if (user_gid && !gid_given) o.gid = *user_gid;
}

void validate(const Options& o) {
    if (!safe_component(o.name))
        throw std::runtime_error("jail: '" + o.name + "' cannot name a cgroup");
    if (o.uid == 0 || o.gid == 0)
        throw std::runtime_error("jail: uid and gid must not be 0 (the jail drops root)");
    if (::geteuid() != 0)
        throw std::runtime_error(
            "jail: needs root (namespaces, cgroups, the uid drop); run as root or turn the jail "
            "off (vessel boot without --jail; containers: annotation io.vessel.jail=off)");
    check_cgroups(o.limits);
}

std::vector<Exposure> device_exposures() {
    return {{.path = "/dev/kvm"},
            {.path = "/dev/net/tun", .optional = true},
            {.path = "/dev/null", .optional = true},
            {.path = "/dev/zero", .optional = true},
            {.path = "/dev/urandom", .optional = true}};
}

std::vector<Exposure> vm_exposures(const std::string& kernel, const std::string& initrd,
                                   const std::vector<std::pair<std::string, bool>>& disks,
                                   const std::string& vsock_socket) {
    std::vector<Exposure> e;
    if (!kernel.empty()) e.push_back({.path = kernel});
    if (!initrd.empty()) e.push_back({.path = initrd});
    for (const auto& [path, writable] : disks) e.push_back({.path = path, .writable = writable});
    if (!vsock_socket.empty()) e.push_back({.path = vsock_socket, .writable = true, .owned = true});
    for (const Exposure& d : device_exposures()) e.push_back(d);
    return e;
}

pid_t fork_in_new_pid_ns() {
    UniqueFd own(::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
    if (!own) sys_fail("opening /proc/self/ns/pid");
    if (::unshare(CLONE_NEWPID) != 0) sys_fail("creating a PID namespace");
    const pid_t pid = ::fork();
    if (pid == 0) return 0;
    const int err = errno;
    // Later children of this process (hooks, tools) stay in its own namespace.
    if (::setns(own.get(), CLONE_NEWPID) != 0) {
        const int e = errno;
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        sys_fail("returning to the caller's PID namespace", e);
    }
    if (pid < 0) sys_fail("forking into the new PID namespace", err);
    return pid;
}

void close_inherited_fds(const std::vector<int>& keep_in) {
    std::vector<int> keep;
    for (int fd : keep_in)
        if (fd > 2) keep.push_back(fd);
    std::sort(keep.begin(), keep.end());
    unsigned lo = 3;
    auto close_between = [](unsigned a, unsigned b) {
        if (a > b) return;
        if (::close_range(a, b, 0) != 0) {
            for (unsigned fd = a; fd <= b && fd < 65536; ++fd) ::close(static_cast<int>(fd));
        }
    };
    for (int fd : keep) {
        if (static_cast<unsigned>(fd) > lo) close_between(lo, static_cast<unsigned>(fd) - 1);
        lo = static_cast<unsigned>(fd) + 1;
    }
    close_between(lo, ~0u);
}

void enter(const Options& o, const std::vector<Exposure>& exposures) {
    // unshare, pivot_root and the uid drop act on the calling thread (glibc broadcasts the
    // uid change, but no_new_privs and the namespaces are per thread): one thread only.
    if (const int n = thread_count(); n != 1)
        throw std::runtime_error("jail: entered with " + std::to_string(n) +
                                 " threads running (the jail must come before any thread)");
    const std::string& mp = o.mount_point;
    std::vector<Item> items;
    for (const Exposure& e : exposures) {
        if (e.path.empty() || e.path.front() != '/')
            throw std::runtime_error("jail: '" + e.path + "' is not an absolute path");
        struct stat st;
        if (::stat(e.path.c_str(), &st) != 0) {
            if (e.optional && errno == ENOENT) continue;
            sys_fail("exposing " + e.path);
        }
        char real[PATH_MAX];
        if (!::realpath(e.path.c_str(), real)) sys_fail("resolving " + e.path);
        if (e.owned && ::chown(real, o.uid, o.gid) != 0) sys_fail("chown of " + e.path);
        items.push_back({mp + e.path, real, S_ISDIR(st.st_mode),
                         S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode), e.writable});
    }
    // Never above the current hard limit (raising it needs CAP_SYS_RESOURCE), never below
    // what is open.
    rlimit cur{};
    ::getrlimit(RLIMIT_NOFILE, &cur);
    const rlim_t nofile = std::max<rlim_t>(std::min<rlim_t>(o.nofile, cur.rlim_max),
                                           static_cast<rlim_t>(neutralise_open_fds()) + 1);

    if (::unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0) sys_fail("creating mount and IPC namespaces");
    // Nothing done from here on propagates to the host's mount table.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        sys_fail("making mounts private");
    mkdir_p(mp, 0700);
    if (::mount("tmpfs", mp.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=0755,size=1m,nr_inodes=1024") != 0)
        sys_fail("mounting the jail's root on " + mp);
    for (const Item& it : items) {
        const std::string parent = it.target.substr(0, it.target.rfind('/'));
        mkdir_p(parent, 0755);
        if (it.dir) {
            if (::mkdir(it.target.c_str(), 0755) != 0 && errno != EEXIST)
                sys_fail("creating " + it.target);
        } else {
            UniqueFd f(::open(it.target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
            if (!f) sys_fail("creating " + it.target);
        }
        if (::mount(it.source.c_str(), it.target.c_str(), nullptr, MS_BIND, nullptr) != 0)
            sys_fail("bind-mounting " + it.source);
        unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC;
        if (!it.device) flags |= MS_NODEV;
        if (!it.writable) flags |= MS_RDONLY;
        if (::mount(nullptr, it.target.c_str(), nullptr, flags, nullptr) != 0)
            sys_fail("restricting the mount of " + it.source);
    }
    if (::mount(nullptr, mp.c_str(), nullptr,
                MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
        sys_fail("making the jail's root read-only");
    if (::chdir(mp.c_str()) != 0) sys_fail("entering " + mp);
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // jail. A root pivot_root refuses (a chroot whose parent mount is shared, initramfs)
    // gets the move + chroot that runc uses for --no-pivot.
    if (::syscall(SYS_pivot_root, ".", ".") == 0) {
        if (::umount2(".", MNT_DETACH) != 0) sys_fail("unmounting the old root");
    } else if (errno == EINVAL) {
        if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) sys_fail("moving the jail's root");
        if (::chroot(".") != 0) sys_fail("chroot into the jail");
    } else {
        sys_fail("pivot_root into " + mp);
    }
    if (::chdir("/") != 0) sys_fail("chdir /");

    set_limit(RLIMIT_CORE, "RLIMIT_CORE", 0);  // a core dump would hold guest memory
    set_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", nofile);
    if (o.fsize) set_limit(RLIMIT_FSIZE, "RLIMIT_FSIZE", *o.fsize);

    if (::setgroups(0, nullptr) != 0) sys_fail("dropping supplementary groups");
    if (::setresgid(o.gid, o.gid, o.gid) != 0) sys_fail("setting gid " + std::to_string(o.gid));
    if (::setresuid(o.uid, o.uid, o.uid) != 0) sys_fail("setting uid " + std::to_string(o.uid));
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (::getuid() != o.uid || ::geteuid() != o.uid || ::getgid() != o.gid || !no_capabilities())
        throw std::runtime_error("jail: the uid drop left privileges behind");
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) sys_fail("setting no_new_privs");
    // Not dumpable: no ptrace or /proc access by other processes of the same uid.
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (o.die_with_parent) ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    ::umask(077);
    ::clearenv();
}

void begin(const Options& o, const std::vector<int>& keep) {
    validate(o);
    close_inherited_fds(keep);
    Cgroup cg = Cgroup::create(o.cgroup_parent, o.name, o.limits);
    try {
        cg.add(0);
    } catch (...) {
        cg.remove(0);
        throw;
    }
    cg.release();  // removed from outside: `delete`, or create when it fails
}

std::optional<int> run_jailed_child(const Options& o, const ParentService& service) {
    validate(o);
    Cgroup cg = Cgroup::create(o.cgroup_parent, o.name, o.limits);
    sigset_t set, old;
    sigemptyset(&set);
    for (int s : kForwarded) sigaddset(&set, s);
    sigaddset(&set, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &set, &old);
    UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC));
    pid_t pid = 0;
    try {
        if (!sfd) sys_fail("signalfd for the jailed child");
        std::fflush(nullptr);
        pid = fork_in_new_pid_ns();
    } catch (...) {
        ::sigprocmask(SIG_SETMASK, &old, nullptr);
        cg.remove(0);
        throw;
    }
    if (pid == 0) {
        sfd.reset();
        ::sigprocmask(SIG_SETMASK, &old, nullptr);
        if (o.die_with_parent) ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        cg.add(0);
        cg.release();
        return std::nullopt;
    }
    int status = 1;
    bool serving = service.fd >= 0 && service.serve;
    for (bool done = false; !done;) {
        pollfd p[2] = {{sfd.get(), POLLIN, 0}, {serving ? service.fd : -1, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) continue;  // EINTR
        if (p[1].revents) serving = service.serve();
        if (!(p[0].revents & POLLIN)) continue;
        signalfd_siginfo si{};
        if (::read(sfd.get(), &si, sizeof si) != sizeof si) continue;
        if (si.ssi_signo == SIGCHLD) {
            int ws = 0;
            if (::waitpid(pid, &ws, WNOHANG) == pid) {
                status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
                done = true;
            }
            continue;
        }
        // SI_USER, SI_QUEUE, SI_TKILL are <= 0: another process asked. The terminal's
        // signals (SI_KERNEL) reached the child's process group already.
        if (si.ssi_code <= 0) ::kill(pid, static_cast<int>(si.ssi_signo));
    }
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    const std::string err = cg.remove();
    if (!err.empty()) std::fprintf(stderr, "vessel: jail: %s\n", err.c_str());
    return status;
}

void exit_jailed(int status) {
    std::fflush(nullptr);
    ::_exit(status);
}

std::optional<Options> container_options(const std::string& id,
                                         const std::map<std::string, std::string>& annotations,
                                         uint64_t memory_mib, uint32_t vcpus) {
    const auto it = annotations.find(kAnnotation);
    const std::string v = it == annotations.end() ? "" : it->second;
    if (v == "off" || v == "false" || v == "0") return std::nullopt;
    Options o = default_options(id);
    o.limits = {(memory_mib + kVmmOverheadMiB) << 20, vcpus + 1.0, 1024};
    if (!(v.empty() || v == "on" || v == "true" || v == "1")) {
        try {
            apply_spec(o, v);
        } catch (const std::invalid_argument& e) {
            throw std::runtime_error(std::string("annotation ") + kAnnotation + ": " + e.what());
        }
    }
    return o;
}

std::string cleanup_container(const std::string& id,
                              const std::map<std::string, std::string>& annotations) noexcept {
    try {
        const auto o = container_options(id, annotations, 0, 0);
        if (!o) return "";
        return remove_cgroup(o->cgroup_parent, o->name);
    } catch (const std::exception& e) {
        return e.what();
    }
}

Options boot_options(std::string_view spec, uint64_t memory_mib, uint32_t vcpus) {
    Options o = default_options("boot-" + std::to_string(::getpid()));
    o.limits = {(memory_mib + kVmmOverheadMiB) << 20, vcpus + 1.0, 1024};
    o.die_with_parent = true;
    apply_spec(o, spec);
    return o;
}

}  // namespace vessel::jail
