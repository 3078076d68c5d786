// Disk copies of snapshots (`snapshot create --disks`, `restore --revert-disks`) on real files.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "snapshot/disk_copy.h"
#include "vmm/fd.h"

namespace vessel::snapshot {
namespace {

struct Dir {
    Dir() {
        char t[] = "/var/tmp/vessel-disk-test-XXXXXX";
        if (!::mkdtemp(t)) throw std::runtime_error("mkdtemp");
        path = t;
    }
    ~Dir() { std::filesystem::remove_all(path); }
    std::string operator/(const std::string& n) const { return path + "/" + n; }
    std::string path;
};

void write_at(const std::string& path, off_t off, const std::string& data) {
    UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(f);
    ASSERT_EQ(::pwrite(f.get(), data.data(), data.size(), off), static_cast<ssize_t>(data.size()));
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

// tmpfs to ext4 (a container's disk in /run, its checkpoint under /var/lib): the kernel's
// copy_file_range refuses file systems of different kinds, and the copy reads and writes.
TEST(SnapshotDisk, CopyBetweenFileSystemsOfDifferentKinds) {
    Dir d;
    char t[] = "/dev/shm/vessel-disk-test-XXXXXX";
    ASSERT_TRUE(::mkdtemp(t));
    const std::string shm = t;
    const std::string disk = shm + "/disk.img", copy = d / "copy.img";
    std::string big(3 << 20, 'x');  // more than one read-write chunk
    write_at(disk, 4096, big);
    write_at(disk, 16 << 20, "tail");
    copy_disk(disk, copy);
    const bool same = read_all(copy) == read_all(disk);
    std::filesystem::remove_all(shm);
    EXPECT_TRUE(same);
    struct stat b {};
    ASSERT_EQ(::stat(copy.c_str(), &b), 0);
    EXPECT_EQ(b.st_size, (16 << 20) + 4);
    EXPECT_LT(b.st_blocks * 512, 8 << 20);  // the hole between stayed a hole
}

TEST(SnapshotDisk, CopyKeepsDataAndHoles) {
    Dir d;
    const std::string disk = d / "disk.img", copy = d / "copy.img";
    write_at(disk, 0, "head");
    write_at(disk, 8 << 20, "middle");
    ASSERT_EQ(::truncate(disk.c_str(), 32 << 20), 0);
    copy_disk(disk, copy);
    EXPECT_EQ(read_all(copy), read_all(disk));
    struct stat a {
    }, b{};
    ASSERT_EQ(::stat(disk.c_str(), &a), 0);
    ASSERT_EQ(::stat(copy.c_str(), &b), 0);
    EXPECT_EQ(b.st_size, 32 << 20);
    // Sparse (or shared): far less allocated than the 32 MiB the file spans.
    EXPECT_LT(b.st_blocks * 512, 4 << 20);
    // The copy is its own file.
    write_at(disk, 0, "HEAD");
    EXPECT_EQ(read_all(copy).substr(0, 4), "head");
    // An existing target is never overwritten.
    EXPECT_THROW(copy_disk(disk, copy), std::system_error);
    EXPECT_EQ(read_all(copy).substr(0, 4), "head");
}

TEST(SnapshotDisk, CopyRefusesWhatIsNotAnImageFile) {
    Dir d;
    try {
        copy_disk("/dev/null", d / "x");
        ADD_FAILURE() << "no error";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EINVAL);
        EXPECT_NE(std::string(e.what()).find("not an image file"), std::string::npos);
    }
    EXPECT_FALSE(std::filesystem::exists(d / "x"));
    EXPECT_THROW(copy_disk(d / "missing", d / "y"), std::system_error);
    EXPECT_FALSE(std::filesystem::exists(d / "y"));
}

TEST(SnapshotDisk, RevertReplacesTheDiskUnlessAVmHoldsIt) {
    Dir d;
    const std::string disk = d / "disk.img", copy = d / "copy.img";
    write_at(disk, 0, "at the snapshot");
    copy_disk(disk, copy);
    write_at(disk, 0, "changed later!!");
    {
        // A running VM's lock (virtio/block/disk.cc takes the same flock).
        UniqueFd held(::open(disk.c_str(), O_RDWR | O_CLOEXEC));
        ASSERT_EQ(::flock(held.get(), LOCK_EX | LOCK_NB), 0);
        EXPECT_TRUE(disk_in_use(disk));
        try {
            revert_disk(copy, disk);
            ADD_FAILURE() << "no error";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EBUSY);
        }
        EXPECT_EQ(read_all(disk), "changed later!!");
    }
    EXPECT_FALSE(disk_in_use(disk));
    revert_disk(copy, disk);
    EXPECT_EQ(read_all(disk), "at the snapshot");
    EXPECT_EQ(read_all(copy), "at the snapshot");  // the copy stays for the next revert
    EXPECT_FALSE(std::filesystem::exists(disk + ".vessel-revert"));
    EXPECT_FALSE(disk_in_use(d / "missing"));
}

}  // namespace
}  // namespace vessel::snapshot
