#include "runtime/container/flags.h"

#include <string_view>

namespace vessel::container {

Flags& Flags::value(std::initializer_list<const char*> names, std::string* out) {
    flags_.push_back({{names.begin(), names.end()}, out, nullptr, nullptr});
    return *this;
}
Flags& Flags::multi(std::initializer_list<const char*> names, std::vector<std::string>* out) {
    flags_.push_back({{names.begin(), names.end()}, nullptr, out, nullptr});
    return *this;
}
Flags& Flags::boolean(std::initializer_list<const char*> names, bool* out) {
    flags_.push_back({{names.begin(), names.end()}, nullptr, nullptr, out});
    return *this;
}

const Flags::Flag* Flags::find(const std::string& name) const {
    for (const Flag& f : flags_)
        for (const std::string& n : f.names)
            if (n == name) return &f;
    return nullptr;
}

std::vector<std::string> Flags::parse(cli::Args args, bool stop_at_positional) {
    std::vector<std::string> pos;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string a = args[i];
        if (a == "--") {
            for (++i; i < args.size(); ++i) pos.emplace_back(args[i]);
            break;
        }
        if (a.size() < 2 || a[0] != '-') {
            pos.push_back(a);
            if (stop_at_positional) {
                for (++i; i < args.size(); ++i) pos.emplace_back(args[i]);
                break;
            }
            continue;
        }
        std::string name = a.substr(a[1] == '-' ? 2 : 1), val;
        bool has_val = false;
        if (auto eq = name.find('='); eq != std::string::npos) {
            val = name.substr(eq + 1);
            name = name.substr(0, eq);
            has_val = true;
        }
        const Flag* f = find(name);
        if (!f) cli::usage_error(command_ + ": unknown option '" + a + "'");
        if (f->boolean) {
            *f->boolean = !has_val || val == "true" || val == "1";
            continue;
        }
        if (!has_val) {
            if (i + 1 >= args.size()) cli::usage_error(command_ + ": " + a + " needs a value");
            val = args[++i];
        }
        if (f->value) *f->value = val;
        if (f->multi) f->multi->push_back(val);
    }
    return pos;
}

bool wants_help(cli::Args args) {
    for (const char* a : args)
        if (std::string_view(a) == "--help" || std::string_view(a) == "-h") return true;
    return false;
}

void expect_args(const std::string& command, const std::vector<std::string>& pos, size_t min,
                 size_t max) {
    if (pos.size() < min || pos.size() > max) {
        std::string want =
            min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max);
        cli::usage_error("\"" + command + "\" requires " + want + " argument(s), got " +
                         std::to_string(pos.size()));
    }
}

}  // namespace vessel::container
