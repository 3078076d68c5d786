#include "runtime/container/container.h"

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include "runtime/container/globals.h"
#include "runtime/disk_image.h"
#include "virtio/vsock/unix_backend.h"
#include "vmm/fd.h"

extern char** environ;

namespace vessel::container {

Paths Paths::of(const std::string& dir) {
    Paths p{
        dir, dir + "/rootfs.img", dir + "/vsock.sock", dir + "/control.sock", dir + "/api.sock", "",
        ""};
    uint64_t h = 14695981039346656037ull;  // FNV-1a 64
    for (unsigned char c : dir) h = (h ^ c) * 1099511628211ull;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    p.checkpoint = checkpoint_base() + "/" + hex;
    // The vsock listener leaves room for "_PORT" (connections the guest opens).
    if (p.vsock.size() <= virtio::vsock::max_uds_path_length() &&
        p.control.size() < sizeof(sockaddr_un::sun_path))
        return p;
    p.sock_dir = vsock_runtime_dir() + "/s/" + hex;
    p.vsock = p.sock_dir + "/vsock.sock";
    p.control = p.sock_dir + "/control.sock";
    p.api = p.sock_dir + "/api.sock";
    return p;
}

void Paths::remove_sock_dir() const {
    if (sock_dir.empty()) return;
    ::unlink(vsock.c_str());
    ::unlink(control.c_str());
    ::unlink(api.c_str());
    ::rmdir(sock_dir.c_str());
}

void Paths::remove_checkpoint_dir() const {
    std::error_code ec;
    std::filesystem::remove_all(checkpoint, ec);
}

std::string checkpoint_base() {
    return ::geteuid() == 0 ? "/var/lib/vessel/checkpoints" : cache_dir() + "/checkpoints";
}

oci::StateStore state_store() {
    const std::string& r = globals().root;
    return r.empty() ? oci::StateStore() : oci::StateStore(r);
}

agent::ProcessSpec agent_spec(const oci::GuestProcess& p) {
    agent::ProcessSpec s;
    s.argv = p.args;
    s.env = p.env;
    s.cwd = p.cwd;
    s.user = agent::User{p.uid, p.gid, p.additional_gids};
    for (const oci::Rlimit& r : p.rlimits) {
        auto res = agent::rlimit_from_name(r.type);
        if (!res) throw std::runtime_error("process.rlimits: unknown type " + r.type);
        s.rlimits.push_back({*res, r.soft, r.hard});
    }
    s.hostname = p.hostname;
    s.tty = p.terminal;
    if (p.console_size) {
        s.rows = static_cast<uint16_t>(p.console_size->height);
        s.cols = static_cast<uint16_t>(p.console_size->width);
    }
    // As runc: when the container's init exits, what it left behind dies with the VM anyway.
    return s;
}

namespace {

uint64_t g_du_bytes = 0;
int add_size(const char*, const struct stat* st, int type, FTW*) {
    if (type == FTW_F || type == FTW_SL) g_du_bytes += static_cast<uint64_t>(st->st_blocks) * 512;
    g_du_bytes += 256;  // inode
    return 0;
}

uint64_t tree_bytes(const std::string& dir) {
    g_du_bytes = 0;
    if (::nftw(dir.c_str(), add_size, 64, FTW_PHYS | FTW_MOUNT) != 0)
        throw_errno("measuring rootfs " + dir);
    return g_du_bytes;
}

bool hidden_by_guest_mount(const std::string& dest) {
    for (const char* p : {"/run/", "/tmp/", "/proc/", "/sys/", "/dev/"})
        if (dest.rfind(p, 0) == 0) return true;
    return false;
}

// Quotes a path for debugfs's command parser.
std::string dq(const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\';
        o += c;
    }
    return o + "\"";
}

void run_debugfs(const std::string& image, const std::string& script) {
    const std::string cmdfile = image + ".debugfs";
    {
        std::ofstream out(cmdfile, std::ios::trunc);
        out << script;
        if (!out.flush()) throw_errno("writing " + cmdfile);
    }
    std::vector<std::string> args = {"debugfs", "-w", "-f", cmdfile, image};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, "debugfs", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        ::unlink(cmdfile.c_str());
        throw std::system_error(rc, std::generic_category(), "running debugfs (e2fsprogs)");
    }
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    ::unlink(cmdfile.c_str());
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        throw std::runtime_error("debugfs failed placing files into " + image);
}

}  // namespace

