#include "oci/vm_plan.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <system_error>

#include "oci_test_util.h"
#include "vmm/fd.h"

namespace vessel::oci {
namespace {

using nlohmann::json;
using test::fixture;
using test::message_of;
using test::TempDir;
using test::write_file;
using Kind = HostPath::Kind;

constexpr uint64_t kMiB = 1u << 20;

const std::string kPodmanId = "7c1e5f3d9a2b4c6e8f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4";
const std::string kPodmanRun =
    "/run/containers/storage/overlay-containers/" + kPodmanId + "/userdata";
const std::string kPodmanLib =
    "/var/lib/containers/storage/overlay-containers/" + kPodmanId + "/userdata";
const std::string kPodmanSecret =
    "/var/lib/containers/storage/secrets/filedriver/secretsdata/0a1b2c3d4e5f60718293a4b5c";
const std::string kDockerDir =
    "/var/lib/docker/containers/4f3b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

// A host described as a table, for configs whose paths (/var/lib/containers/...) do not
// exist here. RealHostProbe is tested against real files below.
class TableProbe final : public HostProbe {
  public:
    TableProbe& file(const std::string& p, uint64_t size, uint32_t mode = 0644) {
        HostPath h;
        h.kind = Kind::Regular;
        h.size = size;
        h.mode = mode;
        paths_[p] = h;
        return *this;
    }
    TableProbe& add(const std::string& p, Kind kind, bool tmpfs = false, uint64_t fs_bytes = 0) {
        HostPath h;
        h.kind = kind;
        h.on_tmpfs = tmpfs;
        h.fs_bytes = fs_bytes;
        paths_[p] = h;
        return *this;
    }
    HostPath inspect(const std::string& path) const override {
        const auto it = paths_.find(path);
        if (it != paths_.end()) return it->second;
        HostPath missing;
        missing.error = ENOENT;
        return missing;
    }

  private:
    std::map<std::string, HostPath> paths_;
};

TableProbe podman_host() {
    TableProbe p;
    p.file(kPodmanRun + "/resolv.conf", 58)
        .file(kPodmanRun + "/hosts", 220)
        .file(kPodmanRun + "/hostname", 6)
        .file(kPodmanRun + "/.containerenv", 0)
        .file(kPodmanSecret, 32, 0400)
        .add(kPodmanLib + "/shm", Kind::Directory, true, 64 * kMiB);
    return p;
}

TableProbe docker_host() {
    TableProbe p;
    p.file(kDockerDir + "/resolv.conf", 40)
        .file(kDockerDir + "/hostname", 13)
        .file(kDockerDir + "/hosts", 174)
        .add(kDockerDir + "/mounts/shm", Kind::Directory, true, 64 * kMiB)
        .add("/srv/data", Kind::Directory)
        .add("/var/run/docker.sock", Kind::Socket)
        .add("/dev/kvm", Kind::CharDevice)
        .file("/var/log/huge.log", 5 * kMiB)
        .add("/boot/vmlinux", Kind::Regular)
        .add("/run/fifo", Kind::Fifo);
    return p;
}

HostInfo host(unsigned cpus = 8, uint64_t mem_mib = 16384) {
    HostInfo h;
    h.cpus = cpus;
    h.memory_bytes = mem_mib * kMiB;
    return h;
}

Bundle bundle_of(const json& config, const std::string& dir = "/b") {
    Bundle b;
    b.dir = dir;
    b.config = dir + "/config.json";
    b.spec = parse_config(config.dump());
    b.rootfs = dir + "/rootfs";
    return b;
}

json minimal() {
    return json::parse(R"({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                                 {"type": "uts"}, {"type": "mount"}]}
    })");
}

VmPlan plan_of(const json& config, const HostProbe& probe = TableProbe(),
               const HostInfo& h = host()) {
    return plan_vm(bundle_of(config), h, probe);
}

std::string plan_error(const json& config, const HostProbe& probe = TableProbe(),
                       const HostInfo& h = host()) {
    return message_of<ConfigError>([&] { plan_of(config, probe, h); });
}

json with_memory(int64_t limit) {
    json j = minimal();
    j["linux"]["resources"]["memory"]["limit"] = limit;
    return j;
}

json with_cpu(const json& cpu) {
    json j = minimal();
    j["linux"]["resources"]["cpu"] = cpu;
    return j;
}

json with_annotation(json j, const std::string& key, const std::string& value) {
    j["annotations"][key] = value;
    return j;
}

TEST(OciMountOptions, FlagsPropagationAndData) {
    const MountOptions o = parse_mount_options(
        {"nosuid", "noexec", "nodev", "ro", "strictatime", "mode=755", "size=65536k", "rprivate"});
    EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY |
                                                  MS_STRICTATIME));
    EXPECT_EQ(o.propagation, static_cast<unsigned long>(MS_PRIVATE | MS_REC));
    EXPECT_EQ(o.data, "mode=755,size=65536k");
    EXPECT_FALSE(o.bind);
    EXPECT_FALSE(o.tmpcopyup);

    // Later options win, as in runc: "rw" clears an earlier "ro".
    EXPECT_EQ(parse_mount_options({"ro", "rw"}).flags, 0ul);
    EXPECT_EQ(parse_mount_options({"nosuid", "suid", "noatime", "atime"}).flags, 0ul);
    EXPECT_EQ(parse_mount_options({"rro", "rnosuid"}).flags,
              static_cast<unsigned long>(MS_RDONLY | MS_NOSUID));

    const MountOptions b = parse_mount_options({"rbind", "shared"});
    EXPECT_TRUE(b.bind);
    EXPECT_EQ(b.flags, static_cast<unsigned long>(MS_BIND | MS_REC));
    EXPECT_EQ(b.propagation, static_cast<unsigned long>(MS_SHARED));
    EXPECT_TRUE(parse_mount_options({"bind"}).bind);

    EXPECT_TRUE(parse_mount_options({"tmpcopyup"}).tmpcopyup);
    EXPECT_EQ(parse_mount_options({"idmap", "ridmap"}).unsupported,
              (std::vector<std::string>{"idmap", "ridmap"}));
    EXPECT_EQ(parse_mount_options({"newinstance", "ptmxmode=0666", "", "gid=5"}).data,
              "newinstance,ptmxmode=0666,gid=5");
}

