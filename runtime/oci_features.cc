// vessel features: the runtime-spec features document.
#include <cstdio>

#include "commands.h"
#include "oci/features.h"
#include "runtime/container/flags.h"

namespace vessel::cli {

int cmd_oci_features(Args args) {
    auto pos = container::Flags("features").parse(args);
    container::expect_args("features", pos, 0, 0);
    std::fputs(oci::features_json().c_str(), stdout);
    return 0;
}

}  // namespace vessel::cli
