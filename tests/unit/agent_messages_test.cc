// JSON forms of the agent's control messages: round trips and the agent-side validation.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <limits>

#include "guest/agent/messages.h"
#include "guest/agent/wire.h"

namespace vessel::agent {
namespace {

ProcessSpec full_spec() {
    ProcessSpec s;
    s.argv = {"sh", "-c", "echo \xc3\xa9t\xc3\xa9"};
    s.env = {"PATH=/bin", "EMPTY="};
    s.cwd = "/srv";
    s.user = User{1000, 100, {4, 27}};
    s.rlimits = {{RLIMIT_NOFILE, 64, 128},
                 {RLIMIT_CORE, 0, std::numeric_limits<std::uint64_t>::max()}};
    s.hostname = "box";
    s.tty = true;
    s.rows = 24;
    s.cols = 80;
    s.stdin_mode = StdioMode::kNull;
    s.kill_group_on_exit = true;
    s.detachable = true;
    return s;
}

std::string decode_error(const Json& j) {
    std::string why;
    EXPECT_FALSE(spec_from_json(j, &why)) << j.dump();
    return why;
}

TEST(AgentMessages, SpecRoundTrips) {
    for (const ProcessSpec& s : {full_spec(), ProcessSpec{.argv = {"true"}}}) {
        const Json j = Json::parse(dump(spec_to_json(s)));
        std::string why;
        const auto back = spec_from_json(j, &why);
        ASSERT_TRUE(back) << why;
        EXPECT_EQ(*back, s);
    }
}

TEST(AgentMessages, WireNamesAreTheDocumentedOnes) {
    const Json j = spec_to_json(full_spec());
    EXPECT_EQ(j["rlimits"][0]["type"], "RLIMIT_NOFILE");
    EXPECT_EQ(j["rlimits"][1]["hard"], std::numeric_limits<std::uint64_t>::max());
    EXPECT_EQ(j["stdin"], "null");
    EXPECT_EQ(j["user"]["groups"], Json::array({4, 27}));
    EXPECT_FALSE(j.contains("stdout"));  // the default is left out
}

TEST(AgentMessages, SpecValidation) {
    const Json ok = spec_to_json(ProcessSpec{.argv = {"true"}});
    auto with = [&](const char* key, Json v) {
        Json j = ok;
        j[key] = std::move(v);
        return j;
    };
    EXPECT_NE(decode_error(Json::array()), "");
    EXPECT_NE(decode_error(Json::object()).find("argv"), std::string::npos);
    EXPECT_NE(decode_error(with("argv", Json::array())), "");
    EXPECT_NE(decode_error(with("argv", {""})), "");
    EXPECT_NE(decode_error(with("argv", {1, 2})), "");
    EXPECT_NE(decode_error(with("argv", "sh")), "");
    EXPECT_NE(decode_error(with("argv", {std::string("a\0b", 3)})).find("NUL"), std::string::npos);
    EXPECT_NE(decode_error(with("env", {"NOEQUALS"})), "");
    EXPECT_NE(decode_error(with("env", {"=x"})), "");
    EXPECT_NE(decode_error(with("cwd", "relative")), "");
    EXPECT_NE(decode_error(with("cwd", std::string(kMaxPathBytes + 1, '/'))), "");
    EXPECT_NE(decode_error(with("hostname", std::string(kMaxHostnameBytes + 1, 'h'))), "");
    EXPECT_NE(decode_error(with("tty", "yes")), "");
    EXPECT_NE(decode_error(with("rows", 70000)), "");
    EXPECT_NE(decode_error(with("rows", -1)), "");
    EXPECT_NE(decode_error(with("rows", 1.5)), "");
    EXPECT_NE(decode_error(with("stdout", "file")), "");
    EXPECT_NE(decode_error(with("user", {{"uid", 0}})), "");  // gid missing
    EXPECT_NE(decode_error(with("user", {{"uid", -1}, {"gid", 0}})), "");
    EXPECT_NE(decode_error(with("user", {{"uid", 4294967295u}, {"gid", 0}})), "");
    EXPECT_NE(decode_error(with("user", {{"uid", 0}, {"gid", 0}, {"groups", {"wheel"}}})), "");
    EXPECT_NE(decode_error(with("rlimits", {{{"type", "RLIMIT_BOGUS"}, {"soft", 1}, {"hard", 1}}})),
              "");
    EXPECT_NE(
        decode_error(with("rlimits", {{{"type", "RLIMIT_NOFILE"}, {"soft", 2}, {"hard", 1}}})), "");
    EXPECT_NE(decode_error(with("rlimits", {{{"type", "RLIMIT_NOFILE"}, {"soft", 1}}})), "");
    // Null means absent for optional fields.
    std::string why;
    EXPECT_TRUE(spec_from_json(with("env", nullptr), &why)) << why;
}

TEST(AgentMessages, ArgvEnvLimits) {
    ProcessSpec s{.argv = {"true"}};
    s.argv.resize(kMaxArgs + 1, "x");
    EXPECT_NE(decode_error(spec_to_json(s)), "");
    s.argv = {"true", std::string(kMaxArgvEnvBytes, 'a')};
    EXPECT_NE(decode_error(spec_to_json(s)).find("exceed"), std::string::npos);
    s.argv = {"true"};
    s.env.assign(kMaxEnv + 1, "A=b");
    EXPECT_NE(decode_error(spec_to_json(s)), "");
    s.env.assign(kMaxEnv, "A=b");
    std::string why;
    EXPECT_TRUE(spec_from_json(spec_to_json(s), &why)) << why;
}

TEST(AgentMessages, ClientRefusesWhatJsonCannotCarry) {
    EXPECT_THROW(spec_to_json(ProcessSpec{.argv = {"\xff\xfe"}}), std::invalid_argument);
    EXPECT_THROW(spec_to_json(ProcessSpec{.argv = {std::string("a\0b", 3)}}),
                 std::invalid_argument);
    EXPECT_THROW(spec_to_json(ProcessSpec{.argv = {"x"}, .rlimits = {{999, 1, 1}}}),
                 std::invalid_argument);
}

TEST(AgentMessages, ExitStatus) {
    const ExitStatus code{7, false, 0, false};
    const ExitStatus sig{137, true, 9, false};
    for (const auto& e : {code, sig}) {
        std::string why;
        const auto back = exit_from_json(Json::parse(dump(exit_to_json(e))), &why);
        ASSERT_TRUE(back) << why;
        EXPECT_EQ(*back, e);
    }
    EXPECT_EQ(exit_to_json(code)["exit_code"], 7);
    EXPECT_EQ(exit_to_json(sig)["signal"], 9);
    std::string why;
    EXPECT_FALSE(exit_from_json({{"status", 300}}, &why));
    EXPECT_FALSE(exit_from_json({{"status", 137}, {"signal", 2}}, &why));  // inconsistent
    EXPECT_FALSE(exit_from_json({{"status", "0"}}, &why));

    EXPECT_EQ(exit_status_from_code(CLD_EXITED, 3), (ExitStatus{3, false, 0, false}));
    EXPECT_EQ(exit_status_from_code(CLD_KILLED, SIGTERM), (ExitStatus{143, true, SIGTERM, false}));
    EXPECT_EQ(exit_status_from_code(CLD_DUMPED, SIGSEGV), (ExitStatus{139, true, SIGSEGV, true}));
}

TEST(AgentMessages, ProcessInfo) {
    ProcessInfo p{3, 42, {"sleep", "1"}, true, false, ExitStatus{0, false, 0, false}};
    std::string why;
    const auto back = info_from_json(Json::parse(dump(info_to_json(p))), &why);
    ASSERT_TRUE(back) << why;
    EXPECT_EQ(back->id, 3u);
    EXPECT_EQ(back->pid, 42);
    EXPECT_EQ(back->argv, p.argv);
    EXPECT_TRUE(back->tty);
    EXPECT_FALSE(back->running);
    EXPECT_EQ(back->exit, p.exit);
    EXPECT_FALSE(back->attachable);
    p.attachable = true;
    EXPECT_TRUE(info_from_json(Json::parse(dump(info_to_json(p))), &why)->attachable);
    EXPECT_FALSE(info_from_json({{"id", 1}, {"pid", 1}, {"state", "zombie"}}, &why));
}

TEST(AgentMessages, ParseObjectNeverThrows) {
    std::string why;
    EXPECT_FALSE(parse_object("{", &why));
    EXPECT_FALSE(parse_object("[]", &why));
    EXPECT_FALSE(parse_object("\"x\"", &why));
    EXPECT_FALSE(parse_object("{\"a\":\"\xff\"}", &why));  // invalid UTF-8
    EXPECT_FALSE(parse_object(std::string(100000, '['), &why));
    EXPECT_FALSE(parse_object(std::string("{\"a\":1}\0", 8), &why));
    EXPECT_TRUE(parse_object(R"({"op":"list"})", &why)) << why;
    // Output never throws either, even for bytes JSON cannot carry.
    EXPECT_NE(dump(Json{{"m", "\xff"}}), "");
}

TEST(AgentMessages, RlimitNames) {
    EXPECT_EQ(rlimit_from_name("RLIMIT_NOFILE"), RLIMIT_NOFILE);
    EXPECT_EQ(rlimit_name(RLIMIT_STACK), "RLIMIT_STACK");
    EXPECT_EQ(rlimit_from_name("nofile"), std::nullopt);
}

}  // namespace
}  // namespace vessel::agent

