// Identity of a live process that survives PID reuse: pid plus its start time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace vessel::network {

struct ProcessId {
    pid_t pid = 0;
    uint64_t start_time = 0;  // /proc/PID/stat field 22, clock ticks since boot
    bool operator==(const ProcessId&) const = default;
};

// Field 22 of /proc/PID/stat, or nullopt when the process does not exist (or is a zombie's
// leftover that /proc no longer describes).
std::optional<uint64_t> process_start_time(pid_t pid);

// The calling process.
ProcessId self_process();

// True while `p` runs: the pid exists and has the same start time (so a reused pid is dead).
// Zombies count as dead: they hold no fds, so their taps are already gone.
bool process_alive(const ProcessId& p);

}  // namespace vessel::network
