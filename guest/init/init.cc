// vessel-init: PID 1 of a vessel guest. Prepares a minimal userspace, runs the one command the
// VMM asked for (see protocol.h) or, in agent mode, the guest agent (guest/agent), reaps
// everything, and reports the command's (or the agent's shutdown) status through the exit
// device. The init part stays free of iostreams and exception paths.
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#endif

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "guest/agent/guest_main.h"
#include "guest/init/proto.h"
#include "guest/init/protocol.h"
#include "guest/init/unique_fd.h"

extern char** environ;

namespace {

using vessel::guest::UniqueFd;
namespace proto = vessel::guest;

// Unbuffered and allocation-free, so it is safe between fork() and exec() too.
void say(std::initializer_list<std::string_view> parts) {
    iovec iov[8];
    int n = 0;
    iov[n++] = {const_cast<char*>("vessel-init: "), 13};
    for (auto p : parts) {
        if (n == 7) break;
        iov[n++] = {const_cast<char*>(p.data()), p.size()};
    }
    iov[n++] = {const_cast<char*>("\n"), 1};
    // Best effort: nowhere else to report a failing console.
    while (writev(STDERR_FILENO, iov, n) < 0 && errno == EINTR) {
    }
}

void warn_errno(std::string_view what, std::string_view arg = {}) {
    const char* err = strerror(errno);
    if (arg.empty())
        say({what, ": ", err});
    else
        say({what, " ", arg, ": ", err});
}

bool fd_open(int fd) {
    return fcntl(fd, F_GETFD) >= 0;
}

// The kernel opens /dev/console as fds 0-2 only if the node exists in the rootfs.
void ensure_console() {
    if (fd_open(0) && fd_open(1) && fd_open(2)) return;
    const int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) return;
    for (int i = 0; i <= 2; ++i) {
        if (!fd_open(i)) dup2(fd, i);
    }
    UniqueFd extra(fd > 2 ? fd : -1);  // only the copies in 0-2 are kept
}

