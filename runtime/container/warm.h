// Warm start (issue 7): a template snapshot of a booted guest kernel whose agent waits for
// work, restored for each container instead of a cold boot. The template has a placeholder
// disk in slot 0, with `nic` a virtio-net device on a throwaway tap in slot 1, and a vsock
// device last; the container VMM restores it with the container's rootfs image in slot 0 and
// its own tap, the agent takes the interface's address and mounts the disk and chroots there
// (docs/runtime.md, "Warm start").
#pragma once

#include <cstdint>
#include <string>

namespace vessel::container {

struct WarmKey {
    std::string kernel, initrd;
    uint64_t memory_mib = 0;
    uint32_t vcpus = 0;
    bool nic = false;  // a virtio-net device in slot 1 (the container has an interface)
};

// Where the template for `k` lives: $VESSEL_TEMPLATE_DIR, else /var/lib/vessel/templates
// (as root) or the cache directory, then a name derived from the kernel and initramfs (path,
// size, modification time), memory, vCPUs and vessel's version.
std::string template_dir(const WarmKey& k);

// Makes the template if it does not exist yet: a child process boots the VM (cold), waits
// for its agent, snapshots it into a temporary directory and renames that to `dir`. Several
// VMMs asking at once wait on one lock and one boot. Throws std::runtime_error with the
// reason on failure (nothing is left behind).
void ensure_template(const WarmKey& k, const std::string& dir);

// The kernel command line of a container VM (cold boot and template alike).
std::string container_cmdline();

}  // namespace vessel::container
