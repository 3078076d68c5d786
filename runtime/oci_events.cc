// vessel events: runc-style stats events of the VMM process (CPU time, resident memory):
// once with --stats, else every --interval until the container stops.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "commands.h"
#include "oci/state.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"

namespace vessel::cli {
namespace {

nlohmann::json stats(const oci::State& s) {
    uint64_t utime = 0, stime = 0, rss_pages = 0, threads = 0;
    std::ifstream stat("/proc/" + std::to_string(s.pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    if (auto rp = line.rfind(')'); rp != std::string::npos) {
        std::istringstream in(line.substr(rp + 2));
        std::string f[40];
        for (int i = 0; i < 40 && in >> f[i]; ++i) {
        }
        // Fields after the comm: state is index 0 (field 3), utime 11, stime 12, threads 17.
        utime = std::stoull(f[11].empty() ? "0" : f[11]);
        stime = std::stoull(f[12].empty() ? "0" : f[12]);
        threads = std::stoull(f[17].empty() ? "0" : f[17]);
        rss_pages = std::stoull(f[21].empty() ? "0" : f[21]);
    }
    const uint64_t tick_ns = 1000000000ull / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
    nlohmann::json data = {
        {"cpu",
         {{"usage",
           {{"total", (utime + stime) * tick_ns},
            {"user", utime * tick_ns},
            {"kernel", stime * tick_ns}}}}},
        {"memory",
         {{"usage", {{"usage", rss_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE))}}},
          {"raw",
           {{"vessel_guest_memory_bytes", s.vessel.value("memory_mib", 0u) * (1ull << 20)}}}}},
        {"pids", {{"current", threads}}},
    };
    return {{"type", "stats"}, {"id", s.id}, {"data", data}};
}

}  // namespace

int cmd_oci_events(Args args) {
    bool once = false;
    std::string interval = "5s";
    auto pos = container::Flags("events")
                   .boolean({"stats"}, &once)
                   .value({"interval"}, &interval)
                   .parse(args);
    container::expect_args("events", pos, 1, 1);
    double secs = 5;
    try {
        size_t n = 0;
        secs = std::stod(interval, &n);
        std::string unit = interval.substr(n);
        if (unit == "ms")
            secs /= 1000;
        else if (unit == "m")
            secs *= 60;
        else if (unit != "s" && !unit.empty())
            throw std::invalid_argument(unit);
    } catch (const std::exception&) {
        usage_error("events: --interval '" + interval + "' is not a duration");
    }
    oci::StateStore store = container::state_store();
    for (;;) {
        const oci::State s = store.load(pos[0]);
        if (oci::observed_status(s) == oci::Status::Stopped)
            throw std::runtime_error("container with id " + s.id + " is not running");
        std::printf("%s\n", stats(s).dump().c_str());
        std::fflush(stdout);
        if (once) return 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(secs * 1000)));
    }
}

}  // namespace vessel::cli
