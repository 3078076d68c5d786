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
        else if (k == "--kernel-dir")
            a.kernel = val();
        else if (k == "--qemu")
            a.qemu = val();
        else if (k == "--runs")
            a.runs = std::atoi(val().c_str());
        else if (k == "--memory")
            a.memory = std::atoi(val().c_str());
        else {
            std::fprintf(stderr,
                         "usage: boot_bench [--kernel-dir DIR] [--runs N] [--memory MiB] "
                         "[--vessel PATH] [--qemu PATH]\n");
            return 2;
        }
    }
    if (a.kernel.empty()) {
        const char* c = std::getenv("VESSEL_CACHE");
        a.kernel = std::string(c && *c ? c : "/var/cache/vessel") + "/kernel/current";
    }
    const std::string mem = std::to_string(a.memory);
    const std::string vmlinux = a.kernel + "/vmlinux", bzimage = a.kernel + "/bzImage";
    const std::vector<std::string> guest_cmd = {"echo", kMarker};

    // The exact initramfs and command line vessel uses, so QEMU boots the same guest.
    char initrd[] = "/var/tmp/vessel-bench-initrd-XXXXXX";
    int fd = ::mkstemp(initrd);
    if (fd < 0) return 1;
    ::close(fd);
    std::vector<std::string> w = {a.vessel,         "boot", "--kernel", vmlinux,
                                  "--write-initrd", initrd, "--"};
    w.insert(w.end(), guest_cmd.begin(), guest_cmd.end());
    ProcResult wr = run_process(w, 60);
    ProcResult cl = run_process({a.vessel, "boot", "--kernel", vmlinux, "--print-cmdline"}, 60);
    if (wr.status || cl.status) {
        std::fprintf(stderr, "boot_bench: vessel failed: %s%s\n", wr.err.c_str(), cl.err.c_str());
        ::unlink(initrd);
        return 1;
    }
    std::string cmdline = cl.out.substr(0, cl.out.find('\n'));

    auto vessel_argv = [&](const std::string& kernel) {
        std::vector<std::string> v = {a.vessel, "boot", "--kernel", kernel, "--memory", mem, "--"};
        v.insert(v.end(), guest_cmd.begin(), guest_cmd.end());
        return v;
    };
    // QEMU boots the bzImage through its microvm firmware and the ELF vmlinux via PVH.
    auto qemu_argv = [&](const std::string& kernel) {
        return std::vector<std::string>{a.qemu,
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
                                        kernel,
                                        "-initrd",
                                        initrd,
                                        "-append",
                                        cmdline};
    };
    struct Config {
        const char* name;
        std::vector<std::string> argv;
        bool is_vessel;
        Series s;
    };
    std::vector<Config> configs = {
        {"vessel/vmlinux", vessel_argv(vmlinux), true, {}},
        {"vessel/bzImage", vessel_argv(bzimage), true, {}},
        {"qemu/vmlinux", qemu_argv(vmlinux), false, {}},
        {"qemu/bzImage", qemu_argv(bzimage), false, {}},
    };

    std::printf("kernel %s, %d MiB, 1 vCPU, %d runs each (interleaved), guest command: echo\n",
                a.kernel.c_str(), a.memory, a.runs);
    for (int i = 0; i < a.runs; ++i) {
        for (auto& c : configs) {
            ProcOptions o;
            o.timeout_s = 120;
            o.marker = kMarker;
            // QEMU's microvm has no i8042 to reset through; stop it once the guest has spoken.
            o.kill_after_marker = !c.is_vessel;
            ProcResult r = run_process(c.argv, o);
            if (r.marker_seconds < 0 || (c.is_vessel && r.status != 0)) {
                ++c.s.failures;
                std::fprintf(stderr, "%s run failed (status %d): %s\n", c.name, r.status,
                             r.err.c_str());
                continue;
            }
            c.s.to_init.push_back(r.marker_seconds);
            c.s.to_exit.push_back(r.seconds);
        }
    }
    for (auto& c : configs) report(c.name, c.s);
    auto best = [&](bool vessel) {
        double b = -1;
        for (auto& c : configs)
            if (c.is_vessel == vessel && !c.s.to_init.empty() && (b < 0 || median(c.s.to_init) < b))
                b = median(c.s.to_init);
        return b;
    };
    auto ratio = [&](int x, int y) {
        return median(configs[x].s.to_init) / median(configs[y].s.to_init);
    };
    std::printf("ratio boot-to-init, same kernel file: vmlinux %.2f, bzImage %.2f\n", ratio(0, 2),
                ratio(1, 3));
    std::printf("ratio boot-to-init, each VMM's fastest path: %.2f\n", best(true) / best(false));

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
        a.vessel, "boot", "--kernel", vmlinux, "--memory",
        mem,      "--",   "sh",       "-c",    std::string("echo ") + kMarker + "; sleep 5"};
    auto vm = sample(vs);
    auto qm = sample(qemu_argv(vmlinux));
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
    return configs[0].s.failures + configs[1].s.failures ? 1 : 0;
}
