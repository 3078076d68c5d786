// Runs host tools (nft, tc) with fork/exec, no shell, optionally inside a network namespace.
#pragma once

#include <string>
#include <vector>

namespace vessel::network {

struct CommandResult {
    int status = -1;  // exit code, or 128+signal
    std::string out, err;
};

struct CommandOptions {
    std::string stdin_data;
    int netns_fd = -1;  // when >= 0, the child joins this network namespace before exec
    int timeout_s = 30;
};

// Runs argv[0] (looked up in PATH, then /usr/sbin, /sbin, /usr/bin, /bin) and returns its exit
// status and output. Throws std::system_error only when it cannot be run at all (not found,
// fork failure, cannot join the namespace).
CommandResult run_command(const std::vector<std::string>& argv, const CommandOptions& opt = {});

// run_command that throws std::runtime_error("<what>: <argv> failed (exit N): <stderr>")
// unless the exit status is 0.
CommandResult check_command(const std::string& what, const std::vector<std::string>& argv,
                            const CommandOptions& opt = {});

// The path run_command would execute for `name`, or "" if there is none.
std::string find_program(const std::string& name);

}  // namespace vessel::network
