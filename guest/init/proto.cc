#include "guest/init/proto.h"

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

}  // namespace vessel::guest
