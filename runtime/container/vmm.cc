// The container's VMM process (`vessel _container-vmm ID`): boots the VM, waits for `start`,
// runs the container's process through the guest agent and exits with its status.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <optional>
#include <thread>

#include "guest/agent/client.h"
#include "guest/init/proto.h"
#include "guest/init/protocol.h"
#include "guest/initramfs/cpio.h"
#include "oci/spec.h"
#include "runtime/container/console.h"
#include "runtime/container/container.h"
#include "runtime/container/globals.h"
#include "runtime/container/warm.h"
#include "runtime/jail/jail.h"
#include "runtime/network/attachment.h"
#include "runtime/network/link.h"
#include "snapshot/control.h"
#include "snapshot/snapshot.h"
#include "snapshot/vm_snapshot.h"
#include "virtio/attach.h"
#include "virtio/block/device.h"
#include "virtio/net/device.h"
#include "virtio/vsock/cid.h"
#include "virtio/vsock/device.h"
#include "virtio/vsock/unix_backend.h"
#include "vmm/fd.h"
#include "vmm/machine.h"
#include "vmm/seccomp.h"

namespace vessel::container {
namespace {

std::vector<uint8_t> read_all(const std::string& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw_errno(std::string("opening ") + what + " " + path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Reports readiness (or the reason there is none) to `create` exactly once.
class Ready {
  public:
    explicit Ready(int fd) : fd_(fd) {}
    void send(const std::string& line) {
        std::lock_guard<std::mutex> g(mu_);
        if (!fd_) return;
        std::string l = line + "\n";
        ssize_t n = ::write(fd_.get(), l.data(), l.size());
        (void)n;
        fd_.reset();
    }
    // Sends `line` and waits for create's one-line reply ("" if create went away).
    std::string exchange(const std::string& line) {
        std::lock_guard<std::mutex> g(mu_);
        const std::string l = line + "\n";
        if (!fd_ || ::write(fd_.get(), l.data(), l.size()) != static_cast<ssize_t>(l.size()))
            return "";
        std::string reply;
        char c = 0;
        while (reply.size() < 256) {
            const ssize_t n = ::read(fd_.get(), &c, 1);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0 || c == '\n') break;
            reply += c;
        }
        return reply;
    }

  private:
    std::mutex mu_;
    UniqueFd fd_;
};

// A snapshot restored for a container (warm-start template, checkpoint) must have its
// devices: a disk in slot 0, then its NIC (at most one), vsock last.
void check_container_devices(const snapshot::Snapshot& s, size_t nics, const std::string& what) {
    const size_t n = s.devices.size();
    if (n != 2 + nics || s.devices[0].kind != "block" ||
        (nics != 0 && s.devices[1].kind != "net") || s.devices[n - 1].kind != "vsock")
        throw std::runtime_error(what + " does not have the container's devices (a disk, " +
                                 std::to_string(nics) + " NIC, vsock)");
}

UniqueFd listen_unix(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw std::system_error(ENAMETOOLONG, std::generic_category(),
                                "control socket " + path + " (use a shorter --root)");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    ::unlink(path.c_str());
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("creating control socket");
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw_errno("binding control socket " + path);
    ::chmod(path.c_str(), 0600);
    if (::listen(s.get(), 8) != 0) throw_errno("listening on control socket " + path);
    return s;
}

// Reads one request line from a control connection (bounded, short timeout).
std::string read_request(int fd) {
    std::string req;
    for (int waited = 0; req.find('\n') == std::string::npos && req.size() < 256;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) {
            if ((waited += 100) >= 2000) break;
            continue;
        }
        char buf[256];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
    }
    return req.substr(0, req.find('\n'));
}

void answer(int fd, const std::string& line) {
    std::string l = line + "\n";
    ssize_t n = ::send(fd, l.data(), l.size(), MSG_NOSIGNAL);
    (void)n;
}

// Waits for "start" on the control socket. A signal before that stops the container the
// way it would have stopped the process: with status 128+N. Returns that signal, or 0 with
// the requester's connection in `starter`, answered once the process has started (or not).
int wait_for_start(int listener, const sigset_t& mask, UniqueFd& starter) {
    UniqueFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC));
    if (!sfd) throw_errno("signalfd");
    for (;;) {
        pollfd p[2] = {{listener, POLLIN, 0}, {sfd.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("waiting for start");
        }
        if (p[1].revents & POLLIN) {
            signalfd_siginfo si{};
            if (::read(sfd.get(), &si, sizeof si) == sizeof si && si.ssi_signo != SIGWINCH)
                return static_cast<int>(si.ssi_signo);
        }
        if (p[0].revents & POLLIN) {
            UniqueFd c(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
            if (!c) continue;
            std::string req = read_request(c.get());
            if (req == "start") {
                starter = std::move(c);
                return 0;
            }
            answer(c.get(), "error: unknown request '" + req + "'");
        }
    }
}

}  // namespace

int run_vmm(const VmmOptions& o) {
    Ready ready(o.ready_fd);
    // Read before the jail scrubs the environment (docs/runtime.md).
    const char* no_seccomp_env = std::getenv("VESSEL_NO_SECCOMP");
    const bool no_seccomp = no_seccomp_env && *no_seccomp_env && std::strcmp(no_seccomp_env, "0");
    // Warm start is the default; VESSEL_WARM_START=0 (or the annotation) turns it off.
    const char* warm_env = std::getenv("VESSEL_WARM_START");
    const bool warm_env_set = warm_env && *warm_env;
    const bool warm_default = !warm_env_set || std::strcmp(warm_env, "0") != 0;
    // Forwarded signals go to the container's process (or stop a container not yet
    // started): blocked before any thread exists, read from a signalfd.
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : forwarded_signals()) sigaddset(&mask, s);
    sigaddset(&mask, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);

