// The allow-lists behind vmm/seccomp.h, as data (vmm/seccomp_filters.cc).
#pragma once

#include <seccomp.h>

#include <cstdint>
#include <vector>

#include "seccomp.h"

namespace vessel::vmm::seccomp {

// One rule: syscall `nr` when every comparison holds (none: always). Several rules for one
// syscall allow it when any of them holds. errno_ret != 0: the call fails with that errno
// instead of being allowed (clone3, so that glibc falls back to clone, whose flags a filter
// can see).
struct Rule {
    int nr;
    std::vector<scmp_arg_cmp> cmps;
    int errno_ret = 0;
};

std::vector<Rule> rules_for(Role r);

}  // namespace vessel::vmm::seccomp
