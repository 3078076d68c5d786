#include "oci/spec.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "oci_test_util.h"

namespace vessel::oci {
namespace {

using nlohmann::json;
using test::fixture;
using test::message_of;
using test::TempDir;
using test::write_file;

json minimal() {
    return json::parse(R"({
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"}
    })");
}

std::string error_of(const std::function<void(json&)>& mutate) {
    json j = minimal();
    mutate(j);
    return message_of<ConfigError>([&] { parse_config(j.dump()); });
}

TEST(OciSpec, RuncDefaultSpec) {
    const Spec s = parse_config(fixture("runc-default.json"));
    EXPECT_EQ(s.oci_version, "1.0.2-dev");
    EXPECT_TRUE(s.warnings.empty());
    EXPECT_TRUE(s.process.terminal);
    EXPECT_EQ(s.process.user.uid, 0u);
    EXPECT_EQ(s.process.args, std::vector<std::string>{"sh"});
    ASSERT_EQ(s.process.env.size(), 2u);
    EXPECT_EQ(s.process.env[1], "TERM=xterm");
    EXPECT_EQ(s.process.cwd, "/");
    ASSERT_TRUE(s.process.capabilities);
    EXPECT_EQ(s.process.capabilities->bounding.size(), 3u);
    EXPECT_TRUE(s.process.capabilities->inheritable.empty());
    ASSERT_EQ(s.process.rlimits.size(), 1u);
    EXPECT_EQ(s.process.rlimits[0].type, "RLIMIT_NOFILE");
    EXPECT_EQ(s.process.rlimits[0].hard, 1024u);
    EXPECT_TRUE(s.process.no_new_privileges);
    EXPECT_EQ(s.root.path, "rootfs");
    EXPECT_TRUE(s.root.readonly);
    EXPECT_EQ(s.hostname, "runc");
    ASSERT_EQ(s.mounts.size(), 7u);
    EXPECT_EQ(s.mounts[1].destination, "/dev");
    EXPECT_EQ(s.mounts[1].type, "tmpfs");
    EXPECT_EQ(s.mounts[1].options,
              (std::vector<std::string>{"nosuid", "strictatime", "mode=755", "size=65536k"}));
    EXPECT_EQ(s.mounts[6].type, "cgroup");
    EXPECT_EQ(s.linux_.namespaces.size(), 6u);
    ASSERT_NE(s.linux_.find_namespace("network"), nullptr);
    EXPECT_TRUE(s.linux_.find_namespace("network")->path.empty());
    EXPECT_EQ(s.linux_.find_namespace("user"), nullptr);
    EXPECT_EQ(s.linux_.masked_paths.size(), 10u);
    EXPECT_EQ(s.linux_.readonly_paths.size(), 5u);
    EXPECT_FALSE(s.linux_.resources.memory);
    EXPECT_TRUE(s.linux_.seccomp.empty());
}

TEST(OciSpec, PodmanSpec) {
    const Spec s = parse_config(fixture("podman.json"));
    EXPECT_EQ(s.oci_version, "1.1.0");
    EXPECT_FALSE(s.process.terminal);
    EXPECT_EQ(s.process.user.uid, 1000u);
    EXPECT_EQ(s.process.user.gid, 1000u);
    EXPECT_EQ(s.process.user.umask, 18u);
    EXPECT_EQ(s.process.user.additional_gids, (std::vector<uint32_t>{1000, 10}));
    EXPECT_EQ(s.process.args.front(), "/usr/bin/python3");
    EXPECT_EQ(s.process.cwd, "/srv");
    EXPECT_EQ(s.process.rlimits.size(), 2u);
    EXPECT_EQ(s.process.oom_score_adj, 0);
    EXPECT_EQ(s.process.selinux_label, "system_u:system_r:container_t:s0:c123,c456");
    EXPECT_EQ(s.hostname, "web-1");
    ASSERT_EQ(s.mounts.size(), 13u);
    EXPECT_EQ(s.mounts[7].destination, "/dev/shm");
    EXPECT_EQ(s.mounts[7].type, "bind");
    ASSERT_EQ(s.hooks.create_runtime.size(), 1u);
    EXPECT_EQ(s.hooks.create_runtime[0].path, "/usr/libexec/oci/hooks.d/netlog");
    EXPECT_EQ(s.hooks.create_runtime[0].args, (std::vector<std::string>{"netlog", "--verbose"}));
    EXPECT_EQ(s.hooks.create_runtime[0].env,
              std::vector<std::string>{"NETLOG_DIR=/var/log/netlog"});
    EXPECT_EQ(s.hooks.create_runtime[0].timeout, 10);
    ASSERT_EQ(s.hooks.poststop.size(), 1u);
    EXPECT_FALSE(s.hooks.poststop[0].timeout);
    EXPECT_TRUE(s.hooks.prestart.empty());
    EXPECT_EQ(s.annotations.size(), 8u);
    EXPECT_EQ(s.annotations.at("io.container.manager"), "libpod");
    ASSERT_TRUE(s.linux_.resources.memory);
    EXPECT_EQ(s.linux_.resources.memory->limit, 536870912);
    EXPECT_EQ(s.linux_.resources.memory->swap, 1073741824);
    EXPECT_FALSE(s.linux_.resources.memory->reservation);
    ASSERT_TRUE(s.linux_.resources.cpu);
    EXPECT_EQ(s.linux_.resources.cpu->quota, 150000);
    EXPECT_EQ(s.linux_.resources.cpu->period, 100000u);
    EXPECT_EQ(s.linux_.resources.pids_limit, 2048);
    EXPECT_TRUE(s.linux_.uid_mappings.empty());  // "uidMappings": null
    ASSERT_NE(s.linux_.find_namespace("network"), nullptr);
    EXPECT_EQ(s.linux_.find_namespace("network")->path,
              "/run/netns/netns-2d6b8f0a-4c1e-3a5b-7d9f-1e3c5a7b9d0f");
    EXPECT_EQ(s.linux_.sysctl.at("net.ipv4.ping_group_range"), "0 0");
    EXPECT_EQ(s.linux_.cgroups_path.rfind("machine.slice:libpod:", 0), 0u);
    const json seccomp = json::parse(s.linux_.seccomp);
    EXPECT_EQ(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
    EXPECT_EQ(s.linux_.mount_label, "system_u:object_r:container_file_t:s0:c123,c456");
}

TEST(OciSpec, DockerSpec) {
    const Spec s = parse_config(fixture("docker.json"));
    EXPECT_EQ(s.oci_version, "1.0.2-dev");
    EXPECT_EQ(s.process.args, (std::vector<std::string>{"nginx", "-g", "daemon off;"}));
    EXPECT_EQ(s.process.apparmor_profile, "docker-default");
    EXPECT_EQ(s.process.user.additional_gids.size(), 11u);
    ASSERT_EQ(s.mounts.size(), 10u);
    EXPECT_EQ(s.mounts[6].destination, "/etc/resolv.conf");
    EXPECT_TRUE(s.mounts[6].type.empty());  // a bind told by its options alone
    EXPECT_EQ(s.mounts[6].options, (std::vector<std::string>{"rbind", "rprivate"}));
    ASSERT_EQ(s.hooks.prestart.size(), 1u);
    EXPECT_EQ(s.hooks.prestart[0].path, "/proc/1234/exe");
    EXPECT_EQ(s.hooks.prestart[0].args[0], "libnetwork-setkey");
    EXPECT_EQ(s.linux_.resources.memory->limit, 268435456);
    EXPECT_EQ(s.linux_.resources.cpu->shares, 0u);
    EXPECT_EQ(s.linux_.resources.cpu->quota, 200000);
    EXPECT_FALSE(s.linux_.resources.pids_limit);  // "limit": null
    ASSERT_NE(s.linux_.find_namespace("network"), nullptr);
    EXPECT_TRUE(s.linux_.find_namespace("network")->path.empty());
    EXPECT_TRUE(s.annotations.empty());
}

TEST(OciSpec, MalformedFixtures) {
    EXPECT_EQ(message_of<ConfigError>([] { parse_config(fixture("malformed/not-json.json")); }),
              "config.json: not valid JSON at line 4 column 12: syntax error while parsing "
              "object separator - unexpected '['; expected ':'");
    EXPECT_EQ(message_of<ConfigError>([] { parse_config(fixture("malformed/empty-args.json")); }),
              "config.json: process.args: must be a non-empty array of strings");
    EXPECT_EQ(message_of<ConfigError>([] { parse_config(fixture("malformed/no-root.json")); }),
              "config.json: root.path: required");
    EXPECT_EQ(
        message_of<ConfigError>([] { parse_config(fixture("malformed/relative-mount.json")); }),
        "config.json: mounts[3].destination: must be an absolute path");
    EXPECT_EQ(
        message_of<ConfigError>([] { parse_config(fixture("malformed/old-version.json")); }),
        "config.json: ociVersion \"0.9.0\" is not supported (vessel supports 1.0.0 to 1.2.x)");
    EXPECT_EQ(message_of<ConfigError>([] { parse_config(fixture("malformed/wrong-types.json")); }),
              "config.json: process.terminal: must be a boolean");
}

TEST(OciSpec, InvalidJsonPositions) {
    EXPECT_EQ(message_of<ConfigError>([] { parse_config(" \n"); }),
              "config.json: not valid JSON: the file is empty");
    EXPECT_EQ(message_of<ConfigError>([] { parse_config("{\n\"a\": 1,\n}"); }),
              "config.json: not valid JSON at line 3 column 1: syntax error while parsing "
              "object key - unexpected '}'; expected string literal");
    EXPECT_EQ(message_of<ConfigError>([] { parse_config("[1, 2]"); }),
              "config.json: must be a JSON object");
    EXPECT_EQ(message_of<ConfigError>([] { parse_config("{}", "/b/config.json"); }),
              "/b/config.json: ociVersion: required");
}

// Every validation message, each from a minimal config with one thing wrong.
TEST(OciSpec, FieldErrors) {
    struct Case {
        std::function<void(json&)> mutate;
        std::string message;
    };
    const std::vector<Case> cases = {
        {[](json& j) { j.erase("ociVersion"); }, "ociVersion: required"},
        {[](json& j) { j["ociVersion"] = 1; }, "ociVersion: must be a string"},
        {[](json& j) { j["ociVersion"] = "1.0"; }, "ociVersion: \"1.0\" is not a semantic version"},
        {[](json& j) { j["ociVersion"] = "1.0.0-"; },
         "ociVersion: \"1.0.0-\" is not a semantic version"},
        {[](json& j) { j["ociVersion"] = "2.0.0"; },
         "ociVersion \"2.0.0\" is not supported (vessel supports 1.0.0 to 1.2.x)"},
        {[](json& j) { j.erase("process"); }, "process: required"},
        {[](json& j) { j["process"] = "sh"; }, "process: must be an object"},
        {[](json& j) { j["process"].erase("args"); },
         "process.args: must be a non-empty array of strings"},
        {[](json& j) { j["process"]["args"] = "sh"; },
         "process.args: must be a non-empty array of strings"},
        {[](json& j) {
             j["process"]["args"] = {"sh", 1};
         },
         "process.args: must be a non-empty array of strings"},
        {[](json& j) {
             j["process"]["args"] = {"sh", std::string("a\0b", 3)};
         },
         "process.args[1]: contains a NUL byte"},
        {[](json& j) { j["process"].erase("cwd"); }, "process.cwd: required"},
        {[](json& j) { j["process"]["cwd"] = "srv"; }, "process.cwd: must be an absolute path"},
        {[](json& j) {
             j["process"]["env"] = {"A=1", "B"};
         },
         "process.env[1]: \"B\" is not of the form KEY=VALUE"},
        {[](json& j) { j["process"]["env"] = {"=x"}; },
         "process.env[0]: \"=x\" has an empty variable name"},
        {[](json& j) {
             j["process"]["env"] = {"A=1", 2};
         },
         "process.env[1]: must be a string"},
        {[](json& j) { j["process"]["env"] = "A=1"; }, "process.env: must be an array of strings"},
        {[](json& j) { j["process"]["terminal"] = 1; }, "process.terminal: must be a boolean"},
        {[](json& j) {
             j["process"]["consoleSize"] = {{"height", 10}};
         },
         "process.consoleSize.width: required"},
        {[](json& j) {
             j["process"]["consoleSize"] = {{"height", -1}, {"width", 80}};
         },
         "process.consoleSize.height: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["process"]["user"] = {{"uid", -1}};
         },
         "process.user.uid: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["process"]["user"] = {{"uid", 4294967296}};
         },
         "process.user.uid: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["process"]["user"] = {{"gid", 1.5}};
         },
         "process.user.gid: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["process"]["user"] = {{"gid", "0"}};
         },
         "process.user.gid: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["process"]["user"] = {{"umask", 01000}};
         },
         "process.user.umask: must be an integer from 0 to 511"},
        {[](json& j) {
             j["process"]["user"] = {{"additionalGids", {1, -2}}};
         },
         "process.user.additionalGids[1]: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["process"]["user"] = {{"additionalGids", 1}};
         },
         "process.user.additionalGids: must be an array of integers"},
        {[](json& j) {
             j["process"]["capabilities"] = {{"bounding", "CAP_KILL"}};
         },
         "process.capabilities.bounding: must be an array of strings"},
        {[](json& j) {
             j["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"hard", 1}}};
         },
         "process.rlimits[0].soft: required"},
        {[](json& j) {
             j["process"]["rlimits"] = {{{"type", "RLIMIT_FOO"}, {"hard", 1}, {"soft", 1}}};
         },
         "process.rlimits[0].type: unknown resource \"RLIMIT_FOO\""},
        {[](json& j) {
             j["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"hard", 1}, {"soft", 1}},
                                        {{"type", "RLIMIT_NOFILE"}, {"hard", 2}, {"soft", 2}}};
         },
         "process.rlimits[1].type: duplicate resource \"RLIMIT_NOFILE\""},
        {[](json& j) {
             j["process"]["rlimits"] = {{{"type", "RLIMIT_CORE"}, {"hard", 5}, {"soft", 10}}};
         },
         "process.rlimits[0]: soft limit 10 exceeds hard limit 5"},
        {[](json& j) { j["process"]["rlimits"] = {1}; }, "process.rlimits[0]: must be an object"},
        {[](json& j) { j["process"]["noNewPrivileges"] = "true"; },
         "process.noNewPrivileges: must be a boolean"},
        {[](json& j) { j["process"]["oomScoreAdj"] = 1001; },
         "process.oomScoreAdj: must be an integer from -1000 to 1000"},
        {[](json& j) { j["process"]["apparmorProfile"] = false; },
         "process.apparmorProfile: must be a string"},
        {[](json& j) { j.erase("root"); }, "root.path: required"},
        {[](json& j) {
             j["root"] = {{"path", ""}};
         },
         "root.path: required"},
        {[](json& j) {
             j["root"] = {{"path", 7}};
         },
         "root.path: must be a string"},
        {[](json& j) { j["root"] = "rootfs"; }, "root: must be an object"},
        {[](json& j) { j["root"]["readonly"] = "no"; }, "root.readonly: must be a boolean"},
        {[](json& j) { j["hostname"] = 1; }, "hostname: must be a string"},
        {[](json& j) { j["mounts"] = json::object(); }, "mounts: must be an array of objects"},
        {[](json& j) {
             j["mounts"] = {{{"type", "tmpfs"}}};
         },
         "mounts[0].destination: required"},
        {[](json& j) {
             j["mounts"] = {{{"destination", "/tmp"}, {"options", "ro"}}};
         },
         "mounts[0].options: must be an array of strings"},
        {[](json& j) {
             j["mounts"] = {{{"destination", "/tmp"}, {"source", 1}}};
         },
         "mounts[0].source: must be a string"},
        {[](json& j) {
             j["hooks"] = {{"prestart", {{{"args", {"x"}}}}}};
         },
         "hooks.prestart[0].path: required"},
        {[](json& j) {
             j["hooks"] = {{"poststop", {{{"path", "hook"}}}}};
         },
         "hooks.poststop[0].path: must be an absolute path"},
        {[](json& j) {
             j["hooks"] = {{"createRuntime", {{{"path", "/h"}, {"timeout", 0}}}}};
         },
         "hooks.createRuntime[0].timeout: must be a positive integer (seconds)"},
        {[](json& j) {
             j["hooks"] = {{"poststart", {{{"path", "/h"}, {"env", {"X"}}}}}};
         },
         "hooks.poststart[0].env[0]: \"X\" is not of the form KEY=VALUE"},
        {[](json& j) {
             j["hooks"] = {{"prestart", {{"path", "/h"}}}};
         },
         "hooks.prestart: must be an array of objects"},
        {[](json& j) {
             j["annotations"] = {{"a", 1}};
         },
         "annotations[\"a\"]: must be a string"},
        {[](json& j) { j["annotations"] = {"a"}; }, "annotations: must be an object of strings"},
        {[](json& j) {
             j["annotations"] = {{"", "x"}};
         },
         "annotations: keys must not be empty"},
        {[](json& j) { j["linux"] = 1; }, "linux: must be an object"},
        {[](json& j) {
             j["linux"]["namespaces"] = {{{"type", "pid"}}, {{"type", "net"}}};
         },
         "linux.namespaces[1].type: unknown namespace type \"net\""},
        {[](json& j) {
             j["linux"]["namespaces"] = {{{"type", "pid"}}, {{"type", "pid"}}};
         },
         "linux.namespaces[1].type: duplicate namespace type \"pid\""},
        {[](json& j) {
             j["linux"]["namespaces"] = {{{"type", "network"}, {"path", "run/netns/x"}}};
         },
         "linux.namespaces[0].path: must be an absolute path"},
        {[](json& j) {
             j["linux"]["uidMappings"] = {{{"containerID", 0}, {"hostID", 1000}}};
         },
         "linux.uidMappings[0].size: required"},
        {[](json& j) {
             j["linux"]["gidMappings"] = {{{"containerID", 0}, {"hostID", -1}, {"size", 1}}};
         },
         "linux.gidMappings[0].hostID: must be an integer from 0 to 4294967295"},
        {[](json& j) {
             j["linux"]["resources"] = {{"memory", {{"limit", "1g"}}}};
         },
         "linux.resources.memory.limit: must be an integer"},
        {[](json& j) {
             j["linux"]["resources"] = {{"memory", {{"limit", -2}}}};
         },
         "linux.resources.memory.limit: must be -1 (unlimited) or a number of bytes"},
        {[](json& j) {
             j["linux"]["resources"] = {{"cpu", {{"quota", -5}}}};
         },
         "linux.resources.cpu.quota: must be -1 (unlimited) or a number of microseconds"},
        {[](json& j) {
             j["linux"]["resources"] = {{"cpu", {{"period", -1}}}};
         },
         "linux.resources.cpu.period: must be an integer from 0 to 18446744073709551615"},
        {[](json& j) {
             j["linux"]["resources"] = {{"cpu", {{"cpus", 3}}}};
         },
         "linux.resources.cpu.cpus: must be a string"},
        {[](json& j) {
             j["linux"]["resources"] = {{"pids", {{"limit", "x"}}}};
         },
         "linux.resources.pids.limit: must be an integer"},
        {[](json& j) {
             j["linux"]["resources"] = {{"memory", 5}};
         },
         "linux.resources.memory: must be an object"},
        {[](json& j) {
             j["linux"]["sysctl"] = {{"net.ipv4.ip_forward", 1}};
         },
         "linux.sysctl[\"net.ipv4.ip_forward\"]: must be a string"},
        {[](json& j) {
             j["linux"]["maskedPaths"] = {"/proc/kcore", "proc/keys"};
         },
         "linux.maskedPaths[1]: must be an absolute path"},
        {[](json& j) { j["linux"]["readonlyPaths"] = "/proc/sys"; },
         "linux.readonlyPaths: must be an array of strings"},
        {[](json& j) {
             j["linux"]["devices"] = {{{"type", "x"}, {"path", "/dev/x"}}};
         },
         "linux.devices[0].type: must be \"c\", \"b\", \"u\" or \"p\""},
        {[](json& j) {
             j["linux"]["devices"] = {{{"type", "c"}, {"path", "dev/x"}}};
         },
         "linux.devices[0].path: must be an absolute path"},
        {[](json& j) {
             j["linux"]["devices"] = {{{"type", "c"}}};
         },
         "linux.devices[0].path: required"},
        {[](json& j) { j["linux"]["cgroupsPath"] = {"a"}; }, "linux.cgroupsPath: must be a string"},
        {[](json& j) { j["linux"]["seccomp"] = "unconfined"; }, "linux.seccomp: must be an object"},
    };
    for (const auto& c : cases) EXPECT_EQ(error_of(c.mutate), "config.json: " + c.message);
}

