#include "guest/initramfs/cpio.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <stdexcept>

#include "cpio_test_util.h"
#include "guest/init/proto.h"

namespace vessel::initramfs {
namespace {

namespace fs = std::filesystem;
using test::CpioEntry;
using test::find_entry;
using test::parse_cpio_stream;
using test::run_shell;
using test::sh_quote;
using test::TempDir;

std::vector<CpioEntry> parse_single(const std::string& archive) {
    auto archives = parse_cpio_stream(archive);
    EXPECT_EQ(archives.size(), 1u);
    return archives.empty() ? std::vector<CpioEntry>{} : archives[0];
}

std::string sample_archive() {
    Writer w;
    w.add_directory("dir", 0755);
    w.add_directory("dir/sub", 0700);
    for (int n = 0; n < 8; ++n)  // every data length mod 4, and every name length mod 4
        w.add_file("dir/f" + std::string(n, 'x'), std::string(n, static_cast<char>('a' + n)), 0640);
    w.add_file("dir/exec", "#!/bin/sh\necho hi\n", 0755);
    w.add_symlink("dir/link", "exec");
    w.add_symlink("abs", "/dir/exec");
    w.add_char_device("dev/console", 5, 1, 0600);
    return w.finish();
}

TEST(CpioWriter, ExactHeaderBytes) {
    Writer w;
    w.add_file("hello", "hi!", 0644);
    const std::string a = w.finish();
    const std::string header =
        "070701"
        "00000001"  // ino
        "000081A4"  // S_IFREG | 0644
        "00000000"
        "00000000"
        "00000001"  // nlink
        "00000000"  // mtime
        "00000003"  // filesize
        "00000000"
        "00000000"
        "00000000"
        "00000000"
        "00000006"  // namesize incl. NUL
        "00000000";
    ASSERT_GE(a.size(), 124u);
    EXPECT_EQ(a.substr(0, 110), header);
}

TEST(CpioWriter, NameAndDataPadding) {
    Writer w;
    w.add_file("hello", "hi!", 0644);
    const std::string a = w.finish();
    // header 110 + "hello\0" = 116 (aligned), data 3 -> padded to 120, trailer 110 + 11 -> 124.
    EXPECT_EQ(a.substr(110, 6), std::string("hello\0", 6));
    EXPECT_EQ(a.substr(116, 4), std::string("hi!\0", 4));
    EXPECT_EQ(a.substr(120, 6), "070701");
    EXPECT_EQ(a.size(), 244u);
    EXPECT_EQ(a.substr(120 + 110, 11), std::string("TRAILER!!!\0", 11));
}

TEST(CpioWriter, RoundTripThroughParser) {
    const std::string a = sample_archive();
    EXPECT_EQ(a.size() % 4, 0u);
    const auto entries = parse_single(a);
    ASSERT_EQ(entries.size(), 14u);

    std::set<std::uint32_t> inodes;
    for (const auto& e : entries) {
        EXPECT_EQ(e.header_offset % 4, 0u) << e.name;
        EXPECT_EQ(e.data_offset % 4, 0u) << e.name;
        EXPECT_EQ(e.mtime, 0u);
        EXPECT_EQ(e.uid, 0u);
        EXPECT_EQ(e.gid, 0u);
        EXPECT_EQ(e.check, 0u);
        EXPECT_TRUE(inodes.insert(e.ino).second) << "duplicate inode for " << e.name;
    }

    const CpioEntry* d = find_entry(entries, "dir/sub");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->mode, S_IFDIR | 0700u);
    EXPECT_EQ(d->nlink, 2u);
    EXPECT_EQ(d->filesize, 0u);

    for (int n = 0; n < 8; ++n) {
        const CpioEntry* f = find_entry(entries, "dir/f" + std::string(n, 'x'));
        ASSERT_NE(f, nullptr);
        EXPECT_EQ(f->mode, S_IFREG | 0640u);
        EXPECT_EQ(f->nlink, 1u);
        EXPECT_EQ(f->data, std::string(n, static_cast<char>('a' + n)));
    }