// The kernel's fds 0-2 point at the initramfs /dev/console, now hidden under devtmpfs, so
// ttyname() (used by `tty`, shells, editors) cannot find them. Swap in the visible node.
void reopen_console_from_devtmpfs() {
    const int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return;
    UniqueFd console(fd);
    for (int i = 0; i <= 2; ++i) {
        struct stat st;
        if (fstat(i, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(5, 1))
            dup2(console.get(), i);
    }
}

void make_dir(const char* path, mode_t mode) {
    if (mkdir(path, mode) < 0 && errno != EEXIST) warn_errno("mkdir", path);
}

void mount_fs(const char* type, const char* target, unsigned long flags, const char* data,
              mode_t dir_mode = 0755) {
    make_dir(target, dir_mode);
    // EBUSY: already mounted there (e.g. devtmpfs auto-mounted by the kernel).
    if (mount(type, target, type, flags, data) < 0 && errno != EBUSY) warn_errno("mount", target);
}

void make_symlink(const char* target, const char* path) {
    if (symlink(target, path) < 0 && errno != EEXIST) warn_errno("symlink", path);
}

std::optional<std::string> read_file(std::string_view path) {
    const std::string p(path);
    UniqueFd fd(open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno != ENOENT) warn_errno("open", p);
        return std::nullopt;
    }
    std::string out;
    char buf[4096];
    for (;;) {
        const ssize_t n = read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            warn_errno("read", p);
            return std::nullopt;
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

// Tolerates files written by hand ("echo /srv > cwd").
std::string chomp(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

// The mounts a disk root inherits by MS_MOVE (devpts and shm travel along under /dev).
void mount_kernel_filesystems() {
    constexpr unsigned long kSafe = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    mount_fs("proc", "/proc", kSafe, nullptr);
    mount_fs("sysfs", "/sys", kSafe, nullptr);
    make_dir("/dev/pts", 0755);
    mount_fs("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
    mount_fs("tmpfs", "/dev/shm", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
    // Shells and many scripts expect these; devtmpfs does not provide them.
    make_symlink("/proc/self/fd", "/dev/fd");
    make_symlink("/proc/self/fd/0", "/dev/stdin");
    make_symlink("/proc/self/fd/1", "/dev/stdout");
    make_symlink("/proc/self/fd/2", "/dev/stderr");
}

// Mounted fresh in whichever root the command ends up in.
void mount_scratch_filesystems() {
    mount_fs("tmpfs", "/tmp", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
    mount_fs("tmpfs", "/run", MS_NOSUID | MS_NODEV, "mode=0755");
}

void set_hostname(std::string name) {
    if (name.empty()) name = proto::kDefaultHostname;
    if (sethostname(name.data(), name.size()) < 0) warn_errno("sethostname", name);
}

// Many programs assume localhost works; it costs one ioctl.
void bring_up_loopback() {
    UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) {
        if (errno != EAFNOSUPPORT) warn_errno("socket");
        return;
    }
    ifreq ifr{};
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) < 0) {
        if (errno != ENODEV) warn_errno("SIOCGIFFLAGS", "lo");
        return;
    }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) < 0) warn_errno("SIOCSIFFLAGS", "lo");
}

// The kernel's "ip=" configuration (IP_PNP) publishes its DNS servers here; nothing else in
// the guest would turn them into a resolv.conf.
void install_resolv_conf() {
    const auto pnp = read_file(proto::kPnpPath);
    if (!pnp) return;
    const auto text = proto::resolv_conf_from_pnp(*pnp);
    if (!text) return;
    const std::string path(proto::kResolvConfPath);
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) {
        warn_errno("open", path);
        return;
    }
    for (size_t off = 0; off < text->size();) {
        const ssize_t n = write(fd.get(), text->data() + off, text->size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            warn_errno("write", path);
            return;
        }
        off += static_cast<size_t>(n);
    }
}

// The VMM copies console bytes verbatim to the host terminal, which already does its own
// "\n" -> "\r\n"; doing it here too would double the carriage returns.
void disable_console_output_processing() {
    termios t;
    if (tcgetattr(STDOUT_FILENO, &t) < 0) {
        if (errno != ENOTTY) warn_errno("tcgetattr", "console");
        return;
    }
    t.c_oflag &= ~static_cast<tcflag_t>(OPOST);
    if (tcsetattr(STDOUT_FILENO, TCSANOW, &t) < 0) warn_errno("tcsetattr", "console");
}

volatile sig_atomic_t g_command_pid = 0;

// PID 1 gets no default signal actions, so termination requests would otherwise be lost.
void forward_signal(int sig) {
    const pid_t pid = g_command_pid;
    if (pid > 0) kill(pid, sig);
}

constexpr int kForwardedSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

void install_signal_forwarding() {
    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int sig : kForwardedSignals) sigaction(sig, &sa, nullptr);
    // Ctrl-Alt-Del then arrives as SIGINT for the command instead of an immediate reboot.
    reboot(RB_DISABLE_CAD);
}

void reset_signals_for_child() {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : kForwardedSignals) sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
}

struct Command {
    std::vector<std::string> argv;
    std::vector<std::string> env;
    std::string cwd;
};

// Everything from /vessel, read up front because a disk root hides the initramfs.
struct RunConfig {
    Command cmd;
    std::string hostname;
    std::optional<proto::RootFs> rootfs;
    bool valid = true;
};