TEST(OciSpec, UnknownFieldsAndNullsAreIgnored) {
    json j = minimal();
    j["vm"] = {{"hypervisor", {{"path", "/usr/bin/qemu"}}}};
    j["process"]["ioPriority"] = {{"class", "IOPRIO_CLASS_IDLE"}};
    j["process"]["terminal"] = nullptr;
    j["mounts"] = {{{"destination", "/tmp"},
                    {"type", "tmpfs"},
                    {"uidMappings", nullptr},
                    {"someFutureField", 3}}};
    j["linux"] = {{"timeOffsets", {{"monotonic", {{"secs", 1}}}}},
                  {"intelRdt", json::object()},
                  {"personality", {{"domain", "LINUX"}}}};
    const Spec s = parse_config(j.dump());
    EXPECT_FALSE(s.process.terminal);
    ASSERT_EQ(s.mounts.size(), 1u);
    EXPECT_EQ(s.mounts[0].type, "tmpfs");
}

TEST(OciSpec, Versions) {
    for (const char* v : {"1.0.0", "1.0.2-dev", "1.1.0-rc.1", "1.2.0", "1.2.1+build.5"}) {
        json j = minimal();
        j["ociVersion"] = v;
        const Spec s = parse_config(j.dump());
        EXPECT_EQ(s.oci_version, v);
        EXPECT_TRUE(s.warnings.empty()) << v;
    }
    json j = minimal();
    j["ociVersion"] = "1.3.0";
    const Spec s = parse_config(j.dump());
    ASSERT_EQ(s.warnings.size(), 1u);
    EXPECT_EQ(s.warnings[0],
              "ociVersion 1.3.0 is newer than vessel knows (1.2.x): fields added since are "
              "ignored");
}

