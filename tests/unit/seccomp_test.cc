// The per-role seccomp filters (vmm/seccomp.h) on this host: in a forked child, a thread
// installs one role's filter and makes calls; a forbidden one kills the child by SIGSYS, the
// allowed ones return. Also the spawn path (a confined thread gets a thread of another role
// from the supervisor) and the VESSEL_SECCOMP_SELFTEST hook.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/guest_memory.h"
#include "vmm/seccomp.h"

namespace {

using vessel::vmm::seccomp::Role;
namespace sc = vessel::vmm::seccomp;

// Descriptors made before the filter goes in (a confined thread cannot make most of them).
struct Fds {
    int efd = -1;   // eventfd
    int ep = -1;    // epoll set holding efd
    int file = -1;  // memfd with 1 MiB
    int sock[2] = {-1, -1};
};

Fds make_fds() {
    Fds f;
    f.efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    f.ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ::epoll_ctl(f.ep, EPOLL_CTL_ADD, f.efd, &ev);
    f.file = ::memfd_create("seccomp-test", MFD_CLOEXEC);
    if (::ftruncate(f.file, 1 << 20) != 0) std::_Exit(90);
    ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, f.sock);
    if (f.efd < 0 || f.ep < 0 || f.file < 0 || f.sock[0] < 0) std::_Exit(91);
    return f;
}

// Exit codes of the child: 0 all allowed calls behaved, 2 an allowed call failed, 3 the
// forbidden call returned (the filter let it through).
constexpr int kAllowedFailed = 2;
constexpr int kForbiddenReturned = 3;

// Runs `body` in a thread of a forked child after installing `role`; returns the wait status.
int run_confined(Role role, const std::function<bool(const Fds&)>& body) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        Fds f = make_fds();
        int code = 0;
        std::thread t([&] {
            sc::install(role);
            code = body(f) ? 0 : kAllowedFailed;
        });
        t.join();
        std::_Exit(code);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return st;
}

std::string describe(int st) {
    if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return "signal " + std::to_string(WTERMSIG(st));
    return "status " + std::to_string(st);
}

// One role: calls its threads make (each must succeed, or fail the way a wrong fd makes it
// fail, which still shows the filter let it through), and calls it must never make.
struct RoleCase {
    Role role;
    std::function<bool(const Fds&)> allowed;
    std::vector<std::pair<std::string, std::function<void(const Fds&)>>> forbidden;
};

bool poke_and_drain(const Fds& f) {
    uint64_t one = 1, v = 0;
    return ::write(f.efd, &one, sizeof one) == sizeof one &&
           ::read(f.efd, &v, sizeof v) == sizeof v;
}

bool allocate(void) {
    std::vector<char> big(8 << 20, 1);  // mmap/munmap through malloc
    return big[12345] == 1;
}

void open_file(const Fds&) {
    int fd = ::open("/etc/hostname", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
}
void ip_socket(const Fds&) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) ::close(fd);
}
void exec_shell(const Fds&) {
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execve("/bin/true", argv, nullptr);
}
void fork_process(const Fds&) {
    pid_t p = ::fork();
    if (p == 0) std::_Exit(0);
}
void exec_mapping(const Fds&) {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) ::munmap(p, 4096);
}