namespace vessel::agent {
namespace {

Identity full_identity() {
    Identity id;
    id.hostname = "clone-7.example";
    id.seed = {0x00, 0x9f, 0xff, 0x10};
    id.interfaces = {{"eth0", "02:76:73:4c:00:07", "10.89.0.7/24", "10.89.0.1", {"10.89.0.1"}},
                     {"eth1", "", "", "", {}}};
    return id;
}

TEST(AgentMessages, IdentityRoundTrips) {
    const Identity id = full_identity();
    const Json j = identity_to_json(id);
    EXPECT_EQ(j.at("seed"), "009fff10");
    std::string why;
    const auto back = identity_from_json(j, &why);
    ASSERT_TRUE(back) << why;
    EXPECT_EQ(*back, id);
    EXPECT_EQ(identity_from_json(Json::object(), &why), Identity{});
}

TEST(AgentMessages, IdentityValidation) {
    struct Case {
        Json j;
        const char* expect;
    };
    const Case cases[] = {
        {{{"hostname", "bad host"}}, "hostname"},
        {{{"hostname", "-x"}}, "hostname"},
        {{{"hostname", std::string(65, 'a')}}, "hostname"},
        {{{"seed", "abc"}}, "seed"},
        {{{"seed", "zz"}}, "seed"},
        {{{"seed", std::string(2 * kMaxIdentitySeed + 2, 'a')}}, "seed"},
        {{{"interfaces", "eth0"}}, "interfaces"},
        {{{"interfaces", Json::array({Json::object()})}}, "name"},
        {{{"interfaces", {{{"name", "../x"}}}}}, "name"},
        {{{"interfaces", {{{"name", "averyveryverylongname"}}}}}, "name"},
        {{{"interfaces", {{{"name", "eth0"}, {"mac", "01:00:00:00:00:01"}}}}}, "mac"},
        {{{"interfaces", {{{"name", "eth0"}, {"mac", "02:00:00:00:00"}}}}}, "mac"},
        {{{"interfaces", {{{"name", "eth0"}, {"address", "10.0.0.300/24"}}}}}, "address"},
        {{{"interfaces", {{{"name", "eth0"}, {"address", "10.0.0.3/33"}}}}}, "address"},
        {{{"interfaces", {{{"name", "eth0"}, {"address", "10.0.0.3"}}}}}, "address"},
        {{{"interfaces", {{{"name", "eth0"}, {"gateway", "10.0.0.1"}}}}}, "need an address"},
        {{{"interfaces", {{{"name", "eth0"}, {"address", "10.0.0.3/24"}, {"dns", {"x"}}}}}}, "dns"},
        {{{"interfaces", Json::array({{{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}},
                                      {{"name", "e"}}})}},
         "interfaces"},
    };
    for (const auto& c : cases) {
        std::string why;
        EXPECT_FALSE(identity_from_json(c.j, &why)) << c.j.dump();
        EXPECT_NE(why.find(c.expect), std::string::npos) << c.j.dump() << ": " << why;
    }
    Identity bad;
    bad.hostname = "no spaces";
    EXPECT_THROW(identity_to_json(bad), std::invalid_argument);
}

}  // namespace
}  // namespace vessel::agent