RunConfig load_run_config() {
    RunConfig r;
    Command& c = r.cmd;
    c.argv = proto::split_nul_list(read_file(proto::kArgvPath).value_or(""));
    if (c.argv.empty()) c.argv.emplace_back(proto::kDefaultShell);
    c.env = proto::merge_env(proto::default_env(),
                             proto::split_nul_list(read_file(proto::kEnvPath).value_or("")));
    c.cwd = chomp(read_file(proto::kCwdPath).value_or(""));
    r.hostname = chomp(read_file(proto::kHostnamePath).value_or(""));
    if (const auto text = read_file(proto::kRootFsPath)) {
        std::string error;
        r.rootfs = proto::parse_rootfs(*text, &error);
        if (!r.rootfs) {
            say({proto::kRootFsPath, ": ", error});
            r.valid = false;
        }
    }
    return r;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (auto& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

// Returns the pid of the command, or -1 if it could not be forked.
pid_t spawn(Command& cmd) {
    // Built before fork() so the child only calls async-signal-safe functions.
    std::vector<char*> argv = c_strings(cmd.argv);
    std::vector<char*> envp = c_strings(cmd.env);
    const pid_t pid = fork();
    if (pid != 0) return pid;
    reset_signals_for_child();

    // Own session with the console as controlling tty: needed for job control and ^C.
    setsid();
    if (ioctl(STDIN_FILENO, TIOCSCTTY, 1) < 0 && errno != ENOTTY) warn_errno("TIOCSCTTY");

    if (!cmd.cwd.empty() && chdir(cmd.cwd.c_str()) < 0) {
        warn_errno("chdir", cmd.cwd);
        _exit(proto::kStatusExecFailed);
    }
    // execvpe() searches the caller's PATH, not envp's, so switch environments first.
    environ = envp.data();
    execvp(argv[0], argv.data());
    const int err = errno;
    say({argv[0], ": ", strerror(err)});
    _exit(err == ENOENT ? proto::kStatusExecNotFound : proto::kStatusExecFailed);
}

struct AgentMode {
    bool enabled = false;
    bool valid = true;
    vessel::agent::ListenAddress address;
};

// Host tests run init in a PID namespace without vsock: VESSEL_INIT_TEST_AGENT names a Unix
// socket to listen on instead, and the host's /proc/cmdline is not consulted.
AgentMode agent_mode() {
    AgentMode m;
    if (const char* path = getenv("VESSEL_INIT_TEST_AGENT")) {
        m.enabled = true;
        m.address.unix_path = path;
        return m;
    }
    const auto cmdline = read_file("/proc/cmdline");
    if (!cmdline) return m;
    std::string error;
    const auto port = proto::agent_port_from_cmdline(*cmdline, &error);
    if (!error.empty()) {
        say({error});
        m.enabled = true;
        m.valid = false;
    } else if (port) {
        m.enabled = true;
        m.address.vsock_port = *port;
    }
    return m;
}

// The agent runs as init's child, so that a crash of the agent ends the VM with a status
// instead of panicking the kernel, and init keeps reaping orphans and doing the shutdown.
pid_t spawn_agent(const vessel::agent::ListenAddress& address) {
    const pid_t pid = fork();
    if (pid != 0) return pid;
    reset_signals_for_child();
    setsid();  // no controlling tty: the console is init's, the processes get their own
    _exit(vessel::agent::serve_guest(address));
}

// Reaps everything (orphans are reparented to us) until the command itself exits.
int wait_for_command(pid_t pid, bool* signaled = nullptr) {
    for (;;) {
        int ws;
        const pid_t p = waitpid(-1, &ws, 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            warn_errno("waitpid");
            return proto::kStatusInitFailure;
        }
        if (p == pid) {
            if (signaled) *signaled = WIFSIGNALED(ws);
            return proto::exit_status_from_wait(ws);
        }
    }
}

timespec now() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

long long ms_since(const timespec& start) {
    const timespec t = now();
    return (t.tv_sec - start.tv_sec) * 1000LL + (t.tv_nsec - start.tv_nsec) / 1000000;
}

// True once no processes are left. Expects SIGCHLD to be blocked.
bool reap_all_within(long long budget_ms) {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    const timespec start = now();
    for (;;) {
        pid_t p;
        while ((p = waitpid(-1, nullptr, WNOHANG)) > 0) {
        }
        if (p < 0 && errno == ECHILD) return true;
        const long long left = budget_ms - ms_since(start);
        if (left <= 0) return false;
        const timespec ts{static_cast<time_t>(left / 1000),
                          static_cast<long>(left % 1000) * 1000000};
        sigtimedwait(&chld, nullptr, &ts);
    }
}

void terminate_everything() {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    // Blocked SIGCHLD stays pending even with the default "ignore" action.
    sigprocmask(SIG_BLOCK, &chld, nullptr);
    if (reap_all_within(0)) return;
    kill(-1, SIGTERM);
    if (reap_all_within(500)) return;
    kill(-1, SIGKILL);
    if (!reap_all_within(2000)) say({"processes left after SIGKILL"});
}

// Virtio probing normally finishes before init starts, but a slow device must not fail the boot.
constexpr long long kRootDeviceWaitMs = 5000;

void wait_for_device(const std::string& path) {
    const timespec start = now();
    struct stat st;
    while (stat(path.c_str(), &st) < 0 && errno == ENOENT && ms_since(start) < kRootDeviceWaitMs) {
        const timespec tick{0, 10 * 1000000};
        nanosleep(&tick, nullptr);
    }
}

struct MountPoint {
    const char* path;
    mode_t mode;
};
constexpr MountPoint kRootMountPoints[] = {
    {"/proc", 0555}, {"/sys", 0555}, {"/dev", 0755}, {"/tmp", 01777}, {"/run", 0755}};

// The disk root's top directory while it is mounted read-write, so shutdown can remount it
// read-only wherever it ends up (fchdir + ".", since "/" of a chroot is not a mount root).
UniqueFd g_rw_root;

bool ensure_root_mount_points(const proto::RootFs& r, const std::string& root) {
    for (const auto& mp : kRootMountPoints) {
        const std::string path = root + mp.path;
        struct stat st;
        // lstat: an absolute symlink would still resolve against the initramfs here.
        if (lstat(path.c_str(), &st) == 0) {
            if (S_ISDIR(st.st_mode)) continue;
            say({"root ", r.source, ": ", mp.path, " is not a directory"});
            return false;
        }
        if (errno == ENOENT && mkdir(path.c_str(), mp.mode) == 0) {
            chmod(path.c_str(), mp.mode);  // undo the umask, e.g. for /tmp's sticky 1777
            continue;
        }
        if (errno == EROFS) {
            say({"root ", r.source, " is read-only and has no ", mp.path,
                 "; create it in the image"});
        } else {
            warn_errno("creating mountpoint", path);
        }
        return false;
    }
    return true;
}

// Undoes the MS_MOVEs of a failed switch so the disk can be unmounted again.
void move_back(const std::vector<const char*>& moved, const std::string& root) {
    for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
        if (mount((root + *it).c_str(), *it, nullptr, MS_MOVE, nullptr) < 0)
            warn_errno("moving back", *it);
    }
}

// switch_root(8) semantics, minus freeing the initramfs: mount the disk, carry /proc, /sys
// and /dev over, make it "/". False (disk unmounted where possible) if anything fails.
bool switch_to_disk_root(const proto::RootFs& r) {
    const std::string root(proto::kRootMountPoint);
    make_dir("/mnt", 0755);  // base images from before kRootMountPoint existed
    make_dir(root.c_str(), 0755);
    wait_for_device(r.source);
    const unsigned long flags = r.readonly ? MS_RDONLY : 0;
    if (mount(r.source.c_str(), root.c_str(), r.fstype.c_str(), flags,
              r.options.empty() ? nullptr : r.options.c_str()) < 0) {
        say({"mounting root ", r.source, " (", r.fstype, "): ", strerror(errno)});
        return false;
    }
    auto unmount = [&] {
        g_rw_root.reset();
        if (umount(root.c_str()) < 0) warn_errno("unmounting", root);
    };
    if (!r.readonly) {
        g_rw_root.reset(open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!g_rw_root) warn_errno("open", root);  // only costs the clean unmount
    }
    if (!ensure_root_mount_points(r, root)) {
        unmount();
        return false;
    }
    std::vector<const char*> moved;
    for (const char* fs : {"/proc", "/sys", "/dev"}) {
        if (mount(fs, (root + fs).c_str(), nullptr, MS_MOVE, nullptr) < 0) {
            warn_errno("moving mount", fs);
            move_back(moved, root);
            unmount();
            return false;
        }
        moved.push_back(fs);
    }
    if (chdir(root.c_str()) < 0) {
        warn_errno("chdir", root);
        move_back(moved, root);
        unmount();
        return false;
    }
    // Past the MS_MOVE onto "/" there is no way back; chroot(".") cannot fail in practice.
    if (mount(".", "/", nullptr, MS_MOVE, nullptr) < 0) {
        warn_errno("moving root", root);
        if (chdir("/") < 0) warn_errno("chdir", "/");  // the disk is busy while it is our cwd
        move_back(moved, root);
        unmount();
        return false;
    }
    if (chroot(".") < 0 || chdir("/") < 0) {
        warn_errno("chroot", r.source);
        return false;
    }
    return true;
}

// The VM's disk is only consistent (clean ext4 journal) once its filesystem is read-only.
void release_root() {
    if (!g_rw_root) return;
    if (fchdir(g_rw_root.get()) < 0 ||
        mount(nullptr, ".", nullptr, MS_REMOUNT | MS_RDONLY, nullptr) < 0)
        warn_errno("remounting root read-only");
    g_rw_root.reset();
}

[[noreturn]] void report_and_halt(int status) {
    // Running in a PID namespace on the host (tests): exiting ends the namespace.
    if (getenv("VESSEL_INIT_TEST_EXIT") != nullptr) _exit(status);
#if defined(__x86_64__) || defined(__i386__)
    if (ioperm(vessel::guest::kExitPort, vessel::guest::kExitPortWidth, 1) == 0)
        outl(static_cast<unsigned>(status), vessel::guest::kExitPort);
    else
        warn_errno("ioperm");
#endif
    // Fallback: with reboot=k the VMM sees the i8042 reset and stops the VM.
    reboot(RB_AUTOBOOT);
    warn_errno("reboot");
    // PID 1 must never exit: that panics the kernel.
    for (;;) pause();
}

}  // namespace

