// The container state store: ROOT/ID/state.json and ROOT/ID/lock, one directory per
// container (ROOT defaults to /run/vessel and is set by the global --root flag).
//
//   - create() builds the directory under a temporary name and renames it into place, so a
//     half-created container never appears; two creates of one id: exactly one wins.
//   - Changes happen under an exclusive flock on ROOT/ID/lock and replace state.json by
//     temporary file + fsync + rename (+ fsync of the directory): readers, who take no lock,
//     always see a whole file.
//   - remove() renames the directory away under the lock before deleting it, so anyone
//     waiting for the lock finds the container gone rather than a husk.
//
// A container's status is what was stored, except that a created/running/paused container
// whose VMM is gone (or whose pid now belongs to another process: the start time differs)
// is stopped, as runc reports it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/fd.h"

namespace vessel::oci {

enum class Status { Creating, Created, Running, Stopped, Paused };
std::string_view status_name(Status s);  // "creating", "created", ...
std::optional<Status> parse_status(std::string_view s);

struct State {
    std::string oci_version;  // config.json's ociVersion
    std::string id;
    Status status = Status::Creating;
    pid_t pid = 0;                // the VMM process; 0 before it exists
    uint64_t pid_start_time = 0;  // /proc/PID/stat field 22 of that process; 0 = unknown
    std::string bundle;           // absolute
    std::string rootfs;           // absolute
    std::string created;          // RFC 3339 UTC with nanoseconds, as runc prints it
    std::map<std::string, std::string> annotations;
    std::string owner;  // user name of the creator ("#UID" without a name)
    // vessel's own data (vsock socket path, console socket, network attachment ids, ...).
    nlohmann::json vessel = nlohmann::json::object();
};

class ContainerNotFound : public std::runtime_error {
  public:
    explicit ContainerNotFound(std::string_view id)
        : std::runtime_error("container " + std::string(id) + " does not exist") {}
};

class ContainerExists : public std::runtime_error {
  public:
    explicit ContainerExists(std::string_view id)
        : std::runtime_error("container " + std::string(id) + " already exists") {}
};

// runc's rule: 1 to 255 characters from [A-Za-z0-9_+.-], not "." or "..". Throws
// std::invalid_argument: invalid container id "a/b": ...
void validate_container_id(std::string_view id);

// /run/vessel as root; $XDG_RUNTIME_DIR/vessel for other users when it is set (as runc).
std::string default_state_root();

// Now, as "2024-05-01T10:11:12.123456789Z" (Go's RFC3339Nano: trailing zeros dropped).
std::string rfc3339_nano_now();
std::string format_rfc3339_nano(int64_t seconds, long nanoseconds);

// The user name of the effective uid, or "#UID".
std::string current_owner();

// /proc/PID/stat: state letter and start time (field 22, clock ticks since boot).
struct ProcStat {
    char state = '?';
    uint64_t start_time = 0;
};
std::optional<ProcStat> read_proc_stat(pid_t pid);

// True if `pid` runs and is the process that had `start_time` (0: any). Zombies and dead
// processes do not count.
bool process_alive(pid_t pid, uint64_t start_time);

// The status with liveness applied: created/running/paused/creating with a VMM pid that is
// gone or reused reads as stopped.
Status observed_status(const State& s);

// `runc state` output: runtime-spec state plus runc's "rootfs", "created" and "owner" (empty,
// as runc leaves it), pretty-printed with two spaces and no trailing newline, byte for byte
// what Go's json.MarshalIndent writes. Uses observed_status; pid is 0 once stopped.
std::string runtime_state_json(const State& s);

// `runc list --format json`: a compact array of the same objects with the owner filled in,
// newline-terminated; "null\n" for no containers (as Go encodes a nil slice).
std::string list_json(const std::vector<State>& states);

// The runtime-spec state hooks read on stdin (compact; pid omitted when 0).
std::string hook_state_json(const State& s);

// state.json's own format (all fields, including vessel's), and back. from_state_json
// throws std::runtime_error naming `origin` on anything malformed.
std::string to_state_json(const State& s);
State from_state_json(std::string_view text, const std::string& origin);

class StateStore;

// An exclusive flock on one container, held until destroyed. The fd is O_CLOEXEC, but a
// child forked while the lock is held shares it (flock belongs to the open file
// description) until the child execs or drops its copy: release the lock before forking a
// long-lived process such as the VMM, or have the child destroy its copy first.
class ContainerLock {
  public:
    ContainerLock(ContainerLock&&) noexcept = default;
    ContainerLock& operator=(ContainerLock&&) noexcept = default;

    const std::string& id() const { return id_; }
    const std::string& dir() const { return dir_; }
    State read() const;
    // Atomically replaces state.json; s.id must be this container's id.
    void write(const State& s);

  private:
    friend class StateStore;
    ContainerLock(UniqueFd fd, std::string id, std::string dir)
        : fd_(std::move(fd)), id_(std::move(id)), dir_(std::move(dir)) {}
    UniqueFd fd_;
    std::string id_;
    std::string dir_;
};

class StateStore {
  public:
    explicit StateStore(std::string root = default_state_root());
    const std::string& root() const { return root_; }
    // ROOT/ID: a place for the container's sockets and other runtime files.
    std::string container_dir(std::string_view id) const;

    // Stores a new container (creating ROOT, mode 0700, if needed) and returns it locked, so
    // the caller can finish creating it before anyone else acts on it. Throws ContainerExists,
    // std::invalid_argument (bad id), std::system_error.
    ContainerLock create(const State& s);

    // The stored state, without liveness applied. Throws ContainerNotFound.
    State load(std::string_view id) const;

    // Waits for the container's lock (or fails with EWOULDBLOCK as std::system_error when
    // `wait` is false). Throws ContainerNotFound if it is removed meanwhile.
    ContainerLock lock(std::string_view id, bool wait = true);

    // load + fn + write under the lock; returns what was written.
    State update(std::string_view id, const std::function<void(State&)>& fn);

    // Ids of stored containers, sorted; temporary and half-removed entries are not listed.
    std::vector<std::string> list_ids() const;
    // Their states (stored, not observed). Containers removed while listing are left out;
    // unreadable ones too, with a message in `problems` if given (runc list warns and goes on).
    std::vector<State> list(std::vector<std::string>* problems = nullptr) const;

    // Removes the container; false if it did not exist (delete --force is idempotent).
    // Waits for the lock: a process holding a ContainerLock on it uses the overload below.
    bool remove(std::string_view id);
    // Removes the container whose lock the caller holds (check status, stop, remove, with
    // no other command acting in between). The lock is released when this returns.
    void remove(ContainerLock&& lock);

  private:
    void ensure_root() const;
    std::string root_;
};

}  // namespace vessel::oci
