// vessel snapshot create|ls|rm: snapshots of running VMs (docs/snapshot-format.md).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "commands.h"
#include "runtime/container/container.h"
#include "snapshot/control.h"
#include "snapshot/snapshot.h"
#include "snapshot/working_set.h"

namespace vessel::cli {
namespace {

const char kSnapshotHelp[] =
    "usage: vessel snapshot create [--diff] [--disks] [--stop|--leave-paused] ID DIR\n"
    "       vessel snapshot merge DIFF OUT\n"
    "       vessel snapshot ls\n"
    "       vessel snapshot rm NAME|DIR...\n\n"
    "create  pauses the VM started with `vessel boot --id ID` (or listening on the control\n"
    "        socket ID, a path), saves it to DIR, then resumes it; --stop ends it instead\n"
    "        (its `vessel boot` exits 0), --leave-paused keeps it paused. A DIR without '/'\n"
    "        is a name under the snapshot store ($VESSEL_SNAPSHOT_DIR, default\n"
    "        /var/lib/vessel/snapshots as root). --diff saves only the memory pages written\n"
    "        since the VM's previous snapshot (or the one it was restored from), which becomes\n"
    "        its parent; the VM must run with --track-dirty. `vessel restore` follows the chain.\n"
    "        --disks also copies each writable disk image into DIR (a reflink where the file\n"
    "        system can), for `vessel restore --revert-disks`\n"
    "merge   writes OUT, a full snapshot equal to the diff snapshot DIFF with its chain of\n"
    "        parents applied (no parent needed afterwards)\n"
    "ls      the snapshots in the store\n"
    "rm      deletes snapshots (only directories holding a vessel snapshot)\n";

std::string store_dir() {
    if (const char* d = std::getenv("VESSEL_SNAPSHOT_DIR"); d && *d) return d;
    if (::geteuid() == 0) return "/var/lib/vessel/snapshots";
    if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x)
        return std::string(x) + "/vessel/snapshots";
    if (const char* h = std::getenv("HOME"); h && *h)
        return std::string(h) + "/.local/share/vessel/snapshots";
    return "/tmp/vessel-snapshots-" + std::to_string(::geteuid());
}

void mkdir_p(const std::string& dir) {
    for (size_t i = 1; i <= dir.size(); ++i) {
        if (i < dir.size() && dir[i] != '/') continue;
        std::string p = dir.substr(0, i);
        if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("creating " + p);
    }
}

// A name without '/' lives in the store; anything else is a path.
std::string resolve_dir(const std::string& arg, bool create_store) {
    if (arg.find('/') != std::string::npos) return arg;
    if (arg == "." || arg == "..") usage_error("snapshot: '" + arg + "' is not a snapshot name");
    std::string store = store_dir();
    if (create_store) mkdir_p(store);
    return store + "/" + arg;
}

int create(Args args) {
    std::string after = "resume";
    bool diff = false, disks = false;
    std::vector<std::string> pos;
    for (std::string a : args) {
        if (a == "--stop")
            after = "stop";
        else if (a == "--leave-paused")
            after = "pause";
        else if (a == "--resume")
            after = "resume";
        else if (a == "--diff")
            diff = true;
        else if (a == "--disks")
            disks = true;
        else if (!a.empty() && a[0] == '-')
            usage_error("snapshot create: unknown option '" + a + "'");
        else
            pos.push_back(a);
    }
    if (pos.size() != 2)
        usage_error("snapshot create: expected ID DIR (see 'vessel snapshot --help')");
    const std::string socket = vm_control_socket(pos[0]);
    if (!snapshot::socket_is_live(socket)) {
        std::fprintf(stderr,
                     "vessel: snapshot create: no running VM '%s' (no control socket at %s)\n",
                     pos[0].c_str(), socket.c_str());
        return 1;
    }
    std::string dir = resolve_dir(pos[1], true);
    char abs[PATH_MAX];
    // The VMM may run in another directory: hand it an absolute path.
    if (dir[0] != '/') {
        if (!::getcwd(abs, sizeof abs)) throw_errno("getcwd");
        dir = std::string(abs) + "/" + dir;
    }
    auto t0 = std::chrono::steady_clock::now();
    nlohmann::json r = snapshot::control_call(
        socket,
        {{"op", "snapshot"}, {"dir", dir}, {"after", after}, {"diff", diff}, {"disks", disks}},
        std::chrono::minutes(10));
    double wall =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!r.value("ok", false)) {
        std::fprintf(stderr, "vessel: snapshot create: %s\n", r.value("error", "failed").c_str());
        return 1;
    }
    if (std::getenv("VESSEL_SNAPSHOT_TIMING"))
        std::fprintf(stderr,
                     "vessel: snapshot %s: %.3f ms total (pause %.3f, drain %.3f, capture %.3f, "
                     "disks %.3f for %llu bytes, memory %.3f for %llu bytes, state %.3f)\n",
                     dir.c_str(), wall, r.value("pause_ms", 0.0), r.value("drain_ms", 0.0),
                     r.value("capture_ms", 0.0), r.value("disks_ms", 0.0),
                     static_cast<unsigned long long>(r.value("disk_bytes", 0ull)),
                     r.value("memory_ms", 0.0),
                     static_cast<unsigned long long>(r.value("memory_bytes", 0ull)),
                     r.value("state_ms", 0.0));
    std::printf("%s\n", dir.c_str());
    return 0;
}

