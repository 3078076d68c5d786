// Plain data carried by the agent protocol: what to start, how it ended, what is running.
// Shared by the guest agent and the host client; see docs/agent-protocol.md for the wire form.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vessel::agent {

enum class StdioMode : std::uint8_t {
    kPipe,  // carried over the connection
    kNull,  // /dev/null in the guest; nothing crosses the connection
};

struct User {
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::vector<std::uint32_t> groups{};  // supplementary groups, exactly these

    bool operator==(const User&) const = default;
};

struct Rlimit {
    int resource = 0;  // RLIMIT_*; named "RLIMIT_NOFILE" etc. on the wire
    std::uint64_t soft = 0;
    std::uint64_t hard = 0;  // RLIM_INFINITY = 2^64-1

    bool operator==(const Rlimit&) const = default;
};

struct ProcessSpec {
    std::vector<std::string> argv;  // argv[0] is looked up in env's PATH
    // The whole environment; empty means PATH, HOME=/root and TERM defaults.
    std::vector<std::string> env{};
    std::string cwd{};              // absolute; empty means "/"
    std::optional<User> user{};     // absent: the agent's own credentials (root)
    std::vector<Rlimit> rlimits{};  // applied on top of the agent's defaults
    std::string hostname{};         // non-empty: set the VM's hostname before starting
    bool tty = false;               // a pty for stdin/stdout/stderr; output arrives on stdout
    std::uint16_t rows = 0;         // initial window size in tty mode (0: kernel default)
    std::uint16_t cols = 0;
    StdioMode stdin_mode = StdioMode::kPipe;  // pipe modes only; tty mode ignores these
    StdioMode stdout_mode = StdioMode::kPipe;
    StdioMode stderr_mode = StdioMode::kPipe;
    bool kill_group_on_exit = false;  // SIGKILL the process group once the leader exits
    // When the connection that started it closes, its streams wait (unread) for an `attach`
    // instead of being closed: a container's process across a checkpoint and restore.
    bool detachable = false;

    bool operator==(const ProcessSpec&) const = default;
};

struct ExitStatus {
    int status = 0;  // shell style: exit code, or 128 + signal
    bool signaled = false;
    int signal = 0;  // terminating signal when signaled
    bool core_dumped = false;

    bool operator==(const ExitStatus&) const = default;
};

struct ProcessInfo {
    std::uint32_t id = 0;
    int pid = 0;
    std::vector<std::string> argv{};
    bool tty = false;
    bool running = false;
    std::optional<ExitStatus> exit{};  // set once it has ended
    bool attachable = false;           // detachable, and no connection carries its streams
};

// A restored VM's new identity (a clone of a snapshot must not share its template's): the
// agent applies what is set, in this order: interfaces, hostname, RNG seed.
struct InterfaceIdentity {
    std::string name;                // e.g. "eth0"
    std::string mac;                 // "02:00:00:00:00:01"; empty: unchanged
    std::string address;             // "10.0.0.2/24": replaces the IPv4 address; empty: kept
    std::string gateway;             // with address: the default route through it
    std::vector<std::string> dns{};  // with address: /etc/resolv.conf's nameservers

    bool operator==(const InterfaceIdentity&) const = default;
};

struct Identity {
    std::string hostname{};            // empty: unchanged
    std::vector<std::uint8_t> seed{};  // mixed into the guest's RNG, which reseeds
    std::vector<InterfaceIdentity> interfaces{};

    bool operator==(const Identity&) const = default;
};

// A root filesystem for the processes the agent starts from now on (warm start: a VM restored
// from a template gets its container's disk after the restore).
struct RootRequest {
    std::string source;  // a block device node under /dev, e.g. "/dev/vda"
    std::string fstype = "ext4";
    bool readonly = false;
    std::string options{};   // mount(2) data, e.g. "noload"
    std::uint64_t size = 0;  // non-zero: wait until the device has this many bytes

    bool operator==(const RootRequest&) const = default;
};

// "RLIMIT_NOFILE" <-> RLIMIT_NOFILE for the limits Linux has.
std::optional<int> rlimit_from_name(std::string_view name);
std::string_view rlimit_name(int resource);  // empty if unknown

// From a waitpid()/waitid() result.
ExitStatus exit_status_from_wait(int wait_status);
// From waitid()'s siginfo_t: si_code (CLD_EXITED, CLD_KILLED, CLD_DUMPED) and si_status.
ExitStatus exit_status_from_code(int code, int value);

}  // namespace vessel::agent
