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

// Shared helpers.
std::string exe_dir();
std::string cache_dir();
[[noreturn]] void usage_error(const std::string& msg);
// "512", "512M", "1G", "4096K" -> MiB; exits with a usage error naming `flag` otherwise.
uint64_t parse_size_mib(const std::string& flag, const std::string& s);

}  // namespace vessel::cli