TEST(OciMountOptions, KnownOptionsAreTheTable) {
    const auto& known = known_mount_options();
    EXPECT_TRUE(std::is_sorted(known.begin(), known.end()));
    for (const char* o : {"ro", "rw", "bind", "rbind", "nosuid", "rprivate", "tmpcopyup", "rro",
                          "nosymfollow", "defaults"})
        EXPECT_NE(std::find(known.begin(), known.end(), o), known.end()) << o;
    for (const char* o : {"idmap", "ridmap", "mode=755", "size"})
        EXPECT_EQ(std::find(known.begin(), known.end(), o), known.end()) << o;
    // A recognised option is never passed to the filesystem as data.
    for (const auto& o : known) EXPECT_EQ(parse_mount_options({o}).data, "") << o;
}

TEST(OciPlan, CpusetCount) {
    EXPECT_EQ(cpuset_count("0"), 1u);
    EXPECT_EQ(cpuset_count("0-3"), 4u);
    EXPECT_EQ(cpuset_count("0-3,6"), 5u);
    EXPECT_EQ(cpuset_count("1,1,1-2"), 2u);
    EXPECT_EQ(cpuset_count("8191"), 1u);
    for (const char* bad : {"", "a", "3-1", "1,", ",1", "1--2", "0-", "8192", "1 ,2", "-1"})
        EXPECT_FALSE(cpuset_count(bad)) << bad;
}

TEST(OciPlan, MemoryFromLimit) {
    EXPECT_EQ(plan_of(minimal()).memory_mib, kDefaultMemoryMib);
    EXPECT_EQ(plan_of(with_memory(-1)).memory_mib, kDefaultMemoryMib);
    EXPECT_EQ(plan_of(with_memory(512 * kMiB)).memory_mib, 512u);
    EXPECT_EQ(plan_of(with_memory(512 * kMiB + 1)).memory_mib, 513u);  // rounded up
    EXPECT_EQ(plan_of(with_memory(64 * kMiB)).memory_mib, 64u);
    EXPECT_TRUE(plan_of(with_memory(64 * kMiB)).warnings.empty());

    const VmPlan small = plan_of(with_memory(40 * kMiB));
    EXPECT_EQ(small.memory_mib, kMinMemoryMib);
    EXPECT_EQ(small.warnings,
              std::vector<std::string>{"memory limit 40 MiB raised to 64 MiB, the smallest guest "
                                       "vessel boots for a container"});
    EXPECT_EQ(plan_error(with_memory(16 * kMiB)),
              "config.json: linux.resources.memory.limit: 16777216 bytes is below the 32 MiB a "
              "micro-VM needs to boot its kernel");
    EXPECT_EQ(plan_of(with_memory(32 * kMiB)).memory_mib, kMinMemoryMib);

    const VmPlan big = plan_of(with_memory(int64_t{64} << 30), TableProbe(), host(8, 4096));
    EXPECT_EQ(big.memory_mib, 4096u);
    EXPECT_EQ(big.warnings, std::vector<std::string>{"memory limit 65536 MiB exceeds the host's "
                                                     "RAM; the guest gets 4096 MiB"});
    EXPECT_EQ(plan_of(minimal(), TableProbe(), host(1, 128)).memory_mib, 128u);
}

