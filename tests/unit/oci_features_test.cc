#include "oci/features.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "oci/spec.h"
#include "oci/vm_plan.h"
#include "oci_test_util.h"

namespace vessel::oci {
namespace {

using nlohmann::json;

TEST(OciFeatures, Document) {
    const std::string text = features_json();
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    EXPECT_EQ(
        text.rfind("{\n    \"ociVersionMin\": \"1.0.0\",\n    \"ociVersionMax\": \"1.2.0\",\n", 0),
        0u);  // four-space indentation, as runc prints it
    const json f = json::parse(text);
    EXPECT_EQ(f["hooks"], json({"prestart", "createRuntime", "poststart", "poststop"}));
    EXPECT_EQ(f["mountOptions"], json(known_mount_options()));
    EXPECT_EQ(f["linux"]["namespaces"], json(known_namespaces()));
    EXPECT_EQ(f["linux"]["seccomp"]["enabled"], false);
    EXPECT_EQ(f["linux"]["cgroup"]["v2"], false);
    EXPECT_FALSE(f["linux"].contains("capabilities"));  // parsed, not enforced: unknown
    EXPECT_EQ(f["annotations"]["io.vessel.isolation"], "microvm");
    EXPECT_EQ(f["annotations"]["io.vessel.version"], VESSEL_VERSION_FOR_TEST);
    EXPECT_EQ(f["potentiallyUnsafeConfigAnnotations"], json({"io.vessel."}));
    // Only properties runtime-spec 1.2 defines.
    for (const auto& [key, value] : f.items())
        EXPECT_TRUE(key == "ociVersionMin" || key == "ociVersionMax" || key == "hooks" ||
                    key == "mountOptions" || key == "linux" || key == "annotations" ||
                    key == "potentiallyUnsafeConfigAnnotations")
            << key;
}

// What the document promises, the parser and planner accept.
TEST(OciFeatures, PromisesHold) {
    const json f = json::parse(features_json());
    json config = {
        {"ociVersion", f["ociVersionMax"]}, {"process", {{"args", {"sh"}}, {"cwd", "/"}}},
        {"root", {{"path", "rootfs"}}},     {"mounts", json::array()},
        {"hooks", json::object()},          {"linux", {{"namespaces", json::array()}}}};
    test::TempDir dir;
    test::write_file(dir / "file", "x");
    for (const auto& o : f["mountOptions"]) {
        if (o == "bind" || o == "rbind") {  // a bind needs a source: a small host file
            config["mounts"].push_back(
                {{"destination", "/t"}, {"source", dir / "file"}, {"options", {o}}});
        } else {
            config["mounts"].push_back(
                {{"destination", "/t"}, {"type", "tmpfs"}, {"options", {o}}});
        }
    }
    for (const auto& h : f["hooks"]) config["hooks"][h.get<std::string>()] = {{{"path", "/h"}}};
    for (const auto& ns : f["linux"]["namespaces"])
        config["linux"]["namespaces"].push_back({{"type", ns}});
    const std::string keys = f["annotations"]["io.vessel.config-annotations"];
    EXPECT_EQ(std::count(keys.begin(), keys.end(), ','), 8);
    Bundle b;
    b.dir = "/b";
    b.rootfs = "/b/rootfs";
    b.spec = parse_config(config.dump());
    HostInfo host;
    host.cpus = 2;
    host.memory_bytes = uint64_t{4} << 30;
    const VmPlan p = plan_vm(b, host, RealHostProbe());
    EXPECT_EQ(p.mounts.size(), f["mountOptions"].size());
    EXPECT_EQ(p.host_hooks.prestart.size() + p.host_hooks.create_runtime.size() +
                  p.host_hooks.poststart.size() + p.host_hooks.poststop.size(),
              f["hooks"].size());
    json older = config;
    older["ociVersion"] = f["ociVersionMin"];
    EXPECT_NO_THROW(parse_config(older.dump()));
}

}  // namespace
}  // namespace vessel::oci
