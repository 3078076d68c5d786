// Shared between the jail's files; not part of its interface.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "runtime/jail/jail.h"

namespace vessel::jail {

// Where the cgroup hierarchies are mounted (/proc/self/mountinfo).
struct CgroupLayout {
    std::map<std::string, std::string> v1;  // controller -> mount point (memory, cpu, pids)
    std::string v2_root;                    // the cgroup2 mount, if any
    std::set<std::string> v2_controllers;   // its cgroup.controllers
    // True when the controllers live in v1 hierarchies (v1 or a hybrid host).
    bool use_v1(const std::vector<std::string>& needed) const;
};
CgroupLayout detect_cgroups();

// Throws std::runtime_error when a controller that `l` needs is not available.
void check_cgroups(const Limits& l);

}  // namespace vessel::jail
