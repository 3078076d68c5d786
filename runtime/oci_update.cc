// vessel update: resources of a running micro-VM are fixed at boot (memory is guest RAM,
// CPUs are vCPUs), so update accepts runc's flags, succeeds when nothing would change, and
// says so clearly otherwise.
#include <cstdio>
#include <stdexcept>

#include "commands.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"

namespace vessel::cli {

int cmd_oci_update(Args args) {
    std::string resources, v[12];
    container::Flags f("update");
    f.value({"resources", "r"}, &resources)
        .value({"blkio-weight"}, &v[0])
        .value({"cpu-period"}, &v[1])
        .value({"cpu-quota"}, &v[2])
        .value({"cpu-share"}, &v[3])
        .value({"cpu-rt-period"}, &v[4])
        .value({"cpu-rt-runtime"}, &v[5])
        .value({"cpuset-cpus"}, &v[6])
        .value({"cpuset-mems"}, &v[7])
        .value({"memory"}, &v[8])
        .value({"memory-reservation"}, &v[9])
        .value({"memory-swap"}, &v[10])
        .value({"pids-limit"}, &v[11]);
    std::string kernel_mem, kernel_tcp, l3;
    f.value({"kernel-memory"}, &kernel_mem)
        .value({"kernel-memory-tcp"}, &kernel_tcp)
        .value({"l3-cache-schema"}, &l3);
    auto pos = f.parse(args);
    container::expect_args("update", pos, 1, 1);
    const oci::State s = container::state_store().load(pos[0]);
    if (oci::observed_status(s) == oci::Status::Stopped)
        throw std::runtime_error("container not running");
    bool change = !resources.empty() || !kernel_mem.empty() || !kernel_tcp.empty() || !l3.empty();
    for (const std::string& x : v) change = change || !x.empty();
    if (!change) return 0;
    throw std::runtime_error(
        "update: the resources of a running micro-VM cannot be changed "
        "(memory and vCPUs are fixed when the VM boots)");
}

}  // namespace vessel::cli
