// vessel checkpoint: save a running container's VM to a directory (podman container
// checkpoint, runc checkpoint). The VM's snapshot replaces CRIU's process images.
#include <cstdio>

#include "commands.h"
#include "runtime/container/flags.h"
#include "runtime/container/globals.h"
#include "runtime/container/lifecycle.h"

namespace vessel::cli {
namespace {

const char kHelp[] =
    "usage: vessel checkpoint --image-path DIR [OPTIONS] ID\n"
    "Saves container ID's whole VM (memory, devices, its process with its streams) and its\n"
    "root disk in DIR; `vessel restore --image-path DIR` continues it. The container is\n"
    "stopped and deleted afterwards, as with runc, unless --leave-running.\n\n"
    "  --image-path DIR     where the checkpoint goes (created if missing)\n"
    "  --work-path DIR      accepted (no CRIU logs are written)\n"
    "  --leave-running      the container runs on (its disk is copied while the VM is paused)\n"
    "  --tcp-established, --ext-unix-sk, --shell-job, --file-locks, --manage-cgroups-mode M,\n"
    "  --empty-ns NS, --auto-dedup, --status-fd FD\n"
    "                       accepted: a VM snapshot keeps these as they are\n"
    "  --pre-dump, --parent-path, --lazy-pages, --page-server\n"
    "                       not supported (an error)\n";

}  // namespace

int cmd_oci_checkpoint(Args args) {
    if (container::wants_help(args)) {
        std::fputs(kHelp, stdout);
        return 0;
    }
    container::CheckpointOptions o;
    std::string work, cgroups_mode, empty_ns, status_fd, parent, page_server;
    bool ignored = false, pre_dump = false, lazy = false;
    auto pos = container::Flags("checkpoint")
                   .value({"image-path"}, &o.image_path)
                   .value({"work-path"}, &work)
                   .boolean({"leave-running"}, &o.leave_running)
                   .boolean({"tcp-established"}, &ignored)
                   .boolean({"ext-unix-sk"}, &ignored)
                   .boolean({"shell-job"}, &ignored)
                   .boolean({"file-locks"}, &ignored)
                   .boolean({"auto-dedup"}, &ignored)
                   .value({"manage-cgroups-mode"}, &cgroups_mode)
                   .value({"empty-ns"}, &empty_ns)
                   .value({"status-fd"}, &status_fd)
                   .boolean({"pre-dump"}, &pre_dump)
                   .value({"parent-path"}, &parent)
                   .boolean({"lazy-pages"}, &lazy)
                   .value({"page-server"}, &page_server)
                   .parse(args);
    container::expect_args("checkpoint", pos, 1, 1);
    if (pre_dump || !parent.empty())
        throw std::runtime_error(
            "checkpoint: --pre-dump/--parent-path are not supported (a VM snapshot is taken "
            "whole; `vessel snapshot create --diff` makes incremental ones)");
    if (lazy || !page_server.empty())
        throw std::runtime_error("checkpoint: --lazy-pages/--page-server are not supported");
    if (o.image_path.empty()) usage_error("checkpoint: --image-path DIR is required");
    o.id = pos[0];
    const uint64_t bytes = container::checkpoint_container(o);
    container::log_debug("checkpoint of " + o.id + ": " + std::to_string(bytes) + " bytes in " +
                         o.image_path);
    return 0;
}

}  // namespace vessel::cli
