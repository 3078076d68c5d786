#include "oci/spec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "oci/json_read.h"
#include "vmm/fd.h"

namespace vessel::oci {

using nlohmann::json;

namespace {

constexpr uint64_t kU32Max = 0xffffffffu;
constexpr size_t kMaxConfigBytes = 16u << 20;

const std::set<std::string>& known_rlimits() {
    static const std::set<std::string> names = {
        "RLIMIT_AS",     "RLIMIT_CORE",   "RLIMIT_CPU",        "RLIMIT_DATA",
        "RLIMIT_FSIZE",  "RLIMIT_LOCKS",  "RLIMIT_MEMLOCK",    "RLIMIT_MSGQUEUE",
        "RLIMIT_NICE",   "RLIMIT_NOFILE", "RLIMIT_NPROC",      "RLIMIT_RSS",
        "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
    };
    return names;
}

bool is_absolute(const std::string& p) {
    return !p.empty() && p[0] == '/';
}

void check_no_nul(const JsonReader& r, const std::string& path, const std::string& s) {
    if (s.find('\0') != std::string::npos) r.fail(path, "contains a NUL byte");
}

void check_absolute(const JsonReader& r, const std::string& path, const std::string& s) {
    if (!is_absolute(s)) r.fail(path, "must be an absolute path");
    check_no_nul(r, path, s);
}

// Like runc: "KEY=VALUE" with a non-empty key; execve cannot carry NUL bytes.
void check_env(const JsonReader& r, const std::string& path, const std::vector<std::string>& env) {
    for (size_t i = 0; i < env.size(); ++i) {
        const std::string p = path + "[" + std::to_string(i) + "]";
        const auto eq = env[i].find('=');
        if (eq == std::string::npos)
            r.fail(p, json_quote(env[i]) + " is not of the form KEY=VALUE");
        if (eq == 0) r.fail(p, json_quote(env[i]) + " has an empty variable name");
        check_no_nul(r, p, env[i]);
    }
}

Process read_process(const JsonReader& r, const json& j, const std::string& base) {
    const auto at = [&](const char* key) { return JsonReader::join(base, key); };
    r.require_object(j, base.empty() ? std::string("process") : base);
    Process p;
    p.terminal = r.get_bool(j, "terminal", at("terminal")).value_or(false);
    if (const json* cs = JsonReader::member(j, "consoleSize")) {
        const std::string path = at("consoleSize");
        r.require_object(*cs, path);
        ConsoleSize size;
        size.height = static_cast<uint32_t>(
            r.require(r.get_uint(*cs, "height", JsonReader::join(path, "height"), kU32Max),
                      JsonReader::join(path, "height")));
        size.width = static_cast<uint32_t>(
            r.require(r.get_uint(*cs, "width", JsonReader::join(path, "width"), kU32Max),
                      JsonReader::join(path, "width")));
        p.console_size = size;
    }
    if (const json* u = JsonReader::member(j, "user")) {
        const std::string path = at("user");
        r.require_object(*u, path);
        const auto field = [&](const char* key) { return JsonReader::join(path, key); };
        p.user.uid =
            static_cast<uint32_t>(r.get_uint(*u, "uid", field("uid"), kU32Max).value_or(0));
        p.user.gid =
            static_cast<uint32_t>(r.get_uint(*u, "gid", field("gid"), kU32Max).value_or(0));
        if (auto m = r.get_uint(*u, "umask", field("umask"), 0777)) p.user.umask = *m;
        if (const json* g = JsonReader::member(*u, "additionalGids")) {
            const std::string gpath = field("additionalGids");
            if (!g->is_array()) r.fail(gpath, "must be an array of integers");
            for (size_t i = 0; i < g->size(); ++i)
                p.user.additional_gids.push_back(static_cast<uint32_t>(
                    r.uint_value((*g)[i], gpath + "[" + std::to_string(i) + "]", kU32Max)));
        }
    }
    const std::string args_path = at("args");
    const json* args = JsonReader::member(j, "args");
    const char* const args_msg = "must be a non-empty array of strings";
    if (!args || !args->is_array() || args->empty()) r.fail(args_path, args_msg);
    for (const auto& a : *args) {
        if (!a.is_string()) r.fail(args_path, args_msg);
        p.args.push_back(a.get<std::string>());
    }
    for (size_t i = 0; i < p.args.size(); ++i)
        check_no_nul(r, args_path + "[" + std::to_string(i) + "]", p.args[i]);
    p.env = r.get_string_array(j, "env", at("env")).value_or(std::vector<std::string>{});
    check_env(r, at("env"), p.env);
    p.cwd = r.require(r.get_string(j, "cwd", at("cwd")), at("cwd"));
    check_absolute(r, at("cwd"), p.cwd);
    if (const json* c = JsonReader::member(j, "capabilities")) {
        const std::string path = at("capabilities");
        r.require_object(*c, path);
        Capabilities caps;
        const auto set = [&](const char* key, std::vector<std::string>& out) {
            out = r.get_string_array(*c, key, JsonReader::join(path, key))
                      .value_or(std::vector<std::string>{});
        };
        set("bounding", caps.bounding);
        set("effective", caps.effective);
        set("inheritable", caps.inheritable);
        set("permitted", caps.permitted);
        set("ambient", caps.ambient);
        p.capabilities = std::move(caps);
    }
    if (const json* rl = JsonReader::member(j, "rlimits")) {
        const std::string path = at("rlimits");
        if (!rl->is_array()) r.fail(path, "must be an array of objects");
        std::set<std::string> seen;
        for (size_t i = 0; i < rl->size(); ++i) {
            const std::string ip = path + "[" + std::to_string(i) + "]";
            const json& e = (*rl)[i];
            r.require_object(e, ip);
            Rlimit lim;
            lim.type = r.require(r.get_string(e, "type", ip + ".type"), ip + ".type");
            if (!known_rlimits().count(lim.type))
                r.fail(ip + ".type", "unknown resource " + json_quote(lim.type));
            if (!seen.insert(lim.type).second)
                r.fail(ip + ".type", "duplicate resource " + json_quote(lim.type));
            lim.hard = r.require(r.get_uint(e, "hard", ip + ".hard", UINT64_MAX), ip + ".hard");
            lim.soft = r.require(r.get_uint(e, "soft", ip + ".soft", UINT64_MAX), ip + ".soft");
            if (lim.soft > lim.hard)
                r.fail(ip, "soft limit " + std::to_string(lim.soft) + " exceeds hard limit " +
                               std::to_string(lim.hard));
            p.rlimits.push_back(std::move(lim));
        }
    }
    p.no_new_privileges = r.get_bool(j, "noNewPrivileges", at("noNewPrivileges")).value_or(false);
    if (auto v = r.get_int(j, "oomScoreAdj", at("oomScoreAdj"), -1000, 1000))
        p.oom_score_adj = static_cast<int>(*v);
    p.apparmor_profile = r.get_string(j, "apparmorProfile", at("apparmorProfile")).value_or("");
    p.selinux_label = r.get_string(j, "selinuxLabel", at("selinuxLabel")).value_or("");
    return p;
}

std::vector<Hook> read_hooks(const JsonReader& r, const json& hooks, const char* name) {
    std::vector<Hook> out;
    const json* list = JsonReader::member(hooks, name);
    if (!list) return out;
    const std::string path = std::string("hooks.") + name;
    if (!list->is_array()) r.fail(path, "must be an array of objects");
    for (size_t i = 0; i < list->size(); ++i) {
        const std::string ip = path + "[" + std::to_string(i) + "]";
        const json& e = (*list)[i];
        r.require_object(e, ip);
        Hook h;
        h.path = r.require(r.get_string(e, "path", ip + ".path"), ip + ".path");
        check_absolute(r, ip + ".path", h.path);
        h.args = r.get_string_array(e, "args", ip + ".args").value_or(std::vector<std::string>{});
        h.env = r.get_string_array(e, "env", ip + ".env").value_or(std::vector<std::string>{});
        check_env(r, ip + ".env", h.env);
        if (auto t = r.get_int(e, "timeout", ip + ".timeout", 1, INT_MAX,
                               "must be a positive integer (seconds)"))
            h.timeout = static_cast<int>(*t);
        out.push_back(std::move(h));
    }
    return out;
}

std::vector<IdMapping> read_mappings(const JsonReader& r, const json& lx, const char* key) {
    std::vector<IdMapping> out;
    const json* list = JsonReader::member(lx, key);
    if (!list) return out;
    const std::string path = std::string("linux.") + key;
    if (!list->is_array()) r.fail(path, "must be an array of objects");
    for (size_t i = 0; i < list->size(); ++i) {
        const std::string ip = path + "[" + std::to_string(i) + "]";
        const json& e = (*list)[i];
        r.require_object(e, ip);
        IdMapping m;
        const auto field = [&](const char* k) {
            const std::string fp = ip + "." + k;
            return static_cast<uint32_t>(r.require(r.get_uint(e, k, fp, kU32Max), fp));
        };
        m.container_id = field("containerID");
        m.host_id = field("hostID");
        m.size = field("size");
        out.push_back(m);
    }
    return out;
}

Resources read_resources(const JsonReader& r, const json& res) {
    Resources out;
    const std::string base = "linux.resources";
    r.require_object(res, base);
    if (const json* m = JsonReader::member(res, "memory")) {
        const std::string path = base + ".memory";
        r.require_object(*m, path);
        MemoryResources mem;
        const auto bytes = [&](const char* key) -> std::optional<int64_t> {
            const std::string fp = path + "." + key;
            auto v = r.get_int(*m, key, fp, INT64_MIN, INT64_MAX);
            if (v && *v < -1) r.fail(fp, "must be -1 (unlimited) or a number of bytes");
            return v;
        };
        mem.limit = bytes("limit");
        mem.reservation = bytes("reservation");
        mem.swap = bytes("swap");
        out.memory = mem;
    }
    if (const json* c = JsonReader::member(res, "cpu")) {
        const std::string path = base + ".cpu";
        r.require_object(*c, path);
        CpuResources cpu;
        cpu.shares = r.get_uint(*c, "shares", path + ".shares", UINT64_MAX);
        cpu.quota = r.get_int(*c, "quota", path + ".quota", INT64_MIN, INT64_MAX);
        if (cpu.quota && *cpu.quota < -1)
            r.fail(path + ".quota", "must be -1 (unlimited) or a number of microseconds");
        cpu.period = r.get_uint(*c, "period", path + ".period", UINT64_MAX);
        cpu.cpus = r.get_string(*c, "cpus", path + ".cpus").value_or("");
        cpu.mems = r.get_string(*c, "mems", path + ".mems").value_or("");
        out.cpu = cpu;
    }
    if (const json* p = JsonReader::member(res, "pids")) {
        const std::string path = base + ".pids";
        r.require_object(*p, path);
        out.pids_limit = r.get_int(*p, "limit", path + ".limit", INT64_MIN, INT64_MAX);
    }
    return out;
}

Linux read_linux(const JsonReader& r, const json& lx) {
    r.require_object(lx, "linux");
    Linux out;
    if (const json* ns = JsonReader::member(lx, "namespaces")) {
        if (!ns->is_array()) r.fail("linux.namespaces", "must be an array of objects");
        const auto& known = known_namespaces();
        for (size_t i = 0; i < ns->size(); ++i) {
            const std::string ip = "linux.namespaces[" + std::to_string(i) + "]";
            const json& e = (*ns)[i];
            r.require_object(e, ip);
            Namespace n;
            n.type = r.require(r.get_string(e, "type", ip + ".type"), ip + ".type");
            if (std::find(known.begin(), known.end(), n.type) == known.end())
                r.fail(ip + ".type", "unknown namespace type " + json_quote(n.type));
            if (out.find_namespace(n.type))
                r.fail(ip + ".type", "duplicate namespace type " + json_quote(n.type));
            n.path = r.get_string(e, "path", ip + ".path").value_or("");
            if (!n.path.empty()) check_absolute(r, ip + ".path", n.path);
            out.namespaces.push_back(std::move(n));
        }
    }
    out.uid_mappings = read_mappings(r, lx, "uidMappings");
    out.gid_mappings = read_mappings(r, lx, "gidMappings");
    if (const json* res = JsonReader::member(lx, "resources"))
        out.resources = read_resources(r, *res);
    out.sysctl = r.get_string_map(lx, "sysctl", "linux.sysctl").value_or(decltype(out.sysctl){});
    const auto abs_list = [&](const char* key, std::vector<std::string>& dst) {
        const std::string path = std::string("linux.") + key;
        dst = r.get_string_array(lx, key, path).value_or(std::vector<std::string>{});
        for (size_t i = 0; i < dst.size(); ++i)
            check_absolute(r, path + "[" + std::to_string(i) + "]", dst[i]);
    };
    abs_list("maskedPaths", out.masked_paths);
    abs_list("readonlyPaths", out.readonly_paths);
    if (const json* devs = JsonReader::member(lx, "devices")) {
        if (!devs->is_array()) r.fail("linux.devices", "must be an array of objects");
        for (size_t i = 0; i < devs->size(); ++i) {
            const std::string ip = "linux.devices[" + std::to_string(i) + "]";
            const json& e = (*devs)[i];
            r.require_object(e, ip);
            Device d;
            d.type = r.require(r.get_string(e, "type", ip + ".type"), ip + ".type");
            if (d.type != "c" && d.type != "b" && d.type != "u" && d.type != "p")
                r.fail(ip + ".type", "must be \"c\", \"b\", \"u\" or \"p\"");
            d.path = r.require(r.get_string(e, "path", ip + ".path"), ip + ".path");
            check_absolute(r, ip + ".path", d.path);
            d.major = r.get_int(e, "major", ip + ".major", INT64_MIN, INT64_MAX).value_or(0);
            d.minor = r.get_int(e, "minor", ip + ".minor", INT64_MIN, INT64_MAX).value_or(0);
            if (auto m = r.get_uint(e, "fileMode", ip + ".fileMode", kU32Max)) d.file_mode = *m;
            if (auto u = r.get_uint(e, "uid", ip + ".uid", kU32Max)) d.uid = *u;
            if (auto g = r.get_uint(e, "gid", ip + ".gid", kU32Max)) d.gid = *g;
            out.devices.push_back(std::move(d));
        }
    }
    out.cgroups_path = r.get_string(lx, "cgroupsPath", "linux.cgroupsPath").value_or("");
    if (const json* sc = JsonReader::member(lx, "seccomp")) {
        r.require_object(*sc, "linux.seccomp");
        out.seccomp = sc->dump();
    }
    out.rootfs_propagation =
        r.get_string(lx, "rootfsPropagation", "linux.rootfsPropagation").value_or("");
    out.mount_label = r.get_string(lx, "mountLabel", "linux.mountLabel").value_or("");
    return out;
}

struct SemVer {
    unsigned long major = 0, minor = 0, patch = 0;
};

// SemVer 2.0 "MAJOR.MINOR.PATCH[-pre][+build]"; the suffixes are accepted as written
// ("1.0.2-dev" from Docker, "1.1.0-rc.1").
std::optional<SemVer> parse_semver(const std::string& v) {
    SemVer out;
    unsigned long* parts[] = {&out.major, &out.minor, &out.patch};
    size_t pos = 0;
    for (int i = 0; i < 3; ++i) {
        if (i > 0) {
            if (pos >= v.size() || v[pos] != '.') return std::nullopt;
            ++pos;
        }
        const size_t start = pos;
        while (pos < v.size() && v[pos] >= '0' && v[pos] <= '9') ++pos;
        if (pos == start || pos - start > 9) return std::nullopt;
        *parts[i] = std::stoul(v.substr(start, pos - start));
    }
    if (pos == v.size()) return out;
    if (v[pos] != '-' && v[pos] != '+') return std::nullopt;
    if (pos + 1 == v.size()) return std::nullopt;
    for (size_t i = pos + 1; i < v.size(); ++i) {
        const char c = v[i];
        const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                        (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '+';
        if (!ok) return std::nullopt;
    }
    return out;
}

json parse_text(std::string_view text, std::string_view origin) {
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
        throw ConfigError(std::string(origin) + ": not valid JSON: the file is empty");
    try {
        return json::parse(text.begin(), text.end());
    } catch (const json::parse_error& e) {
        // nlohmann says "[json.exception.parse_error.101] parse error at line 4, column 7:
        // <detail>"; keep its position and detail in vessel's wording.
        std::string what = e.what();
        std::string where, detail = what;
        const auto at = what.find(" at line ");
        if (at != std::string::npos) {
            const auto colon = what.find(": ", at);
            if (colon != std::string::npos) {
                where = what.substr(at + 4, colon - at - 4);  // "line 4, column 7"
                detail = what.substr(colon + 2);
                const auto comma = where.find(", ");
                if (comma != std::string::npos) where.erase(comma, 1);
            }
        }
        if (where.empty()) where = "byte " + std::to_string(e.byte);
        throw ConfigError(std::string(origin) + ": not valid JSON at " + where + ": " + detail);
    }
}

}  // namespace

const Namespace* Linux::find_namespace(std::string_view type) const {
    for (const auto& n : namespaces)
        if (n.type == type) return &n;
    return nullptr;
}

const std::vector<std::string>& known_namespaces() {
    static const std::vector<std::string> names = {"cgroup", "ipc",  "mount", "network",
                                                   "pid",    "time", "user",  "uts"};
    return names;
}

Spec parse_config(std::string_view text, std::string_view origin) {
    const json j = parse_text(text, origin);
    const JsonReader r{std::string(origin)};
    if (!j.is_object()) throw ConfigError(std::string(origin) + ": must be a JSON object");
    Spec s;

    s.oci_version = r.require(r.get_string(j, "ociVersion", "ociVersion"), "ociVersion");
    const auto ver = parse_semver(s.oci_version);
    if (!ver) r.fail("ociVersion", json_quote(s.oci_version) + " is not a semantic version");
    if (ver->major != 1)
        throw ConfigError(std::string(origin) + ": ociVersion " + json_quote(s.oci_version) +
                          " is not supported (vessel supports 1.0.0 to 1.2.x)");
    if (ver->minor > 2)
        s.warnings.push_back("ociVersion " + s.oci_version +
                             " is newer than vessel knows (1.2.x): fields added since are "
                             "ignored");

    const json* proc = JsonReader::member(j, "process");
    if (!proc) r.fail("process", "required");
    s.process = read_process(r, *proc, "process");

    const json* root = JsonReader::member(j, "root");
    if (!root) r.fail("root.path", "required");
    r.require_object(*root, "root");
    s.root.path = r.require(r.get_string(*root, "path", "root.path"), "root.path");
    if (s.root.path.empty()) r.fail("root.path", "required");
    check_no_nul(r, "root.path", s.root.path);
    s.root.readonly = r.get_bool(*root, "readonly", "root.readonly").value_or(false);

    s.hostname = r.get_string(j, "hostname", "hostname").value_or("");
    s.domainname = r.get_string(j, "domainname", "domainname").value_or("");

    if (const json* mounts = JsonReader::member(j, "mounts")) {
        if (!mounts->is_array()) r.fail("mounts", "must be an array of objects");
        for (size_t i = 0; i < mounts->size(); ++i) {
            const std::string ip = "mounts[" + std::to_string(i) + "]";
            const json& e = (*mounts)[i];
            r.require_object(e, ip);
            Mount m;
            m.destination =
                r.require(r.get_string(e, "destination", ip + ".destination"), ip + ".destination");
            check_absolute(r, ip + ".destination", m.destination);
            m.type = r.get_string(e, "type", ip + ".type").value_or("");
            m.source = r.get_string(e, "source", ip + ".source").value_or("");
            check_no_nul(r, ip + ".source", m.source);
            m.options = r.get_string_array(e, "options", ip + ".options")
                            .value_or(std::vector<std::string>{});
            s.mounts.push_back(std::move(m));
        }
    }

    if (const json* hooks = JsonReader::member(j, "hooks")) {
        r.require_object(*hooks, "hooks");
        s.hooks.prestart = read_hooks(r, *hooks, "prestart");
        s.hooks.create_runtime = read_hooks(r, *hooks, "createRuntime");
        s.hooks.create_container = read_hooks(r, *hooks, "createContainer");
        s.hooks.start_container = read_hooks(r, *hooks, "startContainer");
        s.hooks.poststart = read_hooks(r, *hooks, "poststart");
        s.hooks.poststop = read_hooks(r, *hooks, "poststop");
    }

    s.annotations =
        r.get_string_map(j, "annotations", "annotations").value_or(decltype(s.annotations){});
    for (const auto& [k, v] : s.annotations)
        if (k.empty()) r.fail("annotations", "keys must not be empty");

    if (const json* lx = JsonReader::member(j, "linux")) s.linux_ = read_linux(r, *lx);
    return s;
}

Process parse_process(std::string_view text, std::string_view origin) {
    const json j = parse_text(text, origin);
    const JsonReader r{std::string(origin)};
    if (!j.is_object()) throw ConfigError(std::string(origin) + ": must be a JSON object");
    return read_process(r, j, "");
}

std::string resolve_rootfs(const Spec& spec, const std::string& bundle_dir) {
    std::string path = spec.root.path;
    if (!is_absolute(path)) {
        path = bundle_dir + (bundle_dir.empty() || bundle_dir.back() == '/' ? "" : "/") + path;
    }
    // Lexically normalise "./rootfs" and trailing slashes; symlinks are left to the kernel.
    std::string norm;
    size_t i = 0;
    std::vector<std::string> parts;
    while (i < path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        const std::string part = path.substr(i, j - i);
        if (part == "..") {
            if (!parts.empty()) parts.pop_back();
        } else if (!part.empty() && part != ".") {
            parts.push_back(part);
        }
        i = j + 1;
    }
    for (const auto& p : parts) norm += "/" + p;
    if (norm.empty()) norm = "/";
    struct stat st {};
    if (::stat(norm.c_str(), &st) < 0) {
        if (errno == ENOENT) throw ConfigError("rootfs " + norm + ": no such directory");
        throw ConfigError("rootfs " + norm + ": " + std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) throw ConfigError("rootfs " + norm + ": not a directory");
    return norm;
}

Bundle load_bundle(const std::string& dir) {
    Bundle b;
    char* real = ::realpath(dir.c_str(), nullptr);
    if (!real) throw ConfigError("bundle " + dir + ": " + std::strerror(errno));
    b.dir = real;
    ::free(real);
    struct stat st {};
    if (::stat(b.dir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
        throw ConfigError("bundle " + dir + ": not a directory");
    b.config = b.dir + "/config.json";
    UniqueFd fd(::open(b.config.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd)
        throw ConfigError("config.json: cannot open " + b.config + ": " + std::strerror(errno));
    std::string text;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw ConfigError("config.json: cannot read " + b.config + ": " + std::strerror(errno));
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxConfigBytes)
            throw ConfigError("config.json: " + b.config + " is larger than 16 MiB");
    }
    b.spec = parse_config(text, "config.json");
    b.rootfs = resolve_rootfs(b.spec, b.dir);
    return b;
}

}  // namespace vessel::oci