    const CpioEntry* l = find_entry(entries, "dir/link");
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(l->mode, S_IFLNK | 0777u);
    EXPECT_EQ(l->data, "exec");
    EXPECT_EQ(find_entry(entries, "abs")->data, "/dir/exec");

    const CpioEntry* c = find_entry(entries, "dev/console");
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->mode, S_IFCHR | 0600u);
    EXPECT_EQ(c->rdevmajor, 5u);
    EXPECT_EQ(c->rdevminor, 1u);
    EXPECT_EQ(c->filesize, 0u);
}

TEST(CpioWriter, IsReproducible) {
    EXPECT_EQ(sample_archive(), sample_archive());
}

TEST(CpioWriter, BinaryDataAndSpanOverload) {
    const std::vector<std::uint8_t> bytes = {0, 1, 2, 0xff, 0, 0x7f, 0};
    Writer w;
    w.add_file("bin", std::span<const std::uint8_t>(bytes), 0600);
    const auto out = w.finish_bytes();
    const auto entries = parse_single(std::string(out.begin(), out.end()));
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].data, std::string(bytes.begin(), bytes.end()));
}

TEST(CpioWriter, NormalizesNames) {
    EXPECT_EQ(normalize_path("/usr//bin/./sh"), "usr/bin/sh");
    EXPECT_EQ(normalize_path("init"), "init");
    EXPECT_EQ(normalize_path("dir/"), "dir");
    EXPECT_EQ(normalize_path("a..b/..."), "a..b/...");
    Writer w;
    w.add_file("/etc/passwd", "x", 0644);
    const auto entries = parse_single(w.finish());
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].name, "etc/passwd");
}

TEST(CpioWriter, RejectsBadNamesAndModes) {
    Writer w;
    for (const char* bad : {"", "/", "//", ".", "./", "..", "../x", "a/../b", "a/..", "/.."}) {
        EXPECT_THROW(w.add_file(bad, "x", 0644), std::invalid_argument) << bad;
        EXPECT_THROW(w.add_directory(bad, 0755), std::invalid_argument) << bad;
        EXPECT_THROW(w.add_symlink(bad, "t"), std::invalid_argument) << bad;
        EXPECT_THROW(w.add_char_device(bad, 1, 3, 0666), std::invalid_argument) << bad;
    }
    EXPECT_THROW(w.add_file(std::string("a\0b", 3), "x", 0644), std::invalid_argument);
    EXPECT_THROW(w.add_file("f", "x", S_IFREG | 0644), std::invalid_argument);
    EXPECT_THROW(w.add_directory("d", 010000), std::invalid_argument);
    EXPECT_THROW(w.add_symlink("l", ""), std::invalid_argument);
    // Nothing was written by the failed calls.
    EXPECT_TRUE(parse_single(w.finish()).empty());
}

TEST(CpioWriter, UnusableAfterFinish) {
    Writer w;
    w.finish();
    EXPECT_THROW(w.add_file("f", "x", 0644), std::logic_error);
    EXPECT_THROW(w.finish(), std::logic_error);
}

TEST(CpioWriter, FirstInodeIsConfigurable) {
    Writer w(1000);
    w.add_directory("a");
    w.add_directory("b");
    const auto entries = parse_single(w.finish());
    ASSERT_EQ(entries.size(), 2u);
    EXPECT_EQ(entries[0].ino, 1000u);
    EXPECT_EQ(entries[1].ino, 1001u);
}