TEST(OciPlan, MemoryAnnotation) {
    const auto mem = [](const std::string& v) {
        return with_annotation(with_memory(512 * kMiB), "io.vessel.memory", v);
    };
    EXPECT_EQ(plan_of(mem("300")).memory_mib, 300u);  // overrides the limit
    EXPECT_EQ(plan_of(mem("768M")).memory_mib, 768u);
    EXPECT_EQ(plan_of(mem("768MiB")).memory_mib, 768u);
    EXPECT_EQ(plan_of(mem("2g")).memory_mib, 2048u);
    EXPECT_EQ(plan_of(mem("2GiB")).memory_mib, 2048u);
    EXPECT_EQ(plan_of(mem("32")).memory_mib, 32u);
    EXPECT_EQ(plan_error(mem("lots")),
              "config.json: annotation io.vessel.memory: \"lots\" is not a size in MiB (e.g. "
              "512, 512M, 2G)");
    EXPECT_EQ(plan_error(mem("2T")),
              "config.json: annotation io.vessel.memory: \"2T\" is not a size in MiB (e.g. "
              "512, 512M, 2G)");
    EXPECT_EQ(plan_error(mem("16")),
              "config.json: annotation io.vessel.memory: 16 MiB is below the minimum of 32 MiB");
    EXPECT_EQ(plan_error(mem("20G")),
              "config.json: annotation io.vessel.memory: 20480 MiB exceeds the host's 16384 MiB");
}

TEST(OciPlan, VcpusFromCpuLimits) {
    EXPECT_EQ(plan_of(minimal()).vcpus, 1u);
    EXPECT_EQ(plan_of(with_cpu({{"quota", 150000}, {"period", 100000}})).vcpus, 2u);
    EXPECT_EQ(plan_of(with_cpu({{"quota", 100000}, {"period", 100000}})).vcpus, 1u);
    EXPECT_EQ(plan_of(with_cpu({{"quota", 250000}})).vcpus, 3u);  // kernel default period
    EXPECT_EQ(plan_of(with_cpu({{"quota", 1000}, {"period", 100000}})).vcpus, 1u);
    EXPECT_EQ(plan_of(with_cpu({{"quota", -1}, {"period", 100000}})).vcpus, 1u);
    EXPECT_EQ(plan_of(with_cpu({{"cpus", "0-3"}})).vcpus, 4u);
    EXPECT_EQ(plan_of(with_cpu({{"cpus", "0-3"}, {"quota", 150000}, {"period", 100000}})).vcpus,
              2u);  // both limit: the smaller wins
    EXPECT_EQ(plan_of(with_cpu({{"shares", 1024}})).vcpus, 1u);

    const VmPlan capped = plan_of(with_cpu({{"cpus", "0-15"}}), TableProbe(), host(4));
    EXPECT_EQ(capped.vcpus, 4u);
    EXPECT_EQ(capped.warnings, std::vector<std::string>{"CPU limit asks for 16 vCPUs; the guest "
                                                        "gets 4 (the host's CPUs)"});
    EXPECT_EQ(plan_error(with_cpu({{"cpus", "0-"}})),
              "config.json: linux.resources.cpu.cpus: \"0-\" is not a CPU list (e.g. \"0-3,6\")");
}

TEST(OciPlan, VcpusAnnotation) {
    const auto v = [](const std::string& n) {
        return with_annotation(with_cpu({{"cpus", "0"}}), "io.vessel.vcpus", n);
    };
    EXPECT_EQ(plan_of(v("4")).vcpus, 4u);
    EXPECT_EQ(plan_of(v("128"), TableProbe(), host(2)).vcpus, 128u);  // explicit: may overcommit
    for (const char* bad : {"0", "129", "-1", "two", "", "1.5", "00001"})
        EXPECT_EQ(plan_error(v(bad)),
                  "config.json: annotation io.vessel.vcpus: " + json(std::string(bad)).dump() +
                      " must be a number of vCPUs from 1 to 128")
            << bad;
}

TEST(OciPlan, VesselAnnotations) {
    const TableProbe probe = docker_host();
    json j = with_annotation(minimal(), "io.vessel.kernel", "/boot/vmlinux");
    j = with_annotation(j, "io.vessel.template", "python-3.12");
    const VmPlan p = plan_of(j, probe);
    EXPECT_EQ(p.kernel, "/boot/vmlinux");
    EXPECT_EQ(p.template_name, "python-3.12");
    EXPECT_FALSE(p.warm_start.has_value());
    EXPECT_EQ(plan_of(with_annotation(minimal(), "io.vessel.warm-start", "true"), probe).warm_start,
              std::optional<bool>(true));
    EXPECT_EQ(
        plan_of(with_annotation(minimal(), "io.vessel.warm-start", "false"), probe).warm_start,
        std::optional<bool>(false));
    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.warm-start", "yes")),
              "config.json: annotation io.vessel.warm-start: \"yes\" must be \"true\" or "
              "\"false\"");

    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.kernel", "/boot/none"), probe),
              "config.json: annotation io.vessel.kernel: /boot/none: no such file");
    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.kernel", "vmlinux"), probe),
              "config.json: annotation io.vessel.kernel: \"vmlinux\" must be an absolute path");
    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.kernel", "/srv/data"), probe),
              "config.json: annotation io.vessel.kernel: /srv/data: not a regular file");
    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.template", "../x")),
              "config.json: annotation io.vessel.template: \"../x\" is not a template name "
              "(letters, digits, '_', '.', '+', '-')");
    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.memroy", "512")),
              "config.json: annotation io.vessel.memroy: unknown vessel annotation (known: "
              "io.vessel.kernel, io.vessel.memory, io.vessel.vcpus, io.vessel.template, "
              "io.vessel.warm-start, io.vessel.mounts.ignore-unsupported, "
              "io.vessel.devices.ignore-unsupported, "
              "io.vessel.hooks.ignore-unsupported, io.vessel.jail)");
    EXPECT_EQ(plan_error(with_annotation(minimal(), "io.vessel.mounts.ignore-unsupported", "yes")),
              "config.json: annotation io.vessel.mounts.ignore-unsupported: \"yes\" must be "
              "\"true\" or \"false\"");
    // Other annotations are the engine's business.
    EXPECT_NO_THROW(plan_of(with_annotation(minimal(), "io.vesselx", "1")));
    EXPECT_NO_THROW(plan_of(with_annotation(minimal(), "org.example.vessel.memory", "1")));
}

