#include "oci/signals.h"

#include <csignal>
#include <stdexcept>

namespace vessel::oci {

namespace {

struct NamedSignal {
    const char* name;  // without "SIG"
    int number;
};

// The canonical name of each number comes first; aliases (IOT, CLD, POLL) follow.
constexpr NamedSignal kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},       {"QUIT", SIGQUIT}, {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT},     {"BUS", SIGBUS},   {"FPE", SIGFPE},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT},
    {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
    {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},
    {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
    {"IO", SIGIO},     {"PWR", SIGPWR},       {"SYS", SIGSYS},   {"IOT", SIGIOT},
    {"CLD", SIGCHLD},  {"POLL", SIGPOLL},
};

std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return out;
}

// Digits only, at most 9 of them; nullopt-like -1 otherwise.
long small_number(std::string_view s) {
    if (s.empty() || s.size() > 9) return -1;
    long v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return -1;
        v = v * 10 + (c - '0');
    }
    return v;
}

[[noreturn]] void unknown(std::string_view text) {
    throw std::invalid_argument("unknown signal \"" + std::string(text) + "\"");
}

}  // namespace

int parse_signal(std::string_view text) {
    if (text.empty()) throw std::invalid_argument("empty signal name");
    if (const long n = small_number(text); n >= 0) {
        if (n < 1 || n > kSigRtMax)
            throw std::invalid_argument("signal " + std::string(text) + " is out of range (1-" +
                                        std::to_string(kSigRtMax) + ")");
        return static_cast<int>(n);
    }
    std::string name = upper(text);
    if (name.rfind("SIG", 0) == 0) name.erase(0, 3);
    for (const auto& s : kSignals)
        if (name == s.name) return s.number;
    if (name.rfind("RTMIN", 0) == 0 || name.rfind("RTMAX", 0) == 0) {
        const bool from_min = name[3] == 'I';
        const std::string_view rest = std::string_view(name).substr(5);
        long offset = 0;
        if (!rest.empty()) {
            if (rest[0] != (from_min ? '+' : '-')) unknown(text);
            offset = small_number(rest.substr(1));
            if (offset < 0) unknown(text);
        }
        const long sig = from_min ? kSigRtMin + offset : kSigRtMax - offset;
        if (sig < kSigRtMin || sig > kSigRtMax)
            throw std::invalid_argument("signal \"" + std::string(text) +
                                        "\" is outside RTMIN..RTMAX (" + std::to_string(kSigRtMin) +
                                        "-" + std::to_string(kSigRtMax) + ")");
        return static_cast<int>(sig);
    }
    unknown(text);
}

std::string signal_name(int sig) {
    for (const auto& s : kSignals)
        if (s.number == sig) return std::string("SIG") + s.name;
    if (sig == kSigRtMin) return "SIGRTMIN";
    if (sig == kSigRtMax) return "SIGRTMAX";
    if (sig > kSigRtMin && sig < kSigRtMax) return "SIGRTMIN+" + std::to_string(sig - kSigRtMin);
    return "signal " + std::to_string(sig);
}

}  // namespace vessel::oci
