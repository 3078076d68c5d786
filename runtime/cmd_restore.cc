// vessel restore: runs a VM from a snapshot directory in the foreground, like `vessel boot`
// (console on stdout, exit status from the guest). Everything in the snapshot is checked
// before a device is opened or KVM is touched.
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/random.h>

#include <functional>

#include "commands.h"
#include "guest/agent/messages.h"
#include "guest/init/proto.h"
#include "runtime/container/console.h"
#include "runtime/container/container.h"
#include "runtime/network/attachment.h"
#include "runtime/vm_agent.h"
#include "runtime/vm_records.h"
#include "snapshot/control.h"
#include "snapshot/disk_copy.h"
#include "snapshot/snapshot.h"
#include "snapshot/vm_snapshot.h"
#include "snapshot/working_set.h"
#include "virtio/attach.h"
#include "virtio/block/device.h"
#include "virtio/net/device.h"
#include "virtio/vsock/cid.h"
#include "virtio/vsock/device.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

namespace vessel::cli {
namespace {

const char kRestoreHelp[] =
    "usage: vessel restore [OPTIONS] DIR [-- CMD [ARGS...]]\n"
    "Runs the VM saved in the snapshot DIR (`vessel snapshot create`) from where it was and\n"
    "exits with its command's exit status. A DIR without '/' is a name in the snapshot store.\n"
    "Disks are reopened by path; network interfaces are attached again (same address and\n"
    "MAC); vsock connections of the saved VM are reset. A diff snapshot is laid over its\n"
    "parents' memory (`vessel snapshot create --diff`).\n\n"
    "  --clone            a new machine from the snapshot, which may run beside the original\n"
    "                     and other clones: its own vsock CID and socket, a new lease and MAC\n"
    "                     on each network, a hostname and a fresh RNG seed, applied by the\n"
    "                     guest agent (the snapshot's VM must run it: boot --agent)\n"
    "  --hostname NAME    the guest's hostname (default with --clone: vessel-<random>)\n"
    "  --net SPEC         attach interface eth0, eth1, ... (in order) as SPEC instead of as\n"
    "                     recorded (the `vessel boot --net` syntax); the agent moves the guest\n"
    "                     to the new address and MAC\n"
    "  --cid N            the guest's vsock CID (default: recorded; with --clone the lowest\n"
    "                     free one)\n"
    "  --vsock-socket PATH  the vsock device's Unix socket (default: recorded; with --clone\n"
    "                     $VESSEL_RUNTIME_DIR/vm-<pid>.vsock)\n"
    "  --agent            run CMD through the guest agent (stdio relayed, signals forwarded)\n"
    "                     and stop the VM with its status; without CMD, print \"vessel: agent\n"
    "                     ready\" on stdout once the agent answers and keep running\n"
    "  -t, --tty          with --agent: CMD gets a terminal in the guest\n"
    "  --env KEY=VALUE    environment for CMD (repeatable)\n"
    "  --cwd DIR          working directory for CMD in the guest\n"
    "  --id NAME          control socket for `vessel snapshot create NAME ...`\n"
    "  --api-socket PATH  the same, at PATH\n"
    "  --console-log FILE write the serial console to FILE instead of stdout (with --agent\n"
    "                     it is discarded, or goes to stderr with --verbose)\n"
    "  --revert-disks     put each writable disk back as it was at the snapshot, from the\n"
    "                     copies `snapshot create --disks` kept (as virsh snapshot-revert);\n"
    "                     without it disks are used as they are now\n"
    "  --copy-memory      read guest memory into the VMM up front instead of mapping the\n"
    "                     snapshot's file copy-on-write (slower to start, grows with the\n"
    "                     snapshot's data; the file may then change while the VM runs)\n"
    "  --uffd             guest memory behind a userfaultfd: pages are read from the file on\n"
    "                     first touch; the first --uffd restore records the pages it touches\n"
    "                     in DIR/memory.ws, later ones install those up front (prefetch)\n"
    "  --ws-record-ms MS  how long the first --uffd restore records (default 5000; it stops\n"
    "                     earlier if the VM does; 0: do not record)\n"
    "  --track-dirty      track written pages, for `vessel snapshot create --diff`\n"
    "  --verbose          say what was attached on stderr\n"
    "  --no-seccomp       debugging only: no seccomp filters on the VMM's threads\n"
    "  --timing           print where the restore's time went on stderr\n";

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::string store_path(const std::string& arg) {
    if (arg.find('/') != std::string::npos) return arg;
    if (const char* d = std::getenv("VESSEL_SNAPSHOT_DIR"); d && *d)
        return std::string(d) + "/" + arg;
    if (::geteuid() == 0) return "/var/lib/vessel/snapshots/" + arg;
    if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x)
        return std::string(x) + "/vessel/snapshots/" + arg;
    if (const char* h = std::getenv("HOME"); h && *h)
        return std::string(h) + "/.local/share/vessel/snapshots/" + arg;
    return "/tmp/vessel-snapshots-" + std::to_string(::geteuid()) + "/" + arg;
}

std::string random_hex(size_t bytes) {
    std::vector<uint8_t> b(bytes);
    if (::getrandom(b.data(), b.size(), 0) != static_cast<ssize_t>(b.size()))
        throw_errno("getrandom");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (uint8_t v : b) out += {kHex[v >> 4], kHex[v & 15]};
    return out;
}

// How the restored VM's identity differs from the snapshot's: what make_devices chose.
struct Plan {
    bool clone = false;
    std::optional<uint64_t> cid;
    std::string vsock_socket;
    std::vector<std::string> net_overrides;  // --net, in interface order
    bool verbose = false;
};

struct Made {
    std::vector<std::shared_ptr<virtio::Device>> devices;
    std::vector<nlohmann::json> configs;                  // records of the restored VM
    std::vector<std::function<nlohmann::json()>> states;  // net devices' State
    std::vector<network::NetAttachment> attachments;      // undone when restore exits
    std::optional<virtio::vsock::CidLease> cid_lease;
    std::string vsock_socket;                     // "" without a vsock device
    std::vector<agent::InterfaceIdentity> moved;  // interfaces whose address or MAC changed
};

// Re-creates the devices the records describe (throws with the device named on failure).
void make_devices(const std::vector<snapshot::DeviceRecord>& records, const Plan& plan, Made& out) {
    size_t net_index = 0;
    for (const auto& r : records) {
        const std::string what = "device slot " + std::to_string(r.slot) + " (" + r.kind + ")";
        try {
            if (r.kind == "block") {
                virtio::block::BlockDeviceOptions o;
                o.disk.path = r.config.at("path").get<std::string>();
                o.disk.read_only = r.config.value("read_only", false);
                o.disk.direct = r.config.value("direct", false);
                o.disk.serial = r.config.value("serial", "");
                std::string engine = r.config.value("engine", "auto");
                o.engine = engine == "sync"    ? virtio::block::EnginePreference::Sync
                           : engine == "uring" ? virtio::block::EnginePreference::IoUring
                                               : virtio::block::EnginePreference::Auto;
                o.queue_size = r.config.value("queue_size", o.queue_size);
                out.devices.push_back(std::make_shared<virtio::block::BlockDevice>(o));
                out.configs.push_back(r.config);
                out.states.emplace_back();
                continue;
            }
            if (r.kind == "net") {
                const std::string ifname = "eth" + std::to_string(net_index);
                std::optional<std::string> override_text;
                if (net_index < plan.net_overrides.size())
                    override_text = plan.net_overrides[net_index];
                ++net_index;
                const network::NetSpec spec =
                    restore_net_spec(r.config, r.state, override_text, plan.clone, ifname);
                network::AttachOptions ao;
                ao.label = "vessel restore";
                out.attachments.push_back(network::NetAttachment::attach(spec, ao));
                network::NetAttachment& a = out.attachments.back();
                if (plan.verbose)
                    std::fprintf(stderr, "vessel: %s: %s\n", ifname.c_str(), a.describe().c_str());
                const virtio::net::NetDevice::State saved = net_state_from_json(r.state);
                virtio::net::NetDeviceOptions o = container::net_device_options(a);
                o.engine = net_engine(r.config);
                o.link_up = saved.link_up;
                auto dev = std::make_shared<virtio::net::NetDevice>(o);
                const std::string old_address = r.config.value("address", "");
                const std::string new_address = a.guest().address ? a.guest().address->str() : "";
                if (a.guest().mac.bytes != saved.mac || old_address != new_address)
                    out.moved.push_back(interface_identity(ifname, a.guest()));
                out.configs.push_back(net_record(override_text.value_or(r.config.at("spec")), a,
                                                 dev->tap_name(), o.engine));
                out.states.push_back([dev] { return net_state_to_json(dev->state()); });
                out.devices.push_back(std::move(dev));
                continue;
            }
            if (r.kind == "vsock") {
                virtio::vsock::VsockOptions o;
                if (plan.cid) {
                    o.guest_cid = *plan.cid;
                } else if (plan.clone) {
                    out.cid_lease =
                        virtio::vsock::CidLease::acquire(container::vsock_runtime_dir());
                    o.guest_cid = out.cid_lease->cid();
                } else {
                    o.guest_cid = r.config.at("cid").get<uint64_t>();
                }
                if (!plan.vsock_socket.empty()) {
                    o.uds_path = plan.vsock_socket;
                } else if (plan.clone) {
                    const std::string dir = container::vsock_runtime_dir();
                    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
                        throw_errno("creating runtime directory " + dir);
                    o.uds_path = dir + "/vm-" + std::to_string(::getpid()) + ".vsock";
                } else {
                    o.uds_path = r.config.at("uds_path").get<std::string>();
                }
                o.queue_size = r.config.value("queue_size", o.queue_size);
                o.first_host_port = virtio::vsock::random_host_port_base();
                auto dev = std::make_shared<virtio::vsock::VsockDevice>(o);
                if (plan.verbose)
                    std::fprintf(stderr, "vessel: vsock CID %llu on %s\n",
                                 static_cast<unsigned long long>(o.guest_cid), o.uds_path.c_str());
                out.vsock_socket = o.uds_path;
                out.configs.push_back({{"cid", o.guest_cid}, {"uds_path", o.uds_path}});
                out.states.emplace_back();
                out.devices.push_back(std::move(dev));
                continue;
            }
        } catch (const nlohmann::json::exception& e) {
            throw snapshot::SnapshotError(what + ": bad configuration: " + e.what());
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(what + ": " + e.what());
        } catch (const std::system_error& e) {
            throw std::system_error(e.code(), what + ": " + e.what());
        }
        throw snapshot::SnapshotError(what + ": restoring " + r.kind + " devices is not supported");
    }
    if (net_index < plan.net_overrides.size())
        throw std::invalid_argument("--net given " + std::to_string(plan.net_overrides.size()) +
                                    " times; the snapshot has " + std::to_string(net_index) +
                                    " network interfaces");
}

}  // namespace

