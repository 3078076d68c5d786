#include "oci/vm_plan.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <set>

#include "oci/json_read.h"
#include "vmm/fd.h"

namespace vessel::oci {

namespace {

constexpr uint64_t kMiB = 1u << 20;

struct OptionEffect {
    enum Kind { Set, Clear, Propagation, Bind, TmpCopyUp, Unsupported } kind;
    unsigned long bits;
};

const std::map<std::string, OptionEffect>& option_table() {
    using K = OptionEffect;
    static const std::map<std::string, OptionEffect> table = {
        {"async", {K::Clear, MS_SYNCHRONOUS}},
        {"atime", {K::Clear, MS_NOATIME}},
        {"bind", {K::Bind, MS_BIND}},
        {"defaults", {K::Set, 0}},
        {"dev", {K::Clear, MS_NODEV}},
        {"diratime", {K::Clear, MS_NODIRATIME}},
        {"dirsync", {K::Set, MS_DIRSYNC}},
        {"exec", {K::Clear, MS_NOEXEC}},
        {"idmap", {K::Unsupported, 0}},
        {"iversion", {K::Set, MS_I_VERSION}},
        {"lazytime", {K::Set, MS_LAZYTIME}},
        {"loud", {K::Clear, MS_SILENT}},
        {"mand", {K::Set, MS_MANDLOCK}},
        {"noatime", {K::Set, MS_NOATIME}},
        {"nodev", {K::Set, MS_NODEV}},
        {"nodiratime", {K::Set, MS_NODIRATIME}},
        {"noexec", {K::Set, MS_NOEXEC}},
        {"noiversion", {K::Clear, MS_I_VERSION}},
        {"nolazytime", {K::Clear, MS_LAZYTIME}},
        {"nomand", {K::Clear, MS_MANDLOCK}},
        {"norelatime", {K::Clear, MS_RELATIME}},
        {"nostrictatime", {K::Clear, MS_STRICTATIME}},
        {"nosuid", {K::Set, MS_NOSUID}},
        {"nosymfollow", {K::Set, MS_NOSYMFOLLOW}},
        {"private", {K::Propagation, MS_PRIVATE}},
        {"ratime", {K::Clear, MS_NOATIME}},
        {"rbind", {K::Bind, MS_BIND | MS_REC}},
        {"rdev", {K::Clear, MS_NODEV}},
        {"rdiratime", {K::Clear, MS_NODIRATIME}},
        {"relatime", {K::Set, MS_RELATIME}},
        {"remount", {K::Set, MS_REMOUNT}},
        {"rexec", {K::Clear, MS_NOEXEC}},
        {"ridmap", {K::Unsupported, 0}},
        {"rnoatime", {K::Set, MS_NOATIME}},
        {"rnodev", {K::Set, MS_NODEV}},
        {"rnodiratime", {K::Set, MS_NODIRATIME}},
        {"rnoexec", {K::Set, MS_NOEXEC}},
        {"rnorelatime", {K::Clear, MS_RELATIME}},
        {"rnostrictatime", {K::Clear, MS_STRICTATIME}},
        {"rnosuid", {K::Set, MS_NOSUID}},
        {"rnosymfollow", {K::Set, MS_NOSYMFOLLOW}},
        {"ro", {K::Set, MS_RDONLY}},
        {"rprivate", {K::Propagation, MS_PRIVATE | MS_REC}},
        {"rrelatime", {K::Set, MS_RELATIME}},
        {"rro", {K::Set, MS_RDONLY}},
        {"rrw", {K::Clear, MS_RDONLY}},
        {"rshared", {K::Propagation, MS_SHARED | MS_REC}},
        {"rslave", {K::Propagation, MS_SLAVE | MS_REC}},
        {"rstrictatime", {K::Set, MS_STRICTATIME}},
        {"rsuid", {K::Clear, MS_NOSUID}},
        {"rsymfollow", {K::Clear, MS_NOSYMFOLLOW}},
        {"runbindable", {K::Propagation, MS_UNBINDABLE | MS_REC}},
        {"rw", {K::Clear, MS_RDONLY}},
        {"shared", {K::Propagation, MS_SHARED}},
        {"silent", {K::Set, MS_SILENT}},
        {"slave", {K::Propagation, MS_SLAVE}},
        {"strictatime", {K::Set, MS_STRICTATIME}},
        {"suid", {K::Clear, MS_NOSUID}},
        {"symfollow", {K::Clear, MS_NOSYMFOLLOW}},
        {"sync", {K::Set, MS_SYNCHRONOUS}},
        {"tmpcopyup", {K::TmpCopyUp, 0}},
        {"unbindable", {K::Propagation, MS_UNBINDABLE}},
    };
    return table;
}

// Filesystems every guest kernel has and that carry no host state.
const std::set<std::string>& guest_filesystems() {
    static const std::set<std::string> types = {"proc",   "sysfs",  "tmpfs",  "devpts",
                                                "mqueue", "cgroup", "cgroup2"};
    return types;
}

// Device nodes the guest's devtmpfs provides itself, so listing them asks for nothing.
bool is_standard_device(const Device& d) {
    static const std::set<std::string> paths = {"/dev/null",    "/dev/zero",    "/dev/full",
                                                "/dev/random",  "/dev/urandom", "/dev/tty",
                                                "/dev/console", "/dev/ptmx"};
    return d.type == "c" && paths.count(d.path);
}

std::string mib_text(uint64_t bytes) {
    return std::to_string(bytes / kMiB) + " MiB";
}

bool parse_bool_annotation(const Spec& spec, std::string_view key) {
    const auto it = spec.annotations.find(std::string(key));
    if (it == spec.annotations.end()) return false;
    if (it->second == "true") return true;
    if (it->second == "false") return false;
    throw ConfigError("config.json: annotation " + std::string(key) + ": " +
                      json_quote(it->second) + " must be \"true\" or \"false\"");
}

// "512", "512M", "512MiB", "2G", "2GiB" (case-insensitive units) as MiB.
std::optional<uint64_t> parse_mib(const std::string& text) {
    size_t pos = 0;
    uint64_t v = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
        if (v > (UINT64_MAX - 9) / 10 / 1024) return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(text[pos] - '0');
        ++pos;
    }
    if (pos == 0) return std::nullopt;
    std::string unit = text.substr(pos);
    std::transform(unit.begin(), unit.end(), unit.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (unit.empty() || unit == "m" || unit == "mib") return v;
    if (unit == "g" || unit == "gib") return v * 1024;
    return std::nullopt;
}

void plan_memory(const Spec& spec, const HostInfo& host, VmPlan& plan) {
    const uint64_t host_mib = host.memory_bytes / kMiB;
    const auto ann = spec.annotations.find(std::string(kAnnotationMemory));
    if (ann != spec.annotations.end()) {
        const std::string where = "config.json: annotation " + std::string(kAnnotationMemory);
        const auto mib = parse_mib(ann->second);
        if (!mib)
            throw ConfigError(where + ": " + json_quote(ann->second) +
                              " is not a size in MiB (e.g. 512, 512M, 2G)");
        if (*mib < kMinBootMemoryMib)
            throw ConfigError(where + ": " + std::to_string(*mib) +
                              " MiB is below the minimum of " + std::to_string(kMinBootMemoryMib) +
                              " MiB");
        if (host_mib && *mib > host_mib)
            throw ConfigError(where + ": " + std::to_string(*mib) + " MiB exceeds the host's " +
                              std::to_string(host_mib) + " MiB");
        plan.memory_mib = static_cast<uint32_t>(*mib);
        return;
    }
    const auto& mem = spec.linux_.resources.memory;
    if (!mem || !mem->limit || *mem->limit <= 0) {
        plan.memory_mib = kDefaultMemoryMib;
        if (host_mib && plan.memory_mib > host_mib)
            plan.memory_mib = static_cast<uint32_t>(host_mib);
        return;
    }
    const uint64_t limit = static_cast<uint64_t>(*mem->limit);
    const uint64_t mib = (limit + kMiB - 1) / kMiB;
    if (mib < kMinBootMemoryMib)
        throw ConfigError("config.json: linux.resources.memory.limit: " + std::to_string(limit) +
                          " bytes is below the " + std::to_string(kMinBootMemoryMib) +
                          " MiB a micro-VM needs to boot its kernel");
    if (mib < kMinMemoryMib) {
        plan.memory_mib = kMinMemoryMib;
        plan.warnings.push_back("memory limit " + std::to_string(mib) + " MiB raised to " +
                                std::to_string(kMinMemoryMib) +
                                " MiB, the smallest guest vessel boots for a container");
        return;
    }
    if (host_mib && mib > host_mib) {
        plan.memory_mib = static_cast<uint32_t>(host_mib);
        plan.warnings.push_back("memory limit " + std::to_string(mib) +
                                " MiB exceeds the host's RAM; the guest gets " +
                                std::to_string(host_mib) + " MiB");
        return;
    }
    plan.memory_mib = static_cast<uint32_t>(mib);
}

void plan_vcpus(const Spec& spec, const HostInfo& host, VmPlan& plan) {
    const auto ann = spec.annotations.find(std::string(kAnnotationVcpus));
    if (ann != spec.annotations.end()) {
        const std::string& t = ann->second;
        const bool digits =
            !t.empty() && t.size() <= 4 && t.find_first_not_of("0123456789") == std::string::npos;
        const unsigned long n = digits ? std::stoul(t) : 0;
        if (n < 1 || n > kMaxVcpus)
            throw ConfigError("config.json: annotation " + std::string(kAnnotationVcpus) + ": " +
                              json_quote(t) + " must be a number of vCPUs from 1 to " +
                              std::to_string(kMaxVcpus));
        plan.vcpus = static_cast<unsigned>(n);
        return;
    }
    std::optional<uint64_t> want;
    if (const auto& cpu = spec.linux_.resources.cpu) {
        if (cpu->quota && *cpu->quota > 0) {
            const uint64_t period = cpu->period && *cpu->period > 0 ? *cpu->period : 100000;
            const uint64_t q = static_cast<uint64_t>(*cpu->quota);
            want = q / period + (q % period ? 1 : 0);
        }
        if (!cpu->cpus.empty()) {
            const auto n = cpuset_count(cpu->cpus);
            if (!n)
                throw ConfigError("config.json: linux.resources.cpu.cpus: " +
                                  json_quote(cpu->cpus) + " is not a CPU list (e.g. \"0-3,6\")");
            want = want ? std::min<uint64_t>(*want, *n) : *n;
        }
    }
    uint64_t n = want.value_or(1);
    const uint64_t cap = std::min<uint64_t>(std::max(host.cpus, 1u), kMaxVcpus);
    if (n > cap) {
        plan.warnings.push_back("CPU limit asks for " + std::to_string(n) +
                                " vCPUs; the guest gets " + std::to_string(cap) +
                                " (the host's CPUs)");
        n = cap;
    }
    plan.vcpus = static_cast<unsigned>(std::max<uint64_t>(n, 1));
}

void plan_annotations(const Spec& spec, const HostProbe& probe, VmPlan& plan) {
    const auto& known = vessel_annotations();
    for (const auto& [key, value] : spec.annotations) {
        if (key.compare(0, kAnnotationPrefix.size(), kAnnotationPrefix) != 0) continue;
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            std::string list;
            for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
            throw ConfigError("config.json: annotation " + key +
                              ": unknown vessel annotation (known: " + list + ")");
        }
    }
    if (auto it = spec.annotations.find(std::string(kAnnotationKernel));
        it != spec.annotations.end()) {
        const std::string where =
            "config.json: annotation " + std::string(kAnnotationKernel) + ": ";
        const std::string& path = it->second;
        if (path.empty() || path[0] != '/')
            throw ConfigError(where + json_quote(path) + " must be an absolute path");
        const HostPath info = probe.inspect(path);
        if (info.kind == HostPath::Kind::Missing)
            throw ConfigError(
                where + path + ": " +
                (info.error && info.error != ENOENT ? std::strerror(info.error) : "no such file"));
        if (info.kind != HostPath::Kind::Regular)
            throw ConfigError(where + path + ": not a regular file");
        plan.kernel = path;
    }
    if (auto it = spec.annotations.find(std::string(kAnnotationTemplate));
        it != spec.annotations.end()) {
        const std::string& name = it->second;
        const bool chars_ok = !name.empty() && name.size() <= 255 &&
                              name.find_first_not_of(
                                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789_.+-") == std::string::npos;
        if (!chars_ok || name == "." || name == "..")
            throw ConfigError("config.json: annotation " + std::string(kAnnotationTemplate) + ": " +
                              json_quote(name) +
                              " is not a template name (letters, digits, '_', '.', '+', '-')");
        plan.template_name = name;
    }
    if (auto it = spec.annotations.find(std::string(kAnnotationWarmStart));
        it != spec.annotations.end()) {
        if (it->second == "true")
            plan.warm_start = true;
        else if (it->second == "false")
            plan.warm_start = false;
        else
            throw ConfigError("config.json: annotation " + std::string(kAnnotationWarmStart) +
                              ": " + json_quote(it->second) + " must be \"true\" or \"false\"");
    }
}

void plan_namespaces(const Spec& spec, VmPlan& plan) {
    const auto& nss = spec.linux_.namespaces;
    for (size_t i = 0; i < nss.size(); ++i) {
        const Namespace& ns = nss[i];
        if (ns.type == "network") {
            plan.network.mode = ns.path.empty() ? NetworkMode::New : NetworkMode::Join;
            plan.network.netns_path = ns.path;
        } else if (ns.type == "user") {
            plan.user_namespace.enabled = true;
            plan.user_namespace.path = ns.path;
        } else if (!ns.path.empty() && ns.type != "time") {
            // Pods join their infra container's ipc/uts/pid namespaces; across VMs there is
            // no shared kernel to join.
            plan.warnings.push_back("linux.namespaces[" + std::to_string(i) + "] (" + ns.type +
                                    "): " + ns.path +
                                    " is not joined: the container has its own guest kernel");
        }
    }
    plan.user_namespace.uid_mappings = spec.linux_.uid_mappings;
    plan.user_namespace.gid_mappings = spec.linux_.gid_mappings;
    if (!spec.linux_.find_namespace("network"))
        plan.warnings.push_back(
            "no network namespace: the host's network cannot be shared with a micro-VM; the "
            "guest has loopback only");
    for (const char* t : {"pid", "ipc", "uts"})
        if (!spec.linux_.find_namespace(t))
            plan.warnings.push_back(std::string("no ") + t + " namespace: the host's cannot be " +
                                    "shared with a micro-VM; the container uses the guest's");
}

void plan_sysctl(const Spec& spec, VmPlan& plan) {
    for (const auto& [key, value] : spec.linux_.sysctl) {
        const bool ok = !key.empty() && key.front() != '.' && key.back() != '.' &&
                        key.find("..") == std::string::npos &&
                        key.find_first_not_of(
                            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                            "0123456789_.-/") == std::string::npos;
        if (!ok)
            throw ConfigError("config.json: linux.sysctl[" + json_quote(key) +
                              "]: not a sysctl name");
        plan.sysctl.emplace(key, value);
    }
}

void plan_devices(const Spec& spec, bool ignore, VmPlan& plan) {
    std::string errors;
    const auto& devs = spec.linux_.devices;
    for (size_t i = 0; i < devs.size(); ++i) {
        if (is_standard_device(devs[i])) continue;
        const std::string what = "linux.devices[" + std::to_string(i) + "] (" + devs[i].path + ")";
        const std::string why = "host devices cannot be passed into a micro-VM";
        if (ignore) {
            plan.warnings.push_back(what + " skipped: " + why);
        } else {
            errors += "config.json: " + what + ": " + why + "\n";
        }
    }
    if (!errors.empty())
        throw ConfigError(errors + "config.json: set annotation " +
                          std::string(kAnnotationIgnoreDevices) + "=true to skip them");
}

void plan_hooks(const Spec& spec, bool ignore, VmPlan& plan) {
    plan.host_hooks.prestart = spec.hooks.prestart;
    plan.host_hooks.create_runtime = spec.hooks.create_runtime;
    plan.host_hooks.poststart = spec.hooks.poststart;
    plan.host_hooks.poststop = spec.hooks.poststop;
    std::string errors;
    const auto refuse = [&](const char* name, const std::vector<Hook>& hooks) {
        if (hooks.empty()) return;
        const std::string why =
            std::to_string(hooks.size()) +
            " hook(s) must run inside the container's "
            "namespaces, which are in the guest, where host binaries cannot run";
        if (ignore) {
            plan.warnings.push_back(std::string("hooks.") + name + " skipped: " + why);
        } else {
            errors += std::string("config.json: hooks.") + name + ": " + why + "\n";
        }
    };
    refuse("createContainer", spec.hooks.create_container);
    refuse("startContainer", spec.hooks.start_container);
    if (!errors.empty())
        throw ConfigError(errors + "config.json: set annotation " +
                          std::string(kAnnotationIgnoreHooks) + "=true to skip them");
}

bool has_data_option(const std::string& data, std::string_view key) {
    size_t pos = 0;
    while (pos <= data.size()) {
        size_t end = data.find(',', pos);
        if (end == std::string::npos) end = data.size();
        const std::string_view opt(data.data() + pos, end - pos);
        if (opt.substr(0, key.size()) == key) return true;
        pos = end + 1;
    }
    return false;
}

void append_data(std::string& data, const std::string& opt) {
    if (!data.empty()) data += ',';
    data += opt;
}

std::string_view trim_slashes(std::string_view p) {
    while (p.size() > 1 && p.back() == '/') p.remove_suffix(1);
    return p;
}

void plan_mounts(const Bundle& bundle, const HostProbe& probe, bool ignore, VmPlan& plan) {
    const Spec& spec = bundle.spec;
    std::string errors;
    uint64_t copied_total = 0;
    for (size_t i = 0; i < spec.mounts.size(); ++i) {
        const Mount& m = spec.mounts[i];
        const std::string what = "mounts[" + std::to_string(i) + "] (" + m.destination + ")";
        const auto refuse = [&](const std::string& why) {
            if (ignore) {
                plan.skipped_mounts.push_back({i, m.destination, why});
                plan.warnings.push_back(what + " skipped: " + why);
            } else {
                errors += "config.json: " + what + ": " + why + "\n";
            }
        };
        GuestMount g;
        g.index = i;
        g.destination = m.destination;
        g.options = parse_mount_options(m.options);
        if (!g.options.unsupported.empty()) {
            refuse("mount option " + json_quote(g.options.unsupported.front()) +
                   " (ID-mapped mounts) is not supported in a micro-VM");
            continue;
        }
        const bool bind = g.options.bind || m.type == "bind" || m.type == "rbind";
        if (!bind) {
            if (!guest_filesystems().count(m.type)) {
                refuse(m.type.empty() ? std::string("no filesystem type and not a bind mount")
                                      : "filesystem type " + json_quote(m.type) +
                                            " is not supported in a micro-VM (the guest mounts "
                                            "proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2)");
                continue;
            }
            g.kind = GuestMount::Kind::Filesystem;
            g.type = m.type;
            g.source = m.source.empty() ? m.type : m.source;
            plan.mounts.push_back(std::move(g));
            continue;
        }
        if (m.source.empty())
            throw ConfigError("config.json: mounts[" + std::to_string(i) +
                              "].source: required for a bind mount");
        // Relative bind sources are relative to the bundle (runtime-spec config.md).
        const std::string source = m.source[0] == '/' ? m.source : bundle.dir + "/" + m.source;
        const HostPath info = probe.inspect(source);
        switch (info.kind) {
            case HostPath::Kind::Missing:
                throw ConfigError(
                    "config.json: mounts[" + std::to_string(i) + "].source: " + source + ": " +
                    (info.error && info.error != ENOENT ? std::strerror(info.error)
                                                        : "no such file or directory"));
            case HostPath::Kind::Directory:
                if (trim_slashes(m.destination) == "/dev/shm" && info.on_tmpfs) {
                    // The engine's shm is a tmpfs on the host; the guest makes its own of the
                    // same size. Nothing is shared with the host (or with --ipc peers).
                    g.kind = GuestMount::Kind::Filesystem;
                    g.type = "tmpfs";
                    g.source = "shm";
                    g.options.bind = false;
                    g.options.flags &= ~static_cast<unsigned long>(MS_BIND | MS_REC);
                    g.options.propagation = 0;
                    if (!has_data_option(g.options.data, "mode="))
                        append_data(g.options.data, "mode=1777");
                    if (!has_data_option(g.options.data, "size=") && info.fs_bytes)
                        append_data(g.options.data, "size=" + std::to_string(info.fs_bytes));
                    plan.mounts.push_back(std::move(g));
                } else {
                    refuse("bind mount of host directory " + source +
                           " (a volume) is not supported in a micro-VM");
                }
                continue;
            case HostPath::Kind::Regular:
                if (info.size > kMaxCopiedFileBytes) {
                    refuse("host file " + source + " is " + std::to_string(info.size) +
                           " bytes; vessel copies bind-mounted files of at most " +
                           mib_text(kMaxCopiedFileBytes) + " into the guest");
                    continue;
                }
                if (copied_total + info.size > kMaxCopiedTotalBytes) {
                    refuse("bind-mounted files add up to more than " +
                           mib_text(kMaxCopiedTotalBytes) +
                           ", the most vessel copies into a guest");
                    continue;
                }
                copied_total += info.size;
                g.kind = GuestMount::Kind::CopiedFile;
                g.type = "bind";
                g.source = source;
                g.file_size = info.size;
                g.file_mode = info.mode;
                plan.mounts.push_back(std::move(g));
                continue;
            case HostPath::Kind::CharDevice:
            case HostPath::Kind::BlockDevice:
                refuse("host device " + source + " cannot be passed into a micro-VM");
                continue;
            case HostPath::Kind::Socket:
                refuse("host socket " + source + " cannot be reached from inside a micro-VM");
                continue;
            case HostPath::Kind::Fifo:
                refuse("host FIFO " + source + " cannot be shared with a micro-VM");
                continue;
        }
    }
    if (!errors.empty())
        throw ConfigError(errors + "config.json: set annotation " +
                          std::string(kAnnotationIgnoreMounts) + "=true to skip them");
}

}  // namespace

const std::vector<std::string>& vessel_annotations() {
    static const std::vector<std::string> keys = {
        std::string(kAnnotationKernel),
        std::string(kAnnotationMemory),
        std::string(kAnnotationVcpus),
        std::string(kAnnotationTemplate),
        std::string(kAnnotationWarmStart),
        std::string(kAnnotationIgnoreMounts),
        std::string(kAnnotationIgnoreDevices),
        std::string(kAnnotationIgnoreHooks),
        "io.vessel.jail",  // read by runtime/jail (container_options)
    };
    return keys;
}

HostInfo HostInfo::current() {
    HostInfo h;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        h.cpus = static_cast<unsigned>(CPU_COUNT(&set));
    } else {
        const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
        h.cpus = n > 0 ? static_cast<unsigned>(n) : 1;
    }
    struct sysinfo si {};
    if (::sysinfo(&si) == 0) h.memory_bytes = static_cast<uint64_t>(si.totalram) * si.mem_unit;
    return h;
}

