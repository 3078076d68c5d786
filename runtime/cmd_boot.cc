// vessel boot: boots a micro-VM with vessel's guest init and runs one command in it.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "guest/agent/client.h"
#include "guest/init/proto.h"
#include "guest/init/protocol.h"
#include "guest/initramfs/cpio.h"
#include "runtime/container/console.h"
#include "runtime/container/container.h"
#include "runtime/jail/jail.h"
#include "runtime/network/attachment.h"
#include "runtime/vm_agent.h"
#include "runtime/vm_records.h"
#include "snapshot/control.h"
#include "virtio/attach.h"
#include "virtio/block/device.h"
#include "virtio/net/device.h"
#include "virtio/vsock/cid.h"
#include "virtio/vsock/device.h"
#include "virtio/vsock/unix_backend.h"
#include "vmm/fd.h"
#include "vmm/machine.h"
#include "vmm/seccomp.h"

namespace vessel::cli {
namespace {

const char kDefaultCmdline[] =
    "console=ttyS0 reboot=k panic=-1 pci=off nomodule 8250.nr_uarts=1 i8042.noaux "
    "i8042.nomux i8042.dumbkbd";

const char kBootHelp[] =
    "usage: vessel boot [OPTIONS] -- CMD [ARGS...]\n"
    "Boots a micro-VM, runs CMD in it and exits with CMD's exit status.\n\n"
    "  --kernel PATH      guest kernel, ELF vmlinux or bzImage\n"
    "                     (default: $VESSEL_KERNEL, else $VESSEL_CACHE/kernel/current/vmlinux)\n"
    "  --initrd PATH      base initramfs (default: the one built with vessel)\n"
    "  --cpus N           vCPUs (default 1)\n"
    "  --memory SIZE      guest memory in MiB, or with a K/M/G suffix (default 256)\n"
    "  --cmdline ARGS     extra kernel command line arguments\n"
    "  --disk PATH[,ro][,root][,direct][,engine=uring|sync][,serial=S]\n"
    "                     a raw disk image as virtio-blk: /dev/vda, /dev/vdb, ... in order;\n"
    "                     with `root` the guest runs CMD inside this disk's ext4 filesystem\n"
    "                     (repeatable; engine default: io_uring where the kernel has it)\n"
    "  --net SPEC         a virtio-net interface: eth0, eth1, ... in order (repeatable).\n"
    "                     SPEC: network=NAME | bridge=BR | tap=TAP | netns=PATH, then\n"
    "                     ,ip=ADDR[/PREFIX] ,gw=ADDR ,mac=MAC ,dns=ADDR (docs/networking.md),\n"
    "                     ,engine=uring|sync (default: io_uring where the kernel has it).\n"
    "                     The kernel's ip= parameter configures the first interface\n"
    "  --agent            run CMD through the guest agent over vsock: stdin is forwarded,\n"
    "                     stdout and stderr stay apart, signals reach CMD "
    "(docs/agent-protocol.md)\n"
    "                     Without CMD (needs --id or --api-socket): the VM waits with its\n"
    "                     agent ready (\"vessel: agent ready\" on stdout) until it is stopped,\n"
    "                     a template for `vessel snapshot create` and `restore --clone`\n"
    "  -t, --tty          with --agent: CMD gets a terminal in the guest\n"
    "  --vsock-socket PATH  the VM's vsock device on the Unix socket PATH (host connects and\n"
    "                     writes \"CONNECT <port>\\n\"; guest connections to port P reach "
    "PATH_P).\n"
    "                     Default with --agent: $VESSEL_RUNTIME_DIR/vm-<pid>.vsock\n"
    "  --cid N            the guest's vsock CID (default: the lowest free one from 3)\n"
    "  --env KEY=VALUE    environment for CMD (repeatable)\n"
    "  --cwd DIR          working directory for CMD in the guest\n"
    "  --console-log FILE write the serial console to FILE instead of stdout (with --agent the\n"
    "                     console is discarded, or goes to stderr with --verbose)\n"
    "  --verbose          show the kernel's boot messages\n"
    "  --no-seccomp       debugging only: run the VMM's threads without their seccomp filters\n"
    "                     (docs/design.md, \"Seccomp and io_uring restrictions\")\n"
    "  --write-initrd FILE  write the assembled initramfs to FILE and exit (to boot the same\n"
    "                     guest elsewhere, e.g. in QEMU for comparison)\n"
    "  --print-cmdline    print the kernel command line vessel would use and exit\n"
    "  --id NAME          name the VM for `vessel snapshot create NAME DIR` (control socket\n"
    "                     $VESSEL_RUNTIME_DIR/vm-NAME.sock)\n"
    "  --api-socket PATH  the same control socket at PATH\n"
    "  --track-dirty      track written pages, for `vessel snapshot create --diff` (every\n"
    "                     snapshot after the first can then hold only what changed)\n"
    "  --jail[=OPTS]      confine the VMM (runtime/jail, docs/design.md \"Jailer\"): own PID,\n"
    "                     mount and IPC namespaces, a root holding only its files, a cgroup,\n"
    "                     an unprivileged uid. OPTS: uid=,gid=,mem=,cpus=,pids=,cgroup=,dir=,\n"
    "                     nofile=,fsize= (docs/runtime.md). Needs root\n";

struct DiskSpec {
    virtio::block::BlockDeviceOptions opts;
    bool root = false;
};

DiskSpec parse_disk(const std::string& spec) {
    DiskSpec d;
    virtio::block::BlockDeviceOptions& o = d.opts;
    size_t start = 0;
    bool first = true;
    while (start <= spec.size()) {
        size_t comma = spec.find(',', start);
        std::string part =
            spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (first) {
            if (part.empty()) usage_error("--disk: missing image path in '" + spec + "'");
            o.disk.path = part;
            first = false;
        } else if (part == "ro") {
            o.disk.read_only = true;
        } else if (part == "direct") {
            o.disk.direct = true;
        } else if (part == "root") {
            d.root = true;
        } else if (part == "engine=uring" || part == "engine=io_uring") {
            o.engine = virtio::block::EnginePreference::IoUring;
        } else if (part == "engine=sync") {
            o.engine = virtio::block::EnginePreference::Sync;
        } else if (part.rfind("serial=", 0) == 0) {
            o.disk.serial = part.substr(7);
            if (o.disk.serial.size() > 20) usage_error("--disk: serial longer than 20 bytes");
        } else {
            usage_error("--disk: unknown option '" + part + "' in '" + spec + "'");
        }
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return d;
}

std::vector<uint8_t> read_file(const std::string& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw_errno(std::string("opening ") + what + " " + path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The exit status of `vessel boot` for how the VM stopped.
int exit_status(const vmm::RunResult& r) {
    switch (r.reason) {
        case vmm::RunResult::Reason::ExitStatus:
            return r.status;
        case vmm::RunResult::Reason::Reset:
            std::fprintf(stderr,
                         "vessel: guest reset without reporting an exit status "
                         "(kernel panic or reboot)\n");
            return 1;
        case vmm::RunResult::Reason::Signal:
            return 128 + r.status;
        case vmm::RunResult::Reason::Error:
            std::fprintf(stderr, "vessel: %s\n", r.detail.c_str());
            return 1;
    }
    return 1;
}

}  // namespace

int cmd_boot(Args args) {
    vmm::MachineConfig cfg;
    std::string kernel = container::default_kernel(), initrd_path = container::default_initrd(),
                extra, console_log, cwd, write_initrd;
    bool print_cmdline = false;
    std::vector<std::string> env, argv;
    std::vector<DiskSpec> disks;
    std::vector<network::NetSpec> nets;
    std::vector<std::string> net_texts;  // as given, for snapshots to re-attach
    std::vector<virtio::io::EnginePreference> net_engines;
    bool verbose = false, use_agent = false, tty = false, no_seccomp = false;
    std::string vsock_socket;
    std::optional<uint64_t> cid;
    std::optional<std::string> jail_spec;
    std::string api_socket;  // --id / --api-socket: control socket for snapshots

    size_t i = 0;
    auto value = [&](const std::string& flag) -> std::string {
        if (i + 1 >= args.size()) usage_error(flag + " needs a value");
        return args[++i];
    };
    for (; i < args.size(); ++i) {
        std::string a = args[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a == "--help" || a == "-h") {
            std::fputs(kBootHelp, stdout);
            return 0;
        } else if (a == "--kernel") {
            kernel = value(a);
        } else if (a == "--initrd") {
            initrd_path = value(a);
        } else if (a == "--cpus") {
            cfg.vcpus = parse_count(a, value(a));
        } else if (a == "--memory") {
            cfg.memory_mib = parse_size_mib(a, value(a));
        } else if (a == "--cmdline") {
            extra = value(a);
        } else if (a == "--env" || a == "-e") {
            std::string e = value(a);
            if (e.find('=') == std::string::npos)
                usage_error("--env: '" + e + "' is not KEY=VALUE");
            env.push_back(e);
        } else if (a == "--disk") {
            disks.push_back(parse_disk(value(a)));
        } else if (a == "--net") {
            std::string spec = value(a);
            // engine= is the device's business, everything else the host network's.
            auto engine = virtio::io::EnginePreference::Auto;
            for (const auto& [opt, pref] :
                 {std::pair{",engine=uring", virtio::io::EnginePreference::IoUring},
                  std::pair{",engine=io_uring", virtio::io::EnginePreference::IoUring},
                  std::pair{",engine=sync", virtio::io::EnginePreference::Sync}}) {
                if (size_t at = spec.find(opt); at != std::string::npos) {
                    engine = pref;
                    spec.erase(at, std::strlen(opt));
                }
            }
            try {
                nets.push_back(network::NetSpec::parse(spec));
                net_texts.push_back(spec);
            } catch (const std::invalid_argument& e) {
                usage_error(e.what());
            }
            net_engines.push_back(engine);
        } else if (a == "--agent") {
            use_agent = true;
        } else if (a == "--tty" || a == "-t") {
            tty = true;
        } else if (a == "--vsock-socket") {
            vsock_socket = value(a);
        } else if (a == "--cid") {
            std::string v = value(a);
            uint32_t c = parse_count(a, v);
            if (c < 3) usage_error("--cid: " + v + " is reserved (guest CIDs start at 3)");
            cid = c;
        } else if (a == "--cwd") {
            cwd = value(a);
        } else if (a == "--console-log") {
            console_log = value(a);
        } else if (a == "--write-initrd") {
            write_initrd = value(a);
        } else if (a == "--print-cmdline") {
            print_cmdline = true;
        } else if (a == "--jail" || a.rfind("--jail=", 0) == 0) {
            jail_spec = a.size() > 7 ? a.substr(7) : "";
        } else if (a == "--verbose" || a == "-v") {
            verbose = true;
        } else if (a == "--id") {
            api_socket = vm_control_socket(value(a));
        } else if (a == "--api-socket") {
            api_socket = value(a);
        } else if (a == "--track-dirty") {
            cfg.track_dirty = true;
        } else if (a == "--no-seccomp") {
            no_seccomp = true;
        } else if (!a.empty() && a[0] == '-') {
            usage_error("boot: unknown option '" + a + "'");
        } else {
            break;  // first word of the command
        }
    }
    for (; i < args.size(); ++i) argv.emplace_back(args[i]);
    if (tty && !use_agent) usage_error("--tty needs --agent (the serial console is output only)");
    if (use_agent && argv.empty() && api_socket.empty())
        usage_error("--agent: no command given (a VM without one needs --id or --api-socket)");
    if (tty && argv.empty()) usage_error("--tty: no command given");

    cfg.kernel = kernel;
    cfg.cmdline = std::string(kDefaultCmdline) + (verbose ? "" : " quiet loglevel=1");
    if (!extra.empty()) cfg.cmdline += " " + extra;
    if (use_agent)
        cfg.cmdline += " " + std::string(guest::kAgentCmdlineKey) + "=" +
                       std::to_string(guest::kDefaultAgentPort);
    vmm::validate(cfg);  // reject bad sizes before touching KVM or files
    std::optional<jail::Options> jail_opts;
    if (jail_spec) {
        if (!api_socket.empty())  // snapshots are written where the jail cannot reach
            usage_error("--jail cannot be combined with --id/--api-socket (snapshots)");
        try {
            jail_opts = jail::boot_options(*jail_spec, cfg.memory_mib, cfg.vcpus);
        } catch (const std::invalid_argument& e) {
            usage_error(e.what());
        }
        jail::validate(*jail_opts);
        jail::close_inherited_fds({});
    }
    if (print_cmdline) {
        std::printf("%s\n", cfg.cmdline.c_str());
        return 0;
    }
    if (::access(kernel.c_str(), F_OK) != 0)
        throw_errno("kernel " + kernel + " (build it with guest/kernel/build.sh or pass --kernel)");

    cfg.initrd = read_file(initrd_path, "initramfs");
    // The kernel unpacks concatenated archives, so the per-run archive goes after the base one.
    std::optional<guest::RootFs> rootfs;
    for (size_t d = 0; d < disks.size(); ++d) {
        if (!disks[d].root) continue;
        if (rootfs) usage_error("--disk: only one disk can be the root");
        rootfs = guest::RootFs{.source = std::string("/dev/vd") + static_cast<char>('a' + d)};
        rootfs->readonly = disks[d].opts.disk.read_only;
        // A read-only disk must not see the ext4 journal replayed onto it.
        if (rootfs->readonly) rootfs->options = "noload";
    }
    std::string run = initramfs::make_run_archive(argv, env, cwd, "", rootfs);
    while (cfg.initrd.size() % 4) cfg.initrd.push_back(0);
    cfg.initrd.insert(cfg.initrd.end(), run.begin(), run.end());

    if (!write_initrd.empty()) {
        std::ofstream out(write_initrd, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(cfg.initrd.data()),
                  static_cast<std::streamsize>(cfg.initrd.size()));
        if (!out.flush()) throw_errno("writing initramfs " + write_initrd);
        return 0;
    }

    // Host networking first: it can fail on things the user named (a missing network or
    // bridge), and each attachment undoes itself (tap, lease) when it goes out of scope.
    std::vector<network::NetAttachment> attachments;
    for (const network::NetSpec& n : nets) {
        network::AttachOptions ao;
        ao.label = "vessel boot";
        attachments.push_back(network::NetAttachment::attach(n, ao));
        if (verbose) std::fprintf(stderr, "vessel: %s\n", attachments.back().describe().c_str());
    }
    if (!attachments.empty()) cfg.cmdline += " " + attachments.front().kernel_ip_param("eth0");

    UniqueFd log;
    if (!console_log.empty()) {
        log = UniqueFd(::open(console_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!log) throw_errno("opening console log " + console_log);
        cfg.console_fd = log.get();
    } else if (use_agent) {
        // The command's output comes through the agent; the console would only mix the
        // guest's own messages into it.
        if (verbose) {
            cfg.console_fd = STDERR_FILENO;
        } else {
            log = UniqueFd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
            if (!log) throw_errno("opening /dev/null");
            cfg.console_fd = log.get();
        }
    }

    // vsock: a CID of our own and the Unix socket the host side listens on.
    std::optional<virtio::vsock::CidLease> cid_lease;
    UniqueFd broker_jailed, broker_outside;  // --jail: the vsock connect broker's two ends
    std::shared_ptr<virtio::vsock::VsockDevice> vsock;
    if (use_agent || !vsock_socket.empty() || cid) {
        if (!cid) {
            cid_lease = virtio::vsock::CidLease::acquire(container::vsock_runtime_dir());
            cid = cid_lease->cid();
        }
        if (vsock_socket.empty()) {
            const std::string dir = container::vsock_runtime_dir();
            if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
                throw_errno("creating runtime directory " + dir);
            vsock_socket = dir + "/vm-" + std::to_string(::getpid()) + ".vsock";
        }
        virtio::vsock::VsockOptions vo;
        vo.guest_cid = *cid;
        vo.uds_path = vsock_socket;
        if (jail_opts) {
            // The jail hides "<socket>_PORT": this process connects for the guest (broker).
            int sp[2];
            if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
                throw_errno("creating the vsock connect broker's socket pair");
            broker_jailed.reset(sp[0]);
            broker_outside.reset(sp[1]);
            vo.connect_broker = broker_jailed.get();
        }
        vsock = std::make_shared<virtio::vsock::VsockDevice>(vo);
        if (verbose)
            std::fprintf(stderr, "vessel: vsock CID %llu on %s\n",
                         static_cast<unsigned long long>(*cid), vsock_socket.c_str());
    }
    const bool agent_command = use_agent && !argv.empty();
    if (agent_command) {
        // Forwarded signals go to the command, not to the VM.
        block_forwarded_signals();
        cfg.stop_on_signals = false;
    }

    // --jail: a child in a new PID namespace and the jail's cgroup runs the VM; this process
    // waits for it, then undoes the host side (taps, leases, sockets, the cgroup).
    if (jail_opts) {
        jail::ParentService broker;
        if (broker_outside)
            broker = {broker_outside.get(), [&] {
                          return virtio::vsock::broker_serve_one(broker_outside.get(),
                                                                 vsock_socket);
                      }};
        if (std::optional<int> status = jail::run_jailed_child(*jail_opts, broker)) return *status;
        broker_outside.reset();
    }
    cfg.seccomp = !no_seccomp;
    // The jailed child only exits after the VM: this process's parent undoes the host side.
    cfg.confine_supervisor = jail_opts.has_value();
    if (no_seccomp)
        std::fprintf(stderr,
                     "vessel: warning: --no-seccomp: the VMM's threads run without seccomp "
                     "filters (debugging only)\n");
    vmm::Machine m(std::move(cfg));
    std::vector<snapshot::AttachedDevice> snap_devs;  // what a snapshot saves (snapshot/)
    for (size_t d = 0; d < disks.size(); ++d) {
        auto dev = std::make_shared<virtio::block::BlockDevice>(disks[d].opts);
        if (verbose)
            std::fprintf(stderr, "vessel: disk vd%c (%s): %s\n", static_cast<char>('a' + d),
                         disks[d].opts.disk.path.c_str(), dev->engine_reason().c_str());
        const auto& o = disks[d].opts;
        snap_devs.push_back(
            {"block",
             {{"path", o.disk.path},
              {"read_only", o.disk.read_only},
              {"direct", o.disk.direct},
              {"serial", o.disk.serial},
              {"engine", o.engine == virtio::block::EnginePreference::Sync      ? "sync"
                         : o.engine == virtio::block::EnginePreference::IoUring ? "uring"
                                                                                : "auto"},
              {"queue_size", o.queue_size}},
             virtio::attach_mmio(m, std::move(dev)),
             {},
             {}});
    }
    for (size_t n = 0; n < attachments.size(); ++n) {
        const network::NetAttachment& a = attachments[n];
        virtio::net::NetDeviceOptions o = container::net_device_options(a);
        o.engine = net_engines[n];
        auto dev = std::make_shared<virtio::net::NetDevice>(o);
        if (verbose)
            std::fprintf(stderr, "vessel: eth%zu on %s: %s\n", n, dev->tap_name().c_str(),
                         dev->engine_reason().c_str());
        snap_devs.push_back({"net",
                             net_record(net_texts[n], a, dev->tap_name(), net_engines[n]),
                             virtio::attach_mmio(m, dev),
                             [dev] { return net_state_to_json(dev->state()); },
                             {virtio::net::NetDevice::kRxQueue}});
    }
    if (vsock)
        snap_devs.push_back({"vsock",
                             {{"cid", vsock->guest_cid()}, {"uds_path", vsock->uds_path()}},
                             virtio::attach_mmio(m, vsock),
                             {},
                             {0}});
    if (jail_opts) {  // everything is open; no thread runs yet
        std::vector<std::pair<std::string, bool>> disk_paths;
        for (const DiskSpec& d : disks)
            disk_paths.emplace_back(d.opts.disk.path, !d.opts.disk.read_only);
        jail::enter(*jail_opts, jail::vm_exposures(kernel, initrd_path, disk_paths, vsock_socket));
    }

    // Agent mode: a thread connects to the guest agent once it listens, runs the command with
    // our stdio, and asks the agent to shut the VM down with the command's status.
    std::optional<container::RawTerminal> raw;
    std::optional<AgentSession> agent_session;
    if (use_agent) {
        AgentJob job{.uds = vsock_socket, .identity = {}, .command = {}, .tty = tty};
        if (agent_command) {
            if (tty) raw.emplace(STDIN_FILENO);
            job.command = command_spec(argv, env, cwd, tty);
        }
        agent_session.emplace(m, std::move(job));
    }
    std::optional<snapshot::ControlServer> snap_control;
    if (!api_socket.empty())
        snap_control.emplace(api_socket, m, snap_devs, snapshot_meta(m.config(), use_agent));
    vmm::RunResult r = m.run();
    snap_control.reset();
    if (agent_session && !agent_session->finish()) {
        raw.reset();
        std::fflush(nullptr);
        std::fprintf(stderr, "vessel: the VM stopped before the guest agent answered\n");
        ::_exit(r.reason == vmm::RunResult::Reason::ExitStatus ? r.status : 1);
    }
    raw.reset();
    const int status = exit_status(r);
    if (jail_opts) jail::exit_jailed(status);  // the parent undoes the host side
    return status;
}

}  // namespace vessel::cli
