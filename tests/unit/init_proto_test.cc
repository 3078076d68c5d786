#include "guest/init/proto.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
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
    EXPECT_EQ(kRootFsPath, "/vessel/rootfs");
    EXPECT_EQ(kRootMountPoint, "/mnt/root");
}

std::optional<RootFs> parse(std::string_view text, std::string* error = nullptr) {
    std::string ignored;
    return parse_rootfs(text, error ? error : &ignored);
}

std::string parse_error(std::string_view text) {
    std::string error;
    EXPECT_EQ(parse_rootfs(text, &error), std::nullopt) << text;
    return error;
}

TEST(RootFs, Defaults) {
    const RootFs r;
    EXPECT_EQ(r.fstype, "ext4");
    EXPECT_FALSE(r.readonly);
    EXPECT_EQ(r.options, "");
    const auto p = parse("source=/dev/vda\n");
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, (RootFs{"/dev/vda", "ext4", false, ""}));
}

TEST(RootFs, ExactFormat) {
    EXPECT_EQ(format_rootfs({"/dev/vda", "ext4", false, ""}),
              "source=/dev/vda\nfstype=ext4\nreadonly=0\n");
    EXPECT_EQ(format_rootfs({"/dev/vdb", "xfs", true, "noatime,nouuid"}),
              "source=/dev/vdb\nfstype=xfs\nreadonly=1\noptions=noatime,nouuid\n");
}

TEST(RootFs, RoundTrips) {
    for (const RootFs& r : {RootFs{"/dev/vda", "ext4", false, ""},
                            RootFs{"/dev/vdc", "ext2", true, "errors=remount-ro,data=ordered"},
                            RootFs{"/dev/disk/by-id/x y", "btrfs", false, "subvol=@root"}}) {
        const auto p = parse(format_rootfs(r));
        ASSERT_TRUE(p) << format_rootfs(r);
        EXPECT_EQ(*p, r);
    }
}

TEST(RootFs, ParsesHandWrittenFiles) {
    const auto p =
        parse("# boot disk\r\n\nreadonly=1\r\noptions=a=b,c\r\nsource=/dev/vdb\r\nfstype=ext2");
    ASSERT_TRUE(p);
    EXPECT_EQ(*p, (RootFs{"/dev/vdb", "ext2", true, "a=b,c"}));
    // Explicitly empty options mean none, like a missing line.
    EXPECT_EQ(parse("source=/dev/vda\noptions=\n")->options, "");
}

TEST(RootFs, ParseErrors) {
    EXPECT_EQ(parse_error(""), "no source= line");
    EXPECT_EQ(parse_error("fstype=ext4\n"), "no source= line");
    EXPECT_EQ(parse_error("source=/dev/vda\nbogus\n"), "line 2: expected key=value");
    EXPECT_EQ(parse_error("source=/dev/vda\nsize=1\n"), "line 2: unknown key 'size'");
    EXPECT_EQ(parse_error("source=/dev/vda\nsource=/dev/vdb\n"), "line 2: duplicate key 'source'");
    EXPECT_EQ(parse_error("source=vda\n"), "line 1: source must be an absolute path");
    EXPECT_EQ(parse_error("source=\n"), "line 1: source must be an absolute path");
    EXPECT_EQ(parse_error(" source=/dev/vda\n"), "line 1: unknown key ' source'");
    EXPECT_EQ(parse_error("source=/dev/vda\nfstype=\n"), "line 2: empty fstype");
    EXPECT_EQ(parse_error("source=/dev/vda\nreadonly=yes\n"), "line 2: readonly must be 0 or 1");
    EXPECT_EQ(parse_error(std::string_view("source=/dev/vda\0x\n", 18)),
              "line 1: NUL or stray carriage return");
    EXPECT_EQ(parse_error("source=/dev/vda\roptions=x\n"), "line 1: NUL or stray carriage return");
    // A null error pointer is allowed.
    EXPECT_EQ(parse_rootfs("bogus", nullptr), std::nullopt);
}

TEST(RootFs, FormatRejectsUnrepresentable) {
    EXPECT_THROW(format_rootfs({"", "ext4", false, ""}), std::invalid_argument);
    EXPECT_THROW(format_rootfs({"dev/vda", "ext4", false, ""}), std::invalid_argument);
    EXPECT_THROW(format_rootfs({"/dev/vda", "", false, ""}), std::invalid_argument);
    EXPECT_THROW(format_rootfs({"/dev/vda\n", "ext4", false, ""}), std::invalid_argument);
    EXPECT_THROW(format_rootfs({"/dev/vda", "ext4", false, "a\nsource=/x"}), std::invalid_argument);
    EXPECT_THROW(format_rootfs({"/dev/vda", "ext4", false, std::string("a\0b", 3)}),
                 std::invalid_argument);
}

}  // namespace
}  // namespace vessel::guest