// GNU cpio is an independent reader; extracting with it checks the writer is not merely
// consistent with the test's own parser.
class GnuCpio : public ::testing::Test {
  protected:
    void SetUp() override {
        if (run_shell("command -v cpio >/dev/null 2>&1") != 0) GTEST_SKIP() << "cpio missing";
    }
    // Extracts archive into dir; returns cpio's exit code.
    int extract(const std::string& archive, const fs::path& dir) {
        const fs::path file = tmp_.path() / ("a" + std::to_string(counter_++) + ".cpio");
        test::write_file(file, archive);
        return run_shell("cd " + sh_quote(dir.string()) + " && cpio -idmu --quiet < " +
                         sh_quote(file.string()) + " 2>" + sh_quote(file.string() + ".err"));
    }
    std::string list(const std::string& archive) {
        const fs::path file = tmp_.path() / "list.cpio";
        const fs::path out = tmp_.path() / "list.txt";
        test::write_file(file, archive);
        EXPECT_EQ(run_shell("cpio -itv --quiet < " + sh_quote(file.string()) + " > " +
                            sh_quote(out.string())),
                  0);
        return test::read_file(out);
    }
    TempDir tmp_;
    int counter_ = 0;
};

TEST_F(GnuCpio, ExtractsContentsModesAndSymlinks) {
    TempDir out;
    const mode_t old = umask(0);
    const int rc = extract(sample_archive(), out.path());
    umask(old);
    ASSERT_EQ(rc, 0);
    const fs::path d = out.path() / "dir";
    for (int n = 0; n < 8; ++n) {
        const fs::path f = d / ("f" + std::string(n, 'x'));
        EXPECT_EQ(test::read_file(f), std::string(n, static_cast<char>('a' + n)));
        struct stat st;
        ASSERT_EQ(lstat(f.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode, S_IFREG | 0640u);
    }
    struct stat st;
    ASSERT_EQ(lstat((d / "exec").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, S_IFREG | 0755u);
    ASSERT_EQ(lstat((d / "sub").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, S_IFDIR | 0700u);
    EXPECT_TRUE(fs::is_symlink(d / "link"));
    EXPECT_EQ(fs::read_symlink(d / "link"), "exec");
    EXPECT_EQ(fs::read_symlink(out.path() / "abs"), "/dir/exec");
    if (geteuid() == 0) {  // mknod needs privilege
        ASSERT_EQ(lstat((out.path() / "dev/console").c_str(), &st), 0);
        EXPECT_TRUE(S_ISCHR(st.st_mode));
        EXPECT_EQ(major(st.st_rdev), 5u);
        EXPECT_EQ(minor(st.st_rdev), 1u);
        EXPECT_EQ(st.st_mode & 07777, 0600u);
    }
}

// Whitespace-separated fields of the `cpio -itv` line ending in name (ls -l style).
std::vector<std::string> listing_fields(const std::string& listing, const std::string& name) {
    std::istringstream lines(listing);
    for (std::string line; std::getline(lines, line);) {
        std::istringstream words(line);
        std::vector<std::string> fields;
        for (std::string w; words >> w;) fields.push_back(w);
        if (!fields.empty() && fields.back() == name) return fields;
        if (fields.size() >= 3 && fields[fields.size() - 3] == name) return fields;  // symlink
    }
    return {};
}

TEST_F(GnuCpio, ListsDeviceNode) {
    const std::string listing = list(sample_archive());
    // crw-------   1 root     root       5,   1 Jan  1  1970 dev/console
    const auto console = listing_fields(listing, "dev/console");
    ASSERT_GE(console.size(), 6u) << listing;
    EXPECT_EQ(console[0], "crw-------");
    EXPECT_EQ(console[1], "1");
    EXPECT_EQ(console[2], "root");
    EXPECT_EQ(console[4], "5,");
    EXPECT_EQ(console[5], "1");

    const auto link = listing_fields(listing, "dir/link");
    ASSERT_GE(link.size(), 3u) << listing;
    EXPECT_EQ(link[0], "lrwxrwxrwx");
    EXPECT_EQ(link[link.size() - 2], "->");
    EXPECT_EQ(link.back(), "exec");

    const auto sub = listing_fields(listing, "dir/sub");
    ASSERT_GE(sub.size(), 2u) << listing;
    EXPECT_EQ(sub[0], "drwx------");
    EXPECT_EQ(sub[1], "2");
}

// The VMM appends a run archive to the base one; the kernel unpacks both in order.
TEST_F(GnuCpio, ConcatenatedArchivesBothExtract) {
    Writer base;
    base.add_directory("etc");
    base.add_file("etc/motd", "base\n", 0644);
    base.add_file("etc/keep", "kept\n", 0644);
    const std::string a = base.finish();
    const std::string b = make_run_archive({"echo", "hi"}, {"A=1"}, "/root");
    Writer over(500);
    over.add_file("etc/motd", "override\n", 0600);
    const std::string c = over.finish();
    const std::string stream = a + b + c;

    ASSERT_EQ(a.size() % 4, 0u);
    const auto archives = parse_cpio_stream(stream);
    ASSERT_EQ(archives.size(), 3u);
    EXPECT_NE(find_entry(archives[1], "vessel/argv"), nullptr);
    // Zero padding between archives (e.g. page alignment by a loader) is also accepted.
    EXPECT_EQ(parse_cpio_stream(a + std::string(512, '\0') + b).size(), 2u);

    // GNU cpio stops at the first trailer, so feed it the members one after another, like
    // the kernel's unpacker continues after each trailer.
    TempDir out;
    ASSERT_EQ(extract(a, out.path()), 0);
    ASSERT_EQ(extract(b, out.path()), 0);
    ASSERT_EQ(extract(stream.substr(a.size() + b.size()), out.path()), 0);
    EXPECT_EQ(test::read_file(out.path() / "etc/motd"), "override\n");
    EXPECT_EQ(test::read_file(out.path() / "etc/keep"), "kept\n");
    EXPECT_EQ(test::read_file(out.path() / "vessel/argv"), std::string("echo\0hi\0", 8));
    EXPECT_EQ(test::read_file(out.path() / "vessel/cwd"), "/root");
}

TEST(RunArchive, RoundTrip) {
    const std::vector<std::string> argv = {"sh", "-c", "echo 'a b'", ""};
    const std::vector<std::string> env = {"A=1", "EMPTY=", "WITH=EQ=UALS"};
    const auto entries = parse_single(make_run_archive(argv, env, "/srv/app", "box"));
    ASSERT_EQ(entries.size(), 5u);
    EXPECT_EQ(entries[0].name, "vessel");
    EXPECT_EQ(entries[0].mode, S_IFDIR | 0755u);
    EXPECT_EQ(guest::split_nul_list(find_entry(entries, "vessel/argv")->data), argv);
    EXPECT_EQ(guest::split_nul_list(find_entry(entries, "vessel/env")->data), env);
    EXPECT_EQ(find_entry(entries, "vessel/cwd")->data, "/srv/app");
    EXPECT_EQ(find_entry(entries, "vessel/hostname")->data, "box");
    for (const auto& e : entries) EXPECT_GE(e.ino, 0x40000000u) << e.name;
}

TEST(RunArchive, OptionalFilesOmitted) {
    const auto entries = parse_single(make_run_archive({}, {}, ""));
    ASSERT_EQ(entries.size(), 3u);
    EXPECT_EQ(find_entry(entries, "vessel/argv")->filesize, 0u);
    EXPECT_EQ(find_entry(entries, "vessel/env")->filesize, 0u);
    EXPECT_EQ(find_entry(entries, "vessel/cwd"), nullptr);
    EXPECT_EQ(find_entry(entries, "vessel/hostname"), nullptr);
    EXPECT_EQ(find_entry(entries, "vessel/rootfs"), nullptr);
}

TEST(RunArchive, RootFs) {
    const guest::RootFs root{"/dev/vdb", "ext4", true, "noload"};
    const auto entries = parse_single(make_run_archive({"ls"}, {}, "/srv", "", root));
    ASSERT_EQ(entries.size(), 5u);
    const CpioEntry* e = find_entry(entries, "vessel/rootfs");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->mode, S_IFREG | 0644u);
    EXPECT_EQ(e->data, "source=/dev/vdb\nfstype=ext4\nreadonly=1\noptions=noload\n");
    std::string error;
    EXPECT_EQ(guest::parse_rootfs(e->data, &error), root) << error;
    EXPECT_EQ(find_entry(entries, "vessel/hostname"), nullptr);

    EXPECT_THROW(make_run_archive({"ls"}, {}, "/", "", guest::RootFs{.source = "vda"}),
                 std::invalid_argument);
}

TEST(RunArchive, RejectsUnrepresentableInput) {
    EXPECT_THROW(make_run_archive({std::string("a\0b", 3)}, {}, "/"), std::invalid_argument);
    EXPECT_THROW(make_run_archive({"sh"}, {"NOEQUALS"}, "/"), std::invalid_argument);
    EXPECT_THROW(make_run_archive({"sh"}, {"=value"}, "/"), std::invalid_argument);
    EXPECT_THROW(make_run_archive({"sh"}, {}, std::string("/a\0b", 4)), std::invalid_argument);
}

// The image produced by vessel-mkinitramfs during the build.
TEST(BaseInitramfs, HasExpectedLayout) {
    const std::string image = test::read_file(VESSEL_TEST_INITRAMFS);
    EXPECT_EQ(image.size() % 4, 0u);
    const auto entries = parse_single(image);

    std::set<std::string> seen;
    std::set<std::uint32_t> inodes;
    for (const auto& e : entries) {
        const auto slash = e.name.rfind('/');
        if (slash != std::string::npos) {
            EXPECT_TRUE(seen.count(e.name.substr(0, slash))) << "parent after child: " << e.name;
        }
        EXPECT_TRUE(seen.insert(e.name).second) << "duplicate " << e.name;
        EXPECT_TRUE(inodes.insert(e.ino).second) << "duplicate inode " << e.name;
        EXPECT_NE(e.name.front(), '/');
    }

    const CpioEntry* init = find_entry(entries, "init");
    ASSERT_NE(init, nullptr);
    EXPECT_EQ(init->mode, S_IFREG | 0755u);
    EXPECT_EQ(init->data.substr(0, 4),
              "\x7f"
              "ELF");
    EXPECT_EQ(init->data, test::read_file(VESSEL_TEST_INIT));

    const CpioEntry* bb = find_entry(entries, "bin/busybox");
    ASSERT_NE(bb, nullptr);
    EXPECT_EQ(bb->mode, S_IFREG | 0755u);
    for (const char* applet : {"bin/sh", "bin/ls", "bin/cat", "usr/bin/env", "sbin/reboot"}) {
        const CpioEntry* l = find_entry(entries, applet);
        ASSERT_NE(l, nullptr) << applet;
        EXPECT_EQ(l->mode, S_IFLNK | 0777u);
        EXPECT_EQ(l->data, "/bin/busybox");
    }

    const CpioEntry* console = find_entry(entries, "dev/console");
    ASSERT_NE(console, nullptr);
    EXPECT_EQ(console->mode, S_IFCHR | 0600u);
    EXPECT_EQ(console->rdevmajor, 5u);
    EXPECT_EQ(console->rdevminor, 1u);

    for (const char* dir :
         {"dev", "proc", "sys", "tmp", "run", "root", "etc", "usr/bin", "sbin", "mnt/root"}) {
        const CpioEntry* d = find_entry(entries, dir);
        ASSERT_NE(d, nullptr) << dir;
        EXPECT_TRUE(S_ISDIR(d->mode)) << dir;
    }
    EXPECT_EQ(find_entry(entries, "tmp")->mode, S_IFDIR | 01777u);
    EXPECT_EQ(find_entry(entries, "etc/passwd")->data.rfind("root:x:0:0:", 0), 0u);
    EXPECT_EQ(find_entry(entries, "etc/group")->data.rfind("root:x:0:", 0), 0u);
}

}  // namespace
}  // namespace vessel::initramfs
