// The container's VMM process (`vessel _container-vmm ID`): boots the VM, waits for `start`,
// runs the container's process through the guest agent and exits with its status.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
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
#include "runtime/network/attachment.h"
#include "virtio/attach.h"
#include "virtio/block/device.h"
#include "virtio/net/device.h"
#include "virtio/vsock/cid.h"
#include "virtio/vsock/device.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

namespace vessel::container {
namespace {

const char kCmdline[] =
    "console=ttyS0 reboot=k panic=-1 pci=off nomodule 8250.nr_uarts=1 i8042.noaux "
    "i8042.nomux i8042.dumbkbd quiet loglevel=1";

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

  private:
    std::mutex mu_;
    UniqueFd fd_;
};

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
// way it would have stopped the process: with status 128+N. Returns that signal, or 0.
int wait_for_start(int listener, const sigset_t& mask) {
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
                answer(c.get(), "ok");
                return 0;
            }
            answer(c.get(), "error: unknown request '" + req + "'");
        }
    }
}

}  // namespace

int run_vmm(const VmmOptions& o) {
    Ready ready(o.ready_fd);
    // Forwarded signals go to the container's process (or stop a container not yet
    // started): blocked before any thread exists, read from a signalfd.
    sigset_t mask;
    sigemptyset(&mask);
    for (int s : forwarded_signals()) sigaddset(&mask, s);
    sigaddset(&mask, SIGWINCH);
    pthread_sigmask(SIG_BLOCK, &mask, nullptr);

    std::optional<vmm::Machine> m;
    std::vector<network::NetAttachment> nets;
    std::optional<virtio::vsock::CidLease> cid;
    UniqueFd listener, devnull;
    agent::ProcessSpec spec;
    try {
        oci::StateStore store = state_store();
        const oci::State st = store.load(o.id);
        const Paths paths = Paths::of(store.container_dir(o.id));
        const oci::Bundle bundle = oci::load_bundle(st.bundle);
        const oci::VmPlan plan = oci::plan_vm(bundle);
        spec = agent_spec(plan.process);

        vmm::MachineConfig cfg;
        cfg.kernel = plan.kernel.empty() ? default_kernel() : plan.kernel;
        cfg.memory_mib = plan.memory_mib;
        cfg.vcpus = plan.vcpus;
        cfg.cmdline = std::string(kCmdline) + " " + std::string(guest::kAgentCmdlineKey) + "=" +
                      std::to_string(guest::kDefaultAgentPort);
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

        if (plan.network.mode == oci::NetworkMode::Join) {
            network::AttachOptions ao;
            ao.label = o.id;
            nets.push_back(network::NetAttachment::attach(
                network::NetSpec::parse("netns=" + plan.network.netns_path), ao));
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
        ::unlink(paths.vsock.c_str());
        virtio::vsock::VsockOptions vo;
        vo.guest_cid = cid->cid();
        vo.uds_path = paths.vsock;
        auto vsock = std::make_shared<virtio::vsock::VsockDevice>(vo);
        listener = listen_unix(paths.control);
        cfg.stop_on_signals = false;

        m.emplace(std::move(cfg));
        virtio::block::BlockDeviceOptions bo;
        bo.disk.path = paths.image;
        bo.disk.read_only = plan.rootfs_readonly;
        virtio::attach_mmio(*m, std::make_shared<virtio::block::BlockDevice>(bo));
        for (const network::NetAttachment& a : nets) {
            virtio::net::NetDeviceOptions no;
            if (a.tap_fd() >= 0) {
                no.tap.fd = a.tap_fd();
            } else {
                no.tap.name = a.tap_name();
                no.tap.must_exist = true;
            }
            no.mac = a.guest().mac.bytes;
            no.mtu = static_cast<uint16_t>(a.guest().mtu);
            virtio::attach_mmio(*m, std::make_shared<virtio::net::NetDevice>(no));
        }
        virtio::attach_mmio(*m, vsock);
        log_debug("container " + o.id + ": VMM " + std::to_string(::getpid()) + " booting " +
                  std::to_string(plan.memory_mib) + " MiB, " + std::to_string(plan.vcpus) +
                  " vCPU");
    } catch (const std::exception& e) {
        ready.send(std::string("error: ") + e.what());
        return 1;
    }

    const std::string vsock_path = Paths::of(state_store().container_dir(o.id)).vsock;
    std::atomic<bool> done{false};
    std::thread control([&] {
        std::optional<RawTerminal> raw;
        try {
            UniqueFd conn = agent::connect_vsock_uds(vsock_path, guest::kDefaultAgentPort,
                                                     std::chrono::seconds(300));
            auto client = std::make_unique<agent::Client>(std::move(conn));
            ready.send("ok");
            int sig = wait_for_start(listener.get(), mask);
            listener.reset();
            if (sig != 0) {
                client->shutdown(128 + sig);
            } else {
                if (spec.tty) raw.emplace(STDIN_FILENO);
                agent::RunOptions ro;
                ro.forward_signals = forwarded_signals();
                if (spec.tty && ::isatty(STDIN_FILENO)) ro.winsize_fd = STDIN_FILENO;
                agent::ExitStatus es =
                    agent::run(*client, spec, STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, ro);
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
    for (int waited = 0; !done && waited < 2000; waited += 10)
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
    return status;
}

}  // namespace vessel::container