std::vector<RoleCase> cases() {
    return {
        {Role::Vcpu,
         [](const Fds& f) {
             // KVM_RUN on an eventfd: ENOTTY from the kernel, i.e. the filter allowed it.
             errno = 0;
             bool run = ::ioctl(f.efd, KVM_RUN, 0) < 0 && errno == ENOTTY;
             return run && poke_and_drain(f) && allocate();
         },
         {{"ioctl KVM_CREATE_VM", [](const Fds& f) { ::ioctl(f.efd, KVM_CREATE_VM, 0); }},
          {"ioctl KVM_SET_USER_MEMORY_REGION",
           [](const Fds& f) { ::ioctl(f.efd, KVM_SET_USER_MEMORY_REGION, nullptr); }},
          {"openat", open_file},
          {"socket AF_INET", ip_socket},
          {"mmap PROT_EXEC", exec_mapping},
          {"fork", fork_process}}},
        {Role::DeviceEvents,
         [](const Fds& f) {
             epoll_event ev[4];
             uint64_t one = 1;
             if (::write(f.efd, &one, sizeof one) != sizeof one) return false;
             return ::epoll_wait(f.ep, ev, 4, 0) == 1 && poke_and_drain(f);
         },
         {{"ioctl KVM_RUN", [](const Fds& f) { ::ioctl(f.efd, KVM_RUN, 0); }},
          {"openat", open_file},
          {"readv",
           [](const Fds& f) {
               char b[4];
               iovec v{b, sizeof b};
               ::readv(f.file, &v, 1);
           }}}},
        {Role::BlockIo,
         [](const Fds& f) {
             char buf[4096] = {7};
             iovec v{buf, sizeof buf};
             bool io = ::pwritev(f.file, &v, 1, 8192) == sizeof buf &&
                       ::preadv(f.file, &v, 1, 8192) == sizeof buf && ::fdatasync(f.file) == 0;
             bool punch =
                 ::fallocate(f.file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
             pollfd p{f.efd, POLLIN, 0};
             return io && punch && ::poll(&p, 1, 0) == 0 && poke_and_drain(f);
         },
         {{"fallocate growing the image", [](const Fds& f) { ::fallocate(f.file, 0, 0, 2 << 20); }},
          {"ftruncate", [](const Fds& f) { [[maybe_unused]] int r = ::ftruncate(f.file, 0); }},
          {"openat", open_file},
          {"ioctl", [](const Fds& f) { ::ioctl(f.efd, KVM_RUN, 0); }},
          {"exec", exec_shell}}},
        {Role::NetIo,
         [](const Fds& f) {
             char out[64] = "frame", in[64] = {};
             iovec o{out, sizeof out}, i{in, sizeof in};
             return ::writev(f.sock[0], &o, 1) == sizeof out &&
                    ::readv(f.sock[1], &i, 1) == sizeof in && std::string(in) == "frame" &&
                    poke_and_drain(f);
         },
         {{"fallocate",
           [](const Fds& f) {
               ::fallocate(f.file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096);
           }},
          {"socket AF_UNIX", [](const Fds&) { ::socket(AF_UNIX, SOCK_STREAM, 0); }},
          {"sendmsg",
           [](const Fds& f) {
               msghdr m{};
               ::sendmsg(f.sock[0], &m, MSG_DONTWAIT);
           }},
          {"openat", open_file}}},
        {Role::VsockIo,
         [](const Fds& f) {
             int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
             if (s < 0) return false;
             ::close(s);
             char out[8] = "pkt";
             iovec o{out, sizeof out};
             msghdr m{};
             m.msg_iov = &o;
             m.msg_iovlen = 1;
             char in[8] = {};
             return ::sendmsg(f.sock[0], &m, MSG_DONTWAIT) == sizeof out &&
                    ::recv(f.sock[1], in, sizeof in, MSG_DONTWAIT) == sizeof in &&
                    poke_and_drain(f);
         },
         {{"socket AF_INET", ip_socket},
          {"socket AF_NETLINK", [](const Fds&) { ::socket(AF_NETLINK, SOCK_RAW, 0); }},
          {"openat", open_file},
          {"bind", [](const Fds& f) { ::bind(f.sock[0], nullptr, 0); }},
          {"ioctl", [](const Fds& f) { ::ioctl(f.efd, FIONREAD, nullptr); }}}},
        {Role::AgentControl,
         [](const Fds& f) {
             winsize ws{};
             errno = 0;
             bool tty = ::ioctl(f.efd, TIOCGWINSZ, &ws) < 0 && errno == ENOTTY;
             int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
             if (s < 0) return false;
             ::close(s);
             int fl = ::fcntl(f.sock[0], F_GETFL);
             bool nb = fl >= 0 && ::fcntl(f.sock[0], F_SETFL, fl | O_NONBLOCK) == 0;
             char in[8];
             bool io = ::send(f.sock[0], "x", 1, 0) == 1 && ::recv(f.sock[1], in, 8, 0) == 1;
             return tty && nb && io && poke_and_drain(f);
         },
         {{"ioctl TIOCSTI",
           [](const Fds& f) {
               char c = 'x';
               ::ioctl(f.efd, TIOCSTI, &c);
           }},
          {"fcntl F_SETOWN", [](const Fds& f) { ::fcntl(f.sock[0], F_SETOWN, 1); }},
          {"socket AF_INET", ip_socket},
          {"openat", open_file},
          {"exec", exec_shell}}},
        {Role::Control,
         [](const Fds& f) {
             // A snapshot directory's file: created, written, synced, renamed, removed.
             const std::string dir = "/tmp/vessel-seccomp-control." + std::to_string(::getpid());
             if (::mkdir(dir.c_str(), 0700) != 0) return false;
             const std::string a = dir + "/a", b = dir + "/b";
             int fd = ::open(a.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
             bool file = fd >= 0 && ::ftruncate(fd, 8192) == 0 && ::pwrite(fd, "x", 1, 4096) == 1 &&
                         ::fsync(fd) == 0;
             // --disks: a disk copied in, by reflink (refused by most file systems, but not
             // by the filter) or copy_file_range.
             int copy = ::open((dir + "/c").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
             int src = ::open(a.c_str(), O_RDONLY | O_CLOEXEC);
             (void)::ioctl(copy, FICLONE, src);
             loff_t off_in = 4096, off_out = 4096;
             file = file && ::copy_file_range(src, &off_in, copy, &off_out, 1, 0) == 1;
             for (int x : {fd, copy, src})
                 if (x >= 0) ::close(x);
             ::unlink((dir + "/c").c_str());
             file = file && ::rename(a.c_str(), b.c_str()) == 0 && ::unlink(b.c_str()) == 0;
             ::rmdir(dir.c_str());
             // KVM_GET_REGS on an eventfd: ENOTTY from the kernel, i.e. the filter allowed it.
             errno = 0;
             bool regs = ::ioctl(f.efd, KVM_GET_REGS, nullptr) < 0 && errno == ENOTTY;
             char in[8];
             bool io = ::send(f.sock[0], "x", 1, 0) == 1 && ::recv(f.sock[1], in, 8, 0) == 1;
             return file && regs && io && poke_and_drain(f);
         },
         {{"ioctl KVM_SET_REGS", [](const Fds& f) { ::ioctl(f.efd, KVM_SET_REGS, nullptr); }},
          {"ioctl KVM_RUN", [](const Fds& f) { ::ioctl(f.efd, KVM_RUN, 0); }},
          {"socket AF_INET", ip_socket},
          {"exec", exec_shell},
          {"fork", fork_process}}},
        {Role::Uffd,
         [](const Fds& f) {
             // The memory file is read with pread; UFFDIO_COPY on an eventfd: ENOTTY from the
             // kernel, i.e. the filter allowed it.
             char buf[4096];
             errno = 0;
             bool copy = ::ioctl(f.efd, UFFDIO_COPY, nullptr) < 0 && errno == ENOTTY;
             errno = 0;
             bool zero = ::ioctl(f.efd, UFFDIO_ZEROPAGE, nullptr) < 0 && errno == ENOTTY;
             pollfd p{f.efd, POLLIN, 0};
             return copy && zero && ::pread(f.file, buf, sizeof buf, 4096) == sizeof buf &&
                    ::poll(&p, 1, 0) == 0 && poke_and_drain(f) && allocate();
         },
         {{"ioctl UFFDIO_REGISTER", [](const Fds& f) { ::ioctl(f.efd, UFFDIO_REGISTER, nullptr); }},
          {"ioctl UFFDIO_UNREGISTER",
           [](const Fds& f) { ::ioctl(f.efd, UFFDIO_UNREGISTER, nullptr); }},
          {"pwrite64",
           [](const Fds& f) { [[maybe_unused]] ssize_t n = ::pwrite(f.file, "x", 1, 0); }},
          {"openat", open_file},
          {"ioctl KVM_RUN", [](const Fds& f) { ::ioctl(f.efd, KVM_RUN, 0); }},
          {"socket AF_INET", ip_socket},
          {"exec", exec_shell}}},
        {Role::Supervisor,
         [](const Fds& f) {
             // Threads (clone with CLONE_THREAD), which may do what the roles it starts do;
             // open and unlink fail quietly instead of killing.
             bool thread_ok = false;
             std::thread t([&] {
                 errno = 0;
                 thread_ok = ::ioctl(f.efd, KVM_RUN, 0) < 0 && errno == ENOTTY && allocate();
             });
             t.join();
             errno = 0;
             bool open_refused =
                 ::open("/etc/hostname", O_RDONLY | O_CLOEXEC) < 0 && errno == EACCES;
             errno = 0;
             open_refused =
                 open_refused && ::unlink("/nonexistent-vessel-test") < 0 && errno == EACCES;
             pollfd p{f.efd, POLLIN, 0};
             return thread_ok && open_refused && ::poll(&p, 1, 0) == 0 &&
                    ::pthread_kill(::pthread_self(), 0) == 0 && poke_and_drain(f);
         },
         {{"fork", fork_process},
          {"exec", exec_shell},
          {"socket AF_INET", ip_socket},
          {"ioctl KVM_CREATE_VM", [](const Fds& f) { ::ioctl(f.efd, KVM_CREATE_VM, 0); }},
          {"mmap PROT_EXEC", exec_mapping},
          {"mkdir", [](const Fds&) { ::mkdir("/nonexistent-vessel-test", 0700); }}}},
    };
}

TEST(Seccomp, EveryRoleHasACase) {
    std::vector<RoleCase> cs = cases();
    ASSERT_EQ(cs.size(), std::size(sc::kRoles));
    for (size_t i = 0; i < cs.size(); ++i) EXPECT_EQ(cs[i].role, sc::kRoles[i]);
}

TEST(Seccomp, RoleNamesRoundTrip) {
    for (Role r : sc::kRoles) EXPECT_EQ(sc::role_from_name(sc::role_name(r)), r);
    EXPECT_FALSE(sc::role_from_name("main"));
}

TEST(Seccomp, AllowedCallsWorkInEveryRole) {
    for (const RoleCase& c : cases()) {
        int st = run_confined(c.role, c.allowed);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
            << sc::role_name(c.role) << ": " << describe(st);
    }
}

TEST(Seccomp, ForbiddenCallKillsTheProcessInEveryRole) {
    for (const RoleCase& c : cases()) {
        ASSERT_FALSE(c.forbidden.empty());
        for (const auto& [what, call] : c.forbidden) {
            int st = run_confined(c.role, [&](const Fds& f) {
                call(f);
                std::_Exit(kForbiddenReturned);
                return false;
            });
            EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
                << sc::role_name(c.role) << " / " << what << ": " << describe(st);
        }
    }
}

TEST(Seccomp, EnterDoesNothingUntilEnabled) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        std::thread t([] {
            sc::enter(Role::Vcpu);
            open_file({});  // would be fatal under the vCPU filter
            std::_Exit(sc::filtered() ? 4 : 0);
        });
        t.join();
        std::_Exit(5);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st);
}

// In a child process with filters enabled and a spawn service: a vCPU thread (checked by
// `vcpu_ok`) asks the supervisor for a device thread of role `device`, whose `device_ok` is
// the result; `supervisor_ok` then runs on the supervisor. `confine`: the supervisor enters
// its own role first. Returns the child's wait status.
int supervisor_scenario(bool confine, Role device, std::function<bool(const Fds&)> vcpu_ok,
                        std::function<bool(const Fds&)> device_ok,
                        std::function<bool(const Fds&)> supervisor_ok) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::unsetenv("VESSEL_SECCOMP_SELFTEST");
        ::unsetenv("VESSEL_SECCOMP_LOG");
        sc::enable();
        Fds f = make_fds();
        sc::SpawnService svc;
        if (confine) {
            // As in the VMM, a thread exists before: glibc's first pthread_create installs
            // its signal handlers (rt_sigaction), which no role may do.
            std::thread([] {}).join();
            sc::enter(Role::Supervisor);
            if (!sc::filtered()) std::_Exit(5);
        }
        std::atomic<int> result{-1};
        std::thread vcpu = sc::spawn(Role::Vcpu, [&] {
            if (!sc::filtered() || !vcpu_ok(f)) std::_Exit(6);
            std::thread io =
                sc::spawn(device, [&] { result = sc::filtered() && device_ok(f) ? 0 : 7; });
            io.join();
        });
        for (int waited = 0; result.load() < 0; waited += 10) {
            if (waited > 5000) std::_Exit(8);
            pollfd p{svc.fd(), POLLIN, 0};
            if (::poll(&p, 1, 10) > 0) svc.serve();
        }
        vcpu.join();
        if (!supervisor_ok(f)) std::_Exit(9);
        std::_Exit(result.load());
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    return st;
}

