#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>

#include <limits.h>
#include <unistd.h>

#include "commands.h"
#include "oci/spec.h"
#include "oci/state.h"
#include "runtime/container/globals.h"

namespace vessel::cli {

struct Command {
    const char* name;
    int (*fn)(Args);
    const char* summary;
};

const Command kCommands[] = {
    {"boot", cmd_boot,
     "boot a micro-VM and run a command in it: vessel boot [OPTIONS] -- CMD [ARGS]"},
    {"mkimage", cmd_mkimage, "make an ext4 disk image from a directory: vessel mkimage DIR IMAGE"},
    {"network", cmd_network,
     "manage guest networks (bridge, NAT, addresses): vessel network create|ls|inspect|rm"},
    {"snapshot", cmd_snapshot,
     "snapshots of running VMs: vessel snapshot create ID DIR | ls | rm NAME"},
    {"restore", cmd_restore,
     "run a VM from a snapshot: vessel restore [OPTIONS] DIR; a container from a checkpoint: "
     "restore --image-path DIR [--bundle B] [--detach] ID"},
    // The OCI runtime (runc's command line; global flags go before the command).
    {"create", cmd_oci_create, "create a container from an OCI bundle: create [--bundle DIR] ID"},
    {"start", cmd_oci_start, "start a created container's process: start ID"},
    {"state", cmd_oci_state, "print a container's state as JSON: state ID"},
    {"kill", cmd_oci_kill, "signal a container's process: kill [--all] ID [SIGNAL]"},
    {"delete", cmd_oci_delete, "delete a container: delete [--force] ID"},
    {"run", cmd_oci_run, "create, start and wait for a container: run [--detach] ID"},
    {"exec", cmd_oci_exec, "run a process in a container: exec [--process FILE] ID [CMD...]"},
    {"ps", cmd_oci_ps, "a container's processes: ps [--format json] ID"},
    {"list", cmd_oci_list, "list containers: list [-q] [--format json]"},
    {"pause", cmd_oci_pause, "freeze a container's VM: pause ID"},
    {"resume", cmd_oci_resume, "thaw a paused container's VM: resume ID"},
    {"events", cmd_oci_events, "resource usage of a container: events [--stats] ID"},
    {"features", cmd_oci_features, "print the OCI features document"},
    {"update", cmd_oci_update, "change a container's resources (fixed for a VM): update ID"},
    {"checkpoint", cmd_oci_checkpoint,
     "save a running container's VM: checkpoint --image-path DIR [--leave-running] ID"},
};

// Not listed in --help.
const Command kHidden[] = {
    {"_container-vmm", cmd_oci_vmm, ""},
};

void usage_error(const std::string& msg) {
    std::fprintf(stderr, "vessel: %s\n", msg.c_str());
    std::exit(2);
}

uint32_t parse_count(const std::string& flag, const std::string& s) {
    size_t pos = 0;
    unsigned long v = 0;
    try {
        v = std::stoul(s, &pos, 10);
    } catch (const std::exception&) {
        pos = 0;
    }
    if (pos != s.size() || s.empty() || v > 100000)
        usage_error(flag + ": '" + s + "' is not a count");
    return static_cast<uint32_t>(v);
}

uint64_t parse_size_mib(const std::string& flag, const std::string& s) {
    size_t pos = 0;
    unsigned long long v = 0;
    try {
        v = std::stoull(s, &pos, 10);
    } catch (const std::exception&) {
        usage_error(flag + ": '" + s + "' is not a size");
    }
    std::string suf = s.substr(pos);
    if (suf.empty() || suf == "M" || suf == "m" || suf == "MiB") return v;
    if (suf == "G" || suf == "g" || suf == "GiB") return v << 10;
    if (suf == "K" || suf == "k" || suf == "KiB") return v >> 10;
    usage_error(flag + ": unknown suffix in '" + s + "'");
}

static void print_help() {
    std::printf("usage: vessel COMMAND [OPTIONS]\n\ncommands:\n");
    for (const auto& c : kCommands) std::printf("  %-8s %s\n", c.name, c.summary);
    std::printf(
        "\nglobal options (before the command, as runc takes them):\n"
        "  --root DIR           container state (default /run/vessel)\n"
        "  --log FILE           also write errors to FILE\n"
        "  --log-format FORMAT  text or json (runc's JSON lines)\n"
        "  --debug              debug lines in the log\n"
        "  --systemd-cgroup     accepted; a micro-VM is not placed in host cgroups\n"
        "  --version            print the version\n");
}

}  // namespace vessel::cli

int main(int argc, char** argv) {
    using namespace vessel::cli;
    namespace container = vessel::container;
    const int first = container::parse_global_flags(argc, argv);
    if (first >= argc || !std::strcmp(argv[first], "--help") || !std::strcmp(argv[first], "-h") ||
        !std::strcmp(argv[first], "help")) {
        print_help();
        return first >= argc ? 2 : 0;
    }
    const char* name = argv[first];
    if (!std::strcmp(name, "--version") || !std::strcmp(name, "-v") ||
        !std::strcmp(name, "version")) {
        std::printf("vessel version %s\nspec: 1.2.0\n", VESSEL_VERSION);
        return 0;
    }
    auto dispatch = [&](const Command& c) {
        try {
            return c.fn(Args(argv + first + 1, static_cast<size_t>(argc - first - 1)));
        } catch (const std::exception& e) {
            container::log_error(e.what());
            return 1;
        }
    };
    for (const auto& c : kCommands)
        if (!std::strcmp(name, c.name)) return dispatch(c);
    for (const auto& c : kHidden)
        if (!std::strcmp(name, c.name)) return dispatch(c);
    container::log_error(std::string("unknown command '") + name + "' (see 'vessel --help')");
    return 2;
}
