// vessel kill: signal the container's process (default SIGTERM).
#include <stdexcept>

#include "commands.h"
#include "oci/signals.h"
#include "runtime/container/flags.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {

int cmd_oci_kill(Args args) {
    bool all = false;
    auto pos = container::Flags("kill").boolean({"all", "a"}, &all).parse(args);
    container::expect_args("kill", pos, 1, 2);
    int sig = 0;
    try {
        sig = oci::parse_signal(pos.size() > 1 ? pos[1] : "SIGTERM");
    } catch (const std::invalid_argument& e) {
        throw std::runtime_error(e.what());
    }
    container::kill_container(pos[0], sig, all);
    return 0;
}

}  // namespace vessel::cli
