// vessel restore --image-path: make a container again from `vessel checkpoint` and continue
// it (podman container restore, runc restore). `vessel restore DIR` without --image-path
// restores a VM snapshot instead (cmd_restore.cc).

#include <cstdio>

#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/globals.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {
namespace {

const char kHelp[] =
    "usage: vessel restore --image-path DIR [OPTIONS] ID\n"
    "Makes container ID from its bundle and the checkpoint in DIR (`vessel checkpoint`): the\n"
    "VM is restored from the snapshot there and its process carries on with this call's\n"
    "stdio (or the console socket's terminal). Without --detach, waits for it and deletes\n"
    "the container afterwards.\n\n"
    "  --image-path DIR     the checkpoint\n"
    "  --bundle, -b DIR     the container's bundle (default: the current directory)\n"
    "  --pid-file FILE      write the VMM's pid (the container's host process) there\n"
    "  --console-socket S   the terminal's master goes to this socket (process.terminal)\n"
    "  --detach, -d         return once the container runs\n"
    "  --work-path DIR, --tcp-established, --ext-unix-sk, --shell-job, --file-locks,\n"
    "  --manage-cgroups-mode M, --empty-ns NS, --auto-dedup, --no-subreaper, --no-pivot,\n"
    "  --lsm-profile P, --lsm-mount-context C\n"
    "                       accepted (CRIU options; a VM snapshot has no use for them)\n"
    "  --lazy-pages         not supported (an error)\n";

}  // namespace

bool is_container_restore(Args args) {
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string a = args[i];
        if (a == "--image-path" || a.rfind("--image-path=", 0) == 0) return true;
    }
    return false;
}

int cmd_oci_restore(Args args) {
    if (container::wants_help(args)) {
        std::fputs(kHelp, stdout);
        return 0;
    }
    container::CreateOptions o;
    std::string work, cgroups_mode, empty_ns, lsm_profile, lsm_mount;
    bool detach = false, ignored = false, lazy = false;
    auto pos = container::Flags("restore")
                   .value({"image-path"}, &o.restore_dir)
                   .value({"work-path"}, &work)
                   .value({"bundle", "b"}, &o.bundle)
                   .value({"pid-file"}, &o.pid_file)
                   .value({"console-socket"}, &o.console_socket)
                   .boolean({"detach", "d"}, &detach)
                   .boolean({"tcp-established"}, &ignored)
                   .boolean({"ext-unix-sk"}, &ignored)
                   .boolean({"shell-job"}, &ignored)
                   .boolean({"file-locks"}, &ignored)
                   .boolean({"auto-dedup"}, &ignored)
                   .boolean({"no-subreaper"}, &ignored)
                   .boolean({"no-pivot"}, &ignored)
                   .value({"manage-cgroups-mode"}, &cgroups_mode)
                   .value({"empty-ns"}, &empty_ns)
                   .value({"lsm-profile"}, &lsm_profile)
                   .value({"lsm-mount-context"}, &lsm_mount)
                   .boolean({"lazy-pages"}, &lazy)
                   .parse(args);
    container::expect_args("restore", pos, 1, 1);
    if (lazy) throw std::runtime_error("restore: --lazy-pages is not supported");
    if (o.restore_dir.empty()) usage_error("restore: --image-path DIR is required");
    o.id = pos[0];
    o.foreground = !detach;
    container::relay_signals();
    const pid_t pid = container::create_container(o);
    container::relay_to(pid);
    if (detach) return 0;
    return container::wait_vmm(pid, o.id, true);
}

}  // namespace vessel::cli
