#include "oci/features.h"

#include <nlohmann/json.hpp>

#include "oci/spec.h"
#include "oci/vm_plan.h"

#ifndef VESSEL_OCI_VERSION
#define VESSEL_OCI_VERSION "unknown"
#endif

namespace vessel::oci {

std::string features_json() {
    using nlohmann::ordered_json;
    ordered_json f;
    f["ociVersionMin"] = kOciVersionMin;
    f["ociVersionMax"] = kOciVersionMax;
    // createContainer and startContainer run inside the container's namespaces, which are
    // in the guest: they are refused (docs/oci.md).
    f["hooks"] = {"prestart", "createRuntime", "poststart", "poststop"};
    f["mountOptions"] = known_mount_options();
    ordered_json linux_features;
    linux_features["namespaces"] = known_namespaces();
    // Capabilities, seccomp, AppArmor and SELinux are parsed but not applied inside the
    // guest, and vessel places no host cgroups yet: reported as not enabled rather than
    // left unknown.
    linux_features["cgroup"] = {
        {"v1", false}, {"v2", false}, {"systemd", false}, {"systemdUser", false}, {"rdma", false}};
    linux_features["seccomp"] = {{"enabled", false}};
    linux_features["apparmor"] = {{"enabled", false}};
    linux_features["selinux"] = {{"enabled", false}};
    linux_features["intelRdt"] = {{"enabled", false}};
    f["linux"] = linux_features;
    std::string keys;
    for (const auto& k : vessel_annotations()) keys += (keys.empty() ? "" : ",") + k;
    f["annotations"] = {
        {"io.vessel.config-annotations", keys},
        {"io.vessel.isolation", "microvm"},
        {"io.vessel.version", VESSEL_OCI_VERSION},
    };
    // Every io.vessel.* config annotation changes how the VM is built (kernel, memory,
    // skipped mounts): callers should not pass them through from untrusted users.
    f["potentiallyUnsafeConfigAnnotations"] = {std::string(kAnnotationPrefix)};
    return f.dump(4) + "\n";
}

}  // namespace vessel::oci
