// The jailer: confines a VMM process before it runs guest code (docs/design.md, "Jailer").
//
// A jailed VMM lives in
//   - a PID namespace of its own (fork_in_new_pid_ns: the VMM is its PID 1, the pid its
//     parent sees is the host pid), a new IPC namespace and a new mount namespace whose root
//     is a small read-only tmpfs holding only the files it names (kernel, initramfs, disks,
//     its vsock socket, /dev/kvm, /dev/net/tun, /dev/null, /dev/urandom ...), each bind-mounted
//     at its host path; the old root is unmounted;
//   - a cgroup with memory, CPU and pids limits (cgroup v1 or v2, whichever holds the
//     controllers), created before the VMM allocates guest memory and removed afterwards by a
//     process outside the jail (Cgroup::remove, remove_cgroup);
//   - an unprivileged uid/gid with no capabilities, no_new_privs, no core dumps, bounded
//     rlimits, no inherited fds and an empty environment.
//
// Everything the VMM needs is opened before enter(), so the jail holds no executable and no
// library: vessel does not exec inside the jail, it jails itself in process (enter() must run
// while the process is single-threaded, before any vCPU or device thread exists).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vessel::jail {

// The uid/gid a jail drops to when none is given: the `vessel` account if the host has one,
// else this otherwise unused id (no passwd entry is needed to run as a number).
constexpr uid_t kDefaultId = 61000;

// Cgroup limits; 0 means "no limit" for that controller (and the controller is not needed).
struct Limits {
    uint64_t memory_bytes = 0;
    double cpus = 0;  // CPU time per wall-clock time: 1.5 = one and a half CPUs
    uint64_t pids = 0;
};

struct Options {
    std::string name;        // cgroup leaf name: [A-Za-z0-9_.-], unique per VM
    uid_t uid = kDefaultId;  // never 0
    gid_t gid = kDefaultId;  // never 0
    Limits limits;
    std::string cgroup_parent = "vessel";          // below each hierarchy's root
    std::string mount_point = "/run/vessel-jail";  // where the per-VM tmpfs root is mounted
                                                   // (in the VMM's own mount namespace only)
    uint64_t nofile = 4096;                        // RLIMIT_NOFILE (raised to cover open fds)
    std::optional<uint64_t> fsize;                 // RLIMIT_FSIZE; default: unchanged
    bool die_with_parent = false;                  // PR_SET_PDEATHSIG SIGKILL, set again after the
                                                   // uid drop (which clears it)
};

// Default options: uid/gid of the `vessel` account or kDefaultId.
Options default_options(std::string name);

// Applies "key=value,..." to `o`: uid=N|USER, gid=N|GROUP, mem=SIZE (K/M/G suffix, MiB
// without; 0 = no limit), cpus=X (0 = no limit), pids=N, cgroup=PARENT, dir=MOUNTPOINT,
// nofile=N, fsize=SIZE. uid=USER without gid= takes USER's group. Throws
// std::invalid_argument naming the bad key or value (unknown user or group included).
void apply_spec(Options& o, std::string_view spec);

// Checks what can be checked without changing anything: uid/gid not 0, name, running as
// root, each needed cgroup controller available. Throws std::runtime_error("jail: ...").
void validate(const Options& o);

// A cgroup per VM: one directory per v1 hierarchy (memory, cpu, pids), or one v2 directory.
class Cgroup {
  public:
    // Creates `parent/name` with the limits (enabling v2 controllers on the way); on any
    // error removes what it made and throws std::runtime_error naming the file and errno.
    static Cgroup create(const std::string& parent, const std::string& name, const Limits& l);
    Cgroup() = default;
    Cgroup(Cgroup&&) noexcept;
    Cgroup& operator=(Cgroup&&) noexcept;
    Cgroup(const Cgroup&) = delete;
    Cgroup& operator=(const Cgroup&) = delete;
    ~Cgroup();  // does NOT remove: the VMM inside cannot; call remove() from outside

    void add(pid_t pid) const;  // 0 = the calling process
    // Removes the directories, waiting up to `wait_ms` for exiting tasks to leave. Returns ""
    // or what could not be removed. Idempotent.
    std::string remove(int wait_ms = 3000);
    void release() { dirs_.clear(); }  // forget without removing (a forked copy)