TEST(OciSpec, ExecProcessFile) {
    const Process p = parse_process(R"({
        "terminal": true, "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 33, "gid": 33}, "args": ["ls", "-l"], "env": ["PATH=/bin"],
        "cwd": "/var/www", "noNewPrivileges": true})");
    EXPECT_TRUE(p.terminal);
    ASSERT_TRUE(p.console_size);
    EXPECT_EQ(p.console_size->height, 24u);
    EXPECT_EQ(p.console_size->width, 80u);
    EXPECT_EQ(p.user.uid, 33u);
    EXPECT_EQ(p.args, (std::vector<std::string>{"ls", "-l"}));
    EXPECT_EQ(p.cwd, "/var/www");
    EXPECT_TRUE(p.no_new_privileges);

    EXPECT_EQ(message_of<ConfigError>([] { parse_process(R"({"args": [], "cwd": "/"})"); }),
              "process.json: args: must be a non-empty array of strings");
    EXPECT_EQ(message_of<ConfigError>([] { parse_process(R"({"args": ["ls"], "cwd": "x"})"); }),
              "process.json: cwd: must be an absolute path");
    EXPECT_EQ(message_of<ConfigError>([] { parse_process("[]"); }),
              "process.json: must be a JSON object");
}

TEST(OciSpec, ResolveRootfs) {
    TempDir bundle;
    ::mkdir((bundle / "rootfs").c_str(), 0755);
    ::mkdir((bundle / "other").c_str(), 0755);
    write_file(bundle / "file", "x");
    Spec s;
    s.root.path = "rootfs";
    EXPECT_EQ(resolve_rootfs(s, bundle.str()), bundle / "rootfs");
    s.root.path = "./rootfs/";
    EXPECT_EQ(resolve_rootfs(s, bundle.str() + "/"), bundle / "rootfs");
    s.root.path = "rootfs/../other";
    EXPECT_EQ(resolve_rootfs(s, bundle.str()), bundle / "other");
    s.root.path = bundle / "other";
    EXPECT_EQ(resolve_rootfs(s, "/nonexistent"), bundle / "other");
    s.root.path = "missing";
    EXPECT_EQ(message_of<ConfigError>([&] { resolve_rootfs(s, bundle.str()); }),
              "rootfs " + (bundle / "missing") + ": no such directory");
    s.root.path = "file";
    EXPECT_EQ(message_of<ConfigError>([&] { resolve_rootfs(s, bundle.str()); }),
              "rootfs " + (bundle / "file") + ": not a directory");
}

