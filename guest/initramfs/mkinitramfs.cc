// vessel-mkinitramfs OUT --init PATH --busybox PATH
// Builds the base initramfs: vessel-init as /init, a static busybox with one symlink per
// applet, the directories init mounts onto (/mnt/root for a disk root), /dev/console, and a
// minimal /etc.
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "guest/init/unique_fd.h"
#include "guest/initramfs/cpio.h"

extern char** environ;

namespace {

using vessel::guest::UniqueFd;
using vessel::initramfs::Writer;

[[noreturn]] void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

std::string read_whole(int fd, const std::string& what) {
    std::string out;
    char buf[65536];
    for (;;) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(what);
        }
        if (n == 0) return out;
        out.append(buf, static_cast<size_t>(n));
    }
}

std::string read_file(const std::string& path) {
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("opening " + path);
    return read_whole(fd.get(), "reading " + path);
}

// Runs args[0] (a path, no PATH lookup) and captures its stdout; true if it exited 0.
bool run_capture(const std::vector<std::string>& args, std::string& out) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) throw_errno("creating pipe");
    UniqueFd rd(fds[0]);
    UniqueFd wr(fds[1]);

    posix_spawn_file_actions_t fa;
    if (int e = posix_spawn_file_actions_init(&fa); e != 0)
        throw std::system_error(e, std::generic_category(), "posix_spawn_file_actions_init");
    posix_spawn_file_actions_adddup2(&fa, wr.get(), STDOUT_FILENO);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    const int e = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) throw std::system_error(e, std::generic_category(), "running " + args[0]);
    wr.reset();  // so read() sees EOF when the child exits

    out = read_whole(rd.get(), "reading output of " + args[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw_errno("waiting for " + args[0]);
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < s.size()) {
        size_t nl = s.find('\n', pos);
        if (nl == std::string::npos) nl = s.size();
        if (nl > pos) out.push_back(s.substr(pos, nl - pos));
        pos = nl + 1;
    }
    return out;
}

// Applet paths relative to /, e.g. "bin/ls", "usr/sbin/chroot".
std::vector<std::string> busybox_applets(const std::string& busybox) {
    std::string out;
    // --list-full gives the canonical location; older builds only know --list.
    if (run_capture({busybox, "--list-full"}, out) && !out.empty()) return split_lines(out);
    if (!run_capture({busybox, "--list"}, out) || out.empty())
        throw std::runtime_error(busybox + " --list failed");
    std::vector<std::string> applets;
    for (auto& name : split_lines(out)) applets.push_back("bin/" + name);
    return applets;
}

class Builder {
  public:
    void dir(const std::string& path, uint32_t mode = 0755) {
        parents(path);
        if (seen_.insert(path).second) w_.add_directory(path, mode);
    }
    void file(const std::string& path, const std::string& bytes, uint32_t mode) {
        parents(path);
        if (!seen_.insert(path).second) throw std::runtime_error("duplicate entry " + path);
        w_.add_file(path, bytes, mode);
    }
    // Returns false if the path is already taken (an applet named like a real file).
    bool symlink(const std::string& path, const std::string& target) {
        parents(path);
        if (!seen_.insert(path).second) return false;
        w_.add_symlink(path, target);
        return true;
    }
    void char_device(const std::string& path, uint32_t major, uint32_t minor, uint32_t mode) {
        parents(path);
        if (seen_.insert(path).second) w_.add_char_device(path, major, minor, mode);
    }
    std::string finish() { return w_.finish(); }

  private:
    // The kernel does not create missing parent directories.
    void parents(const std::string& path) {
        for (size_t slash = path.find('/'); slash != std::string::npos;
             slash = path.find('/', slash + 1))
            dir(path.substr(0, slash));
    }

    Writer w_;
    std::set<std::string> seen_;
};

std::string build(const std::string& init, const std::string& busybox) {
    Builder b;
    b.dir("dev");
    b.dir("proc", 0555);
    b.dir("sys", 0555);
    b.dir("tmp", 01777);
    b.dir("run");
    b.dir("root", 0700);
    b.dir("mnt/root");  // kRootMountPoint: where init mounts a disk root before switching
    b.dir("etc");
    b.dir("bin");
    b.dir("sbin");
    b.dir("usr/bin");
    b.dir("usr/sbin");
    // The kernel opens it for init's stdio before any devtmpfs is mounted.
    b.char_device("dev/console", 5, 1, 0600);
    b.file("init", read_file(init), 0755);
    b.file("bin/busybox", read_file(busybox), 0755);
    for (const auto& applet : busybox_applets(busybox)) b.symlink(applet, "/bin/busybox");
    b.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
    b.file("etc/group", "root:x:0:\n", 0644);
    b.file("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n", 0644);
    return b.finish();
}

// Temp file in the destination directory, renamed over OUT only when complete, so make
// never sees a truncated image after an interrupted build.
void write_atomically(const std::string& out, const std::string& data) {
    std::string tmp = out + ".tmp.XXXXXX";
    UniqueFd fd(mkstemp(tmp.data()));
    if (!fd) throw_errno("creating temporary file for " + out);
    struct Unlinker {
        const std::string* path;
        ~Unlinker() {
            if (path) unlink(path->c_str());
        }
    } cleanup{&tmp};

    for (size_t off = 0; off < data.size();) {
        const ssize_t n = write(fd.get(), data.data() + off, data.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("writing " + tmp);
        }
        off += static_cast<size_t>(n);
    }
    if (fchmod(fd.get(), 0644) < 0) throw_errno("chmod " + tmp);
    fd.reset();
    if (rename(tmp.c_str(), out.c_str()) < 0) throw_errno("renaming " + tmp + " to " + out);
    cleanup.path = nullptr;
}

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: vessel-mkinitramfs OUT --init PATH --busybox PATH\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    std::string out, init, busybox;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if ((a == "--init" || a == "--busybox") && i + 1 < argc)
            (a == "--init" ? init : busybox) = argv[++i];
        else if (!a.empty() && a[0] != '-' && out.empty())
            out = a;
        else
            usage();
    }
    if (out.empty() || init.empty() || busybox.empty()) usage();
    try {
        write_atomically(out, build(init, busybox));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vessel-mkinitramfs: %s\n", e.what());
        return 1;
    }
    return 0;
}
