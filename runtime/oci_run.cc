// vessel run: create + start + wait (+ delete), or create + start with --detach.

#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/globals.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {

int cmd_oci_run(Args args) {
    container::CreateOptions o;
    std::string preserve;
    bool detach = false, keep = false, no_pivot = false, no_new_keyring = false;
    auto pos = container::Flags("run")
                   .value({"bundle", "b"}, &o.bundle)
                   .value({"pid-file"}, &o.pid_file)
                   .value({"console-socket"}, &o.console_socket)
                   .value({"preserve-fds"}, &preserve)
                   .boolean({"detach", "d"}, &detach)
                   .boolean({"keep"}, &keep)
                   .boolean({"no-pivot"}, &no_pivot)
                   .boolean({"no-new-keyring"}, &no_new_keyring)
                   .parse(args);
    container::expect_args("run", pos, 1, 1);
    o.id = pos[0];
    o.foreground = !detach;
    // Signals for the container while we wait go to the VMM, which forwards them.
    container::relay_signals();
    const pid_t pid = container::create_container(o);
    container::relay_to(pid);
    try {
        container::start_container(o.id);
    } catch (...) {
        container::delete_container(o.id, true);
        throw;
    }
    if (detach) return 0;
    return container::wait_vmm(pid, o.id, !keep);
}

}  // namespace vessel::cli
