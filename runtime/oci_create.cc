// vessel create: validate the bundle, boot the container's VM and wait for `start`.
#include <cstdlib>
#include <stdexcept>

#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {

int cmd_oci_create(Args args) {
    container::CreateOptions o;
    std::string preserve;
    bool no_pivot = false, no_new_keyring = false;
    auto pos = container::Flags("create")
                   .value({"bundle", "b"}, &o.bundle)
                   .value({"pid-file"}, &o.pid_file)
                   .value({"console-socket"}, &o.console_socket)
                   .value({"preserve-fds"}, &preserve)
                   .boolean({"no-pivot"}, &no_pivot)  // no pivot_root in a VM either way
                   .boolean({"no-new-keyring"}, &no_new_keyring)
                   .parse(args);
    container::expect_args("create", pos, 1, 1);
    o.id = pos[0];
    if (!preserve.empty()) o.preserve_fds = std::atoi(preserve.c_str());
    if (o.preserve_fds > 0)
        throw std::runtime_error(
            "--preserve-fds: host file descriptors cannot be passed into a micro-VM");
    container::create_container(o);
    return 0;
}

}  // namespace vessel::cli
