#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>

#include <limits.h>
#include <unistd.h>

#include "commands.h"

namespace vessel::cli {

struct Command {
    const char* name;
    int (*fn)(Args);
    const char* summary;
};

const Command kCommands[] = {
    {"boot", cmd_boot,
     "boot a micro-VM and run a command in it: vessel boot [OPTIONS] -- CMD [ARGS]"},
    {"mkimage", cmd_mkimage, "make an ext4 disk image from a directory: vessel mkimage DIR IMAGE"},
    {"network", cmd_network,
     "manage guest networks (bridge, NAT, addresses): vessel network create|ls|inspect|rm"},
};

std::string exe_dir() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string p(buf, static_cast<size_t>(n));
    return p.substr(0, p.rfind('/'));
}

std::string cache_dir() {
    const char* c = std::getenv("VESSEL_CACHE");
    return c && *c ? c : "/var/cache/vessel";
}

void usage_error(const std::string& msg) {
    std::fprintf(stderr, "vessel: %s\n", msg.c_str());
    std::exit(2);
}

uint64_t parse_size_mib(const std::string& flag, const std::string& s) {
    size_t pos = 0;
    unsigned long long v = 0;
    try {
        v = std::stoull(s, &pos, 10);
    } catch (const std::exception&) {
        usage_error(flag + ": '" + s + "' is not a size");
    }
    std::string suf = s.substr(pos);
    if (suf.empty() || suf == "M" || suf == "m" || suf == "MiB") return v;
    if (suf == "G" || suf == "g" || suf == "GiB") return v << 10;
    if (suf == "K" || suf == "k" || suf == "KiB") return v >> 10;
    usage_error(flag + ": unknown suffix in '" + s + "'");
}

static void print_help() {
    std::printf("usage: vessel COMMAND [OPTIONS]\n\ncommands:\n");
    for (const auto& c : kCommands) std::printf("  %-8s %s\n", c.name, c.summary);
    std::printf("\n  --version  print the version\n");
}

}  // namespace vessel::cli

int main(int argc, char** argv) {
    using namespace vessel::cli;
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
        print_help();
        return argc < 2 ? 2 : 0;
    }
    if (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "version")) {
        std::printf("vessel version %s\n", VESSEL_VERSION);
        return 0;
    }
    for (const auto& c : kCommands) {
        if (std::strcmp(argv[1], c.name) != 0) continue;
        try {
            return c.fn(Args(argv + 2, static_cast<size_t>(argc - 2)));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "vessel: %s\n", e.what());
            return 1;
        }
    }
    std::fprintf(stderr, "vessel: unknown command '%s' (see 'vessel --help')\n", argv[1]);
    return 2;
}
