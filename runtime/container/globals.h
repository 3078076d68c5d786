// Global flags of the runc-compatible CLI (before the subcommand, as runc takes them) and
// the error log they name: callers such as podman read runtime errors from --log as
// logrus-style JSON lines.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace vessel::container {

struct GlobalOptions {
    std::string root;                 // --root: the state store; empty = oci::default_state_root()
    std::string log;                  // --log FILE
    std::string log_format = "text";  // --log-format text|json
    bool debug = false;               // --debug
    bool systemd_cgroup = false;      // --systemd-cgroup (accepted; a VM has no host cgroup)
    // Set in the VMM process, whose stderr is the container's: warnings then go only to
    // --log when there is one (engines always pass it), not into the container's output.
    bool stderr_is_container = false;
};

GlobalOptions& globals();

// The flags again, for a re-exec of this binary (the VMM process).
std::vector<std::string> global_args();

// Parses the global flags at the front of argv; returns the index of the subcommand.
// Exits with a usage error for an unknown flag or a bad value.
int parse_global_flags(int argc, char** argv);

// An error (or warning, debug line) on stderr as "vessel: msg" and, with --log, as a line
// in the log file: {"level":"error","msg":"...","time":"..."} with --log-format json,
// logrus's text format otherwise.
void log_error(std::string_view msg);
void log_warning(std::string_view msg);
void log_debug(std::string_view msg);  // only with --debug; log file only (stderr of the
                                       // runtime is the container's stderr under conmon)

}  // namespace vessel::container
