// Every seccomp allow-list of the VMM, one per thread role (vmm/seccomp.h). Each list is the
// common base plus what that role's code calls, syscall by syscall, with arguments pinned
// where the kernel reads them from registers (ioctl requests, socket families, fcntl
// commands, mmap/mprotect protections, fallocate modes). glibc wrappers are listed by the
// syscall they really issue (recv -> recvfrom, send -> sendto, epoll_wait -> epoll_wait,
// sleep_for -> clock_nanosleep).
//
// To let a role do more, add rules to its list below.
#include "seccomp_filters.h"

#include <asm/termbits.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <initializer_list>

#include "kvm_abi.h"

namespace vessel::vmm::seccomp {
namespace {

// The kernel reads these arguments as 32-bit ints: compare the low half only, as it does.
constexpr uint64_t kLow32 = 0xffffffffull;

scmp_arg_cmp eq32(unsigned arg, uint64_t v) {
    return {arg, SCMP_CMP_MASKED_EQ, kLow32, v};
}
scmp_arg_cmp bits_clear(unsigned arg, uint64_t mask) {
    return {arg, SCMP_CMP_MASKED_EQ, mask, 0};
}

void allow(std::vector<Rule>& out, std::initializer_list<int> nrs) {
    for (int nr : nrs) out.push_back({nr, {}, 0});
}
// `nr` when argument `arg` is one of `values` (one rule each).
void allow_arg(std::vector<Rule>& out, int nr, unsigned arg,
               std::initializer_list<uint64_t> values) {
    for (uint64_t v : values) out.push_back({nr, {eq32(arg, v)}, 0});
}

// Request numbers a vCPU thread may pass to ioctl: running the vCPU, the serial port's
// interrupt line, and the tap's offloads, which virtio-net sets at DRIVER_OK.
constexpr uint64_t kVcpuIoctls[] = {KVM_RUN, KVM_IRQ_LINE, TUNSETOFFLOAD};

// What the control thread issues while the machine is paused: reading every vCPU's and the
// VM's state for a snapshot (Machine::capture), the guest clock (pause, resume), and the MSR
// list probed on the first capture, and the dirty-page log of a diff snapshot (reading it
// re-arms KVM's write tracking). Reads only, besides the clock: a snapshot never changes the
// guest's state.
constexpr uint64_t kCaptureIoctls[] = {
    KVM_GET_REGS,    KVM_GET_SREGS,       KVM_GET_FPU,           KVM_GET_LAPIC,
    KVM_GET_XCRS,    KVM_GET_VCPU_EVENTS, KVM_GET_MP_STATE,      KVM_GET_DEBUGREGS,
    KVM_GET_IRQCHIP, KVM_GET_PIT2,        KVM_GET_CLOCK,         KVM_SET_CLOCK,
    KVM_GET_TSC_KHZ, abi::kGetMsrs,       abi::kGetMsrIndexList, abi::kGetXsave,
    abi::kGetXsave2, abi::kGetCpuid2,     KVM_CHECK_EXTENSION,   KVM_GET_DIRTY_LOG};

// Terminal ioctls of the agent thread: window size, raw mode on and off (tcgetattr,
// tcsetattr, isatty).
constexpr uint64_t kTerminalIoctls[] = {TIOCGWINSZ, TCGETS, TCSETS, TCSETSW, TCSETSF};

// Every thread: memory (no executable mappings), locks, time, its own exit, signal return,
// and writing its log lines.
void base(std::vector<Rule>& out) {
    allow(out, {SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(close), SCMP_SYS(futex), SCMP_SYS(exit),
                SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn), SCMP_SYS(restart_syscall),
                SCMP_SYS(rt_sigprocmask), SCMP_SYS(sched_yield), SCMP_SYS(gettid), SCMP_SYS(getpid),
                SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
                SCMP_SYS(brk), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(sigaltstack)});
    out.push_back({SCMP_SYS(mmap), {bits_clear(2, PROT_EXEC)}, 0});
    out.push_back({SCMP_SYS(mprotect), {bits_clear(2, PROT_EXEC)}, 0});
    // malloc trimming and glibc freeing a finished thread's stack.
    allow_arg(out, SCMP_SYS(madvise), 2, {MADV_DONTNEED, MADV_FREE});
    // pthread_create on glibc 2.34+ tries clone3 first; ENOSYS makes it use clone. No role
    // creates threads (spawn() asks the supervisor), so clone itself stays forbidden.
    out.push_back({SCMP_SYS(clone3), {}, ENOSYS});
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizer runtimes, from any thread: their allocator's advice, their probe of
    // readable memory (a pipe), per-thread set-up and tear-down. Not openat: a report from a
    // confined thread dies by SIGSYS (run with VESSEL_SECCOMP_LOG=1 or --no-seccomp to see it).
    allow(out, {SCMP_SYS(madvise), SCMP_SYS(pipe2), SCMP_SYS(pipe), SCMP_SYS(prctl),
                SCMP_SYS(sched_getaffinity), SCMP_SYS(prlimit64), SCMP_SYS(getrlimit),
                SCMP_SYS(rt_sigaction), SCMP_SYS(tgkill), SCMP_SYS(fstat), SCMP_SYS(readlink),
                SCMP_SYS(getppid)});
#endif
}

std::vector<Rule> vcpu() {
    std::vector<Rule> r;
    base(r);
    for (uint64_t req : kVcpuIoctls) allow_arg(r, SCMP_SYS(ioctl), 1, {req});
    // Device activation and reset run here (the driver writes the status register): the
    // vsock muxer's epoll set, a reset waiting for a disk's requests or cancelling a tap's.
    allow(r, {SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl), SCMP_SYS(poll), SCMP_SYS(ppoll),
              SCMP_SYS(io_uring_enter), SCMP_SYS(shutdown)});
    return r;
}

