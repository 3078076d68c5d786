// vessel resume: thaw a paused VM (SIGCONT of the VMM process).
#include <signal.h>

#include <stdexcept>

#include "commands.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"
#include "vmm/fd.h"

namespace vessel::cli {

int cmd_oci_resume(Args args) {
    auto pos = container::Flags("resume").parse(args);
    container::expect_args("resume", pos, 1, 1);
    container::state_store().update(pos[0], [](oci::State& s) {
        if (oci::observed_status(s) != oci::Status::Paused)
            throw std::runtime_error("container not paused");
        if (::kill(s.pid, SIGCONT) != 0) throw_errno("resuming the VMM of " + s.id);
        s.status = oci::Status::Running;
    });
    return 0;
}

}  // namespace vessel::cli