int merge(Args args) {
    std::vector<std::string> pos;
    for (std::string a : args) {
        if (!a.empty() && a[0] == '-') usage_error("snapshot merge: unknown option '" + a + "'");
        pos.push_back(a);
    }
    if (pos.size() != 2)
        usage_error("snapshot merge: expected DIFF OUT (see 'vessel snapshot --help')");
    const std::string from = resolve_dir(pos[0], false), out = resolve_dir(pos[1], true);
    try {
        uint64_t bytes = snapshot::merge(from, out);
        std::fprintf(stderr, "vessel: merged %s into %s (%llu bytes of memory)\n", from.c_str(),
                     out.c_str(), static_cast<unsigned long long>(bytes));
    } catch (const snapshot::SnapshotError& e) {
        std::fprintf(stderr, "vessel: snapshot merge: %s\n", e.what());
        return 1;
    }
    std::printf("%s\n", out.c_str());
    return 0;
}

uint64_t disk_usage(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

int ls(Args args) {
    if (!args.empty()) usage_error("snapshot ls: no arguments expected");
    const std::string store = store_dir();
    DIR* d = ::opendir(store.c_str());
    std::printf("%-24s %5s %10s %10s %-20s %s\n", "NAME", "VCPUS", "MEMORY", "ON DISK", "CREATED",
                "STATUS");
    if (!d) return errno == ENOENT ? 0 : (throw_errno("opening snapshot store " + store), 1);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') names.emplace_back(e->d_name);
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
        const std::string dir = store + "/" + n;
        try {
            snapshot::Snapshot s = snapshot::load(dir);
            std::time_t created = s.meta.value("created", 0);
            char when[32] = "-";
            std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&created));
            uint64_t used = disk_usage(dir + "/" + snapshot::kStateFile) +
                            disk_usage(snapshot::memory_path(dir, s));
            std::printf("%-24s %5u %8lluMi %8lluKi %-20s ok\n", n.c_str(), s.machine.vcpus,
                        static_cast<unsigned long long>(s.machine.memory_size >> 20),
                        static_cast<unsigned long long>(used >> 10), when);
        } catch (const std::exception& e) {
            std::printf("%-24s %5s %10s %10s %-20s invalid: %s\n", n.c_str(), "-", "-", "-", "-",
                        e.what());
        }
    }
    return 0;
}

int rm(Args args) {
    if (args.empty()) usage_error("snapshot rm: expected NAME or DIR");
    int status = 0;
    for (std::string a : args) {
        const std::string dir = resolve_dir(a, false);
        const std::string state = dir + "/" + snapshot::kStateFile;
        if (::access(state.c_str(), F_OK) != 0) {
            std::fprintf(stderr, "vessel: snapshot rm: %s is not a vessel snapshot (no %s)\n",
                         dir.c_str(), snapshot::kStateFile);
            status = 1;
            continue;
        }
        std::string mem = dir + "/" + snapshot::kMemoryFile;
        std::vector<std::string> extra = {dir + "/" + snapshot::kBitmapFile};
        try {
            snapshot::Snapshot s = snapshot::decode_snapshot(snapshot::read_file(state));
            mem = snapshot::memory_path(dir, s);
            for (const auto& d : s.devices)
                if (d.config.contains("copy") && d.config["copy"].is_string() &&
                    d.config["copy"].get<std::string>().find('/') == std::string::npos)
                    extra.push_back(dir + "/" + d.config["copy"].get<std::string>());
        } catch (const std::exception&) {
            // A damaged snapshot is still removable: its memory file has the default name.
        }
        ::unlink(mem.c_str());
        extra.push_back(dir + "/" + snapshot::kWorkingSetFile);  // restore --uffd's
        for (const auto& f : extra) ::unlink(f.c_str());
        ::unlink(state.c_str());
        if (::rmdir(dir.c_str()) != 0) {
            std::fprintf(stderr, "vessel: snapshot rm: %s: %s (other files left in it)\n",
                         dir.c_str(), std::strerror(errno));
            status = 1;
        }
    }
    return status;
}

}  // namespace

std::string vm_control_socket(const std::string& id) {
    if (id.find('/') != std::string::npos) return id;
    return container::vsock_runtime_dir() + "/vm-" + id + ".sock";
}

int cmd_snapshot(Args args) {
    if (args.empty() || !std::strcmp(args[0], "--help") || !std::strcmp(args[0], "-h")) {
        std::fputs(kSnapshotHelp, args.empty() ? stderr : stdout);
        return args.empty() ? 2 : 0;
    }
    std::string sub = args[0];
    Args rest = args.subspan(1);
    if (sub == "create") return create(rest);
    if (sub == "ls" || sub == "list") return ls(rest);
    if (sub == "rm" || sub == "delete") return rm(rest);
    if (sub == "merge") return merge(rest);
    usage_error("snapshot: unknown subcommand '" + sub + "' (create, merge, ls, rm)");
}

}  // namespace vessel::cli
