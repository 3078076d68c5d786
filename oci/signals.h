// Signal names and numbers as `runc kill` accepts them: a number ("9"), a name with or
// without the SIG prefix in any case ("KILL", "SIGKILL", "term"), or a real-time signal
// ("RTMIN", "RTMIN+3", "SIGRTMAX-2"). Real-time signals are numbered as glibc and Docker
// number them (RTMIN = 34, RTMAX = 64): the guest runs a glibc or musl userspace too.
#pragma once

#include <string>
#include <string_view>

namespace vessel::oci {

inline constexpr int kSigRtMin = 34;
inline constexpr int kSigRtMax = 64;

// Throws std::invalid_argument: unknown signal "FOO", signal 65 is out of range (1-64).
int parse_signal(std::string_view text);

// "SIGKILL", "SIGRTMIN+3"; "signal N" for numbers without a name.
std::string signal_name(int sig);

}  // namespace vessel::oci