TEST(OciPlan, PodmanConfig) {
    const Bundle b = bundle_of(json::parse(fixture("podman.json")));
    const VmPlan p = plan_vm(b, host(), podman_host());
    EXPECT_TRUE(p.warnings.empty()) << p.warnings.front();
    EXPECT_EQ(p.memory_mib, 512u);
    EXPECT_EQ(p.vcpus, 2u);
    EXPECT_EQ(p.rootfs, "/b/rootfs");
    EXPECT_FALSE(p.rootfs_readonly);
    EXPECT_EQ(p.hostname, "web-1");
    EXPECT_EQ(p.process.hostname, "web-1");
    EXPECT_EQ(p.process.args.front(), "/usr/bin/python3");
    EXPECT_EQ(p.process.cwd, "/srv");
    EXPECT_EQ(p.process.uid, 1000u);
    EXPECT_EQ(p.process.gid, 1000u);
    EXPECT_EQ(p.process.umask, 18u);
    EXPECT_EQ(p.process.additional_gids, (std::vector<uint32_t>{1000, 10}));
    EXPECT_EQ(p.process.rlimits.size(), 2u);
    EXPECT_FALSE(p.process.terminal);
    EXPECT_EQ(p.process.env.size(), 5u);
    EXPECT_EQ(p.network.mode, NetworkMode::Join);
    EXPECT_EQ(p.network.netns_path, "/run/netns/netns-2d6b8f0a-4c1e-3a5b-7d9f-1e3c5a7b9d0f");
    EXPECT_FALSE(p.user_namespace.enabled);
    EXPECT_EQ(p.pids_limit, 2048);
    EXPECT_EQ(p.sysctl.at("net.ipv4.ping_group_range"), "0 0");
    EXPECT_EQ(p.masked_paths.size(), 11u);
    EXPECT_EQ(p.readonly_paths.size(), 6u);
    ASSERT_EQ(p.host_hooks.create_runtime.size(), 1u);
    EXPECT_EQ(p.host_hooks.create_runtime[0].timeout, 10);
    EXPECT_EQ(p.host_hooks.poststop.size(), 1u);
    EXPECT_TRUE(p.skipped_mounts.empty());

    // Every mount is kept, in config order.
    ASSERT_EQ(p.mounts.size(), 13u);
    for (size_t i = 0; i < p.mounts.size(); ++i) {
        EXPECT_EQ(p.mounts[i].index, i);
        EXPECT_EQ(p.mounts[i].destination, b.spec.mounts[i].destination);
    }
    using GK = GuestMount::Kind;
    const auto& dev = p.mounts[1];
    EXPECT_EQ(dev.kind, GK::Filesystem);
    EXPECT_EQ(dev.type, "tmpfs");
    EXPECT_EQ(dev.source, "tmpfs");
    EXPECT_EQ(dev.options.flags, static_cast<unsigned long>(MS_NOSUID | MS_STRICTATIME));
    EXPECT_EQ(dev.options.data, "mode=755,size=65536k");

    const auto& resolv = p.mounts[5];
    EXPECT_EQ(resolv.kind, GK::CopiedFile);
    EXPECT_EQ(resolv.destination, "/etc/resolv.conf");
    EXPECT_EQ(resolv.source, kPodmanRun + "/resolv.conf");
    EXPECT_EQ(resolv.file_size, 58u);
    EXPECT_EQ(resolv.options.flags & MS_RDONLY, 0ul);
    for (size_t i : {6, 8, 9}) EXPECT_EQ(p.mounts[i].kind, GK::CopiedFile) << i;
    EXPECT_EQ(p.mounts[9].file_size, 0u);  // /run/.containerenv is empty

    const auto& shm = p.mounts[7];
    EXPECT_EQ(shm.kind, GK::Filesystem);
    EXPECT_EQ(shm.destination, "/dev/shm");
    EXPECT_EQ(shm.type, "tmpfs");
    EXPECT_EQ(shm.source, "shm");
    EXPECT_FALSE(shm.options.bind);
    EXPECT_EQ(shm.options.flags, static_cast<unsigned long>(MS_NOSUID | MS_NOEXEC | MS_NODEV));
    EXPECT_EQ(shm.options.propagation, 0ul);
    EXPECT_EQ(shm.options.data, "mode=1777,size=67108864");

    const auto& secret = p.mounts[10];
    EXPECT_EQ(secret.kind, GK::CopiedFile);
    EXPECT_EQ(secret.destination, "/run/secrets/api-token");
    EXPECT_EQ(secret.options.flags & MS_RDONLY, static_cast<unsigned long>(MS_RDONLY));
    EXPECT_EQ(secret.file_mode, 0400u);

    EXPECT_EQ(p.mounts[11].type, "cgroup");
    EXPECT_EQ(p.mounts[12].type, "tmpfs");
    EXPECT_TRUE(p.mounts[12].options.tmpcopyup);
}

