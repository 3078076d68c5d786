// Guest agent over virtio-vsock: round-trip latency of a trivial exec (start `true`, wait for
// its exit) and stream throughput (guest stdout -> host, host -> guest stdin), on one VM booted
// with `vessel boot --agent`. Not a timed test: prints a table for docs/benchmarks.md.
// Usage (PVM hosts: through tests/harness/maybe-nested):
//   agent_bench [--vessel PATH] [--kernel PATH] [--execs N] [--mib N]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "guest/agent/client.h"
#include "tests/support/process.h"

using namespace vessel;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Pumps until the process has exited and its stdout ended; returns the stdout bytes seen.
uint64_t drain(agent::Client& c, uint32_t id) {
    uint64_t bytes = 0;
    c.wait_async(id);
    for (;;) {
        std::string_view v = c.peek_output(id, agent::Stream::kStdout);
        bytes += v.size();
        c.consume_output(id, agent::Stream::kStdout, v.size());
        if (c.output_eof(id, agent::Stream::kStdout) && c.exit_status(id)) return bytes;
        c.pump(100);
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string vessel_bin = VESSEL_BIN_DEFAULT, kernel;
    int execs = 50;
    uint64_t mib = 128;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--vessel")
            vessel_bin = argv[i + 1];
        else if (a == "--kernel")
            kernel = argv[i + 1];
        else if (a == "--execs")
            execs = std::stoi(argv[i + 1]);
        else if (a == "--mib")
            mib = std::stoull(argv[i + 1]);
    }
    char dir_tmpl[] = "/var/tmp/vessel-agent-bench-XXXXXX";
    if (!::mkdtemp(dir_tmpl)) return 1;
    const std::string uds = std::string(dir_tmpl) + "/vm.vsock";

    std::vector<std::string> vm_argv = {vessel_bin, "boot"};
    if (!kernel.empty()) vm_argv.insert(vm_argv.end(), {"--kernel", kernel});
    vm_argv.insert(vm_argv.end(), {"--agent", "--vsock-socket", uds, "--", "sh", "-c",
                                   "trap 'exit 0' TERM; while :; do sleep 1; done"});
    std::thread runner([&] {
        test::ProcResult r = test::run_process(vm_argv, 900);
        if (r.status != 0)
            std::fprintf(stderr, "agent_bench: VM: %s%s\n", r.out.c_str(), r.err.c_str());
    });
    auto boot0 = Clock::now();
    auto conn = agent::connect_vsock_uds(uds, 1024, std::chrono::seconds(120));
    agent::Client c(std::move(conn));
    std::printf("agent_bench: connected %.0f ms after starting vessel\n", ms_since(boot0));

    // 1. exec round trips.
    std::vector<double> lat;
    for (int i = 0; i < execs; ++i) {
        agent::ProcessSpec s;
        s.argv = {"true"};
        s.stdin_mode = s.stdout_mode = s.stderr_mode = agent::StdioMode::kNull;
        auto t0 = Clock::now();
        agent::Started st = c.start(s);
        agent::ExitStatus e = c.wait(st.id);
        lat.push_back(ms_since(t0));
        c.forget(st.id);
        if (e.status != 0) std::fprintf(stderr, "agent_bench: true exited %d\n", e.status);
    }
    std::sort(lat.begin(), lat.end());

    // 2. guest stdout -> host.
    agent::ProcessSpec out;
    out.argv = {"dd", "if=/dev/zero", "bs=65536", "count=" + std::to_string(mib * 16)};
    out.stdin_mode = out.stderr_mode = agent::StdioMode::kNull;
    auto t0 = Clock::now();
    agent::Started so = c.start(out);
    uint64_t got = drain(c, so.id);
    double out_ms = ms_since(t0);

    // 3. host -> guest stdin.
    agent::ProcessSpec in;
    in.argv = {"sh", "-c", "cat > /dev/null"};
    in.stdout_mode = in.stderr_mode = agent::StdioMode::kNull;
    std::string chunk(256 << 10, 'x');
    t0 = Clock::now();
    agent::Started si = c.start(in);
    uint64_t sent = 0;
    while (sent < (mib << 20)) {
        size_t room = std::min<uint64_t>(c.stdin_room(si.id), (mib << 20) - sent);
        if (room == 0) {
            c.pump(100);
            continue;
        }
        size_t n =
            c.write_stdin(si.id, std::string_view(chunk).substr(0, std::min(room, chunk.size())));
        sent += n;
        c.pump(0);
    }
    c.close_stdin(si.id);
    agent::ExitStatus ein = c.wait(si.id);
    double in_ms = ms_since(t0);

    std::printf("%-28s %10s\n", "measure", "value");
    std::printf("%-28s %10.2f\n", "exec true: min ms", lat.front());
    std::printf("%-28s %10.2f\n", "exec true: median ms", lat[lat.size() / 2]);
    std::printf("%-28s %10.2f\n", "exec true: p90 ms", lat[lat.size() * 9 / 10]);
    std::printf("%-28s %10.1f\n", "guest->host stdout MiB/s", got / 1048576.0 / (out_ms / 1000));
    std::printf("%-28s %10.1f\n", "host->guest stdin MiB/s", sent / 1048576.0 / (in_ms / 1000));
    if (got != (mib << 20) || ein.status != 0)
        std::fprintf(stderr, "agent_bench: short stream (%llu bytes) or stdin status %d\n",
                     static_cast<unsigned long long>(got), ein.status);
    c.shutdown(0);
    runner.join();
    std::string rm = std::string("rm -rf ") + dir_tmpl;
    return std::system(rm.c_str()) == 0 ? 0 : 1;
}