HostPath RealHostProbe::inspect(const std::string& path) const {
    HostPath out;
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) {
        out.error = errno;
        return out;
    }
    out.mode = st.st_mode & 07777;
    if (S_ISREG(st.st_mode)) {
        out.kind = HostPath::Kind::Regular;
        out.size = static_cast<uint64_t>(st.st_size);
    } else if (S_ISDIR(st.st_mode)) {
        out.kind = HostPath::Kind::Directory;
    } else if (S_ISCHR(st.st_mode)) {
        out.kind = HostPath::Kind::CharDevice;
    } else if (S_ISBLK(st.st_mode)) {
        out.kind = HostPath::Kind::BlockDevice;
    } else if (S_ISSOCK(st.st_mode)) {
        out.kind = HostPath::Kind::Socket;
    } else {
        out.kind = HostPath::Kind::Fifo;
    }
    struct statfs fs {};
    if (::statfs(path.c_str(), &fs) == 0) {
        out.on_tmpfs = static_cast<unsigned long>(fs.f_type) == TMPFS_MAGIC;
        out.fs_bytes = static_cast<uint64_t>(fs.f_blocks) * static_cast<uint64_t>(fs.f_bsize);
    }
    return out;
}

MountOptions parse_mount_options(const std::vector<std::string>& options) {
    MountOptions out;
    const auto& table = option_table();
    for (const auto& o : options) {
        const auto it = table.find(o);
        if (it == table.end()) {
            if (!o.empty()) append_data(out.data, o);
            continue;
        }
        const OptionEffect& e = it->second;
        switch (e.kind) {
            case OptionEffect::Set:
                out.flags |= e.bits;
                break;
            case OptionEffect::Clear:
                out.flags &= ~e.bits;
                break;
            case OptionEffect::Propagation:
                out.propagation = e.bits;
                break;
            case OptionEffect::Bind:
                out.bind = true;
                out.flags |= e.bits;
                break;
            case OptionEffect::TmpCopyUp:
                out.tmpcopyup = true;
                break;
            case OptionEffect::Unsupported:
                out.unsupported.push_back(o);
                break;
        }
    }
    return out;
}

