// Pure helpers shared by vessel-init and the host side (run archive writer, tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "guest/init/protocol.h"

namespace vessel::guest {

// Splits NUL-terminated entries; a final entry without its NUL is kept, empty entries too.
std::vector<std::string> split_nul_list(std::string_view data);

// Inverse of split_nul_list: every entry followed by a NUL.
// Throws std::invalid_argument if an entry contains a NUL itself.
std::string join_nul_list(const std::vector<std::string>& entries);

// Maps a waitpid() status to a shell-style exit code: WEXITSTATUS, or 128 + signal.
int exit_status_from_wait(int wait_status);

// Key of a KEY=VALUE entry; empty if there is no '=' or the key is empty.
std::string_view env_key(std::string_view entry);

// Returns base with each override replacing the entry of the same key, or appended.
// Overrides without a valid key are dropped.
std::vector<std::string> merge_env(std::vector<std::string> base,
                                   const std::vector<std::string>& overrides);

// The environment the command gets when the VMM passes none.
std::vector<std::string> default_env();

// Contents of /vessel/rootfs (see protocol.h).
struct RootFs {
    std::string source;  // block device node, e.g. /dev/vda
    std::string fstype{kDefaultRootFsType};
    bool readonly = false;
    std::string options{};  // mount(2) data; empty for none. "{}": no -Wextra nag for {.source=x}

    bool operator==(const RootFs&) const = default;
};

// Serializes to the /vessel/rootfs text; every key is written, options only if non-empty.
// Throws std::invalid_argument for a relative source, an empty fstype, or a field
// containing '\n', '\r' or NUL.
std::string format_rootfs(const RootFs& rootfs);

// Parses /vessel/rootfs text. Returns nullopt and a human-readable reason in *error for
// unknown or duplicate keys, a missing or relative source, a bad readonly value, or NULs.
// A trailing '\r' per line is tolerated (files written by hand).
std::optional<RootFs> parse_rootfs(std::string_view text, std::string* error);

// Value of the last "key=value" word on a kernel command line ("" for a bare "key"),
// nullopt if absent. Double quotes group words as the kernel does ("key=\"a b\""); parsing
// stops at "--", after which the words belong to init.
std::optional<std::string> cmdline_value(std::string_view cmdline, std::string_view key);

// The agent's vsock port from kAgentCmdlineKey: nullopt if absent (or *error set, if
// malformed: not a decimal in 1..0xfffffffe).
std::optional<std::uint32_t> agent_port_from_cmdline(std::string_view cmdline, std::string* error);

// /etc/resolv.conf contents from /proc/net/pnp: the file as is when it names a nameserver,
// else nullopt (an "ip=" without DNS must not wipe a disk root's own resolv.conf).
std::optional<std::string> resolv_conf_from_pnp(std::string_view pnp);

}  // namespace vessel::guest
