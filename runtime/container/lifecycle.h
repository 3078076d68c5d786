// Container lifecycle operations shared by the subcommands (create/run, start, delete, kill).
#pragma once

#include <sys/types.h>

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

// Sends `sig` to the container's process (all of its processes with `all`).
void kill_container(const std::string& id, int sig, bool all);

// Writes `text` to `path` by temporary file and rename.
void write_file_atomic(const std::string& path, const std::string& text);

// Waits up to `ms` for `pid` (with start time `start`) to be gone; true if it is.
bool wait_gone(pid_t pid, uint64_t start, int ms);

}  // namespace vessel::container
