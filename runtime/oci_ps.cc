// vessel ps: the container's host process (--format json: the VMM's pid, which is what
// holds the container on the host) or its guest processes (table, from the agent).
#include <cstdio>
#include <stdexcept>

#include "commands.h"
#include "guest/agent/client.h"
#include "guest/init/protocol.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"

namespace vessel::cli {

int cmd_oci_ps(Args args) {
    std::string format = "table";
    auto pos = container::Flags("ps").value({"format", "f"}, &format).parse(args, true);
    if (pos.empty()) usage_error("\"ps\" requires a container id");
    if (format != "table" && format != "json") usage_error("ps: invalid format '" + format + "'");
    oci::StateStore store = container::state_store();
    const oci::State s = store.load(pos[0]);
    const oci::Status st = oci::observed_status(s);
    if (format == "json") {
        if (st == oci::Status::Stopped)
            std::printf("[]\n");
        else
            std::printf("[%d]\n", s.pid);
        return 0;
    }
    if (st == oci::Status::Stopped) throw std::runtime_error("container not running");
    agent::Client client(
        agent::connect_vsock_uds(container::Paths::of(store.container_dir(s.id)).vsock,
                                 guest::kDefaultAgentPort, std::chrono::seconds(10)));
    std::printf("%-8s %-8s %s\n", "PID", "STATE", "COMMAND");
    for (const agent::ProcessInfo& p : client.list()) {
        std::string cmd;
        for (const std::string& a : p.argv) cmd += (cmd.empty() ? "" : " ") + a;
        std::printf("%-8d %-8s %s\n", p.pid, p.running ? "running" : "exited", cmd.c_str());
    }
    return 0;
}

}  // namespace vessel::cli