const std::vector<std::string>& known_mount_options() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> v;
        for (const auto& [name, effect] : option_table())
            if (effect.kind != OptionEffect::Unsupported) v.push_back(name);
        return v;
    }();
    return names;
}

GuestProcess guest_process(const Process& p, const std::string& hostname) {
    GuestProcess g;
    g.args = p.args;
    g.env = p.env;
    g.cwd = p.cwd;
    g.uid = p.user.uid;
    g.gid = p.user.gid;
    g.umask = p.user.umask;
    g.additional_gids = p.user.additional_gids;
    g.rlimits = p.rlimits;
    g.terminal = p.terminal;
    g.console_size = p.console_size;
    g.no_new_privileges = p.no_new_privileges;
    g.oom_score_adj = p.oom_score_adj;
    g.hostname = hostname;
    return g;
}

std::optional<unsigned> cpuset_count(std::string_view list) {
    constexpr unsigned long kMaxCpu = 8191;
    std::set<unsigned long> cpus;
    size_t pos = 0;
    if (list.empty()) return std::nullopt;
    const auto number = [&](unsigned long& out) {
        const size_t start = pos;
        out = 0;
        while (pos < list.size() && list[pos] >= '0' && list[pos] <= '9') {
            out = out * 10 + static_cast<unsigned long>(list[pos] - '0');
            if (out > kMaxCpu) return false;
            ++pos;
        }
        return pos > start;
    };
    for (;;) {
        unsigned long a = 0, b = 0;
        if (!number(a)) return std::nullopt;
        b = a;
        if (pos < list.size() && list[pos] == '-') {
            ++pos;
            if (!number(b) || b < a) return std::nullopt;
        }
        for (unsigned long c = a; c <= b; ++c) cpus.insert(c);
        if (pos == list.size()) break;
        if (list[pos] != ',') return std::nullopt;
        ++pos;
    }
    return static_cast<unsigned>(cpus.size());
}