int cmd_restore(Args args) {
    if (is_container_restore(args)) return cmd_oci_restore(args);
    const auto t_start = Clock::now();
    std::string dir_arg, id_socket, console_log, hostname, cwd;
    bool no_seccomp = false, timing = false, copy_memory = false, track_dirty = false;
    bool use_agent = false, tty = false, revert_disks = false, uffd = false;
    long record_ms = 5000;
    Plan plan;
    std::vector<std::string> env, argv;
    size_t i = 0;
    auto value = [&](const std::string& a) -> std::string {
        if (i + 1 >= args.size()) usage_error(a + " needs a value");
        return args[++i];
    };
    for (; i < args.size(); ++i) {
        std::string a = args[i];
        if (a == "--") {
            for (++i; i < args.size(); ++i) argv.emplace_back(args[i]);
            break;
        }
        if (a == "--help" || a == "-h") {
            std::fputs(kRestoreHelp, stdout);
            return 0;
        } else if (a == "--id") {
            id_socket = vm_control_socket(value(a));
        } else if (a == "--api-socket") {
            id_socket = value(a);
        } else if (a == "--console-log") {
            console_log = value(a);
        } else if (a == "--no-seccomp") {
            no_seccomp = true;
        } else if (a == "--copy-memory") {
            copy_memory = true;
        } else if (a == "--uffd") {
            uffd = true;
        } else if (a == "--ws-record-ms") {
            const std::string v = value(a);
            char* end = nullptr;
            record_ms = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end || record_ms < 0 || record_ms > 3600 * 1000)
                usage_error("restore: --ws-record-ms wants milliseconds (0 to 3600000)");
        } else if (a == "--track-dirty") {
            track_dirty = true;
        } else if (a == "--timing") {
            timing = true;
        } else if (a == "--clone") {
            plan.clone = true;
        } else if (a == "--revert-disks") {
            revert_disks = true;
        } else if (a == "--hostname") {
            hostname = value(a);
        } else if (a == "--net") {
            plan.net_overrides.push_back(value(a));
        } else if (a == "--cid") {
            std::string v = value(a);
            uint32_t c = parse_count(a, v);
            if (c < 3) usage_error("--cid: " + v + " is reserved (guest CIDs start at 3)");
            plan.cid = c;
        } else if (a == "--vsock-socket") {
            plan.vsock_socket = value(a);
        } else if (a == "--agent") {
            use_agent = true;
        } else if (a == "--tty" || a == "-t") {
            tty = true;
        } else if (a == "--env" || a == "-e") {
            std::string e = value(a);
            if (e.find('=') == std::string::npos)
                usage_error("--env: '" + e + "' is not KEY=VALUE");
            env.push_back(e);
        } else if (a == "--cwd") {
            cwd = value(a);
        } else if (a == "--verbose" || a == "-v") {
            plan.verbose = true;
        } else if (!a.empty() && a[0] == '-') {
            usage_error("restore: unknown option '" + a + "'");
        } else if (dir_arg.empty()) {
            dir_arg = a;
        } else {
            usage_error("restore: one snapshot directory expected (a command goes after --)");
        }
    }
    if (dir_arg.empty()) usage_error("restore: no snapshot directory given");
    if (uffd && copy_memory) usage_error("restore: --uffd and --copy-memory exclude each other");
    if (!argv.empty() && !use_agent) usage_error("restore: a command needs --agent");
    if (tty && argv.empty()) usage_error("--tty: no command given");
    if (!env.empty() && argv.empty()) usage_error("--env: no command given");
    if (!hostname.empty()) {
        try {
            (void)agent::identity_to_json(agent::Identity{.hostname = hostname});
        } catch (const std::invalid_argument& e) {
            usage_error(std::string("--hostname: ") + e.what());
        }
    }
    for (const std::string& n : plan.net_overrides) {
        try {
            (void)network::NetSpec::parse(n);
        } catch (const std::invalid_argument& e) {
            usage_error(e.what());
        }
    }
    const std::string dir = store_path(dir_arg);

    // 1. The whole snapshot is checked (checksums, version, sizes, memory file) first.
    auto t = Clock::now();
    snapshot::Snapshot snap;
    snapshot::Resolved chain;  // a diff snapshot: its parents, down to a full one
    try {
        chain = snapshot::resolve(dir);
        snap = chain.snap;
    } catch (const snapshot::SnapshotError& e) {
        std::fprintf(stderr, "vessel: restore: %s\n", e.what());
        return 1;
    }
    const double load_ms = ms_since(t);
    const bool has_agent = snap.meta.contains("agent_port");
    if ((use_agent || plan.clone || !hostname.empty()) && !has_agent) {
        std::fprintf(stderr,
                     "vessel: restore: %s was taken of a VM without the guest agent (boot it with "
                     "--agent): %s needs it\n",
                     dir.c_str(),
                     use_agent    ? "--agent"
                     : plan.clone ? "--clone"
                                  : "--hostname");
        return 1;
    }
    if (!id_socket.empty() && snapshot::socket_is_live(id_socket)) {
        std::fprintf(stderr, "vessel: restore: control socket %s is in use by a running VM\n",
                     id_socket.c_str());
        return 1;
    }

    // Revert: every writable disk must have its copy and be free before any is replaced.
    if (revert_disks) {
        std::vector<std::pair<std::string, std::string>> reverts;  // copy, disk
        for (const auto& r : snap.devices) {
            if (r.kind != "block" || r.config.value("read_only", false)) continue;
            const std::string path = r.config.value("path", "");
            const std::string copy = r.config.value("copy", "");
            if (copy.empty() || copy.find('/') != std::string::npos ||
                ::access((dir + "/" + copy).c_str(), R_OK) != 0) {
                std::fprintf(stderr,
                             "vessel: restore: %s holds no copy of disk %s (take the snapshot "
                             "with `snapshot create --disks`)\n",
                             dir.c_str(), path.c_str());
                return 1;
            }
            reverts.emplace_back(dir + "/" + copy, path);
        }
        if (plan.clone && !reverts.empty())
            usage_error("--revert-disks with --clone: a clone cannot take the original's disks");
        for (const auto& [copy, path] : reverts) {
            if (snapshot::disk_in_use(path)) {
                std::fprintf(stderr, "vessel: restore: disk %s is in use by a running VM\n",
                             path.c_str());
                return 1;
            }
        }
        try {
            for (const auto& [copy, path] : reverts) snapshot::revert_disk(copy, path);
        } catch (const std::system_error& e) {
            std::fprintf(stderr, "vessel: restore: %s\n", e.what());
            return 1;
        }
        if (plan.verbose)
            for (const auto& [copy, path] : reverts)
                std::fprintf(stderr, "vessel: disk %s reverted from %s\n", path.c_str(),
                             copy.c_str());
    }

    // 2. Devices (disks are opened and locked here: a disk in use elsewhere is an error now;
    //    interfaces get their taps and leases, which the attachments undo on every exit).
    t = Clock::now();
    Made made;
    try {
        make_devices(snap.devices, plan, made);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vessel: restore: %s\n", e.what());
        return 1;
    }
    const double devices_ms = ms_since(t);

    // What the guest must be told: a clone's whole identity, or interfaces that moved.
    std::optional<agent::Identity> identity;
    if (plan.clone || !hostname.empty() || !made.moved.empty()) {
        if (!has_agent) {
            std::fprintf(stderr,
                         "vessel: restore: %s gets a new address or MAC, and the snapshot's VM "
                         "has no guest agent to tell (boot it with --agent)\n",
                         made.moved.front().name.c_str());
            return 1;
        }
        if (made.vsock_socket.empty()) {
            std::fprintf(stderr, "vessel: restore: the snapshot has no vsock device\n");
            return 1;
        }
        identity.emplace();
        identity->interfaces = made.moved;
        identity->hostname = !hostname.empty() ? hostname
                             : plan.clone      ? "vessel-" + random_hex(4)
                                               : "";
        if (plan.clone) {
            identity->seed.resize(64);
            if (::getrandom(identity->seed.data(), identity->seed.size(), 0) != 64)
                throw_errno("getrandom");
        }
    }

    vmm::MachineConfig cfg;
    cfg.seccomp = !no_seccomp;
    cfg.track_dirty = track_dirty;
    if (no_seccomp)
        std::fprintf(stderr,
                     "vessel: warning: --no-seccomp: the VMM's threads run without seccomp "
                     "filters (debugging only)\n");
    UniqueFd log;
    if (!console_log.empty()) {
        log = UniqueFd(::open(console_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!log) throw_errno("opening console log " + console_log);
        cfg.console_fd = log.get();
    } else if (use_agent) {
        // The command's output (or "agent ready") comes through the agent; the console
        // would only mix the guest's own messages into it.
        if (plan.verbose) {
            cfg.console_fd = STDERR_FILENO;
        } else {
            log = UniqueFd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
            if (!log) throw_errno("opening /dev/null");
            cfg.console_fd = log.get();
        }
    }
    const bool agent_command = use_agent && !argv.empty();
    if (agent_command) {
        block_forwarded_signals();  // before any thread exists
        cfg.stop_on_signals = false;
    }

    // 3. The machine: memory mapped from the file, devices in their slots, device state.
    t = Clock::now();
    vmm::RestoreSource src{snap.machine, chain.memory_path, copy_memory, std::move(chain.overlays)};
    double ws_read_ms = 0;
    if (uffd) {
        src.uffd = true;
        // The working set of this directory's snapshot (a diff's pages resolved through its
        // chain): installed up front when there is a usable one, recorded when there is not.
        const std::string ws_path = dir + "/" + snapshot::kWorkingSetFile;
        const uint64_t files_id = snapshot::memory_identity(src.memory_path, src.overlays);
        const auto t_ws = Clock::now();
        std::string why;
        std::optional<vmm::Prefetch> ws =
            snapshot::read_working_set(ws_path, snap.machine.memory_size, files_id, why);
        ws_read_ms = ms_since(t_ws);
        if (!why.empty())  // an optimisation only: the restore goes on without it
            std::fprintf(stderr, "vessel: restore: ignoring working set %s: %s\n", ws_path.c_str(),
                         why.c_str());
        if (ws) {
            src.prefetch = std::move(*ws);
        } else if (record_ms > 0) {
            src.record_for = std::chrono::milliseconds(record_ms);
            src.on_recorded = [ws_path, files_id, timing](const vmm::GuestMemory& mem,
                                                          std::vector<uint64_t> pages) {
                try {
                    const auto t_w = Clock::now();
                    uint64_t n = snapshot::write_working_set(ws_path, mem, pages, files_id);
                    if (timing)
                        std::fprintf(stderr,
                                     "vessel: restore uffd: recorded a working set of %llu pages "
                                     "in %s (%.3f ms)\n",
                                     static_cast<unsigned long long>(n), ws_path.c_str(),
                                     ms_since(t_w));
                } catch (const std::system_error& e) {
                    const int err = e.code().value();
                    if (err == EROFS || err == EACCES || err == EPERM)
                        std::fprintf(stderr,
                                     "vessel: restore: snapshot directory is read-only, working "
                                     "set not recorded (%s)\n",
                                     e.what());
                    else
                        std::fprintf(stderr, "vessel: restore: working set not recorded: %s\n",
                                     e.what());
                }
            };
        }
    }
    vmm::Machine m(std::move(cfg), std::move(src));
    std::vector<std::shared_ptr<virtio::MmioTransport>> transports;
    std::vector<snapshot::AttachedDevice> attached;
    for (size_t d = 0; d < made.devices.size(); ++d) {
        transports.push_back(virtio::attach_mmio(m, made.devices[d]));
        snapshot::AttachedDevice a;
        a.kind = snap.devices[d].kind;
        a.config = made.configs[d];
        a.transport = transports.back();
        a.state = made.states[d];
        if (a.kind == "vsock") a.prefetch_queues = {0};
        if (a.kind == "net") a.prefetch_queues = {virtio::net::NetDevice::kRxQueue};
        attached.push_back(std::move(a));
    }
    try {
        snapshot::restore_devices(m.memory(), snap.devices, transports);
    } catch (const snapshot::SnapshotError& e) {
        std::fprintf(stderr, "vessel: restore: %s\n", e.what());
        return 1;
    }
    const double machine_ms = ms_since(t);
    std::optional<snapshot::ControlServer> control;
    if (!id_socket.empty()) {
        // Snapshots of this VM carry its meta, not the restored snapshot's diff link; their
        // diffs have this snapshot as parent.
        nlohmann::json meta = snap.meta;
        meta.erase("diff");
        meta.erase("merged_from");
        char abs[PATH_MAX];
        control.emplace(id_socket, m, attached, std::move(meta),
                        ::realpath(dir.c_str(), abs) ? std::string(abs) : dir);
    }
    const auto t_run = Clock::now();
    m.set_after_restore([&] {
        snapshot::kick_devices(transports);
        // Printed now, as the vCPUs are about to run: benchmarks stop the VM once they see it.
        if (timing)
            std::fprintf(stderr,
                         "vessel: restore timing: load %.3f ms, devices %.3f ms, machine %.3f "
                         "ms, apply %.3f ms, to first guest instruction %.3f ms\n",
                         load_ms, devices_ms, machine_ms, ms_since(t_run), ms_since(t_start));
        if (timing && uffd) {
            const vmm::UffdStats us = m.memory().uffd_stats();
            std::fprintf(stderr,
                         "vessel: restore uffd: working set read %.3f ms, prefetch %.3f ms "
                         "(%llu runs), %llu pages prefetched\n",
                         ws_read_ms, static_cast<double>(us.prefetch_ns) / 1e6,
                         static_cast<unsigned long long>(us.prefetch_runs),
                         static_cast<unsigned long long>(us.prefetched_pages));
        }
    });

    // The agent: the clone's identity first, then the command (or only "agent ready").
    std::optional<container::RawTerminal> raw;
    std::optional<AgentSession> agent_session;
    if (use_agent || identity) {
        AgentJob job{.uds = made.vsock_socket, .identity = identity, .command = {}, .tty = tty};
        for (const auto& r : snap.devices)
            if (r.kind == "vsock") job.guest_ready = snapshot::vsock_reset_handled(m.memory(), r);
        if (agent_command) {
            if (tty) raw.emplace(STDIN_FILENO);
            job.command = command_spec(argv, env, cwd, tty);
        }
        agent_session.emplace(m, std::move(job));
    }

    vmm::RunResult r = m.run();
    control.reset();
    if (timing && uffd) {
        const vmm::UffdStats us = m.memory().uffd_stats();
        std::fprintf(stderr, "vessel: restore uffd: %llu pages filled on faults (%llu holes)\n",
                     static_cast<unsigned long long>(us.faults),
                     static_cast<unsigned long long>(us.zero_faults));
    }
    if (agent_session && !agent_session->finish()) {
        raw.reset();
        std::fflush(nullptr);
        std::fprintf(stderr, "vessel: the VM stopped before the guest agent answered\n");
        ::_exit(r.reason == vmm::RunResult::Reason::ExitStatus ? r.status : 1);
    }
    raw.reset();
    switch (r.reason) {
        case vmm::RunResult::Reason::ExitStatus:
            return r.status;
        case vmm::RunResult::Reason::Signal:
            return 128 + r.status;
        case vmm::RunResult::Reason::Reset:
            std::fprintf(stderr, "vessel: guest reset without reporting an exit status\n");
            return 1;
        case vmm::RunResult::Reason::Error:
            std::fprintf(stderr, "vessel: %s\n", r.detail.c_str());
            return 1;
    }
    return 1;
}

}  // namespace vessel::cli