// A vCPU thread activating a disk asks the supervisor for the disk's I/O thread: that thread
// runs under the block filter only (fdatasync works, which the vCPU filter forbids). The
// supervisor itself is not confined.
TEST(Seccomp, ConfinedThreadGetsItsChildFromTheSupervisor) {
    const int st = supervisor_scenario(
        false, Role::BlockIo, [](const Fds&) { return true; },
        [](const Fds& f) { return ::fdatasync(f.file) == 0; },
        [](const Fds&) {
            const int fd = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0) ::close(fd);
            return fd >= 0;
        });
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st);
}

// A confined supervisor (a jailed VMM's Machine::run) serves the same requests: the vCPU it
// starts and the device thread that vCPU asks for run under both filters and still do their
// work; the supervisor itself may no longer open files.
TEST(Seccomp, ConfinedSupervisorStartsRolesUnderBothFilters) {
    const int st = supervisor_scenario(
        true, Role::VsockIo,
        [](const Fds& f) {
            errno = 0;
            return ::ioctl(f.efd, KVM_RUN, 0) < 0 && errno == ENOTTY;
        },
        [](const Fds&) {
            const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd >= 0) ::close(fd);
            return fd >= 0;
        },
        [](const Fds&) {
            errno = 0;
            return ::open("/etc/hostname", O_RDONLY | O_CLOEXEC) < 0 && errno == EACCES;
        });
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st);
}

