#include "runtime/network/process.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "vmm/fd.h"

namespace vessel::network {

namespace {

struct StatFields {
    char state = 0;
    uint64_t start_time = 0;
};

std::optional<StatFields> read_stat(pid_t pid) {
    if (pid <= 0) return std::nullopt;
    std::string path = "/proc/" + std::to_string(pid) + "/stat";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    char buf[1024];
    ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    if (n <= 0) return std::nullopt;
    std::string s(buf, static_cast<size_t>(n));
    // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    size_t close = s.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    size_t pos = close + 1;
    StatFields f;
    for (int field = 3; field <= 22; ++field) {
        while (pos < s.size() && s[pos] == ' ') ++pos;
        size_t end = s.find(' ', pos);
        if (end == std::string::npos) end = s.size();
        if (pos >= end) return std::nullopt;
        if (field == 3) f.state = s[pos];
        if (field == 22) f.start_time = std::strtoull(s.c_str() + pos, nullptr, 10);
        pos = end;
    }
    return f;
}

}  // namespace

std::optional<uint64_t> process_start_time(pid_t pid) {
    auto f = read_stat(pid);
    if (!f) return std::nullopt;
    return f->start_time;
}

ProcessId self_process() {
    auto t = process_start_time(::getpid());
    if (!t) throw std::runtime_error("cannot read /proc/self/stat (is /proc mounted?)");
    return {::getpid(), *t};
}

bool process_alive(const ProcessId& p) {
    auto f = read_stat(p.pid);
    return f && f->start_time == p.start_time && f->state != 'Z' && f->state != 'X';
}

}  // namespace vessel::network