    std::optional<vmm::Machine> m;
    std::optional<snapshot::ControlServer> api;  // destroyed before the machine
    const bool restoring = !o.restore_dir.empty();
    std::vector<network::NetAttachment> nets;
    std::optional<virtio::vsock::CidLease> cid;
    UniqueFd listener, devnull, container_err;
    std::optional<std::string> vsock_path;
    std::optional<jail::Options> jail_opts;
    agent::ProcessSpec spec;
    // Warm start: what the agent is told after the restore, and when it can be told.
    bool warm = false;
    agent::Identity warm_identity;
    agent::RootRequest warm_root;
    std::function<bool()> guest_ready;
    try {
        oci::StateStore store = state_store();
        const oci::State st = store.load(o.id);
        const Paths paths = Paths::of(store.container_dir(o.id));
        const oci::Bundle bundle = oci::load_bundle(st.bundle);
        const oci::VmPlan plan = oci::plan_vm(bundle);
        spec = agent_spec(plan.process);
        // Its streams survive the vsock reset of a restore from a checkpoint (attach).
        spec.detachable = true;
        // The jail's cgroup first, so that guest memory is charged to it (runtime/jail).
        jail_opts =
            jail::container_options(o.id, bundle.spec.annotations, plan.memory_mib, plan.vcpus);
        if (jail_opts) jail::begin(*jail_opts, {o.ready_fd});
        // fds 0-2 are the container's stdio. The VMM's own diagnostics (device models write
        // to stderr) must not land in the container's output: with --log (engines always
        // pass one) and without --debug, fd 2 becomes /dev/null and the container's stderr
        // is relayed from a copy.
        if (!globals().log.empty() && !globals().debug) {
            container_err = UniqueFd(::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3));
            UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
            if (container_err && null) ::dup2(null.get(), STDERR_FILENO);
        }

        vmm::MachineConfig cfg;
        cfg.kernel = plan.kernel.empty() ? default_kernel() : plan.kernel;
        cfg.memory_mib = plan.memory_mib;
        cfg.vcpus = plan.vcpus;
        cfg.cmdline = container_cmdline();
        vmm::validate(cfg);
        if (::access(cfg.kernel.c_str(), F_OK) != 0)
            throw_errno("kernel " + cfg.kernel +
                        " (build it with guest/kernel/build.sh or set io.vessel.kernel)");
        cfg.initrd = read_all(default_initrd(), "initramfs");
        guest::RootFs root{.source = "/dev/vda"};
        root.readonly = plan.rootfs_readonly;
        if (root.readonly) root.options = "noload";
        std::string run = initramfs::make_run_archive({}, {}, "", plan.hostname, root);
        while (cfg.initrd.size() % 4) cfg.initrd.push_back(0);
        cfg.initrd.insert(cfg.initrd.end(), run.begin(), run.end());

