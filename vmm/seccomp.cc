#include "seccomp.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include "eventfd.h"
#include "seccomp_filters.h"

namespace vessel::vmm::seccomp {
namespace {

constexpr size_t kNumRoles = std::size(kRoles);

struct Compiled {
    std::vector<sock_filter> prog;
};

// Filled once by enable() (under g_enable_mu), read-only afterwards.
std::mutex g_enable_mu;
std::atomic<bool> g_enabled{false};
std::array<Compiled, kNumRoles> g_filters;
int g_selftest_role = -1;  // VESSEL_SECCOMP_SELFTEST
bool g_log_mode = false;   // VESSEL_SECCOMP_LOG

thread_local int t_role = -1;  // the role this thread entered, -1: none

size_t index_of(Role r) {
    return static_cast<size_t>(r);
}

// Builds the filter of `r` with libseccomp. `trap`: forbidden calls raise SIGSYS (log mode).
scmp_filter_ctx build(Role r, bool trap) {
    scmp_filter_ctx ctx = seccomp_init(trap ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
    if (!ctx) throw std::system_error(ENOMEM, std::generic_category(), "seccomp_init");
    auto fail = [&](int rc, const std::string& what) {
        seccomp_release(ctx);
        throw std::system_error(-rc, std::generic_category(),
                                std::string("seccomp filter for ") + role_name(r) + ": " + what);
    };
    // A syscall of another ABI (x32, i386) is not in any list.
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
                              trap ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
    if (rc < 0) fail(rc, "setting the bad-architecture action");
    for (const Rule& rule : rules_for(r)) {
        const uint32_t action =
            rule.errno_ret ? SCMP_ACT_ERRNO(static_cast<uint16_t>(rule.errno_ret)) : SCMP_ACT_ALLOW;
        rc = seccomp_rule_add_array(ctx, action, rule.nr, static_cast<unsigned>(rule.cmps.size()),
                                    rule.cmps.empty() ? nullptr : rule.cmps.data());
        // -EEXIST: the same syscall already allowed without conditions (a superset).
        if (rc < 0 && rc != -EEXIST) {
            char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, rule.nr);
            std::string n = name ? name : std::to_string(rule.nr);
            std::free(name);
            fail(rc, "adding a rule for " + n);
        }
    }
    return ctx;
}

Compiled compile(Role r, bool trap) {
    scmp_filter_ctx ctx = build(r, trap);
    // libseccomp 2.5 exports BPF to a file descriptor only: go through a memfd.
    UniqueFd mfd(::memfd_create("vessel-seccomp", MFD_CLOEXEC));
    if (!mfd) {
        seccomp_release(ctx);
        throw_errno("creating a memfd for a seccomp filter");
    }
    int rc = seccomp_export_bpf(ctx, mfd.get());
    seccomp_release(ctx);
    if (rc < 0)
        throw std::system_error(-rc, std::generic_category(),
                                std::string("exporting the seccomp filter for ") + role_name(r));
    off_t size = ::lseek(mfd.get(), 0, SEEK_END);
    if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
        throw std::system_error(EINVAL, std::generic_category(),
                                std::string("seccomp filter for ") + role_name(r) + " has size " +
                                    std::to_string(size));
    Compiled c;
    c.prog.resize(static_cast<size_t>(size) / sizeof(sock_filter));
    if (::pread(mfd.get(), c.prog.data(), static_cast<size_t>(size), 0) != size)
        throw_errno("reading back the seccomp filter for " + std::string(role_name(r)));
    return c;
}

// Log mode: say which thread made which call, and let it fail with ENOSYS.
void on_sigsys(int, siginfo_t* si, void* uc) {
    char line[128];
    const char* role = t_role >= 0 ? role_name(kRoles[t_role]) : "unconfined";
    int n = std::snprintf(line, sizeof line,
                          "vessel: seccomp: %s thread %ld: forbidden syscall %d (continuing: "
                          "VESSEL_SECCOMP_LOG)\n",
                          role, static_cast<long>(::syscall(SYS_gettid)), si->si_syscall);
    if (n > 0) {
        [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, line, static_cast<size_t>(n));
    }
    static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
}

[[noreturn]] void die(Role r, const char* what, int err) {
    std::fprintf(stderr, "vessel: seccomp: cannot confine a %s thread: %s: %s\n", role_name(r),
                 what, std::strerror(err));
    std::_Exit(1);
}

void load(Role r, const Compiled& c) {
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(c.prog.size());
    prog.filter = const_cast<sock_filter*>(c.prog.data());
    // Required without CAP_SYS_ADMIN; with it, still what we want for this thread.
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw_errno("PR_SET_NO_NEW_PRIVS");
    // No SECCOMP_FILTER_FLAG_TSYNC: this thread only.
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
        throw_errno(std::string("installing the seccomp filter for ") + role_name(r));
    t_role = static_cast<int>(index_of(r));
}

void selftest_if_asked(Role r) {
    if (g_selftest_role != static_cast<int>(index_of(r))) return;
    // No role may open an IP socket: the process dies here by SIGSYS.
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    std::fprintf(stderr, "vessel: seccomp selftest: a %s thread opened an IP socket (%d)\n",
                 role_name(r), fd);
    if (fd >= 0) ::close(fd);
}

// spawn() requests waiting for the supervisor.
struct Request {
    std::function<void()> body;
    std::thread thread;
    std::exception_ptr error;
    bool done = false;
};
struct Spawns {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Request*> queue;
    int fd = -1;
    bool serving = false;
};
Spawns& spawns() {
    static Spawns* s = new Spawns;  // immortal: threads may use it during exit
    return *s;
}

std::exception_ptr no_supervisor() {
    return std::make_exception_ptr(
        std::system_error(EDEADLK, std::generic_category(),
                          "starting a thread from a confined thread: no supervisor is serving"));
}

}  // namespace

const char* role_name(Role r) {
    switch (r) {
        case Role::Vcpu:
            return "vcpu";
        case Role::DeviceEvents:
            return "device-events";
        case Role::BlockIo:
            return "block-io";
        case Role::NetIo:
            return "net-io";
        case Role::VsockIo:
            return "vsock-io";
        case Role::AgentControl:
            return "agent-control";
        case Role::Control:
            return "control";
        case Role::Uffd:
            return "uffd";
        case Role::Supervisor:
            return "supervisor";
    }
    return "?";
}

std::optional<Role> role_from_name(std::string_view name) {
    for (Role r : kRoles)
        if (name == role_name(r)) return r;
    return std::nullopt;
}

void enable() {
    std::lock_guard lk(g_enable_mu);
    if (g_enabled.load()) return;
    const char* log = std::getenv("VESSEL_SECCOMP_LOG");
    g_log_mode = log && *log && std::strcmp(log, "0") != 0;
    if (const char* st = std::getenv("VESSEL_SECCOMP_SELFTEST"); st && *st) {
        auto r = role_from_name(st);
        if (!r)
            throw std::system_error(
                EINVAL, std::generic_category(),
                std::string("VESSEL_SECCOMP_SELFTEST: unknown role '") + st + "'");
        g_selftest_role = static_cast<int>(index_of(*r));
    }
    for (Role r : kRoles) g_filters[index_of(r)] = compile(r, g_log_mode);
    if (g_log_mode) {
        struct sigaction sa {};
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (::sigaction(SIGSYS, &sa, nullptr) != 0) throw_errno("installing the SIGSYS handler");
        std::fprintf(stderr,
                     "vessel: warning: VESSEL_SECCOMP_LOG: forbidden syscalls are logged and "
                     "fail instead of killing the VMM\n");
    }
    g_enabled.store(true);
}

bool enabled() {
    return g_enabled.load();
}

void enter(Role r) {
    if (!g_enabled.load()) return;
    if (t_role >= 0) return;  // a thread keeps the role it entered first
    try {
        load(r, g_filters[index_of(r)]);
    } catch (const std::system_error& e) {
        die(r, e.what(), e.code().value());
    }
    selftest_if_asked(r);
}

void install(Role r) {
    load(r, compile(r, false));
}

bool filtered() {
    return t_role >= 0;
}

std::thread spawn(Role r, std::function<void()> fn) {
    auto body = [r, fn = std::move(fn)] {
        enter(r);
        fn();
    };
    // A new thread inherits its creator's filter: an unconfined creator gives it none, and the
    // supervisor's list holds every role it starts.
    if (!filtered() || t_role == static_cast<int>(index_of(Role::Supervisor)))
        return std::thread(std::move(body));
    Spawns& s = spawns();
    Request req;
    req.body = std::move(body);
    std::unique_lock lk(s.mu);
    if (!s.serving)
        throw std::system_error(EDEADLK, std::generic_category(),
                                "starting a thread from a confined thread: no supervisor");
    s.queue.push_back(&req);
    eventfd_poke(s.fd);
    s.cv.wait(lk, [&] { return req.done; });
    if (req.error) std::rethrow_exception(req.error);
    return std::move(req.thread);
}

SpawnService::SpawnService() {
    if (!enabled()) return;
    fd_ = make_eventfd("creating the thread spawn eventfd");
    Spawns& s = spawns();
    std::lock_guard lk(s.mu);
    if (s.serving)
        throw std::system_error(EBUSY, std::generic_category(),
                                "a second seccomp spawn service in one process");
    s.fd = fd_.get();
    s.serving = true;
    open_ = true;
}

SpawnService::~SpawnService() {
    close();
}

void SpawnService::serve() {
    if (!open_) return;
    eventfd_drain(fd_.get());
    Spawns& s = spawns();
    std::unique_lock lk(s.mu);
    while (!s.queue.empty()) {
        Request* req = s.queue.front();
        s.queue.pop_front();
        lk.unlock();
        try {
            req->thread = std::thread(std::move(req->body));
        } catch (...) {
            req->error = std::current_exception();
        }
        lk.lock();
        req->done = true;
        s.cv.notify_all();
    }
}

void SpawnService::close() {
    if (!open_) return;
    open_ = false;
    Spawns& s = spawns();
    std::lock_guard lk(s.mu);
    for (Request* req : s.queue) {
        req->error = no_supervisor();
        req->done = true;
    }
    s.queue.clear();
    s.serving = false;
    s.fd = -1;
    s.cv.notify_all();
}

}  // namespace vessel::vmm::seccomp