std::vector<Rule> device_events() {
    std::vector<Rule> r;
    base(r);
    allow(r, {SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait)});
    return r;
}

// What both engines do on one file: io_uring submissions and, for the sync engine, plain
// reads and writes, with poll for the device's eventfds.
void engine_common(std::vector<Rule>& r) {
    allow(r, {SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(io_uring_enter), SCMP_SYS(preadv2),
              SCMP_SYS(pwritev2)});
}

std::vector<Rule> block_io() {
    std::vector<Rule> r;
    base(r);
    engine_common(r);
    allow(r, {SCMP_SYS(preadv), SCMP_SYS(pwritev), SCMP_SYS(fdatasync)});
    // DISCARD and WRITE_ZEROES only: never growing the image, never anything else.
    for (uint64_t mode :
         {FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE})
        r.push_back({SCMP_SYS(fallocate), {eq32(1, mode)}, 0});
    return r;
}

std::vector<Rule> net_io() {
    std::vector<Rule> r;
    base(r);
    engine_common(r);
    // The sync engine: frames with readv/writev, reads parked in its epoll set.
    allow(r, {SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(epoll_ctl), SCMP_SYS(epoll_wait),
              SCMP_SYS(epoll_pwait)});
    return r;
}

std::vector<Rule> vsock_io() {
    std::vector<Rule> r;
    base(r);
    allow(r, {SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl), SCMP_SYS(accept4),
              SCMP_SYS(recvfrom), SCMP_SYS(sendmsg), SCMP_SYS(readv), SCMP_SYS(shutdown),
              SCMP_SYS(getsockopt), SCMP_SYS(connect)});
    // A jailed VMM's guest connections come back from the connect broker (SCM_RIGHTS).
    allow(r, {SCMP_SYS(recvmsg)});
    // Guest connections to the host reach Unix sockets, nothing else.
    allow_arg(r, SCMP_SYS(socket), 0, {AF_UNIX});
    return r;
}

std::vector<Rule> agent_control() {
    std::vector<Rule> r;
    base(r);
    allow(r,
          {SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(connect), SCMP_SYS(recvfrom), SCMP_SYS(sendto),
           SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(readv), SCMP_SYS(writev),
           SCMP_SYS(shutdown), SCMP_SYS(getsockopt), SCMP_SYS(signalfd4), SCMP_SYS(accept4)});
    allow_arg(r, SCMP_SYS(socket), 0, {AF_UNIX});
    allow_arg(r, SCMP_SYS(fcntl), 1, {F_GETFL, F_SETFL, F_GETFD, F_SETFD});
    // fstat of stdio (glibc: newfstatat(fd, "", AT_EMPTY_PATH)).
    allow(r, {SCMP_SYS(fstat)});
    r.push_back({SCMP_SYS(newfstatat), {{3, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH}}, 0});
    for (uint64_t req : kTerminalIoctls) allow_arg(r, SCMP_SYS(ioctl), 1, {req});
    return r;
}

