// vessel delete: remove a container (its VMM too with --force).
#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {

int cmd_oci_delete(Args args) {
    bool force = false;
    auto pos = container::Flags("delete").boolean({"force", "f"}, &force).parse(args);
    container::expect_args("delete", pos, 1, 1);
    container::delete_container(pos[0], force);
    return 0;
}

}  // namespace vessel::cli
