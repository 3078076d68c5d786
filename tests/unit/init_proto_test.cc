#include "guest/init/proto.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

#include "guest/init/protocol.h"

namespace vessel::guest {
namespace {

using Strings = std::vector<std::string>;

TEST(NulList, Split) {
    EXPECT_EQ(split_nul_list(""), Strings{});
    EXPECT_EQ(split_nul_list(std::string_view("a\0b\0", 4)), (Strings{"a", "b"}));
    EXPECT_EQ(split_nul_list(std::string_view("a\0b", 3)), (Strings{"a", "b"}));
    EXPECT_EQ(split_nul_list(std::string_view("\0", 1)), Strings{""});
    EXPECT_EQ(split_nul_list(std::string_view("a\0\0b\0", 5)), (Strings{"a", "", "b"}));
}

TEST(NulList, JoinRoundTrips) {
    for (const Strings& v : {Strings{}, Strings{""}, Strings{"sh", "-c", "echo 'x y'"},
                             Strings{"", "", "z"}, Strings{"a\nb"}}) {
        EXPECT_EQ(split_nul_list(join_nul_list(v)), v);
    }
    EXPECT_EQ(join_nul_list({"a", "b"}), std::string("a\0b\0", 4));
    EXPECT_THROW(join_nul_list({std::string("a\0", 2)}), std::invalid_argument);
}

// Real wait statuses rather than hand-built bit patterns.
int wait_status_of(void (*child)()) {
    const pid_t pid = fork();
    if (pid == 0) {
        child();
        _exit(99);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

TEST(ExitStatus, FromWaitStatus) {
    EXPECT_EQ(exit_status_from_wait(wait_status_of([] { _exit(0); })), 0);
    EXPECT_EQ(exit_status_from_wait(wait_status_of([] { _exit(3); })), 3);
    EXPECT_EQ(exit_status_from_wait(wait_status_of([] { _exit(255); })), 255);
    EXPECT_EQ(exit_status_from_wait(wait_status_of([] { raise(SIGKILL); })), 137);
    EXPECT_EQ(exit_status_from_wait(wait_status_of([] { raise(SIGTERM); })), 143);
    EXPECT_EQ(exit_status_from_wait(wait_status_of([] {
                  signal(SIGINT, SIG_DFL);
                  raise(SIGINT);
              })),
              kStatusSignalBase + SIGINT);
}

TEST(Env, KeyOf) {
    EXPECT_EQ(env_key("A=1"), "A");
    EXPECT_EQ(env_key("A="), "A");
    EXPECT_EQ(env_key("A=b=c"), "A");
    EXPECT_EQ(env_key("A"), "");
    EXPECT_EQ(env_key("=x"), "");
}

TEST(Env, MergeOverridesAndAppends) {
    const Strings merged =
        merge_env(default_env(), {"PATH=/opt/bin", "FOO=bar", "bogus", "=x", "FOO=baz"});
    EXPECT_EQ(merged, (Strings{"PATH=/opt/bin", "HOME=/root", "TERM=linux", "FOO=baz"}));
}

TEST(Env, Defaults) {
    EXPECT_EQ(default_env(),
              (Strings{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "HOME=/root", "TERM=linux"}));
}

TEST(Protocol, Constants) {
    static_assert(kExitPort == 0xf4);
    static_assert(kExitPortWidth == 4);
    EXPECT_EQ(kArgvPath, "/vessel/argv");
    EXPECT_EQ(kEnvPath, "/vessel/env");
    EXPECT_EQ(kCwdPath, "/vessel/cwd");
}

}  // namespace
}  // namespace vessel::guest
