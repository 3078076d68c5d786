#include "disk_image.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <vector>

#include "vmm/fd.h"

extern char** environ;

namespace vessel::image {

void make_ext4_from_dir(const std::string& dir, const std::string& image, uint64_t size_bytes,
                        const std::string& label) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) < 0) throw_errno("source directory " + dir);
    if (!S_ISDIR(st.st_mode)) throw std::runtime_error(dir + ": not a directory");
    if (size_bytes < (4u << 20)) throw std::invalid_argument("image size must be at least 4 MiB");

    const std::string tmp = image + ".tmp." + std::to_string(::getpid());
    {
        UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!fd) throw_errno("creating " + tmp);
        if (::ftruncate(fd.get(), static_cast<off_t>(size_bytes)) < 0) {
            int e = errno;
            ::unlink(tmp.c_str());
            throw_errno("sizing " + tmp, e);
        }
    }
    // mkfs.ext4 prints its own diagnostics on stderr; stdout chatter is dropped.
    std::vector<std::string> args = {"mkfs.ext4", "-q", "-F", "-L", label, "-d", dir, tmp};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, "mkfs.ext4", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        ::unlink(tmp.c_str());
        throw_errno("running mkfs.ext4 (install e2fsprogs)", rc);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ::unlink(tmp.c_str());
        throw std::runtime_error("mkfs.ext4 failed making an image of " + dir +
                                 " (is the size large enough for its contents?)");
    }
    if (::rename(tmp.c_str(), image.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        throw_errno("renaming " + tmp + " to " + image, e);
    }
}

}  // namespace vessel::image
