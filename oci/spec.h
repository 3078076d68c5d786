// The OCI runtime-spec config.json (versions 1.0 to 1.2) as plain structs. Parsing validates
// every field vessel reads and names the offending one in the error:
//   config.json: mounts[3].destination: must be an absolute path
// Unknown fields are ignored (forward compatibility); a known field with the wrong type is an
// error; JSON null counts as absent (Go engines write "timeout": null). config.json comes
// from the container engine and is trusted input: it is validated for clear errors, not as
// an attack surface.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace vessel::oci {

// A config.json (or process.json, or bundle) that cannot be used. what() is the whole
// message, starting with the file: "config.json: root.path: required".
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct ConsoleSize {
    uint32_t height = 0;
    uint32_t width = 0;
};

struct User {
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::optional<uint32_t> umask;
    std::vector<uint32_t> additional_gids;
};

struct Rlimit {
    std::string type;  // "RLIMIT_NOFILE", ...
    uint64_t hard = 0;
    uint64_t soft = 0;
};

// Kept for completeness; vessel does not enforce them (the VM is the isolation boundary).
struct Capabilities {
    std::vector<std::string> bounding, effective, inheritable, permitted, ambient;
};

struct Process {
    bool terminal = false;
    std::optional<ConsoleSize> console_size;
    User user;
    std::vector<std::string> args;  // non-empty
    std::vector<std::string> env;   // each "KEY=VALUE"
    std::string cwd;                // absolute
    std::optional<Capabilities> capabilities;
    std::vector<Rlimit> rlimits;  // no duplicate types, soft <= hard
    bool no_new_privileges = false;
    std::optional<int> oom_score_adj;
    std::string apparmor_profile;  // ignored: no host LSM applies inside the guest
    std::string selinux_label;     // ignored
};

struct Root {
    std::string path;  // as written: relative paths are relative to the bundle
    bool readonly = false;
};

struct Mount {
    std::string destination;  // absolute
    std::string type;         // may be empty (runtime-spec 1.1: a bind is told by its options)
    std::string source;
    std::vector<std::string> options;
};

struct Hook {
    std::string path;  // absolute
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::optional<int> timeout;  // seconds, > 0
};

struct Hooks {
    std::vector<Hook> prestart;  // deprecated by the spec, still what Docker < 28 uses
    std::vector<Hook> create_runtime;
    std::vector<Hook> create_container;
    std::vector<Hook> start_container;
    std::vector<Hook> poststart;
    std::vector<Hook> poststop;
};

struct Namespace {
    std::string type;  // one of known_namespaces()
    std::string path;  // empty: create a new one
};

struct IdMapping {
    uint32_t container_id = 0;
    uint32_t host_id = 0;
    uint32_t size = 0;
};

struct MemoryResources {
    std::optional<int64_t> limit;  // bytes; -1 = unlimited
    std::optional<int64_t> reservation;
    std::optional<int64_t> swap;
};

struct CpuResources {
    std::optional<uint64_t> shares;
    std::optional<int64_t> quota;  // microseconds per period; -1 = unlimited
    std::optional<uint64_t> period;
    std::string cpus;  // cpuset list "0-3,6"
    std::string mems;
};

struct Resources {
    std::optional<MemoryResources> memory;
    std::optional<CpuResources> cpu;
    std::optional<int64_t> pids_limit;  // linux.resources.pids.limit
};

struct Device {
    std::string type;  // "c", "b", "u" or "p"
    std::string path;  // absolute, inside the container
    int64_t major = 0;
    int64_t minor = 0;
    std::optional<uint32_t> file_mode;
    std::optional<uint32_t> uid;
    std::optional<uint32_t> gid;
};

struct Linux {
    std::vector<Namespace> namespaces;  // no duplicate types
    std::vector<IdMapping> uid_mappings;
    std::vector<IdMapping> gid_mappings;
    Resources resources;
    std::map<std::string, std::string> sysctl;
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
    std::vector<Device> devices;
    std::string cgroups_path;
    std::string seccomp;             // linux.seccomp as compact JSON, "" when absent; not applied
    std::string rootfs_propagation;  // ignored
    std::string mount_label;         // ignored

    const Namespace* find_namespace(std::string_view type) const;
};

struct Spec {
    std::string oci_version;
    Process process;
    Root root;
    std::string hostname;
    std::string domainname;
    std::vector<Mount> mounts;
    Hooks hooks;
    std::map<std::string, std::string> annotations;
    Linux linux_;  // "linux" is a predefined macro in GNU C++ modes
    // Things that are accepted but worth telling the user (a newer ociVersion, ...).
    std::vector<std::string> warnings;
};

// Parses config.json text. `origin` starts every error message. Throws ConfigError.
Spec parse_config(std::string_view text, std::string_view origin = "config.json");

// Parses a standalone process object (`runc exec --process process.json`); errors name the
// fields without a "process." prefix: "process.json: args: ...". Throws ConfigError.
Process parse_process(std::string_view text, std::string_view origin = "process.json");

// The namespace types config.json may name, in the order features lists them.
const std::vector<std::string>& known_namespaces();

// root.path resolved against the bundle directory, which must be absolute. Throws
// ConfigError "rootfs /b/rootfs: no such directory" (or "not a directory").
std::string resolve_rootfs(const Spec& spec, const std::string& bundle_dir);

struct Bundle {
    std::string dir;     // absolute, symlinks resolved (what `state` reports as bundle)
    std::string config;  // dir + "/config.json"
    Spec spec;
    std::string rootfs;  // absolute, checked to be a directory
};

// Reads and validates DIR/config.json and the rootfs. Throws ConfigError:
// "bundle /x: No such file or directory", "config.json: not valid JSON at line 4 column 7:
// ...", "rootfs /x/rootfs: no such directory".
Bundle load_bundle(const std::string& dir);

}  // namespace vessel::oci