        std::string netns =
            plan.network.mode == oci::NetworkMode::Join ? plan.network.netns_path : "";
        if (plan.network.mode == oci::NetworkMode::New) {
            // A namespace without a path (Docker before 28): ours, configured by the prestart
            // hooks (libnetwork-setkey moves a veth into /proc/PID/ns/net) that create runs
            // when told; the guest's NIC is then wired to what they put there, if anything.
            if (::unshare(CLONE_NEWNET) != 0)
                throw_errno("creating the container's network namespace");
            if (ready.exchange("netns") != "go")
                throw std::runtime_error("create did not run the prestart hooks");
            for (const network::IfAddr& a : network::ipv4_addresses())
                if (a.ifname != "lo") netns = "/proc/self/ns/net";
        }
        if (!netns.empty()) {
            network::AttachOptions ao;
            ao.label = o.id;
            nets.push_back(
                network::NetAttachment::attach(network::NetSpec::parse("netns=" + netns), ao));
            cfg.cmdline += " " + nets.front().kernel_ip_param("eth0");
        }
        // The guest's console: discarded (the process's stdio comes through the agent), or
        // on stderr with --debug.
        if (globals().debug) {
            cfg.console_fd = STDERR_FILENO;
        } else {
            devnull = UniqueFd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
            cfg.console_fd = devnull.get();
        }
        cid = virtio::vsock::CidLease::acquire(vsock_runtime_dir());
        if (!paths.sock_dir.empty()) {
            ::mkdir((vsock_runtime_dir() + "/s").c_str(), 0700);
            if (::mkdir(paths.sock_dir.c_str(), 0700) != 0 && errno != EEXIST)
                throw_errno("creating the socket directory " + paths.sock_dir);
        }
        ::unlink(paths.vsock.c_str());
        // Warm start (runtime/container/warm.h): templates have a disk, at most one NIC and
        // vsock, like the containers they serve.
        warm = !restoring && plan.warm_start.value_or(warm_default) && nets.size() <= 1;
        // Asked for (annotation or environment), a template that cannot be made fails the
        // create; by default the container boots cold instead.
        const bool warm_asked = plan.warm_start.has_value() || warm_env_set;
        virtio::vsock::VsockOptions vo;
        vo.guest_cid = cid->cid();
        vsock_path = paths.vsock;
        vo.uds_path = paths.vsock;
        if (warm || restoring) vo.first_host_port = virtio::vsock::random_host_port_base();
        auto vsock = std::make_shared<virtio::vsock::VsockDevice>(vo);
        listener = listen_unix(paths.control);
        cfg.stop_on_signals = false;
        cfg.seccomp = !no_seccomp;
        // Jailed, this process only exits after the VM: `delete` tears down outside.
        cfg.confine_supervisor = jail_opts.has_value();
        if (no_seccomp)
            log_warning("container " + o.id +
                        ": VESSEL_NO_SECCOMP: the VMM's threads run without seccomp filters "
                        "(debugging only)");