TEST(OciPlan, DockerConfig) {
    const VmPlan p = plan_of(json::parse(fixture("docker.json")), docker_host(), host(8));
    EXPECT_TRUE(p.warnings.empty()) << p.warnings.front();
    EXPECT_EQ(p.memory_mib, 256u);
    EXPECT_EQ(p.vcpus, 2u);
    EXPECT_EQ(p.network.mode, NetworkMode::New);  // libnetwork-setkey configures it
    ASSERT_EQ(p.host_hooks.prestart.size(), 1u);
    EXPECT_EQ(p.host_hooks.prestart[0].args[0], "libnetwork-setkey");
    EXPECT_FALSE(p.pids_limit);
    ASSERT_EQ(p.mounts.size(), 10u);
    for (size_t i : {6, 7, 8}) {
        EXPECT_EQ(p.mounts[i].kind, GuestMount::Kind::CopiedFile) << i;
        EXPECT_EQ(p.mounts[i].source.rfind(kDockerDir + "/", 0), 0u) << i;
    }
    EXPECT_EQ(p.mounts[9].type, "tmpfs");
    EXPECT_EQ(p.mounts[9].source, "shm");
    EXPECT_EQ(p.mounts[9].options.data, "mode=1777,size=67108864");
    EXPECT_EQ(p.mounts[9].options.flags, 0ul);  // rbind and rprivate dropped
}

json docker_with(const std::vector<json>& extra_mounts) {
    json j = json::parse(fixture("docker.json"));
    for (const auto& m : extra_mounts) j["mounts"].push_back(m);
    return j;
}

TEST(OciPlan, UnsupportedMountsAreRefusedByName) {
    const json j = docker_with({
        {{"destination", "/data"},
         {"type", "bind"},
         {"source", "/srv/data"},
         {"options", {"rbind", "rprivate"}}},
        {{"destination", "/var/run/docker.sock"},
         {"source", "/var/run/docker.sock"},
         {"options", {"rbind"}}},
        {{"destination", "/dev/kvm"}, {"source", "/dev/kvm"}, {"options", {"bind"}}},
        {{"destination", "/var/log/app.log"},
         {"source", "/var/log/huge.log"},
         {"options", {"bind"}}},
        {{"destination", "/layers"},
         {"type", "overlay"},
         {"source", "overlay"},
         {"options", {"lowerdir=/a"}}},
        {{"destination", "/mapped"}, {"type", "tmpfs"}, {"options", {"idmap"}}},
        {{"destination", "/pipe"}, {"source", "/run/fifo"}, {"options", {"bind"}}},
        {{"destination", "/odd"}, {"source", "x"}},
    });
    EXPECT_EQ(plan_error(j, docker_host()),
              "config.json: mounts[10] (/data): bind mount of host directory /srv/data (a "
              "volume) is not supported in a micro-VM\n"
              "config.json: mounts[11] (/var/run/docker.sock): host socket /var/run/docker.sock "
              "cannot be reached from inside a micro-VM\n"
              "config.json: mounts[12] (/dev/kvm): host device /dev/kvm cannot be passed into a "
              "micro-VM\n"
              "config.json: mounts[13] (/var/log/app.log): host file /var/log/huge.log is 5242880 "
              "bytes; vessel copies bind-mounted files of at most 1 MiB into the guest\n"
              "config.json: mounts[14] (/layers): filesystem type \"overlay\" is not supported in "
              "a micro-VM (the guest mounts proc, sysfs, tmpfs, devpts, mqueue, cgroup, "
              "cgroup2)\n"
              "config.json: mounts[15] (/mapped): mount option \"idmap\" (ID-mapped mounts) is "
              "not supported in a micro-VM\n"
              "config.json: mounts[16] (/pipe): host FIFO /run/fifo cannot be shared with a "
              "micro-VM\n"
              "config.json: mounts[17] (/odd): no filesystem type and not a bind mount\n"
              "config.json: set annotation io.vessel.mounts.ignore-unsupported=true to skip them");
}

