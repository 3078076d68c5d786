// OCI hooks run on the host, each with the container's state JSON on stdin, in order; a
// hook that fails or outlives its timeout (killed) is an error naming it.
#pragma once

#include <string>
#include <vector>

#include "oci/spec.h"

namespace vessel::container {

// `stage` names the hook list in errors ("prestart", "poststop", ...). Throws
// std::runtime_error on the first failing hook.
void run_hooks(const std::vector<oci::Hook>& hooks, const std::string& state_json,
               const std::string& stage);

}  // namespace vessel::container