TEST(OciSpec, LoadBundle) {
    TempDir tmp;
    const std::string dir = tmp / "bundle";
    ::mkdir(dir.c_str(), 0755);
    ::mkdir((dir + "/rootfs").c_str(), 0755);
    write_file(dir + "/config.json", fixture("runc-default.json"));
    ASSERT_EQ(::symlink(dir.c_str(), (tmp / "link").c_str()), 0);

    const Bundle b = load_bundle(tmp / "link");
    EXPECT_EQ(b.dir, dir);  // symlinks resolved: this is what `state` reports
    EXPECT_EQ(b.config, dir + "/config.json");
    EXPECT_EQ(b.rootfs, dir + "/rootfs");
    EXPECT_EQ(b.spec.hostname, "runc");

    EXPECT_EQ(message_of<ConfigError>([&] { load_bundle(tmp / "nope"); }),
              "bundle " + (tmp / "nope") + ": No such file or directory");
    ::unlink((dir + "/config.json").c_str());
    EXPECT_EQ(message_of<ConfigError>([&] { load_bundle(dir); }),
              "config.json: cannot open " + dir + "/config.json: No such file or directory");
    write_file(dir + "/config.json", fixture("runc-default.json"));
    ::rmdir((dir + "/rootfs").c_str());
    EXPECT_EQ(message_of<ConfigError>([&] { load_bundle(dir); }),
              "rootfs " + dir + "/rootfs: no such directory");
    write_file(dir + "/config.json", "{");
    EXPECT_EQ(message_of<ConfigError>([&] {
                  load_bundle(dir);
              }).rfind("config.json: not valid JSON at line 1 column 2: ", 0),
              0u);
}

}  // namespace
}  // namespace vessel::oci