TEST(OciPlan, IgnoreUnsupportedMountsAnnotation) {
    json j = docker_with({
        {{"destination", "/data"},
         {"type", "bind"},
         {"source", "/srv/data"},
         {"options", {"rbind"}}},
        {{"destination", "/var/run/docker.sock"},
         {"type", "bind"},
         {"source", "/var/run/docker.sock"}},
    });
    j["annotations"]["io.vessel.mounts.ignore-unsupported"] = "true";
    const VmPlan p = plan_of(j, docker_host());
    EXPECT_EQ(p.mounts.size(), 10u);
    ASSERT_EQ(p.skipped_mounts.size(), 2u);
    EXPECT_EQ(p.skipped_mounts[0].index, 10u);
    EXPECT_EQ(p.skipped_mounts[0].destination, "/data");
    EXPECT_EQ(p.skipped_mounts[1].destination, "/var/run/docker.sock");
    EXPECT_EQ(p.warnings,
              (std::vector<std::string>{
                  "mounts[10] (/data) skipped: bind mount of host directory /srv/data (a volume) "
                  "is not supported in a micro-VM",
                  "mounts[11] (/var/run/docker.sock) skipped: host socket /var/run/docker.sock "
                  "cannot be reached from inside a micro-VM"}));
    j["annotations"]["io.vessel.mounts.ignore-unsupported"] = "false";
    EXPECT_NE(plan_error(j, docker_host()).find("mounts[10] (/data)"), std::string::npos);
}

TEST(OciPlan, MissingBindSourceIsAlwaysAnError) {
    json j = docker_with({{{"destination", "/x"}, {"type", "bind"}, {"source", "/gone"}}});
    j["annotations"]["io.vessel.mounts.ignore-unsupported"] = "true";
    EXPECT_EQ(plan_error(j, docker_host()),
              "config.json: mounts[10].source: /gone: no such file or directory");
    json k = docker_with({{{"destination", "/x"}, {"type", "bind"}}});
    EXPECT_EQ(plan_error(k, docker_host()),
              "config.json: mounts[10].source: required for a bind mount");
}

TEST(OciPlan, ShmThatIsNotATmpfsIsAVolume) {
    TableProbe probe = docker_host();
    probe.add(kDockerDir + "/mounts/shm", Kind::Directory, false);
    EXPECT_NE(plan_error(json::parse(fixture("docker.json")), probe)
                  .find("mounts[9] (/dev/shm): bind mount of host directory"),
              std::string::npos);
    // Explicit size and mode are kept.
    json j = minimal();
    j["mounts"] = {{{"destination", "/dev/shm/"},
                    {"type", "bind"},
                    {"source", "/shm"},
                    {"options", {"bind", "size=1m", "mode=700"}}}};
    probe.add("/shm", Kind::Directory, true, 64 * kMiB);
    const VmPlan p = plan_of(j, probe);
    EXPECT_EQ(p.mounts[0].type, "tmpfs");  // "/dev/shm/" is /dev/shm
    EXPECT_EQ(p.mounts[0].options.data, "size=1m,mode=700");
}

TEST(OciPlan, CopiedFilesAreCappedInTotal) {
    TableProbe probe;
    json j = minimal();
    for (int i = 0; i < 17; ++i) {
        const std::string src = "/f" + std::to_string(i);
        probe.file(src, kMiB);
        j["mounts"].push_back(
            {{"destination", "/etc/f" + std::to_string(i)}, {"type", "bind"}, {"source", src}});
    }
    EXPECT_EQ(plan_error(j, probe),
              "config.json: mounts[16] (/etc/f16): bind-mounted files add up to more than 16 MiB, "
              "the most vessel copies into a guest\n"
              "config.json: set annotation io.vessel.mounts.ignore-unsupported=true to skip them");
}

TEST(OciPlan, RelativeBindSourceIsInTheBundle) {
    TableProbe probe;
    probe.file("/b/files/motd", 12);
    json j = minimal();
    j["mounts"] = {{{"destination", "/etc/motd"}, {"source", "files/motd"}, {"options", {"bind"}}}};
    const VmPlan p = plan_of(j, probe);
    ASSERT_EQ(p.mounts.size(), 1u);
    EXPECT_EQ(p.mounts[0].source, "/b/files/motd");
}

TEST(OciPlan, Devices) {
    json j = minimal();
    j["linux"]["devices"] = {
        {{"type", "c"}, {"path", "/dev/null"}, {"major", 1}, {"minor", 3}},
        {{"type", "c"}, {"path", "/dev/fuse"}, {"major", 10}, {"minor", 229}},
        {{"type", "b"}, {"path", "/dev/sda"}, {"major", 8}, {"minor", 0}},
    };
    EXPECT_EQ(plan_error(j),
              "config.json: linux.devices[1] (/dev/fuse): host devices cannot be passed into a "
              "micro-VM\n"
              "config.json: linux.devices[2] (/dev/sda): host devices cannot be passed into a "
              "micro-VM\n"
              "config.json: set annotation io.vessel.devices.ignore-unsupported=true to skip them");
    j["annotations"]["io.vessel.devices.ignore-unsupported"] = "true";
    const VmPlan p = plan_of(j);
    EXPECT_EQ(p.warnings.size(), 2u);
    EXPECT_EQ(p.warnings[0],
              "linux.devices[1] (/dev/fuse) skipped: host devices cannot be passed into a "
              "micro-VM");
}

