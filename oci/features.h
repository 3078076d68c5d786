// The runtime-spec features document (`vessel features`): what vessel accepts in
// config.json, derived from the same tables the parser and the planner use, so that it
// cannot drift from the code.
#pragma once

#include <string>

namespace vessel::oci {

inline constexpr const char* kOciVersionMin = "1.0.0";
inline constexpr const char* kOciVersionMax = "1.2.0";

// Pretty-printed with four-space indentation and a trailing newline, as runc prints it.
std::string features_json();

}  // namespace vessel::oci