std::vector<std::string> build_rootfs_image(const oci::VmPlan& plan, const std::string& image) {
    std::vector<std::string> warnings;
    uint64_t bytes = tree_bytes(plan.rootfs);
    // ext4 metadata, the journal and room for the container to write.
    uint64_t size = bytes + bytes / 4 + (64u << 20);
    size = (size + (1u << 20) - 1) & ~uint64_t((1u << 20) - 1);
    image::make_ext4_from_dir(plan.rootfs, image, size, "rootfs");

    // Mount points the guest needs on its root, made in the image (the host's rootfs stays
    // as it is): a read-only root cannot get them later. debugfs skips existing ones.
    std::string script = "mkdir /proc\nmkdir /sys\nmkdir /dev\nmkdir /tmp\nmkdir /run\n";
    for (const oci::GuestMount& m : plan.mounts) {
        if (m.kind != oci::GuestMount::Kind::CopiedFile) continue;
        if (hidden_by_guest_mount(m.destination)) {
            warnings.push_back("mounts[" + std::to_string(m.index) + "] (" + m.destination +
                               "): not placed, the guest mounts its own filesystem there");
            continue;
        }
        // Re-read now (bounded size), store a private copy next to the image for debugfs.
        const std::string content = oci::read_copied_file(m);
        const std::string copy = image + ".f" + std::to_string(m.index);
        {
            std::ofstream out(copy, std::ios::binary | std::ios::trunc);
            out << content;
            if (!out.flush()) throw_errno("writing " + copy);
        }
        ::chmod(copy.c_str(), m.file_mode & 07777);
        const size_t slash = m.destination.rfind('/');
        const std::string parent = slash == 0 ? "/" : m.destination.substr(0, slash);
        const std::string name = m.destination.substr(slash + 1);
        // mkdir of each parent (errors for existing ones are ignored by debugfs -f).
        for (size_t p = 1; p <= parent.size() && parent != "/"; ++p) {
            if (p == parent.size() || parent[p] == '/')
                script += "mkdir " + dq(parent.substr(0, p)) + "\n";
        }
        script += "cd " + dq(parent) + "\n";
        script += "rm " + dq(name) + "\n";
        script += "write " + dq(copy) + " " + dq(name) + "\n";
    }
    {
        try {
            run_debugfs(image, script);
        } catch (...) {
            for (const oci::GuestMount& m : plan.mounts)
                ::unlink((image + ".f" + std::to_string(m.index)).c_str());
            throw;
        }
        for (const oci::GuestMount& m : plan.mounts)
            ::unlink((image + ".f" + std::to_string(m.index)).c_str());
    }
    return warnings;
}

std::string exe_dir() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string p(buf, static_cast<size_t>(n));
    return p.substr(0, p.rfind('/'));
}

std::string cache_dir() {
    const char* c = std::getenv("VESSEL_CACHE");
    return c && *c ? c : "/var/cache/vessel";
}

std::string default_kernel() {
    if (const char* k = std::getenv("VESSEL_KERNEL"); k && *k) return k;
    return cache_dir() + "/kernel/current/vmlinux";
}

std::string default_initrd() {
    if (const char* p = std::getenv("VESSEL_INITRAMFS"); p && *p) return p;
    std::string dir = exe_dir();
    for (const std::string& c :
         {dir + "/guest/initramfs.cpio", dir + "/../share/vessel/initramfs.cpio"}) {
        if (::access(c.c_str(), R_OK) == 0) return c;
    }
    return dir + "/guest/initramfs.cpio";
}

std::string vsock_runtime_dir() {
    if (const char* d = std::getenv("VESSEL_RUNTIME_DIR"); d && *d) return d;
    if (::geteuid() == 0) return "/run/vessel";
    if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/vessel";
    return "/tmp/vessel-" + std::to_string(::geteuid());
}

std::string control_request(const std::string& socket, const std::string& request,
                            std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket.size() >= sizeof addr.sun_path)
        throw std::system_error(ENAMETOOLONG, std::generic_category(), "control socket " + socket);
    std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("creating a socket");
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw_errno("connecting to the container's VMM at " + socket);
    std::string line = request + "\n";
    if (::send(s.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(line.size()))
        throw_errno("writing to the container's VMM");
    std::string answer;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (answer.find('\n') == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            throw std::system_error(ETIMEDOUT, std::generic_category(),
                                    "waiting for the container's VMM");
        pollfd p{s.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
            throw_errno("waiting for the container's VMM");
        char buf[512];
        ssize_t n = ::recv(s.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) throw std::runtime_error("the container's VMM closed the control socket");
        if (n > 0) answer.append(buf, static_cast<size_t>(n));
    }
    return answer.substr(0, answer.find('\n'));
}

const std::vector<int>& forwarded_signals() {
    static const std::vector<int> sigs = [] {
        std::vector<int> v;
        for (int s = 1; s < 32; ++s) {
            switch (s) {
                case SIGKILL:
                case SIGSTOP:
                case SIGCHLD:
                case SIGPIPE:
                case SIGSEGV:
                case SIGBUS:
                case SIGFPE:
                case SIGILL:
                case SIGTRAP:
                case SIGSYS:
                case SIGWINCH:  // the terminal's size, handled by the relay itself
                    continue;
                default:
                    v.push_back(s);
            }
        }
        // SIGRTMIN+1 kicks vCPU threads; glibc keeps 32 and 33 for itself.
        for (int s = SIGRTMIN + 2; s <= SIGRTMAX; ++s) v.push_back(s);
        return v;
    }();
    return sigs;
}

virtio::net::NetDeviceOptions net_device_options(const network::NetAttachment& a) {
    virtio::net::NetDeviceOptions o;
    if (a.tap_fd() >= 0) {
        o.tap.fd = a.tap_fd();
    } else {
        o.tap.name = a.tap_name();
        o.tap.must_exist = true;
    }
    o.mac = a.guest().mac.bytes;
    o.mtu = static_cast<uint16_t>(a.guest().mtu);
    return o;
}

agent::InterfaceIdentity interface_identity(const std::string& ifname,
                                            const network::GuestConfig& g) {
    agent::InterfaceIdentity i;
    i.name = ifname;
    i.mac = g.mac.str();
    if (g.address) {
        i.address = g.address->str();
        if (g.gateway) i.gateway = g.gateway->str();
        for (const auto& d : g.dns) i.dns.push_back(d.str());
    }
    return i;
}

}  // namespace vessel::container