VmPlan plan_vm(const Bundle& bundle, const HostInfo& host, const HostProbe& probe) {
    const Spec& spec = bundle.spec;
    VmPlan plan;
    plan.warnings = spec.warnings;
    plan.rootfs = bundle.rootfs;
    plan.rootfs_readonly = spec.root.readonly;
    plan.hostname = spec.hostname;
    plan.domainname = spec.domainname;
    plan.process = guest_process(spec.process, spec.hostname);
    plan_annotations(spec, probe, plan);
    plan_memory(spec, host, plan);
    plan_vcpus(spec, host, plan);
    plan_namespaces(spec, plan);
    plan_sysctl(spec, plan);
    plan_devices(spec, parse_bool_annotation(spec, kAnnotationIgnoreDevices), plan);
    plan_hooks(spec, parse_bool_annotation(spec, kAnnotationIgnoreHooks), plan);
    plan_mounts(bundle, probe, parse_bool_annotation(spec, kAnnotationIgnoreMounts), plan);
    plan.masked_paths = spec.linux_.masked_paths;
    plan.readonly_paths = spec.linux_.readonly_paths;
    if (spec.linux_.resources.pids_limit && *spec.linux_.resources.pids_limit > 0)
        plan.pids_limit = spec.linux_.resources.pids_limit;
    return plan;
}

VmPlan plan_vm(const Bundle& bundle) {
    const RealHostProbe probe;
    return plan_vm(bundle, HostInfo::current(), probe);
}

std::string read_copied_file(const GuestMount& m) {
    // O_NONBLOCK: a FIFO swapped in since planning must not hang create.
    UniqueFd fd(::open(m.source.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) throw_errno("opening " + m.source + " to copy into the guest at " + m.destination);
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) throw_errno("stat " + m.source);
    if (!S_ISREG(st.st_mode))
        throw ConfigError(m.source + ": no longer a regular file, cannot copy it to " +
                          m.destination);
    std::string data;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("reading " + m.source);
        }
        if (n == 0) break;
        data.append(buf, static_cast<size_t>(n));
        if (data.size() > kMaxCopiedFileBytes)
            throw ConfigError(m.source + ": grew past " + mib_text(kMaxCopiedFileBytes) +
                              ", too large to copy into the guest at " + m.destination);
    }
    return data;
}

}  // namespace vessel::oci
