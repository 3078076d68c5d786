#include "guest/init/proto.h"

#include <ctype.h>
#include <sys/wait.h>

#include <stdexcept>

#include "guest/init/protocol.h"

namespace vessel::guest {

std::vector<std::string> split_nul_list(std::string_view data) {
    std::vector<std::string> out;
    while (!data.empty()) {
        const auto nul = data.find('\0');
        if (nul == std::string_view::npos) {
            out.emplace_back(data);
            break;
        }
        out.emplace_back(data.substr(0, nul));
        data.remove_prefix(nul + 1);
    }
    return out;
}

std::string join_nul_list(const std::vector<std::string>& entries) {
    std::string out;
    for (const auto& e : entries) {
        if (e.find('\0') != std::string::npos)
            throw std::invalid_argument("list entry contains a NUL byte");
        out += e;
        out += '\0';
    }
    return out;
}

int exit_status_from_wait(int wait_status) {
    if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) return (kStatusSignalBase + WTERMSIG(wait_status)) & 0xff;
    // Stopped/continued are never reported without WUNTRACED; treat as failure, not success.
    return kStatusInitFailure;
}

std::string_view env_key(std::string_view entry) {
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) return {};
    return entry.substr(0, eq);
}

std::vector<std::string> merge_env(std::vector<std::string> base,
                                   const std::vector<std::string>& overrides) {
    for (const auto& o : overrides) {
        const auto key = env_key(o);
        if (key.empty()) continue;
        bool replaced = false;
        for (auto& b : base) {
            if (env_key(b) == key) {
                b = o;
                replaced = true;
                break;
            }
        }
        if (!replaced) base.push_back(o);
    }
    return base;
}

std::vector<std::string> default_env() {
    return {std::string(kDefaultPath), std::string(kDefaultHome), std::string(kDefaultTerm)};
}

namespace {

// A value must survive the line format and mount(2)'s C strings unchanged.
bool is_single_line(std::string_view v) {
    return v.find_first_of(std::string_view("\n\r\0", 3)) == std::string_view::npos;
}

}  // namespace

std::string format_rootfs(const RootFs& rootfs) {
    if (rootfs.source.empty() || rootfs.source.front() != '/')
        throw std::invalid_argument("rootfs: source must be an absolute path: " + rootfs.source);
    if (rootfs.fstype.empty()) throw std::invalid_argument("rootfs: empty fstype");
    for (const auto* v : {&rootfs.source, &rootfs.fstype, &rootfs.options}) {
        if (!is_single_line(*v))
            throw std::invalid_argument("rootfs: line break or NUL in a field");
    }
    std::string out = "source=" + rootfs.source + "\nfstype=" + rootfs.fstype +
                      "\nreadonly=" + (rootfs.readonly ? "1" : "0") + "\n";
    if (!rootfs.options.empty()) out += "options=" + rootfs.options + "\n";
    return out;
}

std::optional<RootFs> parse_rootfs(std::string_view text, std::string* error) {
    auto fail = [&](int line, std::string_view why) -> std::optional<RootFs> {
        if (error) {
            *error = line > 0 ? "line " + std::to_string(line) + ": " : "";
            *error += why;
        }
        return std::nullopt;
    };
    RootFs r;
    bool seen_source = false, seen_fstype = false, seen_readonly = false, seen_options = false;
    int line_no = 0;
    while (!text.empty()) {
        const auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || line.front() == '#') continue;
        if (!is_single_line(line)) return fail(line_no, "NUL or stray carriage return");
        const auto eq = line.find('=');
        if (eq == std::string_view::npos) return fail(line_no, "expected key=value");
        const std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
        bool* seen = nullptr;
        if (key == "source") {
            if (value.empty() || value.front() != '/')
                return fail(line_no, "source must be an absolute path");
            r.source = value;
            seen = &seen_source;
        } else if (key == "fstype") {
            if (value.empty()) return fail(line_no, "empty fstype");
            r.fstype = value;
            seen = &seen_fstype;
        } else if (key == "readonly") {
            if (value != "0" && value != "1") return fail(line_no, "readonly must be 0 or 1");
            r.readonly = value == "1";
            seen = &seen_readonly;
        } else if (key == "options") {
            r.options = value;
            seen = &seen_options;
        } else {
            return fail(line_no, "unknown key '" + std::string(key) + "'");
        }
        if (*seen) return fail(line_no, "duplicate key '" + std::string(key) + "'");
        *seen = true;
    }
    if (!seen_source) return fail(0, "no source= line");
    return r;
}

namespace {

std::string_view strip_quotes(std::string_view s) {
    if (!s.empty() && s.front() == '"') {
        s.remove_prefix(1);
        if (!s.empty() && s.back() == '"') s.remove_suffix(1);
    }
    return s;
}

}  // namespace

std::optional<std::string> cmdline_value(std::string_view cmdline, std::string_view key) {
    std::optional<std::string> found;
    std::size_t i = 0;
    while (i < cmdline.size()) {
        while (i < cmdline.size() && isspace(static_cast<unsigned char>(cmdline[i]))) ++i;
        const std::size_t start = i;
        bool in_quote = false;
        for (; i < cmdline.size(); ++i) {
            if (!in_quote && isspace(static_cast<unsigned char>(cmdline[i]))) break;
            if (cmdline[i] == '"') in_quote = !in_quote;
        }
        std::string_view word = cmdline.substr(start, i - start);
        if (word.empty()) break;
        if (word == "--") break;
        if (word.front() == '"') word = strip_quotes(word);
        const auto eq = word.find('=');
        if (word.substr(0, eq) != key) continue;
        found = eq == std::string_view::npos ? std::string()
                                             : std::string(strip_quotes(word.substr(eq + 1)));
    }
    return found;
}

std::optional<std::uint32_t> agent_port_from_cmdline(std::string_view cmdline, std::string* error) {
    const auto value = cmdline_value(cmdline, kAgentCmdlineKey);
    if (!value) return std::nullopt;
    if (value->empty()) return kDefaultAgentPort;
    std::uint64_t port = 0;
    bool ok = value->size() <= 10;
    for (const char c : *value) {
        if (c < '0' || c > '9') ok = false;
        if (ok) port = port * 10 + static_cast<std::uint64_t>(c - '0');
    }
    // 0xffffffff is VMADDR_PORT_ANY.
    if (!ok || port == 0 || port > 0xfffffffeu) {
        if (error)
            *error = std::string(kAgentCmdlineKey) + "=" + *value +
                     ": the port must be a decimal number in 1..4294967294";
        return std::nullopt;
    }
    return static_cast<std::uint32_t>(port);
}

std::optional<std::string> resolv_conf_from_pnp(std::string_view pnp) {
    std::size_t pos = 0;
    while (pos < pnp.size()) {
        std::size_t nl = pnp.find('\n', pos);
        if (nl == std::string_view::npos) nl = pnp.size();
        const std::string_view line = pnp.substr(pos, nl - pos);
        if (line.rfind("nameserver", 0) == 0 && line.size() > 10 &&
            isspace(static_cast<unsigned char>(line[10])))
            return std::string(pnp);
        pos = nl + 1;
    }
    return std::nullopt;
}

}  // namespace vessel::guest
