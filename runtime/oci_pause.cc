// vessel pause: freeze the whole VM (SIGSTOP of the VMM process: vCPUs and devices stop).
#include <signal.h>

#include <stdexcept>

#include "commands.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"
#include "vmm/fd.h"

namespace vessel::cli {

int cmd_oci_pause(Args args) {
    auto pos = container::Flags("pause").parse(args);
    container::expect_args("pause", pos, 1, 1);
    container::state_store().update(pos[0], [](oci::State& s) {
        if (oci::observed_status(s) != oci::Status::Running)
            throw std::runtime_error("container not running");
        if (::kill(s.pid, SIGSTOP) != 0) throw_errno("stopping the VMM of " + s.id);
        s.status = oci::Status::Paused;
    });
    return 0;
}

}  // namespace vessel::cli