    bool v2() const { return v2_; }
    const std::vector<std::string>& dirs() const { return dirs_; }
    std::string memory_dir() const;  // the directory holding memory.* files

  private:
    bool v2_ = false;
    std::vector<std::string> dirs_;
    std::vector<std::string> controllers_;  // parallel to dirs_ for v1
};

// Removes `parent/name` in every hierarchy where it exists; "" or the problem.
std::string remove_cgroup(const std::string& parent, const std::string& name, int wait_ms = 3000);

// A file the VMM may still reach after enter(), at the same absolute path.
struct Exposure {
    std::string path;
    bool writable = false;
    bool owned = false;     // chown to the jail's uid/gid first (a socket the VMM connects to)
    bool optional = false;  // skip if it does not exist
};

// The devices every VMM gets: /dev/kvm, and /dev/net/tun, /dev/null, /dev/zero, /dev/urandom
// where present.
std::vector<Exposure> device_exposures();

// Like fork(), but the child is PID 1 of a new PID namespace; the parent's later children
// are not affected. Returns the child's host pid in the parent, 0 in the child.
pid_t fork_in_new_pid_ns();

// Closes every fd >= 3 except `keep` (close_range): what the process inherited.
void close_inherited_fds(const std::vector<int>& keep);

// Enters the jail. Must be called single-threaded, as root, after everything the VMM needs
// is open. Throws std::system_error / std::runtime_error; on error the caller must exit
// (the process is half-confined).
void enter(const Options& o, const std::vector<Exposure>& exposures);

// Exposures for a VM: its kernel and initramfs (read-only), its disks (read-write unless
// `second` is false), its vsock socket (owned by the jail's uid so that the VMM can still
// connect to it; skipped if empty) and device_exposures().
std::vector<Exposure> vm_exposures(const std::string& kernel, const std::string& initrd,
                                   const std::vector<std::pair<std::string, bool>>& disks,
                                   const std::string& vsock_socket);

// The container VMM (already PID 1 of its namespace, see fork_in_new_pid_ns): validates,
// closes inherited fds but `keep`, creates the cgroup and moves this process into it, so
// that guest memory is charged to it. Nothing is left if it throws.
void begin(const Options& o, const std::vector<int>& keep);

// `vessel boot --jail`: validates and creates the cgroup, then forks a child that is PID 1 of
// a new PID namespace and a member of the cgroup. In the child returns nullopt (it goes on to
// set up the VM and enter()). In the parent waits for the child, forwarding the signals other
// processes send (the terminal's reach the child directly), removes the cgroup and returns
// the child's exit status (128+N when killed by signal N).
// `service`: a socket the parent serves while it waits (calling `serve` whenever it is
// readable, until `serve` returns false), e.g. the vsock connect broker.
struct ParentService {
    int fd = -1;
    std::function<bool()> serve;
};
std::optional<int> run_jailed_child(const Options& o, const ParentService& service = {});

// Ends a jailed VMM without running destructors: what they would undo on the host (taps,
// sockets, leases) is out of its reach, and its parent or `delete` does it.
[[noreturn]] void exit_jailed(int status);

// Containers: the options for container `id`, from its config.json annotations
// (io.vessel.jail: "off", "on", or a spec for apply_spec), or nullopt when jailing is off.
// Defaults: memory = guest memory + kVmmOverheadMiB, cpus = vCPUs + 1, pids = 1024.
constexpr uint64_t kVmmOverheadMiB = 256;
inline constexpr const char* kAnnotation = "io.vessel.jail";
std::optional<Options> container_options(const std::string& id,
                                         const std::map<std::string, std::string>& annotations,
                                         uint64_t memory_mib, uint32_t vcpus);
// Removes a container's cgroup (delete, or create failing): "" or the problem.
std::string cleanup_container(const std::string& id,
                              const std::map<std::string, std::string>& annotations) noexcept;

// `vessel boot --jail[=SPEC]`: options for a VM of `memory_mib` and `vcpus`.
Options boot_options(std::string_view spec, uint64_t memory_mib, uint32_t vcpus);

}  // namespace vessel::jail
