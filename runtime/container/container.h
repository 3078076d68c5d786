// The library side of vessel's runc-compatible CLI (docs/runtime.md).
//
// One container = one VMM process. `create` validates the bundle, turns the rootfs into an
// ext4 image in the container's state directory, and re-executes this binary as the hidden
// subcommand `_container-vmm`, detached with setsid. That process boots the VM with the guest
// agent, reports "ready" on an inherited pipe, and waits on the control socket for `start`;
// then it has the agent start the container's process, relays its stdio (the VMM's own stdio,
// which is create's, or a pty whose master went to --console-socket) and exits with the
// process's status (128+N for signal N). Signals the VMM receives are forwarded to that
// process; SIGKILL kills the VM. `exec`, `ps` and `kill --all` talk to the agent directly
// through the VM's vsock Unix socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "guest/agent/spec.h"
#include "oci/state.h"
#include "oci/vm_plan.h"
#include "runtime/network/attachment.h"
#include "virtio/net/device.h"

namespace vessel::container {

// Files in ROOT/ID next to state.json.
struct Paths {
    std::string dir;
    std::string image;    // rootfs.img: the container's root disk
    std::string vsock;    // vsock.sock: the VM's vsock device (agent at kDefaultAgentPort)
    std::string control;  // control.sock: `start` requests
    std::string api;      // api.sock: the VM's snapshot control socket (`checkpoint`)
    // Where the VMM writes a checkpoint (exposed to its jail, owned by the jail's uid), for
    // `checkpoint` to move to --image-path: disk-backed (guest memory must not land in a
    // tmpfs charged to the VMM's cgroup), CHECKPOINT_BASE/HASH.
    std::string checkpoint;
    // sockaddr_un holds 107 bytes, and Docker's --root (/run/docker/runtime-NAME/moby) with
    // a 64-character id makes ROOT/ID/vsock.sock longer: then the two sockets live in
    // sock_dir, RUNTIME_DIR/s/HASH (a hash of ROOT/ID), made by the VMM and removed with
    // the container. Empty when they fit in ROOT/ID.
    std::string sock_dir;
    static Paths of(const std::string& container_dir);
    void remove_sock_dir() const;        // the sockets and sock_dir, if any; never throws
    void remove_checkpoint_dir() const;  // never throws
};

// /var/lib/vessel/checkpoints as root, else the cache directory's checkpoints/.
std::string checkpoint_base();

oci::StateStore state_store();  // at --root, or the default root

// The process the guest agent starts, from the OCI plan.
agent::ProcessSpec agent_spec(const oci::GuestProcess& p);

// Makes the container's root disk: an ext4 image of plan.rootfs (sized to its contents plus
// a margin) with the plan's copied files (hosts, resolv.conf, hostname, ...) written into it.
// Copied files below /run, /tmp, /proc, /sys and /dev are not placed: the guest mounts its
// own filesystems there (returned as warnings).
std::vector<std::string> build_rootfs_image(const oci::VmPlan& plan, const std::string& image);

// A virtio-net device for an attachment: its tap (the fd, or by name in tap mode), the
// guest's MAC and MTU. Boot, restore and the container VMM add what is theirs.
virtio::net::NetDeviceOptions net_device_options(const network::NetAttachment& a);

// What a restored guest's agent is told about interface `ifname` (identity request): the
// attachment's MAC, address, gateway and DNS.
agent::InterfaceIdentity interface_identity(const std::string& ifname,
                                            const network::GuestConfig& g);

std::string exe_dir();    // directory of the running vessel binary
std::string cache_dir();  // $VESSEL_CACHE or /var/cache/vessel (the guest kernel lives there)
std::string default_kernel();
std::string default_initrd();
std::string vsock_runtime_dir();  // where CID leases live (shared with `vessel boot`)

// The hidden `_container-vmm` subcommand: boots container `id`'s VM and supervises it.
// `ready_fd` receives "ok\n" once the agent answers, or "error: MSG\n". Returns the exit
// status of the container's process.
struct VmmOptions {
    std::string id;
    int ready_fd = -1;
    // A checkpoint's snapshot (`vessel restore --image-path`): the VM is restored from it and
    // the container's process, already running, is attached to instead of started.
    std::string restore_dir;
};
int run_vmm(const VmmOptions& o);

// Sends one request line on the control socket and returns the answer line ("ok" or
// "error: ..."). Throws std::system_error if the VMM cannot be reached in time.
std::string control_request(const std::string& socket, const std::string& request,
                            std::chrono::milliseconds timeout);

// Signals a container's VMM may forward to the guest (all but the synchronous ones,
// SIGKILL/SIGSTOP, SIGCHLD, SIGPIPE and the VMM's own vCPU kick signal).
const std::vector<int>& forwarded_signals();

}  // namespace vessel::container
