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

#include "commands.h"
#include "runtime/container/container.h"
#include "snapshot/control.h"
#include "snapshot/snapshot.h"
#include "snapshot/vm_snapshot.h"
#include "snapshot/working_set.h"
#include "virtio/attach.h"
#include "virtio/block/device.h"
#include "virtio/vsock/device.h"
#include "vmm/fd.h"
#include "vmm/machine.h"

namespace vessel::cli {
namespace {

const char kRestoreHelp[] =
    "usage: vessel restore [OPTIONS] DIR\n"
    "Runs the VM saved in the snapshot DIR (`vessel snapshot create`) from where it was and\n"
    "exits with its command's exit status. A DIR without '/' is a name in the snapshot store.\n"
    "Disks are reopened by path; vsock connections of the saved VM are reset. A diff\n"
    "snapshot is laid over its parents' memory (`vessel snapshot create --diff`).\n\n"
    "  --id NAME          control socket for `vessel snapshot create NAME ...`\n"
    "  --api-socket PATH  the same, at PATH\n"
    "  --console-log FILE write the serial console to FILE instead of stdout\n"
    "  --copy-memory      read guest memory into the VMM up front instead of mapping the\n"
    "                     snapshot's file copy-on-write (slower to start, grows with the\n"
    "                     snapshot's data; the file may then change while the VM runs)\n"
    "  --uffd             guest memory behind a userfaultfd: pages are read from the file on\n"
    "                     first touch; the first --uffd restore records the pages it touches\n"
    "                     in DIR/memory.ws, later ones install those up front (prefetch)\n"
    "  --ws-record-ms MS  how long the first --uffd restore records (default 5000; it stops\n"
    "                     earlier if the VM does; 0: do not record)\n"
    "  --track-dirty      track written pages, for `vessel snapshot create --diff`\n"
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

// Re-creates the device a record describes (throws with the device named on failure).
std::shared_ptr<virtio::Device> make_device(const snapshot::DeviceRecord& r) {
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
            return std::make_shared<virtio::block::BlockDevice>(o);
        }
        if (r.kind == "vsock") {
            virtio::vsock::VsockOptions o;
            o.guest_cid = r.config.at("cid").get<uint64_t>();
            o.uds_path = r.config.at("uds_path").get<std::string>();
            o.queue_size = r.config.value("queue_size", o.queue_size);
            return std::make_shared<virtio::vsock::VsockDevice>(o);
        }
    } catch (const nlohmann::json::exception& e) {
        throw snapshot::SnapshotError(what + ": bad configuration: " + e.what());
    } catch (const std::system_error& e) {
        throw std::system_error(e.code(), what + ": " + e.what());
    }
    throw snapshot::SnapshotError(what + ": restoring " + r.kind + " devices is not supported");
}

}  // namespace

int cmd_restore(Args args) {
    const auto t_start = Clock::now();
    std::string dir_arg, id_socket, console_log;
    bool no_seccomp = false, timing = false, copy_memory = false, track_dirty = false, uffd = false;
    long record_ms = 5000;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= args.size()) usage_error(a + " needs a value");
            return args[++i];
        };
        if (a == "--help" || a == "-h") {
            std::fputs(kRestoreHelp, stdout);
            return 0;
        } else if (a == "--id") {
            id_socket = vm_control_socket(value());
        } else if (a == "--api-socket") {
            id_socket = value();
        } else if (a == "--console-log") {
            console_log = value();
        } else if (a == "--no-seccomp") {
            no_seccomp = true;
        } else if (a == "--copy-memory") {
            copy_memory = true;
        } else if (a == "--uffd") {
            uffd = true;
        } else if (a == "--ws-record-ms") {
            const std::string v = value();
            char* end = nullptr;
            record_ms = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end || record_ms < 0 || record_ms > 3600 * 1000)
                usage_error("restore: --ws-record-ms wants milliseconds (0 to 3600000)");
        } else if (a == "--track-dirty") {
            track_dirty = true;
        } else if (a == "--timing") {
            timing = true;
        } else if (!a.empty() && a[0] == '-') {
            usage_error("restore: unknown option '" + a + "'");
        } else if (dir_arg.empty()) {
            dir_arg = a;
        } else {
            usage_error("restore: one snapshot directory expected");
        }
    }
    if (dir_arg.empty()) usage_error("restore: no snapshot directory given");
    if (uffd && copy_memory) usage_error("restore: --uffd and --copy-memory exclude each other");
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
    if (!id_socket.empty() && snapshot::socket_is_live(id_socket)) {
        std::fprintf(stderr, "vessel: restore: control socket %s is in use by a running VM\n",
                     id_socket.c_str());
        return 1;
    }

    // 2. Devices (disks are opened and locked here: a disk in use elsewhere is an error now).
    t = Clock::now();
    std::vector<std::shared_ptr<virtio::Device>> devices;
    try {
        for (const auto& r : snap.devices) devices.push_back(make_device(r));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vessel: restore: %s\n", e.what());
        return 1;
    }
    const double devices_ms = ms_since(t);

    vmm::MachineConfig cfg;
    cfg.seccomp = !no_seccomp;
    cfg.track_dirty = track_dirty;
    UniqueFd log;
    if (!console_log.empty()) {
        log = UniqueFd(::open(console_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!log) throw_errno("opening console log " + console_log);
        cfg.console_fd = log.get();
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
        const uint64_t identity = snapshot::memory_identity(src.memory_path, src.overlays);
        const auto t_ws = Clock::now();
        std::string why;
        std::optional<vmm::Prefetch> ws =
            snapshot::read_working_set(ws_path, snap.machine.memory_size, identity, why);
        ws_read_ms = ms_since(t_ws);
        if (!why.empty())  // an optimisation only: the restore goes on without it
            std::fprintf(stderr, "vessel: restore: ignoring working set %s: %s\n", ws_path.c_str(),
                         why.c_str());
        if (ws) {
            src.prefetch = std::move(*ws);
        } else if (record_ms > 0) {
            src.record_for = std::chrono::milliseconds(record_ms);
            src.on_recorded = [ws_path, identity, timing](const vmm::GuestMemory& mem,
                                                          std::vector<uint64_t> pages) {
                try {
                    const auto t_w = Clock::now();
                    uint64_t n = snapshot::write_working_set(ws_path, mem, pages, identity);
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
    for (size_t i = 0; i < devices.size(); ++i) {
        transports.push_back(virtio::attach_mmio(m, devices[i]));
        snapshot::AttachedDevice a;
        a.kind = snap.devices[i].kind;
        a.config = snap.devices[i].config;
        a.transport = transports.back();
        if (a.kind == "vsock") a.prefetch_queues = {0};
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

    vmm::RunResult r = m.run();
    control.reset();
    if (timing && uffd) {
        const vmm::UffdStats us = m.memory().uffd_stats();
        std::fprintf(stderr, "vessel: restore uffd: %llu pages filled on faults (%llu holes)\n",
                     static_cast<unsigned long long>(us.faults),
                     static_cast<unsigned long long>(us.zero_faults));
    }
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