// restore --uffd's handler thread runs under its own role and still fills every page: from
// the file, as zeros for a hole, on a write.
TEST(Seccomp, UffdHandlerServesFaultsUnderItsFilter) {
    try {
        vessel::vmm::open_userfaultfd();
    } catch (const std::system_error&) {
        GTEST_SKIP() << "no userfaultfd for this process";
    }
    char dir[] = "/var/tmp/vessel-seccomp-uffd-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    const std::string file = std::string(dir) + "/memory";
    {
        auto m = vessel::vmm::GuestMemory::create(32 << 20);
        ASSERT_TRUE(m.write_obj<uint64_t>(0x5000, 0x1234));
        m.save(file);
    }
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::unsetenv("VESSEL_SECCOMP_SELFTEST");
        ::unsetenv("VESSEL_SECCOMP_LOG");
        sc::enable();
        auto m = vessel::vmm::GuestMemory::restore_uffd(file, 32 << 20, {}, nullptr, true);
        int code = 0;
        std::thread t([&] {
            uint64_t a = 0, b = 1;
            if (!m.read_obj(0x5000, a) || a != 0x1234) code = 14;
            if (!m.read_obj(0x9000, b) || b != 0) code = 15;
            if (!m.write_obj<uint64_t>(0xa000, 9)) code = 16;
        });
        t.join();
        if (m.uffd_stats().faults != 3 || m.take_recorded().size() != 3) code = 17;
        std::_Exit(code);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    std::filesystem::remove_all(dir);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st);
}

