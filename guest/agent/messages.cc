#include "guest/agent/messages.h"

#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cctype>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "guest/agent/wire.h"

namespace vessel::agent {
namespace {

struct RlimitName {
    std::string_view name;
    int resource;
};

constexpr RlimitName kRlimits[] = {
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

// Typed, bounds-checked access to one JSON object; the first failure sticks in *error.
class Fields {
  public:
    Fields(const Json& j, std::string_view what, std::string* error)
        : j_(j), what_(what), error_(error) {
        if (!j_.is_object()) fail("must be an object");
    }

    bool ok() const { return ok_; }

    // nullptr when absent or null: optional fields may be sent as null.
    const Json* find(const char* key) const {
        if (!ok_) return nullptr;
        const auto it = j_.find(key);
        if (it == j_.end() || it->is_null()) return nullptr;
        return &*it;
    }

    bool str(const char* key, std::string& out, std::size_t max, bool required = false) {
        const Json* v = find(key);
        if (!v) return missing(key, required);
        if (!v->is_string()) return fail_key(key, "must be a string");
        const auto& s = v->get_ref<const std::string&>();
        if (s.size() > max) return fail_key(key, "longer than " + std::to_string(max) + " bytes");
        if (s.find('\0') != std::string::npos) return fail_key(key, "contains a NUL");
        out = s;
        return true;
    }

    bool uint(const char* key, std::uint64_t max, std::uint64_t& out, bool required = false) {
        const Json* v = find(key);
        if (!v) return missing(key, required);
        if (!v->is_number_unsigned()) return fail_key(key, "must be a non-negative integer");
        const auto n = v->get<std::uint64_t>();
        if (n > max) return fail_key(key, "exceeds " + std::to_string(max));
        out = n;
        return true;
    }

    bool boolean(const char* key, bool& out) {
        const Json* v = find(key);
        if (!v) return ok_;
        if (!v->is_boolean()) return fail_key(key, "must be a boolean");
        out = v->get<bool>();
        return true;
    }

    bool strings(const char* key, std::vector<std::string>& out, std::size_t max_count,
                 bool required = false) {
        const Json* v = find(key);
        if (!v) return missing(key, required);
        if (!v->is_array()) return fail_key(key, "must be an array of strings");
        if (v->size() > max_count)
            return fail_key(key, "has more than " + std::to_string(max_count) + " entries");
        out.clear();
        out.reserve(v->size());
        for (const auto& e : *v) {
            if (!e.is_string()) return fail_key(key, "must be an array of strings");
            const auto& s = e.get_ref<const std::string&>();
            if (s.find('\0') != std::string::npos) return fail_key(key, "entry contains a NUL");
            out.push_back(s);
        }
        return true;
    }

    bool fail(const std::string& why) {
        if (ok_ && error_) *error_ = std::string(what_) + " " + why;
        ok_ = false;
        return false;
    }
    bool fail_key(const char* key, const std::string& why) {
        return fail(std::string("field \"") + key + "\" " + why);
    }

  private:
    bool missing(const char* key, bool required) {
        if (!ok_) return false;
        return required ? fail_key(key, "is required") : true;
    }

    const Json& j_;
    std::string_view what_;
    std::string* error_;
    bool ok_ = true;
};

std::string_view stdio_name(StdioMode m) {
    return m == StdioMode::kNull ? "null" : "pipe";
}

bool stdio_field(Fields& f, const char* key, StdioMode& out) {
    std::string s;
    if (!f.str(key, s, 16)) return false;
    if (s.empty() || s == "pipe")
        out = StdioMode::kPipe;
    else if (s == "null")
        out = StdioMode::kNull;
    else
        return f.fail_key(key, "must be \"pipe\" or \"null\"");
    return true;
}

bool parse_user(const Json& j, User& out, std::string* error) {
    Fields f(j, "user", error);
    // (uid_t)-1 means "unchanged" to setuid-family calls, so it cannot be a real id.
    constexpr std::uint64_t kMaxId = 0xfffffffeu;
    std::uint64_t uid = 0, gid = 0;
    f.uint("uid", kMaxId, uid, true);
    f.uint("gid", kMaxId, gid, true);
    if (const Json* g = f.find("groups")) {
        if (!g->is_array()) return f.fail_key("groups", "must be an array");
        if (g->size() > kMaxGroups)
            return f.fail_key("groups", "has more than " + std::to_string(kMaxGroups) + " entries");
        for (const auto& e : *g) {
            if (!e.is_number_unsigned() || e.get<std::uint64_t>() > kMaxId)
                return f.fail_key("groups", "entries must be ids 0.." + std::to_string(kMaxId));
            out.groups.push_back(static_cast<std::uint32_t>(e.get<std::uint64_t>()));
        }
    }
    out.uid = static_cast<std::uint32_t>(uid);
    out.gid = static_cast<std::uint32_t>(gid);
    return f.ok();
}

bool parse_rlimits(const Json& j, std::vector<Rlimit>& out, std::string* error) {
    if (!j.is_array()) {
        if (error) *error = "process field \"rlimits\" must be an array";
        return false;
    }
    if (j.size() > kMaxRlimits) {
        if (error) *error = "process field \"rlimits\" has too many entries";
        return false;
    }
    for (const auto& e : j) {
        Fields f(e, "rlimit", error);
        std::string name;
        std::uint64_t soft = 0, hard = 0;
        constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
        f.str("type", name, 32, true);
        f.uint("soft", kMax, soft, true);
        f.uint("hard", kMax, hard, true);
        if (!f.ok()) return false;
        const auto resource = rlimit_from_name(name);
        if (!resource) return f.fail("type \"" + name + "\" is unknown");
        if (soft > hard) return f.fail(name + " soft limit exceeds the hard limit");
        out.push_back({*resource, soft, hard});
    }
    return true;
}

bool valid_ipv4(const std::string& s) {
    in_addr a{};
    return inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool valid_cidr(const std::string& s) {
    const auto slash = s.find('/');
    if (slash == std::string::npos || !valid_ipv4(s.substr(0, slash))) return false;
    const std::string p = s.substr(slash + 1);
    if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos)
        return false;
    return std::stoi(p) <= 32;
}

bool hex_digit(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// A unicast MAC in the "02:00:5e:00:00:01" form.
bool valid_mac(const std::string& s) {
    if (s.size() != 17) return false;
    for (std::size_t i = 0; i < s.size(); ++i)
        if (i % 3 == 2 ? s[i] != ':' : !hex_digit(s[i])) return false;
    return (std::stoi(s.substr(0, 2), nullptr, 16) & 1) == 0;
}

bool valid_hostname(const std::string& s) {
    if (s.empty() || s.front() == '-' || s.front() == '.') return false;
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
    return true;
}

bool valid_ifname(const std::string& s) {
    if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
            return false;
    return true;
}

bool parse_interface(const Json& j, InterfaceIdentity& out, std::string* error) {
    Fields f(j, "interface", error);
    f.str("name", out.name, 15, true);
    if (f.ok() && !valid_ifname(out.name)) f.fail_key("name", "is not an interface name");
    f.str("mac", out.mac, 17);
    if (f.ok() && !out.mac.empty() && !valid_mac(out.mac))
        f.fail_key("mac", "must be a unicast MAC like 02:00:00:00:00:01");
    f.str("address", out.address, 18);
    if (f.ok() && !out.address.empty() && !valid_cidr(out.address))
        f.fail_key("address", "must be an IPv4 address with a prefix, like 10.0.0.2/24");
    f.str("gateway", out.gateway, 15);
    if (f.ok() && !out.gateway.empty() && !valid_ipv4(out.gateway))
        f.fail_key("gateway", "must be an IPv4 address");
    f.strings("dns", out.dns, kMaxIdentityDns);
    for (const auto& d : out.dns)
        if (f.ok() && !valid_ipv4(d)) f.fail_key("dns", "entries must be IPv4 addresses");
    if (f.ok() && out.address.empty() && (!out.gateway.empty() || !out.dns.empty()))
        f.fail("gateway and dns need an address");
    return f.ok();
}

}  // namespace

std::optional<int> rlimit_from_name(std::string_view name) {
    for (const auto& r : kRlimits)
        if (r.name == name) return r.resource;
    return std::nullopt;
}

std::string_view rlimit_name(int resource) {
    for (const auto& r : kRlimits)
        if (r.resource == resource) return r.name;
    return {};
}

ExitStatus exit_status_from_wait(int ws) {
    ExitStatus e;
    if (WIFSIGNALED(ws)) {
        e.signaled = true;
        e.signal = WTERMSIG(ws);
        e.core_dumped = WCOREDUMP(ws);
        e.status = 128 + e.signal;
    } else {
        e.status = WEXITSTATUS(ws);
    }
    return e;
}

ExitStatus exit_status_from_code(int code, int value) {
    ExitStatus e;
    if (code == CLD_KILLED || code == CLD_DUMPED) {
        e.signaled = true;
        e.signal = value;
        e.core_dumped = code == CLD_DUMPED;
        e.status = 128 + value;
    } else {
        e.status = value & 0xff;
    }
    return e;
}

std::optional<Json> parse_object(std::string_view text, std::string* error) {
    // The parser would stop at a NUL and accept whatever preceded it.
    if (text.find('\0') != std::string_view::npos) {
        if (error) *error = "NUL byte in JSON text";
        return std::nullopt;
    }
    if (std::string why = check_json_limits(text); !why.empty()) {
        if (error) *error = std::move(why);
        return std::nullopt;
    }
    Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
        if (error) *error = "not valid JSON";
        return std::nullopt;
    }
    if (!j.is_object()) {
        if (error) *error = "not a JSON object";
        return std::nullopt;
    }
    return j;
}

std::string dump(const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json spec_to_json(const ProcessSpec& s) {
    for (const auto* list : {&s.argv, &s.env})
        for (const auto& a : *list)
            if (a.find('\0') != std::string::npos)
                throw std::invalid_argument("argv/env entry contains a NUL");
    Json p = {{"argv", s.argv}};
    if (!s.env.empty()) p["env"] = s.env;
    if (!s.cwd.empty()) p["cwd"] = s.cwd;
    if (s.user) {
        p["user"] = {{"uid", s.user->uid}, {"gid", s.user->gid}, {"groups", s.user->groups}};
    }
    if (!s.rlimits.empty()) {
        Json arr = Json::array();
        for (const auto& r : s.rlimits) {
            const auto name = rlimit_name(r.resource);
            if (name.empty())
                throw std::invalid_argument("unknown rlimit " + std::to_string(r.resource));
            arr.push_back({{"type", name}, {"soft", r.soft}, {"hard", r.hard}});
        }
        p["rlimits"] = std::move(arr);
    }
    if (!s.hostname.empty()) p["hostname"] = s.hostname;
    if (s.tty) {
        p["tty"] = true;
        if (s.rows) p["rows"] = s.rows;
        if (s.cols) p["cols"] = s.cols;
    }
    if (s.stdin_mode != StdioMode::kPipe) p["stdin"] = stdio_name(s.stdin_mode);
    if (s.stdout_mode != StdioMode::kPipe) p["stdout"] = stdio_name(s.stdout_mode);
    if (s.stderr_mode != StdioMode::kPipe) p["stderr"] = stdio_name(s.stderr_mode);
    if (s.kill_group_on_exit) p["kill_group_on_exit"] = true;
    if (s.detachable) p["detachable"] = true;
    try {
        // Validates UTF-8 now, so a bad string is the caller's error and not a broken frame.
        (void)p.dump();
    } catch (const Json::exception& e) {
        throw std::invalid_argument(std::string("process spec cannot be sent: ") + e.what());
    }
    return p;
}

std::optional<ProcessSpec> spec_from_json(const Json& j, std::string* error) {
    ProcessSpec s;
    Fields f(j, "process", error);
    f.strings("argv", s.argv, kMaxArgs, true);
    if (f.ok() && (s.argv.empty() || s.argv[0].empty()))
        f.fail_key("argv", "must have a non-empty argv[0]");
    f.strings("env", s.env, kMaxEnv);
    for (const auto& e : s.env) {
        if (!f.ok()) break;
        const auto eq = e.find('=');
        if (eq == std::string::npos || eq == 0) f.fail_key("env", "entries must be KEY=VALUE");
    }
    if (f.ok()) {
        std::size_t bytes = 0;
        for (const auto* list : {&s.argv, &s.env})
            for (const auto& a : *list) bytes += a.size() + 1;
        if (bytes > kMaxArgvEnvBytes)
            f.fail("argv and env exceed " + std::to_string(kMaxArgvEnvBytes) + " bytes");
    }
    f.str("cwd", s.cwd, kMaxPathBytes);
    if (f.ok() && !s.cwd.empty() && s.cwd[0] != '/') f.fail_key("cwd", "must be absolute");
    if (const Json* u = f.find("user")) {
        User user;
        if (!parse_user(*u, user, error)) return std::nullopt;
        s.user = std::move(user);
    }
    if (const Json* r = f.find("rlimits")) {
        if (!parse_rlimits(*r, s.rlimits, error)) return std::nullopt;
    }
    f.str("hostname", s.hostname, kMaxHostnameBytes);
    f.boolean("tty", s.tty);
    std::uint64_t rows = 0, cols = 0;
    f.uint("rows", 0xffff, rows);
    f.uint("cols", 0xffff, cols);
    s.rows = static_cast<std::uint16_t>(rows);
    s.cols = static_cast<std::uint16_t>(cols);
    stdio_field(f, "stdin", s.stdin_mode);
    stdio_field(f, "stdout", s.stdout_mode);
    stdio_field(f, "stderr", s.stderr_mode);
    f.boolean("kill_group_on_exit", s.kill_group_on_exit);
    f.boolean("detachable", s.detachable);
    if (!f.ok()) return std::nullopt;
    return s;
}

Json exit_to_json(const ExitStatus& e) {
    Json j = {{"status", e.status}};
    if (e.signaled) {
        j["signal"] = e.signal;
        j["core_dumped"] = e.core_dumped;
    } else {
        j["exit_code"] = e.status;
    }
    return j;
}

std::optional<ExitStatus> exit_from_json(const Json& j, std::string* error) {
    Fields f(j, "exit status", error);
    std::uint64_t status = 0, signal = 0;
    ExitStatus e;
    f.uint("status", 255, status, true);
    if (f.find("signal")) {
        f.uint("signal", 127, signal, true);
        f.boolean("core_dumped", e.core_dumped);
        if (f.ok() && (signal == 0 || status != 128 + signal))
            f.fail("status does not match its signal");
        e.signaled = true;
        e.signal = static_cast<int>(signal);
    }
    if (!f.ok()) return std::nullopt;
    e.status = static_cast<int>(status);
    return e;
}

Json info_to_json(const ProcessInfo& p) {
    Json j = {{"id", p.id},
              {"pid", p.pid},
              {"argv", p.argv},
              {"tty", p.tty},
              {"state", p.running ? "running" : "exited"}};
    if (p.exit) j["exit"] = exit_to_json(*p.exit);
    if (p.attachable) j["attachable"] = true;
    return j;
}

std::optional<ProcessInfo> info_from_json(const Json& j, std::string* error) {
    ProcessInfo p;
    Fields f(j, "process info", error);
    std::uint64_t id = 0, pid = 0;
    std::string state;
    f.uint("id", 0xffffffffu, id, true);
    f.uint("pid", std::numeric_limits<int>::max(), pid, true);
    f.strings("argv", p.argv, kMaxArgs);
    f.boolean("tty", p.tty);
    f.str("state", state, 16, true);
    f.boolean("attachable", p.attachable);
    if (f.ok() && state != "running" && state != "exited")
        f.fail_key("state", "must be \"running\" or \"exited\"");
    if (const Json* e = f.find("exit")) {
        p.exit = exit_from_json(*e, error);
        if (!p.exit) return std::nullopt;
    }
    if (!f.ok()) return std::nullopt;
    p.id = static_cast<std::uint32_t>(id);
    p.pid = static_cast<int>(pid);
    p.running = state == "running";
    return p;
}

Json identity_to_json(const Identity& id) {
    Json j = Json::object();
    if (!id.hostname.empty()) j["hostname"] = id.hostname;
    if (!id.seed.empty()) {
        static constexpr char kHex[] = "0123456789abcdef";
        std::string hex;
        for (std::uint8_t b : id.seed) {
            hex += kHex[b >> 4];
            hex += kHex[b & 15];
        }
        j["seed"] = std::move(hex);
    }
    if (!id.interfaces.empty()) {
        Json arr = Json::array();
        for (const auto& i : id.interfaces) {
            Json e = {{"name", i.name}};
            if (!i.mac.empty()) e["mac"] = i.mac;
            if (!i.address.empty()) e["address"] = i.address;
            if (!i.gateway.empty()) e["gateway"] = i.gateway;
            if (!i.dns.empty()) e["dns"] = i.dns;
            arr.push_back(std::move(e));
        }
        j["interfaces"] = std::move(arr);
    }
    std::string why;
    if (!identity_from_json(j, &why)) throw std::invalid_argument(why);
    return j;
}

std::optional<Identity> identity_from_json(const Json& j, std::string* error) {
    Identity id;
    Fields f(j, "identity", error);
    f.str("hostname", id.hostname, kMaxHostnameBytes);
    if (f.ok() && f.find("hostname") && !valid_hostname(id.hostname))
        f.fail_key("hostname", "must be letters, digits, '-' and '.'");
    std::string seed;
    f.str("seed", seed, 2 * kMaxIdentitySeed);
    if (f.ok() && seed.size() % 2 != 0) f.fail_key("seed", "must be hex bytes");
    for (std::size_t i = 0; f.ok() && i < seed.size(); i += 2) {
        if (!hex_digit(seed[i]) || !hex_digit(seed[i + 1])) {
            f.fail_key("seed", "must be hex bytes");
            break;
        }
        id.seed.push_back(static_cast<std::uint8_t>(std::stoi(seed.substr(i, 2), nullptr, 16)));
    }
    if (const Json* arr = f.find("interfaces")) {
        if (!arr->is_array() || arr->size() > kMaxIdentityInterfaces) {
            f.fail_key("interfaces", "must be an array of at most " +
                                         std::to_string(kMaxIdentityInterfaces) + " entries");
            return std::nullopt;
        }
        for (const auto& e : *arr) {
            InterfaceIdentity i;
            if (!parse_interface(e, i, error)) return std::nullopt;
            id.interfaces.push_back(std::move(i));
        }
    }
    if (!f.ok()) return std::nullopt;
    return id;
}

namespace {
bool plain_chars(const std::string& s, const char* extra) {
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr(extra, c)) return false;
    return true;
}
}  // namespace

Json root_to_json(const RootRequest& r) {
    Json j = {{"source", r.source}, {"fstype", r.fstype}, {"readonly", r.readonly}};
    if (!r.options.empty()) j["options"] = r.options;
    if (r.size) j["size"] = r.size;
    std::string why;
    if (!root_from_json(j, &why)) throw std::invalid_argument(why);
    return j;
}

std::optional<RootRequest> root_from_json(const Json& j, std::string* error) {
    RootRequest r;
    Fields f(j, "root", error);
    f.str("source", r.source, 64, true);
    if (f.ok() && (r.source.rfind("/dev/", 0) != 0 || r.source.find("..") != std::string::npos ||
                   !plain_chars(r.source.substr(5), "/-_")))
        f.fail_key("source", "must be a device node under /dev");
    f.str("fstype", r.fstype, 16);
    if (f.ok() && (r.fstype.empty() || !plain_chars(r.fstype, "")))
        f.fail_key("fstype", "must be a file system type name");
    f.boolean("readonly", r.readonly);
    f.str("options", r.options, 256);
    if (f.ok() && !plain_chars(r.options, ",=_-."))
        f.fail_key("options", "must be mount options like \"noload,errors=remount-ro\"");
    f.uint("size", std::numeric_limits<std::uint64_t>::max(), r.size);
    if (!f.ok()) return std::nullopt;
    return r;
}

Json error_json(std::string_view code, std::string_view message, int errno_value) {
    Json e = {{"code", code}, {"message", message}};
    if (errno_value != 0) e["errno"] = errno_value;
    return Json{{"error", std::move(e)}};
}

}  // namespace vessel::agent
