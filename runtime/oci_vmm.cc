// vessel _container-vmm (hidden): the container's VMM process, started by create/run.
#include <cstdlib>

#include "commands.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"
#include "runtime/container/globals.h"

namespace vessel::cli {

int cmd_oci_vmm(Args args) {
    std::string ready, restore;
    auto pos = container::Flags("_container-vmm")
                   .value({"ready-fd"}, &ready)
                   .value({"restore"}, &restore)
                   .parse(args);
    container::expect_args("_container-vmm", pos, 1, 1);
    container::VmmOptions o;
    o.id = pos[0];
    o.ready_fd = ready.empty() ? -1 : std::atoi(ready.c_str());
    o.restore_dir = restore;
    container::globals().stderr_is_container = true;
    return container::run_vmm(o);
}

}  // namespace vessel::cli