        std::optional<snapshot::Snapshot> tmpl;
        std::string tmpl_snap;
        if (restoring) {
            tmpl_snap = o.restore_dir;
            tmpl = snapshot::load(tmpl_snap);
            check_container_devices(*tmpl, nets.size(), "checkpoint " + o.restore_dir);
            if (!nets.empty())
                warm_identity.interfaces = {interface_identity("eth0", nets.front().guest())};
        }
        if (warm) {
            const WarmKey key{cfg.kernel, default_initrd(), plan.memory_mib, plan.vcpus,
                              !nets.empty()};
            const std::string tdir = template_dir(key);
            try {
                ensure_template(key, tdir);
                tmpl_snap = tdir + "/snap";
                tmpl = snapshot::load(tmpl_snap);
                check_container_devices(*tmpl, nets.size(), "warm-start template " + tdir);
            } catch (const std::exception& e) {
                if (warm_asked) throw;
                log_warning("container " + o.id + ": warm start: " + e.what() +
                            "; booting instead");
                warm = false;
                tmpl.reset();
            }
        }
        if (warm) {
            // The guest learns its address here instead of from the kernel's ip= parameter.
            if (!nets.empty())
                warm_identity.interfaces = {interface_identity("eth0", nets.front().guest())};
            warm_identity.hostname =
                plan.hostname.empty() ? std::string(guest::kDefaultHostname) : plan.hostname;
            warm_identity.seed.resize(64);
            if (::getrandom(warm_identity.seed.data(), warm_identity.seed.size(), 0) != 64)
                throw_errno("getrandom");
            struct stat ist {};
            if (::stat(paths.image.c_str(), &ist) != 0) throw_errno("stat " + paths.image);
            warm_root = {.source = "/dev/vda",
                         .fstype = "ext4",
                         .readonly = plan.rootfs_readonly,
                         .options = plan.rootfs_readonly ? "noload" : "",
                         .size = static_cast<uint64_t>(ist.st_size)};
        }
        // A template or checkpoint to restore (a warm start that fell back to booting has none).
        if (tmpl) {
            m.emplace(std::move(cfg),
                      vmm::RestoreSource{tmpl->machine, snapshot::memory_path(tmpl_snap, *tmpl)});
        } else {
            m.emplace(std::move(cfg));
        }
        virtio::block::BlockDeviceOptions bo;
        bo.disk.path = paths.image;
        bo.disk.read_only = plan.rootfs_readonly;
        auto disk_t = virtio::attach_mmio(*m, std::make_shared<virtio::block::BlockDevice>(bo));
        std::vector<std::shared_ptr<virtio::MmioTransport>> transports = {disk_t};
        for (const network::NetAttachment& a : nets) {
            const virtio::net::NetDeviceOptions no = net_device_options(a);
            transports.push_back(
                virtio::attach_mmio(*m, std::make_shared<virtio::net::NetDevice>(no)));
        }
        transports.push_back(virtio::attach_mmio(*m, vsock));
        // `checkpoint` snapshots through this socket into paths.checkpoint (runtime.md).
        std::vector<snapshot::AttachedDevice> snap_devs;
        snap_devs.push_back({"block",
                             {{"path", paths.image}, {"read_only", plan.rootfs_readonly}},
                             transports[0],
                             {},
                             {}});
        for (size_t i = 0; i < nets.size(); ++i)
            snap_devs.push_back({"net",
                                 {{"netns", netns}},
                                 transports[1 + i],
                                 {},
                                 {virtio::net::NetDevice::kRxQueue}});
        snap_devs.push_back({"vsock",
                             {{"cid", vo.guest_cid}, {"uds_path", vo.uds_path}},
                             transports.back(),
                             {},
                             {0}});
        std::filesystem::create_directories(checkpoint_base());
        if (::mkdir(paths.checkpoint.c_str(), 0700) != 0 && errno != EEXIST)
            throw_errno("creating the checkpoint directory " + paths.checkpoint);
        UniqueFd api_listen = snapshot::ControlServer::listen_at(paths.api);
        ::chmod(paths.api.c_str(), 0600);
        log_debug("container " + o.id + ": VMM " + std::to_string(::getpid()) +
                  (warm        ? " restoring the warm-start template, "
                   : restoring ? " restoring a checkpoint, "
                               : " booting ") +
                  std::to_string(plan.memory_mib) + " MiB, " + std::to_string(plan.vcpus) +
                  " vCPU");
        if (jail_opts) {  // everything is open; no thread runs yet
            std::vector<jail::Exposure> ex = jail::vm_exposures(
                plan.kernel.empty() ? default_kernel() : plan.kernel, default_initrd(),
                {{paths.image, !plan.rootfs_readonly}}, paths.vsock);
            ex.push_back({.path = paths.checkpoint, .writable = true, .owned = true});
            jail::enter(*jail_opts, ex);
        }
        if (tmpl) {
            // The snapshot's transports come back with the container's devices in their slots.
            // A template's disk slot held a placeholder: the driver is told its configuration
            // (capacity) changed. After the jail: active devices start their I/O threads.
            const auto ts = transports;
            snapshot::restore_devices(m->memory(), tmpl->devices, ts);
            guest_ready = snapshot::vsock_reset_handled(m->memory(), tmpl->devices.back());
            m->set_after_restore([ts, warm] {
                snapshot::kick_devices(ts);
                if (warm) ts[0]->raise_config_interrupt();
            });
        }
        api.emplace(std::move(api_listen), paths.api, *m, snap_devs,
                    nlohmann::json{{"container", o.id},
                                   {"agent_port", guest::kDefaultAgentPort},
                                   {"memory_mib", plan.memory_mib},
                                   {"vcpus", plan.vcpus}});
    } catch (const std::exception& e) {
        ready.send(std::string("error: ") + e.what());
        return 1;
    }

    std::atomic<bool> done{false};
    std::thread control([&] {
        vmm::seccomp::enter(vmm::seccomp::Role::AgentControl);
        std::optional<RawTerminal> raw;
        try {
            std::unique_ptr<agent::Client> client;
            if (warm || restoring) {
                const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
                while (!guest_ready() && std::chrono::steady_clock::now() < deadline)
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            for (int attempt = 1;; ++attempt) {
                try {
                    UniqueFd conn = agent::connect_vsock_uds(*vsock_path, guest::kDefaultAgentPort,
                                                             std::chrono::seconds(300));
                    client = std::make_unique<agent::Client>(std::move(conn));
                    if (warm || (restoring && !warm_identity.interfaces.empty()))
                        client->set_identity(warm_identity);
                    break;
                } catch (const agent::ProtocolError&) {
                    // A restored guest that handles its vsock reset late resets us too.
                    if (!(warm || restoring) || attempt >= 5) throw;
                    std::this_thread::sleep_for(std::chrono::milliseconds(20 * attempt));
                }
            }
            if (warm) client->enter_root(warm_root);
            std::uint32_t attach_id = 0;
            if (restoring) {
                for (const agent::ProcessInfo& p : client->list())
                    if (p.attachable && p.running) attach_id = p.id;
                if (!attach_id)
                    throw std::runtime_error("the checkpoint holds no running container process");
            }
            ready.send("ok");
            UniqueFd starter;
            // Restored, the process runs already: no `start` comes.
            int sig = restoring ? 0 : wait_for_start(listener.get(), mask, starter);
            listener.reset();
            if (sig != 0) {
                client->shutdown(128 + sig);
            } else {
                if (spec.tty) raw.emplace(STDIN_FILENO);
                agent::RunOptions ro;
                ro.forward_signals = forwarded_signals();
                if (spec.tty && ::isatty(STDIN_FILENO)) ro.winsize_fd = STDIN_FILENO;
                // `start` answers once the process runs, and fails as runc's does when it
                // cannot be executed; the container then stops with the shell's 127/126.
                ro.on_started = [&] {
                    answer(starter.get(), "ok");
                    starter.reset();
                };
                ro.throw_exec_failure = true;
                ro.attach_id = attach_id;
                agent::ExitStatus es;
                try {
                    es = agent::run(*client, spec, STDIN_FILENO, STDOUT_FILENO,
                                    container_err ? container_err.get() : STDERR_FILENO, ro);
                } catch (const agent::AgentError& e) {
                    if (e.code() != "exec_failed") throw;
                    const bool not_found = e.stage() == "exec" && e.error_number() == ENOENT;
                    answer(starter.get(), not_found ? "error: exec: \"" + spec.argv[0] +
                                                          "\": executable file not found in $PATH"
                                                    : std::string("error: ") + e.what());
                    starter.reset();
                    es.status = not_found ? 127 : 126;
                }
                client->shutdown(es.status);
            }
        } catch (const std::exception& e) {
            ready.send(std::string("error: guest agent: ") + e.what());
            m->stop({vmm::RunResult::Reason::Error, 0, std::string("guest agent: ") + e.what()});
        }
        raw.reset();
        done = true;
    });
    vmm::RunResult r = m->run();
    api.reset();  // its answer to a checkpoint goes out before this process may _exit
    // After a checkpoint the connection to the agent stays open, unanswered: no need to wait.
    const bool checkpointed =
        r.reason == vmm::RunResult::Reason::ExitStatus && r.detail == "snapshot";
    for (int waited = 0; !done && !checkpointed && waited < 2000; waited += 10)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const int status = r.reason == vmm::RunResult::Reason::ExitStatus ? r.status
                       : r.reason == vmm::RunResult::Reason::Signal   ? 128 + r.status
                                                                      : 1;
    if (r.reason == vmm::RunResult::Reason::Error) {
        ready.send("error: " + r.detail);
        log_error("container " + o.id + ": " + r.detail);
    } else if (r.reason == vmm::RunResult::Reason::Reset) {
        ready.send("error: the guest reset before its agent answered");
        log_error("container " + o.id + ": guest reset (kernel panic or reboot)");
    }
    if (!done) {
        control.detach();
        std::fflush(nullptr);
        ::_exit(status);
    }
    control.join();
    if (jail_opts) jail::exit_jailed(status);  // host-side teardown is delete's
    return status;
}

}  // namespace vessel::container