int main() {
    if (getpid() != 1) {
        // Guard against mounting over and killing the host by accident.
        say({"must run as PID 1"});
        return 1;
    }
    ensure_console();
    mount_fs("devtmpfs", "/dev", MS_NOSUID, "mode=0755");
    ensure_console();
    reopen_console_from_devtmpfs();
    disable_console_output_processing();
    mount_kernel_filesystems();
    const AgentMode agent = agent_mode();
    RunConfig run = load_run_config();  // in agent mode only hostname and rootfs matter
    int status = proto::kStatusInitFailure;
    if (run.valid && agent.valid && (!run.rootfs || switch_to_disk_root(*run.rootfs))) {
        mount_scratch_filesystems();
        set_hostname(run.hostname);
        bring_up_loopback();
        install_resolv_conf();
        install_signal_forwarding();
        const pid_t pid = agent.enabled ? spawn_agent(agent.address) : spawn(run.cmd);
        if (pid < 0) {
            warn_errno("fork");
        } else {
            g_command_pid = pid;
            bool signaled = false;
            status = wait_for_command(pid, &signaled);
            g_command_pid = 0;
            if (agent.enabled && signaled) say({"the agent was killed by a signal"});
        }
    }
    terminate_everything();
    sync();
    release_root();
    report_and_halt(status);
}
