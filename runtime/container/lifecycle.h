// Container lifecycle operations shared by the subcommands (create/run, start, delete, kill).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "oci/state.h"

namespace vessel::container {

struct CreateOptions {
    std::string id;
    std::string bundle = ".";
    std::string pid_file;
    std::string console_socket;
    int preserve_fds = 0;
    // `run` in the foreground: the VMM stays in our session and process group (it shares
    // our terminal, and we wait for it); otherwise it gets its own session.
    bool foreground = false;
    // `restore --image-path`: the root disk and the VM come from this checkpoint directory
    // (absolute; see checkpoint_container), and the container is running once created.
    std::string restore_dir;
};

// Validates the bundle, stores the container, builds its root disk, starts its VMM, waits
// for the guest agent, runs the prestart/createRuntime hooks and writes --pid-file (last,
// atomically). Returns the VMM's pid. On any failure nothing is left: no state, no VMM.
pid_t create_container(const CreateOptions& o);

// Has the VMM start the container's process; runs the poststart hooks.
void start_container(const std::string& id);

// Removes a stopped (or created, or with `force` any) container: kills its VMM, runs the
// poststop hooks, removes its state directory. Returns false if it did not exist.
bool delete_container(const std::string& id, bool force);

// `checkpoint`: snapshots the container's VM (memory, devices, root disk) into `image_path`
// (created if missing; must not hold a checkpoint yet). Without `leave_running` the VM stops
// and the container is deleted, as runc does. Returns the snapshot's size in bytes.
struct CheckpointOptions {
    std::string id;
    std::string image_path;
    bool leave_running = false;
};
uint64_t checkpoint_container(const CheckpointOptions& o);

// A checkpoint directory: the manifest (named as CRIU's inventory, which engines look for),
// the VM snapshot, and the root disk as it was. `disk` is relative to the directory.
inline constexpr const char* kCheckpointManifest = "inventory.img";
struct CheckpointManifest {
    std::string container, snapshot, disk;
};
// Reads and checks DIR's manifest and snapshot; std::runtime_error names what is wrong.
CheckpointManifest read_checkpoint(const std::string& dir);

// Sends `sig` to the container's process (all of its processes with `all`).
void kill_container(const std::string& id, int sig, bool all);

// `run` and `restore` in the foreground: signals for the container (INT, TERM, HUP, QUIT,
// USR1, USR2) go to the VMM once relay_to() has named it; the VMM forwards them.
void relay_signals();
void relay_to(pid_t vmm);
// Waits for our child VMM, then (with `remove`) deletes container `id`, logging a failure.
// Returns the VMM's status (128+N if killed by N), 1 if it cannot be waited for.
int wait_vmm(pid_t vmm, const std::string& id, bool remove);

// Writes `text` to `path` by temporary file and rename.
void write_file_atomic(const std::string& path, const std::string& text);

// Waits up to `ms` for `pid` (with start time `start`) to be gone; true if it is.
bool wait_gone(pid_t pid, uint64_t start, int ms);

}  // namespace vessel::container
