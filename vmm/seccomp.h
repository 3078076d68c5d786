// Per-thread seccomp filters: each VMM thread that touches guest-controlled data runs under
// the allow-list of its role (vmm/seccomp_filters.cc holds every list, as data). Anything
// else kills the whole process (SCMP_ACT_KILL_PROCESS).
//
// Filters are per thread (no TSYNC) and a new thread inherits its creator's filter, so a
// thread can only start threads that need no more than it may do itself. Device I/O threads
// are started from a vCPU thread (when the driver sets DRIVER_OK): spawn() hands that to the
// supervisor, the thread that called Machine::run(). The supervisor stays unfiltered when it
// tears the VM down afterwards (lease files, `tc` in the container's namespace: a filter
// survives exec, so no filter could let those commands run); a jailed container VMM leaves
// that to `delete` outside the jail, so its supervisor enters Role::Supervisor
// (MachineConfig::confine_supervisor) once the VM's set-up is done.
//
// Lifecycle: enable() once during set-up (compiles every role's filter, so errors are set-up
// errors); from then on each thread calls enter(ROLE) at its entry, before it reads anything
// the guest controls. Without enable(), enter() does nothing and spawn() is std::thread.
#pragma once

#include <functional>
#include <optional>
#include <string_view>
#include <thread>

#include "fd.h"

namespace vessel::vmm::seccomp {

enum class Role {
    Vcpu,          // KVM_RUN and the exits it dispatches (port I/O, MMIO, device activation)
    DeviceEvents,  // the EventLoop thread: queue-notify eventfds -> transports
    BlockIo,       // a virtio-blk disk's I/O thread (io_uring or sync engine on the image)
    NetIo,         // a virtio-net interface's I/O thread (io_uring or sync engine on the tap)
    VsockIo,       // the virtio-vsock I/O thread (Unix sockets)
    AgentControl,  // the thread that talks to the guest agent over vsock with vessel's stdio
    Control,       // the API socket's thread: pause, resume, stop, snapshot to a directory
    Uffd,          // guest RAM's userfaultfd handler (restore --uffd): fills missing pages
    // The thread that runs Machine::run() of a jailed VMM: it starts the vCPU and device
    // threads (which inherit its filter, so its list holds theirs) and stops them; no fork,
    // exec or open.
    Supervisor,
};
inline constexpr Role kRoles[] = {Role::Vcpu,    Role::DeviceEvents, Role::BlockIo,
                                  Role::NetIo,   Role::VsockIo,      Role::AgentControl,
                                  Role::Control, Role::Uffd,         Role::Supervisor};

// "vcpu", "device-events", "block-io", "net-io", "vsock-io", "agent-control", "control",
// "uffd", "supervisor".
const char* role_name(Role r);
std::optional<Role> role_from_name(std::string_view name);

// Compiles every role's filter. Idempotent; throws std::system_error on failure.
//
// Environment (read here, once):
//   VESSEL_SECCOMP_SELFTEST=ROLE  a thread entering ROLE tries socket(AF_INET) right after its
//                                 filter is in place (tests: the process must die by SIGSYS)
//   VESSEL_SECCOMP_LOG=1          debugging: a forbidden call is logged on stderr with its
//                                 thread's role and fails with ENOSYS instead of killing
void enable();
bool enabled();

// Installs `r`'s filter on the calling thread if enable() was called; else does nothing.
// A thread enters one role, once. Failing to install kills the process with a message: the
// thread must not go on unconfined.
void enter(Role r);

// Builds `r`'s filter and installs it on the calling thread regardless of enable() (tests).
// Throws std::system_error.
void install(Role r);

// True once the calling thread runs under a filter of ours.
bool filtered();

// A thread that enters `r` and runs `fn`. From an unfiltered thread it is created directly;
// from a filtered one the supervisor creates it (see above) and this waits for that. Throws
// std::system_error when the thread cannot be created (no supervisor serving: EDEADLK).
std::thread spawn(Role r, std::function<void()> fn);

// Serves spawn() requests of filtered threads while it exists. The supervisor (Machine::run)
// polls fd() and calls serve() when it is readable; the destructor fails requests still
// waiting. fd() is -1 when seccomp is not enabled (poll ignores it).
class SpawnService {
  public:
    SpawnService();
    ~SpawnService();
    SpawnService(const SpawnService&) = delete;
    SpawnService& operator=(const SpawnService&) = delete;
    int fd() const { return fd_.get(); }
    void serve();
    // Stops serving (waiting and later requests fail); also done by the destructor.
    void close();

  private:
    UniqueFd fd_;
    bool open_ = false;
};

}  // namespace vessel::vmm::seccomp
