// Contract between the VMM (host) and vessel-init (guest PID 1). Header-only so both sides
// can include it; keep it free of host-only or glibc-extension dependencies.
#pragma once

#include <cstdint>
#include <string_view>

namespace vessel::guest {

// Exit device: init writes the command's status (0..255) as a 32-bit outl to this port.
inline constexpr std::uint16_t kExitPort = 0xf4;
inline constexpr unsigned kExitPortWidth = 4;

// Per-run files, delivered by a second cpio archive appended to the base initramfs.
// Lists are NUL-terminated entries ("a\0b\0"); a missing trailing NUL is tolerated.
inline constexpr std::string_view kRunDir = "/vessel";
inline constexpr std::string_view kArgvPath = "/vessel/argv";  // argv[0] looked up in PATH
inline constexpr std::string_view kEnvPath = "/vessel/env";    // KEY=VALUE, merged over defaults
inline constexpr std::string_view kCwdPath = "/vessel/cwd";    // no trailing newline needed
inline constexpr std::string_view kHostnamePath = "/vessel/hostname";  // optional
// Optional: boot from a disk. Text lines "key=value" ('#' comments, blank lines ignored):
//   source=/dev/vda   block device node (required)
//   fstype=ext4       filesystem type (default ext4)
//   readonly=0|1      mount read-only (default 0)
//   options=...       mount(2) data, verbatim (default none)
// Init mounts it on kRootMountPoint, moves /proc, /sys and /dev into it and chroots there;
// the command then runs from the disk. Parsed by parse_rootfs() in proto.h.
inline constexpr std::string_view kRootFsPath = "/vessel/rootfs";
inline constexpr std::string_view kRootMountPoint = "/mnt/root";  // exists in the base image
inline constexpr std::string_view kDefaultRootFsType = "ext4";

// Agent mode: "vessel.agent=PORT" (or bare "vessel.agent": kDefaultAgentPort) on the kernel
// command line makes init start the guest agent (guest/agent, docs/agent-protocol.md)
// listening on that vsock port instead of running /vessel/argv. The VM then runs until the
// host sends the agent a shutdown request, whose status init reports through kExitPort.
inline constexpr std::string_view kAgentCmdlineKey = "vessel.agent";
inline constexpr std::uint32_t kDefaultAgentPort = 1024;

// With an IP_PNP kernel configured by "ip=...", its DNS settings, copied to /etc/resolv.conf.
inline constexpr std::string_view kPnpPath = "/proc/net/pnp";
inline constexpr std::string_view kResolvConfPath = "/etc/resolv.conf";

inline constexpr std::string_view kDefaultHostname = "vessel";
inline constexpr std::string_view kDefaultShell = "/bin/sh";
inline constexpr std::string_view kDefaultPath =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
inline constexpr std::string_view kDefaultHome = "HOME=/root";
inline constexpr std::string_view kDefaultTerm = "TERM=linux";

// Status values reported through the exit device besides the command's own exit code.
inline constexpr int kStatusExecNotFound = 127;  // command not found (ENOENT)
inline constexpr int kStatusExecFailed = 126;    // found but not executable, or chdir failed
inline constexpr int kStatusInitFailure = 125;   // init could not start the command at all
inline constexpr int kStatusSignalBase = 128;    // killed by signal N -> 128 + N

}  // namespace vessel::guest
