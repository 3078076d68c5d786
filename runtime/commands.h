// vessel's subcommands: one file each, registered in the dispatch table in main.cc.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace vessel::cli {

using Args = std::span<char*>;  // argv after the subcommand name

int cmd_boot(Args args);

// Shared helpers.
std::string exe_dir();
std::string cache_dir();
[[noreturn]] void usage_error(const std::string& msg);

}  // namespace vessel::cli
