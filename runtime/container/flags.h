// Subcommand flags the way runc's (urfave/cli) parser takes them: --name VALUE, --name=VALUE,
// -n VALUE, boolean --name (or --name=true/false), repeatable flags.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "runtime/commands.h"

namespace vessel::container {

class Flags {
  public:
    explicit Flags(std::string command) : command_(std::move(command)) {}
    Flags& value(std::initializer_list<const char*> names, std::string* out);
    Flags& multi(std::initializer_list<const char*> names, std::vector<std::string>* out);
    Flags& boolean(std::initializer_list<const char*> names, bool* out);
    // Returns the positional arguments. With stop_at_positional, everything from the first
    // positional on is positional (exec ID CMD --with-flags). Exits with usage errors.
    std::vector<std::string> parse(cli::Args args, bool stop_at_positional = false);

  private:
    struct Flag {
        std::vector<std::string> names;
        std::string* value = nullptr;
        std::vector<std::string>* multi = nullptr;
        bool* boolean = nullptr;
    };
    const Flag* find(const std::string& name) const;
    std::string command_;
    std::vector<Flag> flags_;
};

// Whether --help or -h is among the arguments.
bool wants_help(cli::Args args);

// Exactly `n` positionals (the container id first), or a usage error like runc's.
void expect_args(const std::string& command, const std::vector<std::string>& pos, size_t min,
                 size_t max);

}  // namespace vessel::container