TEST(OciPlan, Hooks) {
    json j = minimal();
    j["hooks"] = {{"prestart", {{{"path", "/bin/a"}}}},
                  {"createRuntime", {{{"path", "/bin/b"}}}},
                  {"createContainer", {{{"path", "/bin/c"}}, {{"path", "/bin/c2"}}}},
                  {"startContainer", {{{"path", "/bin/d"}}}},
                  {"poststart", {{{"path", "/bin/e"}}}},
                  {"poststop", {{{"path", "/bin/f"}}}}};
    EXPECT_EQ(plan_error(j),
              "config.json: hooks.createContainer: 2 hook(s) must run inside the container's "
              "namespaces, which are in the guest, where host binaries cannot run\n"
              "config.json: hooks.startContainer: 1 hook(s) must run inside the container's "
              "namespaces, which are in the guest, where host binaries cannot run\n"
              "config.json: set annotation io.vessel.hooks.ignore-unsupported=true to skip them");
    j["annotations"]["io.vessel.hooks.ignore-unsupported"] = "true";
    const VmPlan p = plan_of(j);
    EXPECT_EQ(p.warnings.size(), 2u);
    EXPECT_EQ(p.host_hooks.prestart[0].path, "/bin/a");
    EXPECT_EQ(p.host_hooks.create_runtime[0].path, "/bin/b");
    EXPECT_EQ(p.host_hooks.poststart[0].path, "/bin/e");
    EXPECT_EQ(p.host_hooks.poststop[0].path, "/bin/f");
    EXPECT_TRUE(p.host_hooks.create_container.empty());
    EXPECT_TRUE(p.host_hooks.start_container.empty());
}

