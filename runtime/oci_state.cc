// vessel state: the runtime-spec state of a container, as runc prints it.
#include <cstdio>

#include "commands.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"

namespace vessel::cli {

int cmd_oci_state(Args args) {
    auto pos = container::Flags("state").parse(args);
    container::expect_args("state", pos, 1, 1);
    const oci::State s = container::state_store().load(pos[0]);
    std::fputs(oci::runtime_state_json(s).c_str(), stdout);
    return 0;
}

}  // namespace vessel::cli