TEST(Seccomp, SpawnFromConfinedThreadWithoutSupervisorFails) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::unsetenv("VESSEL_SECCOMP_SELFTEST");
        ::unsetenv("VESSEL_SECCOMP_LOG");
        sc::enable();
        int code = 9;
        std::thread vcpu = sc::spawn(Role::Vcpu, [&] {
            try {
                std::thread t = sc::spawn(Role::BlockIo, [] {});
                t.join();
            } catch (const std::system_error& e) {
                code = e.code().value() == EDEADLK ? 0 : 10;
            }
        });
        vcpu.join();
        std::_Exit(code);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st);
}

// VESSEL_SECCOMP_SELFTEST=ROLE: the first thread entering ROLE makes a forbidden call.
TEST(Seccomp, SelftestHookKillsEachRoleByItsFilter) {
    for (Role r : sc::kRoles) {
        std::fflush(nullptr);
        pid_t pid = ::fork();
        if (pid == 0) {
            ::setenv("VESSEL_SECCOMP_SELFTEST", sc::role_name(r), 1);
            ::unsetenv("VESSEL_SECCOMP_LOG");
            sc::enable();
            std::thread t = sc::spawn(r, [] {});
            t.join();
            std::_Exit(kForbiddenReturned);
        }
        int st = 0;
        ::waitpid(pid, &st, 0);
        EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
            << sc::role_name(r) << ": " << describe(st);
    }
}

TEST(Seccomp, UnknownSelftestRoleIsASetupError) {
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::setenv("VESSEL_SECCOMP_SELFTEST", "nonsense", 1);
        try {
            sc::enable();
        } catch (const std::system_error& e) {
            std::_Exit(std::string(e.what()).find("nonsense") != std::string::npos ? 0 : 11);
        }
        std::_Exit(12);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st);
}

// Debugging mode: the forbidden call is reported and fails with ENOSYS instead of killing.
TEST(Seccomp, LogModeReportsAndContinues) {
    int pipefd[2];
    ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(pipefd[1], STDERR_FILENO);
        ::setenv("VESSEL_SECCOMP_LOG", "1", 1);
        ::unsetenv("VESSEL_SECCOMP_SELFTEST");
        sc::enable();
        int code = 13;
        std::thread t = sc::spawn(Role::NetIo, [&] {
            errno = 0;
            int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            code = fd < 0 && errno == ENOSYS ? 0 : 14;
        });
        t.join();
        std::_Exit(code);
    }
    ::close(pipefd[1]);
    std::string err;
    char buf[512];
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) err.append(buf, n);
    ::close(pipefd[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << describe(st) << "\n" << err;
    EXPECT_NE(err.find("net-io thread"), std::string::npos) << err;
    EXPECT_NE(err.find("forbidden syscall 41"), std::string::npos) << err;  // socket
}

}  // namespace
