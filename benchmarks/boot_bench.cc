// Boot-time benchmark: vessel against QEMU's microvm machine booting the same kernel and
// initramfs with the same command line, plus vessel's memory overhead beyond guest RAM.
// "Boot to init" is the time from spawning the VMM until the guest's first command prints.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/process.h"

using vessel::test::ProcOptions;
using vessel::test::ProcResult;
using vessel::test::run_process;

namespace {

const char kMarker[] = "vessel-boot-bench-ready";

struct Args {
    std::string vessel = VESSEL_BIN;
    std::string kernel;
    std::string qemu = "qemu-system-x86_64";
    int runs = 10;
    int memory = 256;
};

double median(std::vector<double> v) {
    if (v.empty()) return -1;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::map<std::string, long> rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::map<std::string, long> m;
    std::string line;
    while (std::getline(in, line)) {
        for (const char* k : {"VmRSS", "RssAnon", "RssFile", "RssShmem"}) {
            if (line.rfind(std::string(k) + ":", 0) == 0)
                m[k] = std::atol(line.c_str() + strlen(k) + 1);
        }
    }
    return m;
}

struct Series {
    std::vector<double> to_init, to_exit;
    int failures = 0;
};

void report(const char* name, const Series& s) {
    auto mm = [](const std::vector<double>& v) {
        if (v.empty()) return std::make_pair(-1.0, -1.0);
        return std::make_pair(*std::min_element(v.begin(), v.end()),
                              *std::max_element(v.begin(), v.end()));
    };
    auto [imin, imax] = mm(s.to_init);
    std::printf(
        "%-14s boot-to-init median %7.1f ms (min %7.1f, max %7.1f)  to-exit median %7.1f ms"
        "  runs %zu  failures %d\n",
        name, median(s.to_init) * 1e3, imin * 1e3, imax * 1e3, median(s.to_exit) * 1e3,
        s.to_init.size(), s.failures);
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        auto val = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", k.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (k == "--vessel")
            a.vessel = val();
        else if (k == "--kernel")
            a.kernel = val();
        else if (k == "--qemu")
            a.qemu = val();
        else if (k == "--runs")
            a.runs = std::atoi(val().c_str());
        else if (k == "--memory")
            a.memory = std::atoi(val().c_str());
        else {
            std::fprintf(stderr,
                         "usage: boot_bench [--kernel K] [--runs N] [--memory MiB] "
                         "[--vessel PATH] [--qemu PATH]\n");
            return 2;
        }
    }
    if (a.kernel.empty()) {
        const char* c = std::getenv("VESSEL_CACHE");
        a.kernel = std::string(c && *c ? c : "/var/cache/vessel") + "/kernel/current/bzImage";
    }
    const std::string mem = std::to_string(a.memory);
    const std::vector<std::string> guest_cmd = {"echo", kMarker};

    // The exact initramfs and command line vessel uses, so QEMU boots the same guest.
    char initrd[] = "/tmp/vessel-bench-initrd-XXXXXX";
    int fd = ::mkstemp(initrd);
    if (fd < 0) return 1;
    ::close(fd);
    std::vector<std::string> w = {a.vessel,         "boot", "--kernel", a.kernel,
                                  "--write-initrd", initrd, "--"};
    w.insert(w.end(), guest_cmd.begin(), guest_cmd.end());
    ProcResult wr = run_process(w, 60);
    ProcResult cl = run_process({a.vessel, "boot", "--kernel", a.kernel, "--print-cmdline"}, 60);
    if (wr.status || cl.status) {
        std::fprintf(stderr, "boot_bench: vessel failed: %s%s\n", wr.err.c_str(), cl.err.c_str());
        ::unlink(initrd);
        return 1;
    }
    std::string cmdline = cl.out.substr(0, cl.out.find('\n'));

    std::vector<std::string> vessel_argv = {a.vessel,   "boot", "--kernel", a.kernel,
                                            "--memory", mem,    "--"};
    vessel_argv.insert(vessel_argv.end(), guest_cmd.begin(), guest_cmd.end());
    std::vector<std::string> qemu_argv = {a.qemu,
                                          "-M",
                                          "microvm",
                                          "-accel",
                                          "kvm",
                                          "-cpu",
                                          "host",
                                          "-m",
                                          mem,
                                          "-smp",
                                          "1",
                                          "-nodefaults",
                                          "-no-user-config",
                                          "-nographic",
                                          "-serial",
                                          "stdio",
                                          "-no-reboot",
                                          "-kernel",
                                          a.kernel,
                                          "-initrd",
                                          initrd,
                                          "-append",
                                          cmdline};

    std::printf("kernel %s, %d MiB, %d runs each, command: echo\n", a.kernel.c_str(), a.memory,
                a.runs);
    Series sv, sq;
    for (int i = 0; i < a.runs; ++i) {
        for (auto* which : {&sv, &sq}) {
            ProcOptions o;
            o.timeout_s = 120;
            o.marker = kMarker;
            // QEMU's microvm has no i8042 to reset through; stop it once the guest has spoken.
            o.kill_after_marker = which == &sq;
            ProcResult r = run_process(which == &sv ? vessel_argv : qemu_argv, o);
            if (r.marker_seconds < 0 || (which == &sv && r.status != 0)) {
                ++which->failures;
                std::fprintf(stderr, "run failed (status %d): %s\n", r.status, r.err.c_str());
                continue;
            }
            which->to_init.push_back(r.marker_seconds);
            which->to_exit.push_back(r.seconds);
        }
    }
    report("vessel", sv);
    report("qemu-microvm", sq);
    if (!sv.to_init.empty() && !sq.to_init.empty())
        std::printf("ratio vessel/qemu boot-to-init: %.2f\n",
                    median(sv.to_init) / median(sq.to_init));

    // Memory: sample both VMMs while the guest sleeps after printing the marker.
    auto sample = [&](std::vector<std::string> argv) {
        std::map<std::string, long> m;
        ProcOptions o;
        o.timeout_s = 120;
        o.marker = kMarker;
        o.on_marker = [&](pid_t pid) {
            ::usleep(300 * 1000);
            m = rss_kib(pid);
        };
        o.kill_after_marker = true;
        run_process(argv, o);
        return m;
    };
    std::vector<std::string> vs = {
        a.vessel, "boot", "--kernel", a.kernel, "--memory",
        mem,      "--",   "sh",       "-c",     std::string("echo ") + kMarker + "; sleep 5"};
    auto vm = sample(vs);
    auto qm = sample(qemu_argv);
    auto overhead = [](std::map<std::string, long>& m) { return m["RssAnon"] + m["RssFile"]; };
    std::printf(
        "vessel RSS: total %ld KiB, guest RAM touched (shmem) %ld KiB, VMM overhead "
        "(anon+file) %ld KiB\n",
        vm["VmRSS"], vm["RssShmem"], overhead(vm));
    std::printf(
        "qemu   RSS: total %ld KiB, shmem %ld KiB, anon+file %ld KiB (QEMU's guest RAM is "
        "anonymous, so this includes touched guest memory)\n",
        qm["VmRSS"], qm["RssShmem"], overhead(qm));
    ::unlink(initrd);
    return sv.failures ? 1 : 0;
}
