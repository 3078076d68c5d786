#include "runtime/container/globals.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "oci/state.h"

namespace vessel::container {
namespace {

void append_log(std::string_view level, std::string_view msg) {
    const GlobalOptions& g = globals();
    if (g.log.empty()) return;
    std::string line;
    const std::string time = oci::rfc3339_nano_now();
    if (g.log_format == "json") {
        nlohmann::json j = {{"level", level}, {"msg", msg}, {"time", time}};
        line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    } else {
        line = "time=\"" + time + "\" level=" + std::string(level) + " msg=" +
               nlohmann::json(std::string(msg))
                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
               "\n";
    }
    // O_APPEND: one write per line keeps lines whole when several processes log.
    int fd = ::open(g.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t n = ::write(fd, line.data(), line.size());
    (void)n;
    ::close(fd);
}

[[noreturn]] void usage(const std::string& msg) {
    std::fprintf(stderr, "vessel: %s\n", msg.c_str());
    std::exit(2);
}

}  // namespace

GlobalOptions& globals() {
    static GlobalOptions g;
    return g;
}

std::vector<std::string> global_args() {
    const GlobalOptions& g = globals();
    std::vector<std::string> a;
    if (!g.root.empty()) a.insert(a.end(), {"--root", g.root});
    if (!g.log.empty()) a.insert(a.end(), {"--log", g.log});
    a.insert(a.end(), {"--log-format", g.log_format});
    if (g.debug) a.emplace_back("--debug");
    if (g.systemd_cgroup) a.emplace_back("--systemd-cgroup");
    return a;
}

int parse_global_flags(int argc, char** argv) {
    GlobalOptions& g = globals();
    int i = 1;
    for (; i < argc; ++i) {
        std::string a = argv[i];
        if (a.size() < 2 || a[0] != '-' || a == "--help" || a == "-h" || a == "--version" ||
            a == "-v")
            break;
        // Go's flag package takes both --flag value and --flag=value.
        std::string name = a, val;
        bool has_val = false;
        if (auto eq = a.find('='); eq != std::string::npos) {
            name = a.substr(0, eq);
            val = a.substr(eq + 1);
            has_val = true;
        }
        auto value = [&]() -> std::string {
            if (has_val) return val;
            if (i + 1 >= argc) usage(name + " needs a value");
            return argv[++i];
        };
        if (name == "--root") {
            g.root = value();
        } else if (name == "--log") {
            g.log = value();
        } else if (name == "--log-format") {
            g.log_format = value();
            if (g.log_format != "text" && g.log_format != "json")
                usage("--log-format: '" + g.log_format + "' is not text or json");
        } else if (name == "--debug") {
            g.debug = true;
        } else if (name == "--systemd-cgroup") {
            g.systemd_cgroup = true;
        } else if (name == "--rootless" || name == "--criu") {
            if (!has_val && i + 1 < argc && argv[i + 1][0] != '-') ++i;  // value ignored
        } else {
            usage("unknown global option '" + a + "'");
        }
    }
    return i;
}

void log_error(std::string_view msg) {
    std::fprintf(stderr, "vessel: %.*s\n", static_cast<int>(msg.size()), msg.data());
    append_log("error", msg);
}

void log_warning(std::string_view msg) {
    if (!globals().stderr_is_container || globals().log.empty())
        std::fprintf(stderr, "vessel: warning: %.*s\n", static_cast<int>(msg.size()), msg.data());
    append_log("warning", msg);
}

void log_debug(std::string_view msg) {
    if (globals().debug) append_log("debug", msg);
}

}  // namespace vessel::container
