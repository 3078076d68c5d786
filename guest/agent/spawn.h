// Starting one process for the agent: pipes or a pty, credentials, limits, exec. Reports a
// failure in the child (chdir, setuid, exec, ...) synchronously, before the process counts
// as started.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "guest/agent/spec.h"
#include "guest/init/unique_fd.h"

namespace vessel::agent {

struct SpawnedProcess {
    pid_t pid = -1;
    guest::UniqueFd pidfd;
    // The agent's ends, non-blocking; invalid for kNull streams. In tty mode stdout is the
    // pty master, stdin a duplicate of it (closing stdin keeps the terminal), stderr unused.
    guest::UniqueFd stdin_fd;
    guest::UniqueFd stdout_fd;
    guest::UniqueFd stderr_fd;
};

struct SpawnError {
    bool in_child = false;  // the child could not be set up or exec'd (exec_failed)
    std::string stage;      // e.g. "exec", "chdir", "setuid", "pipe"
    int err = 0;            // errno
    std::string message;
};

struct SpawnDefaults {
    // Restored in the child before the spec's rlimits, when the agent raised its own.
    std::optional<rlimit> nofile;
};

// Never throws for system failures (std::bad_alloc aside); the caller reaps via pidfd.
std::optional<SpawnedProcess> spawn_process(const ProcessSpec& spec, const SpawnDefaults& defaults,
                                            SpawnError& error);

}  // namespace vessel::agent
