// vessel's subcommands: one file each, registered in the dispatch table in main.cc.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace vessel::cli {

using Args = std::span<char*>;  // argv after the subcommand name

int cmd_boot(Args args);
int cmd_mkimage(Args args);
int cmd_network(Args args);
int cmd_snapshot(Args args);  // cmd_snapshot.cc
int cmd_restore(Args args);   // cmd_restore.cc

// The runc-compatible OCI runtime commands (docs/runtime.md), one file each: oci_*.cc.
int cmd_oci_create(Args args);
int cmd_oci_start(Args args);
int cmd_oci_state(Args args);
int cmd_oci_kill(Args args);
int cmd_oci_delete(Args args);
int cmd_oci_run(Args args);
int cmd_oci_exec(Args args);
int cmd_oci_ps(Args args);
int cmd_oci_list(Args args);
int cmd_oci_pause(Args args);
int cmd_oci_resume(Args args);
int cmd_oci_events(Args args);
int cmd_oci_features(Args args);
int cmd_oci_update(Args args);
int cmd_oci_checkpoint(Args args);  // oci_checkpoint.cc
int cmd_oci_restore(Args args);     // oci_restore.cc: restore --image-path
bool is_container_restore(Args args);
int cmd_oci_vmm(Args args);  // hidden: the container's VMM process

// Shared helpers.
// The control socket of the VM `vessel boot --id ID` runs (ID with a '/' is a socket path).
std::string vm_control_socket(const std::string& id);
[[noreturn]] void usage_error(const std::string& msg);
// "512", "512M", "1G", "4096K" -> MiB; exits with a usage error naming `flag` otherwise.
uint64_t parse_size_mib(const std::string& flag, const std::string& s);
// A decimal count up to 100000; exits with a usage error naming `flag` otherwise.
uint32_t parse_count(const std::string& flag, const std::string& s);

}  // namespace vessel::cli
