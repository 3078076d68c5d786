// What a micro-VM needs to run an OCI container, as data: guest memory and vCPUs from the
// container's resource limits, the mounts the guest makes (or the host files it receives),
// the network namespace the VMM joins, the process the guest agent starts, and the hooks the
// host runs. Planning decides and validates; it starts nothing. Host paths are looked at
// through a HostProbe so that the policy can be tested against any host layout.
//
// Mount policy (docs/oci.md):
//   - proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2: mounted by the guest itself;
//   - a bind of a tmpfs directory over /dev/shm (podman's and Docker's shm): a guest tmpfs
//     with the same options and size;
//   - a bind of a regular host file of at most 1 MiB (/etc/hosts, /etc/resolv.conf,
//     /etc/hostname, /run/.containerenv, secrets): copied into the guest at create time;
//   - anything else (directory binds, i.e. volumes; devices; sockets; other filesystem
//     types): an error naming mounts[i], unless the annotation
//     io.vessel.mounts.ignore-unsupported=true turns it into a warning.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/spec.h"

namespace vessel::oci {

// config.json annotations vessel reads. Any other "io.vessel." key is an error (a typo
// silently ignored would be worse).
inline constexpr std::string_view kAnnotationKernel = "io.vessel.kernel";      // absolute path
inline constexpr std::string_view kAnnotationMemory = "io.vessel.memory";      // MiB, or 512M / 2G
inline constexpr std::string_view kAnnotationVcpus = "io.vessel.vcpus";        // 1..128
inline constexpr std::string_view kAnnotationTemplate = "io.vessel.template";  // snapshot name
inline constexpr std::string_view kAnnotationWarmStart = "io.vessel.warm-start";  // true|false
inline constexpr std::string_view kAnnotationIgnoreMounts = "io.vessel.mounts.ignore-unsupported";
inline constexpr std::string_view kAnnotationIgnoreDevices = "io.vessel.devices.ignore-unsupported";
inline constexpr std::string_view kAnnotationIgnoreHooks = "io.vessel.hooks.ignore-unsupported";
inline constexpr std::string_view kAnnotationPrefix = "io.vessel.";
const std::vector<std::string>& vessel_annotations();

inline constexpr uint32_t kDefaultMemoryMib = 256;  // no memory limit in config.json
inline constexpr uint32_t kMinMemoryMib = 64;       // smaller limits are raised to this
inline constexpr uint32_t kMinBootMemoryMib = 32;   // below this a limit is an error
inline constexpr unsigned kMaxVcpus = 128;
inline constexpr uint64_t kMaxCopiedFileBytes = 1u << 20;
inline constexpr uint64_t kMaxCopiedTotalBytes = 16u << 20;

struct HostInfo {
    unsigned cpus = 1;          // CPUs this process may run on
    uint64_t memory_bytes = 0;  // physical RAM
    static HostInfo current();
};

// What planning needs to know about a host path (symlinks followed, as mount(2) would).
struct HostPath {
    enum class Kind { Missing, Regular, Directory, CharDevice, BlockDevice, Socket, Fifo };
    Kind kind = Kind::Missing;
    int error = 0;          // errno when it could not be inspected (Missing with ENOENT)
    uint64_t size = 0;      // regular files
    uint32_t mode = 0;      // permission bits
    bool on_tmpfs = false;  // the filesystem holding it is a tmpfs
    uint64_t fs_bytes = 0;  // that filesystem's size
};

class HostProbe {
  public:
    virtual ~HostProbe() = default;
    virtual HostPath inspect(const std::string& path) const = 0;
};

// stat(2) and statfs(2).
class RealHostProbe final : public HostProbe {
  public:
    HostPath inspect(const std::string& path) const override;
};

// Mount options split the way mount(2) takes them, as runc does: known flags set or clear
// bits, anything else is filesystem data. Recursive variants (rro, rnosuid, ...) act like
// their plain forms: the guest mounts fresh filesystems, which have no submounts yet.
struct MountOptions {
    unsigned long flags = 0;        // MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, ...
    unsigned long propagation = 0;  // MS_PRIVATE / MS_SHARED / MS_SLAVE / MS_UNBINDABLE [| MS_REC]
    bool bind = false;              // "bind" or "rbind" (MS_BIND is in flags too)
    bool tmpcopyup = false;         // tmpfs: copy what the directory held before (crun's option)
    std::string data;               // "mode=755,size=65536k"
    std::vector<std::string> unsupported;  // recognised but refused: "idmap", "ridmap"
};
MountOptions parse_mount_options(const std::vector<std::string>& options);
// Option names parse_mount_options recognises (the features document lists them).
const std::vector<std::string>& known_mount_options();

struct GuestMount {
    enum class Kind {
        Filesystem,  // the guest calls mount(source, destination, type, flags, data)
        CopiedFile,  // the host file `source` is copied into the guest and bound over
                     // `destination` (read-only if MS_RDONLY); later host changes are not seen
    };
    Kind kind = Kind::Filesystem;
    size_t index = 0;  // position in config.json's mounts[]
    std::string destination;
    std::string type;    // Filesystem: "proc", "tmpfs", ...; CopiedFile: "bind"
    std::string source;  // Filesystem: the source name ("proc", "shm"); CopiedFile: host path
    MountOptions options;
    uint64_t file_size = 0;  // CopiedFile: size when planned
    uint32_t file_mode = 0;  // CopiedFile: permission bits of the host file
};

struct SkippedMount {
    size_t index = 0;
    std::string destination;
    std::string reason;
};

enum class NetworkMode {
    None,  // no network namespace in config.json (host networking): the guest gets no NIC
    New,   // a new namespace: the VMM creates it (Docker < 28 configures it in a prestart hook)
    Join,  // an existing namespace at `netns_path` (podman, CNI, Docker 28+)
};

struct NetworkPlan {
    NetworkMode mode = NetworkMode::None;
    std::string netns_path;
};

struct UserNamespacePlan {
    bool enabled = false;
    std::string path;  // join this one; empty: create one with the mappings
    std::vector<IdMapping> uid_mappings;
    std::vector<IdMapping> gid_mappings;
};

// The process the guest agent starts: the container's init, or an exec'd process.
struct GuestProcess {
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string cwd;
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::optional<uint32_t> umask;
    std::vector<uint32_t> additional_gids;
    std::vector<Rlimit> rlimits;
    bool terminal = false;
    std::optional<ConsoleSize> console_size;
    bool no_new_privileges = false;
    std::optional<int> oom_score_adj;
    std::string hostname;  // init only; empty for exec
};
GuestProcess guest_process(const Process& p, const std::string& hostname = "");

struct VmPlan {
    uint32_t memory_mib = kDefaultMemoryMib;
    unsigned vcpus = 1;
    std::string kernel;         // io.vessel.kernel; empty: vessel's default kernel
    std::string template_name;  // io.vessel.template; empty: boot from scratch
    // io.vessel.warm-start: restore the warm-start template instead of booting; unset: the
    // runtime's default ($VESSEL_WARM_START, off).
    std::optional<bool> warm_start;
    std::string rootfs;  // absolute host path
    bool rootfs_readonly = false;
    std::string hostname;
    std::string domainname;
    GuestProcess process;
    std::vector<GuestMount> mounts;  // in config order: the guest mounts them in this order
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
    std::map<std::string, std::string> sysctl;  // applied to the guest kernel
    std::optional<int64_t> pids_limit;          // for the guest to enforce; none: unlimited
    NetworkPlan network;
    UserNamespacePlan user_namespace;
    Hooks host_hooks;  // prestart, createRuntime, poststart, poststop: run on the host
    std::vector<SkippedMount> skipped_mounts;
    std::vector<std::string> warnings;  // for stderr: accepted, but not what was asked
};

// Throws ConfigError; unsupported mounts are all listed, one per line:
//   config.json: mounts[5] (/data): bind mount of host directory /srv/data (a volume) is not
//   supported in a micro-VM
// followed by a line naming the annotation that skips them.
VmPlan plan_vm(const Bundle& bundle, const HostInfo& host, const HostProbe& probe);
VmPlan plan_vm(const Bundle& bundle);  // this host, RealHostProbe

// Number of CPUs in a cpuset list ("0-3,6"); nullopt if malformed.
std::optional<unsigned> cpuset_count(std::string_view list);

// Reads a CopiedFile mount's host file at create time: a regular file of at most
// kMaxCopiedFileBytes (checked again, it may have changed since planning). Throws
// std::system_error / ConfigError naming the file.
std::string read_copied_file(const GuestMount& m);

}  // namespace vessel::oci