// The API socket's thread (snapshot/control.h): one Unix connection at a time, the machine
// paused through its vCPU threads (a kick signal), state read with kCaptureIoctls, and a
// snapshot directory written (files created, written, synced, renamed; a failed one removed;
// with --disks, disk images copied in: copy_file_range, or a FICLONE reflink).
// It never reads guest-controlled data besides guest RAM it copies out.
std::vector<Rule> control() {
    std::vector<Rule> r;
    base(r);
    allow(r, {SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(accept4), SCMP_SYS(recvfrom),
              SCMP_SYS(sendto), SCMP_SYS(tgkill), SCMP_SYS(openat), SCMP_SYS(mkdir),
              SCMP_SYS(mkdirat), SCMP_SYS(access), SCMP_SYS(faccessat), SCMP_SYS(faccessat2),
              SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(rmdir), SCMP_SYS(rename),
              SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(ftruncate), SCMP_SYS(pwrite64),
              SCMP_SYS(lseek), SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(fstat),
              SCMP_SYS(newfstatat), SCMP_SYS(statx), SCMP_SYS(flock), SCMP_SYS(mincore),
              // snapshot create --disks: a sparse copy of each writable disk
              SCMP_SYS(copy_file_range)});
    for (uint64_t req : kCaptureIoctls) allow_arg(r, SCMP_SYS(ioctl), 1, {req});
    allow_arg(r, SCMP_SYS(ioctl), 1, {FICLONE});  // --disks: a reflink where the fs can
    return r;
}

// Guest RAM's userfaultfd handler (vmm/uffd.h, `restore --uffd`): waits for faults, reads
// the page from a memory file opened at set-up and installs it. No open, no write to a file,
// no registering of other ranges: the working-set file is written by the supervisor.
constexpr uint64_t kUffdIoctls[] = {UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE};

std::vector<Rule> uffd() {
    std::vector<Rule> r;
    base(r);
    allow(r, {SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(pread64)});
    for (uint64_t req : kUffdIoctls) allow_arg(r, SCMP_SYS(ioctl), 1, {req});
    return r;
}

// A jailed VMM's supervisor (Machine::run_vcpus): it polls its signalfd and the spawn
// service, creates threads (clone with CLONE_THREAD only: no fork; the new thread registers
// rseq and its robust list, then installs its role's filter), kicks and joins the vCPU
// threads. Filters stack, so the threads it starts can do no more than this list allows: it
// holds the lists of every role it starts. What it does after the VM stopped stays inside:
// the terminal put back out of raw mode (`boot --jail -t`); a late log line to a file or the
// API socket's removal fail with EACCES instead of killing the VMM (those paths are not in
// the jail; the process outside removes the socket).
std::vector<Rule> supervisor() {
    std::vector<Rule> r;
    base(r);
    constexpr uint64_t kThread = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
    r.push_back({SCMP_SYS(clone), {{0, SCMP_CMP_MASKED_EQ, kThread, kThread}}, 0});
    allow(r, {SCMP_SYS(set_robust_list), SCMP_SYS(rseq), SCMP_SYS(poll), SCMP_SYS(ppoll),
              SCMP_SYS(tgkill)});
    allow_arg(r, SCMP_SYS(prctl), 0, {PR_SET_NO_NEW_PRIVS});
    allow_arg(r, SCMP_SYS(seccomp), 0, {SECCOMP_SET_MODE_FILTER});
    for (int nr : {SCMP_SYS(openat), SCMP_SYS(unlink), SCMP_SYS(unlinkat)})
        r.push_back({nr, {}, EACCES});
    for (uint64_t req : kTerminalIoctls) allow_arg(r, SCMP_SYS(ioctl), 1, {req});
    for (auto* started : {vcpu, block_io, net_io, vsock_io})
        for (Rule& x : started()) r.push_back(std::move(x));
    return r;
}

}  // namespace

std::vector<Rule> rules_for(Role role) {
    switch (role) {
        case Role::Vcpu:
            return vcpu();
        case Role::DeviceEvents:
            return device_events();
        case Role::BlockIo:
            return block_io();
        case Role::NetIo:
            return net_io();
        case Role::VsockIo:
            return vsock_io();
        case Role::AgentControl:
            return agent_control();
        case Role::Control:
            return control();
        case Role::Uffd:
            return uffd();
        case Role::Supervisor:
            return supervisor();
    }
    return {};
}

}  // namespace vessel::vmm::seccomp