TEST(OciPlan, Namespaces) {
    json j = minimal();
    j["linux"]["namespaces"] = {{{"type", "mount"}}};
    const VmPlan host_net = plan_of(j);
    EXPECT_EQ(host_net.network.mode, NetworkMode::None);
    EXPECT_EQ(host_net.warnings,
              (std::vector<std::string>{
                  "no network namespace: the host's network cannot be shared with a micro-VM; "
                  "the guest has loopback only",
                  "no pid namespace: the host's cannot be shared with a micro-VM; the container "
                  "uses the guest's",
                  "no ipc namespace: the host's cannot be shared with a micro-VM; the container "
                  "uses the guest's",
                  "no uts namespace: the host's cannot be shared with a micro-VM; the container "
                  "uses the guest's"}));

    j = minimal();
    j["linux"]["namespaces"][2]["path"] = "/proc/4242/ns/ipc";  // a pod's infra container
    j["linux"]["namespaces"].push_back({{"type", "user"}});
    j["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
    j["linux"]["gidMappings"] = {{{"containerID", 0}, {"hostID", 100000}, {"size", 65536}}};
    const VmPlan pod = plan_of(j);
    EXPECT_EQ(pod.warnings, std::vector<std::string>{"linux.namespaces[2] (ipc): /proc/4242/ns/ipc "
                                                     "is not joined: the container has its own "
                                                     "guest kernel"});
    EXPECT_TRUE(pod.user_namespace.enabled);
    EXPECT_TRUE(pod.user_namespace.path.empty());
    ASSERT_EQ(pod.user_namespace.uid_mappings.size(), 1u);
    EXPECT_EQ(pod.user_namespace.uid_mappings[0].host_id, 100000u);
    EXPECT_EQ(pod.user_namespace.gid_mappings[0].size, 65536u);
}

TEST(OciPlan, Sysctl) {
    json j = minimal();
    j["linux"]["sysctl"] = {{"net.core.somaxconn", "1024"}, {"kernel/msgmax", "8192"}};
    EXPECT_EQ(plan_of(j).sysctl.size(), 2u);
    for (const char* bad : {"../../etc/passwd", "net..x", "", ".net", "net core"}) {
        json k = minimal();
        k["linux"]["sysctl"] = {{bad, "1"}};
        EXPECT_EQ(plan_error(k), "config.json: linux.sysctl[" + json(std::string(bad)).dump() +
                                     "]: not a sysctl name")
            << bad;
    }
}

TEST(OciPlan, GuestProcessForExec) {
    Process p;
    p.args = {"ls"};
    p.cwd = "/tmp";
    p.terminal = true;
    p.console_size = ConsoleSize{24, 80};
    p.user.uid = 7;
    p.rlimits = {{"RLIMIT_NOFILE", 10, 5}};
    const GuestProcess g = guest_process(p);
    EXPECT_EQ(g.args, p.args);
    EXPECT_EQ(g.cwd, "/tmp");
    EXPECT_TRUE(g.terminal);
    EXPECT_EQ(g.console_size->width, 80u);
    EXPECT_EQ(g.uid, 7u);
    EXPECT_EQ(g.rlimits[0].soft, 5u);
    EXPECT_TRUE(g.hostname.empty());
}

TEST(OciHostProbe, RealFiles) {
    TempDir dir;
    const RealHostProbe probe;
    write_file(dir / "f", "hello");
    ::chmod((dir / "f").c_str(), 0640);
    HostPath f = probe.inspect(dir / "f");
    EXPECT_EQ(f.kind, Kind::Regular);
    EXPECT_EQ(f.size, 5u);
    EXPECT_EQ(f.mode, 0640u);
    EXPECT_EQ(probe.inspect(dir.str()).kind, Kind::Directory);
    EXPECT_EQ(probe.inspect("/dev/null").kind, Kind::CharDevice);
    ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
    EXPECT_EQ(probe.inspect(dir / "fifo").kind, Kind::Fifo);

    UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(sock);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string spath = dir / "s";
    ASSERT_LT(spath.size(), sizeof addr.sun_path);
    std::copy(spath.begin(), spath.end(), addr.sun_path);
    ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(probe.inspect(spath).kind, Kind::Socket);

    ASSERT_EQ(::symlink((dir / "f").c_str(), (dir / "link").c_str()), 0);
    EXPECT_EQ(probe.inspect(dir / "link").kind, Kind::Regular);  // followed, as mount does

    const HostPath missing = probe.inspect(dir / "nope");
    EXPECT_EQ(missing.kind, Kind::Missing);
    EXPECT_EQ(missing.error, ENOENT);
}

// The podman config against real files: its bind sources recreated under a temporary
// directory, shm on the real tmpfs at /dev/shm.
TEST(OciPlan, PodmanConfigOnRealFiles) {
    struct statfs shm_fs {};
    if (::statfs("/dev/shm", &shm_fs) != 0 ||
        static_cast<unsigned long>(shm_fs.f_type) != 0x01021994 /* TMPFS_MAGIC */)
        GTEST_SKIP() << "/dev/shm is not a tmpfs here";
    TempDir files;
    TempDir shm("/dev/shm");
    json j = json::parse(fixture("podman.json"));
    std::map<std::string, std::string> contents;
    for (auto& m : j["mounts"]) {
        if (m["type"] != "bind") continue;
        const std::string dest = m["destination"];
        if (dest == "/dev/shm") {
            m["source"] = shm.str();
            continue;
        }
        const std::string src = files / dest.substr(1);
        contents[dest] = "content of " + dest + "\n";
        write_file(src, contents[dest]);
        m["source"] = src;
    }
    const VmPlan p = plan_vm(bundle_of(j), host(), RealHostProbe());
    ASSERT_EQ(p.mounts.size(), 13u);
    size_t copied = 0;
    for (const auto& m : p.mounts) {
        if (m.kind != GuestMount::Kind::CopiedFile) continue;
        ++copied;
        EXPECT_EQ(read_copied_file(m), contents.at(m.destination));
        EXPECT_EQ(m.file_size, contents.at(m.destination).size());
    }
    EXPECT_EQ(copied, 5u);
    const uint64_t shm_bytes = static_cast<uint64_t>(shm_fs.f_blocks) * shm_fs.f_bsize;
    EXPECT_EQ(p.mounts[7].type, "tmpfs");
    EXPECT_EQ(p.mounts[7].options.data, "mode=1777,size=" + std::to_string(shm_bytes));
}

TEST(OciPlan, ReadCopiedFileChecksAgain) {
    TempDir dir;
    GuestMount m;
    m.kind = GuestMount::Kind::CopiedFile;
    m.destination = "/etc/hosts";
    m.source = dir / "hosts";
    write_file(m.source, std::string(kMaxCopiedFileBytes, 'x'));
    EXPECT_EQ(read_copied_file(m).size(), kMaxCopiedFileBytes);
    write_file(m.source, std::string(kMaxCopiedFileBytes + 1, 'x'));  // grew since planning
    EXPECT_EQ(message_of<ConfigError>([&] { read_copied_file(m); }),
              m.source + ": grew past 1 MiB, too large to copy into the guest at /etc/hosts");
    ::unlink(m.source.c_str());
    ::mkfifo(m.source.c_str(), 0600);  // replaced by something that would block
    EXPECT_EQ(message_of<ConfigError>([&] { read_copied_file(m); }),
              m.source + ": no longer a regular file, cannot copy it to /etc/hosts");
    ::unlink(m.source.c_str());
    EXPECT_EQ(
        message_of<std::system_error>([&] { read_copied_file(m); }),
        "opening " + m.source + " to copy into the guest at /etc/hosts: No such file or directory");
}

TEST(OciPlan, ThisHost) {
    const HostInfo h = HostInfo::current();
    EXPECT_GE(h.cpus, 1u);
    EXPECT_GT(h.memory_bytes, 32 * kMiB);
    TempDir dir;
    ::mkdir((dir / "rootfs").c_str(), 0755);
    write_file(dir / "config.json", fixture("runc-default.json"));
    const VmPlan p = plan_vm(load_bundle(dir.str()));
    EXPECT_EQ(p.rootfs, dir / "rootfs");
    EXPECT_TRUE(p.rootfs_readonly);
    EXPECT_EQ(p.memory_mib, std::min<uint64_t>(kDefaultMemoryMib, h.memory_bytes / kMiB));
    EXPECT_EQ(p.vcpus, 1u);
    EXPECT_EQ(p.network.mode, NetworkMode::New);
    EXPECT_EQ(p.mounts.size(), 7u);
    EXPECT_TRUE(p.process.terminal);
}

}  // namespace
}  // namespace vessel::oci
