// vessel start: run the created container's process.
#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {

int cmd_oci_start(Args args) {
    auto pos = container::Flags("start").parse(args);
    container::expect_args("start", pos, 1, 1);
    container::start_container(pos[0]);
    return 0;
}

}  // namespace vessel::cli