namespace vessel::agent {
namespace {

TEST(AgentMessages, RootRequestRoundTripsAndIsValidated) {
    RootRequest r{"/dev/vda", "ext4", true, "noload", 64u << 20};
    std::string why;
    const auto back = root_from_json(root_to_json(r), &why);
    ASSERT_TRUE(back) << why;
    EXPECT_EQ(*back, r);
    const std::pair<Json, const char*> bad[] = {
        {Json::object(), "source"},
        {{{"source", "/etc/passwd"}}, "source"},
        {{{"source", "/dev/../etc/x"}}, "source"},
        {{{"source", "vda"}}, "source"},
        {{{"source", "/dev/vda"}, {"fstype", "ext4;rm"}}, "fstype"},
        {{{"source", "/dev/vda"}, {"options", "a b"}}, "options"},
        {{{"source", "/dev/vda"}, {"readonly", "yes"}}, "readonly"},
        {{{"source", "/dev/vda"}, {"size", -1}}, "size"},
    };
    for (const auto& [j, field] : bad) {
        EXPECT_FALSE(root_from_json(j, &why)) << j.dump();
        EXPECT_NE(why.find(field), std::string::npos) << j.dump() << ": " << why;
    }
    EXPECT_THROW(root_to_json(RootRequest{.source = "/tmp/x"}), std::invalid_argument);
}

}  // namespace
}  // namespace vessel::agent
