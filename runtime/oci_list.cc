// vessel list: the containers in the state root (table, -q ids, or --format json).
#include <cstdio>

#include "commands.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"
#include "runtime/container/globals.h"

namespace vessel::cli {

int cmd_oci_list(Args args) {
    std::string format = "table";
    bool quiet = false;
    auto pos = container::Flags("list")
                   .value({"format", "f"}, &format)
                   .boolean({"quiet", "q"}, &quiet)
                   .parse(args);
    container::expect_args("list", pos, 0, 0);
    if (format != "table" && format != "json") usage_error("list: invalid format '" + format + "'");
    std::vector<std::string> problems;
    std::vector<oci::State> states = container::state_store().list(&problems);
    for (const std::string& p : problems) container::log_warning(p);
    if (quiet) {
        for (const oci::State& s : states) std::printf("%s\n", s.id.c_str());
        return 0;
    }
    if (format == "json") {
        std::fputs(oci::list_json(states).c_str(), stdout);
        return 0;
    }
    std::printf("%-12s %-8s %-10s %-40s %-30s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED",
                "OWNER");
    for (const oci::State& s : states) {
        const oci::Status st = oci::observed_status(s);
        const int pid = st == oci::Status::Stopped ? 0 : s.pid;
        std::printf("%-12s %-8d %-10s %-40s %-30s %s\n", s.id.c_str(), pid,
                    std::string(oci::status_name(st)).c_str(), s.bundle.c_str(), s.created.c_str(),
                    s.owner.c_str());
    }
    return 0;
}

}  // namespace vessel::cli
