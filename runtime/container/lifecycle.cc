#include "runtime/container/lifecycle.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "guest/agent/client.h"
#include "guest/init/protocol.h"
#include "oci/spec.h"
#include "oci/vm_plan.h"
#include "runtime/container/console.h"
#include "runtime/container/container.h"
#include "runtime/container/globals.h"
#include "runtime/container/hooks.h"
#include "runtime/jail/jail.h"
#include "snapshot/control.h"
#include "snapshot/disk_copy.h"
#include "snapshot/snapshot.h"
#include "vmm/fd.h"

namespace vessel::container {
namespace {

// Whether `path` names an executable regular file inside `rootfs`, symlinks resolved inside it.
bool executable_in_rootfs(int root_fd, const std::string& path) {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT;
    const std::string rel =
        path.substr(path.find_first_not_of('/') == std::string::npos ? path.size()
                                                                     : path.find_first_not_of('/'));
    if (rel.empty()) return false;
    UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how)));
    struct stat st {};
    return fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

// runc looks the process up in the rootfs at create, so a missing binary fails create (and
// podman reports 127). The same here, before anything is made. Paths under a mount the guest
// makes are not checked: the binary may come with the mount.
void check_process_binary(const oci::Bundle& b, const oci::VmPlan& plan) {
    const std::string& arg0 = b.spec.process.args.front();
    auto under_mount = [&](const std::string& p) {
        for (const auto& m : plan.mounts)
            if (p == m.destination || p.rfind(m.destination + "/", 0) == 0) return true;
        return false;
    };
    UniqueFd root(::open(b.rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return;  // load_bundle checked it; nothing better to say here
    if (arg0.find('/') != std::string::npos) {
        const std::string p = arg0[0] == '/' ? arg0 : b.spec.process.cwd + "/" + arg0;
        if (under_mount(p) || executable_in_rootfs(root.get(), p)) return;
        throw std::runtime_error("exec: \"" + arg0 + "\": stat " + arg0 +
                                 ": no such file or directory");
    }
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const std::string& e : b.spec.process.env)
        if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find(':', start);
        if (end == std::string::npos) end = path.size();
        std::string dir = path.substr(start, end - start);
        if (dir.empty()) dir = b.spec.process.cwd;
        const std::string p = dir + "/" + arg0;
        if (under_mount(p) || executable_in_rootfs(root.get(), p)) return;
        start = end + 1;
    }
    throw std::runtime_error("exec: \"" + arg0 + "\": executable file not found in $PATH");
}

// Booting in a nested VM under TCG takes a while; a real host boots in well under a second.
constexpr int kReadyTimeoutMs = 300000;

std::string absolute(const std::string& p) {
    if (!p.empty() && p[0] == '/') return p;
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) throw_errno("getcwd");
    return p == "." ? std::string(cwd) : std::string(cwd) + "/" + p;
}

// "ok", or the VMM's error; the VMM dying without a word is an error too.
std::string wait_ready(int fd, pid_t pid) {
    std::string got;
    for (int waited = 0; waited < kReadyTimeoutMs;) {
        pollfd p{fd, POLLIN, 0};
        int n = ::poll(&p, 1, 100);
        if (n < 0 && errno != EINTR) throw_errno("waiting for the VMM");
        if (n <= 0) {
            waited += 100;
            continue;
        }
        char buf[1024];
        ssize_t r = ::read(fd, buf, sizeof buf);
        if (r > 0) {
            got.append(buf, static_cast<size_t>(r));
            if (got.find('\n') != std::string::npos) return got.substr(0, got.find('\n'));
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        int ws = 0;
        if (::waitpid(pid, &ws, WNOHANG) == pid && WIFSIGNALED(ws))
            return "error: the VMM was killed by signal " + std::to_string(WTERMSIG(ws));
        return "error: the VMM exited before the VM was ready";
    }
    return "error: timed out waiting for the VM to boot";
}

void kill_and_reap(pid_t pid) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
}

oci::Hooks bundle_hooks(const oci::State& s) {
    try {
        return oci::load_bundle(s.bundle).spec.hooks;
    } catch (const std::exception& e) {
        log_warning("container " + s.id + ": hooks not run: " + e.what());
        return {};
    }
}

}  // namespace

namespace {
volatile sig_atomic_t g_relay_pid = 0;
void relay(int sig) {
    if (g_relay_pid > 0) ::kill(static_cast<pid_t>(g_relay_pid), sig);
}
}  // namespace

void relay_signals() {
    struct sigaction sa {};
    sa.sa_handler = relay;
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) ::sigaction(s, &sa, nullptr);
}

void relay_to(pid_t vmm) {
    g_relay_pid = vmm;
}

int wait_vmm(pid_t vmm, const std::string& id, bool remove) {
    int ws = 0x100;  // status 1 if the VMM is not ours to wait for
    while (::waitpid(vmm, &ws, 0) < 0) {
        if (errno != EINTR) {
            ws = 0x100;
            break;
        }
    }
    if (remove) {
        try {
            delete_container(id, true);
        } catch (const std::exception& e) {
            log_error(e.what());
        }
    }
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

void write_file_atomic(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) throw_errno("writing " + path);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw_errno("writing " + path, err);
    }
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw_errno("renaming into " + path, err);
    }
}

bool wait_gone(pid_t pid, uint64_t start, int ms) {
    for (int waited = 0; waited <= ms; waited += 10) {
        // Our own child (run): reap it, or it stays a zombie that reads as gone anyway.
        ::waitpid(pid, nullptr, WNOHANG);
        if (!oci::process_alive(pid, start)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

pid_t create_container(const CreateOptions& o) {
    oci::validate_container_id(o.id);
    const std::string restore_dir = o.restore_dir.empty() ? "" : absolute(o.restore_dir);
    const bool restoring = !restore_dir.empty();
    std::optional<CheckpointManifest> checkpoint;
    if (restoring) checkpoint = read_checkpoint(restore_dir);
    const oci::Bundle bundle = oci::load_bundle(absolute(o.bundle));
    const oci::VmPlan plan = oci::plan_vm(bundle);
    if (!restoring) check_process_binary(bundle, plan);
    for (const std::string& w : bundle.spec.warnings) log_warning(w);
    for (const std::string& w : plan.warnings) log_warning(w);
    // The VMM jails itself (runtime/jail); its PID namespace is made here, by the fork.
    const auto jail_opts =
        jail::container_options(o.id, bundle.spec.annotations, plan.memory_mib, plan.vcpus);
    if (jail_opts) jail::validate(*jail_opts);
    const bool terminal = plan.process.terminal;
    if (terminal && o.console_socket.empty() && !o.foreground)
        throw std::runtime_error(
            "cannot allocate tty if vessel will detach without setting console socket");
    if (!terminal && !o.console_socket.empty())
        throw std::runtime_error("console socket provided but process.terminal is false");

    oci::State s;
    s.oci_version = bundle.spec.oci_version;
    s.id = o.id;
    s.status = oci::Status::Creating;
    s.bundle = bundle.dir;
    s.rootfs = bundle.rootfs;
    s.created = oci::rfc3339_nano_now();
    s.annotations = bundle.spec.annotations;
    s.owner = oci::current_owner();
    oci::StateStore store = state_store();
    oci::ContainerLock lock = store.create(s);
    const Paths paths = Paths::of(lock.dir());
    pid_t pid = 0;
    try {
        if (restoring) {
            // A copy (a reflink where possible): with `podman container restore --keep` the
            // checkpoint must stay as it was while the container writes on.
            snapshot::copy_disk(restore_dir + "/" + checkpoint->disk, paths.image);
        } else {
            // podman always binds /run/.containerenv: not worth a warning on every create.
            for (const std::string& w : build_rootfs_image(plan, paths.image)) log_debug(w);
        }

        std::optional<Pty> pty;
        if (terminal && !o.console_socket.empty()) {
            unsigned rows = plan.process.console_size ? plan.process.console_size->height : 0;
            unsigned cols = plan.process.console_size ? plan.process.console_size->width : 0;
            pty = open_pty(rows, cols);
            send_console_fd(o.console_socket, pty->master.get());
            pty->master.reset();
        }
        // Both ways: the VMM reports "ok" (or "netns": run the prestart hooks now, then "go").
        int rw[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rw) != 0)
            throw_errno("creating the VMM's ready socket");
        UniqueFd ready_r(rw[0]), ready_w(rw[1]);

        std::vector<std::string> args = {"vessel"};
        for (const std::string& a : global_args()) args.push_back(a);
        args.insert(args.end(), {"_container-vmm", "--ready-fd", std::to_string(ready_w.get())});
        if (restoring)
            args.insert(args.end(), {"--restore", restore_dir + "/" + checkpoint->snapshot});
        args.push_back(o.id);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::fflush(nullptr);
        pid = jail_opts ? jail::fork_in_new_pid_ns() : ::fork();
        if (pid < 0) throw_errno("starting the VMM process");
        if (pid == 0) {
            if (pty) {
                adopt_terminal(pty->slave.get());
            } else if (!o.foreground) {
                ::setsid();
            }
            ::fcntl(ready_w.get(), F_SETFD, 0);
            ::execv("/proc/self/exe", argv.data());
            const char msg[] = "error: cannot execute /proc/self/exe\n";
            ssize_t n = ::write(ready_w.get(), msg, sizeof msg - 1);
            (void)n;
            ::_exit(127);
        }
        ready_w.reset();
        pty.reset();
        s.pid = pid;
        if (auto ps = oci::read_proc_stat(pid)) s.pid_start_time = ps->start_time;
        std::string r = wait_ready(ready_r.get(), pid);
        bool hooks_run = false;
        if (r == "netns") {
            // The VMM has made its network namespace: the hooks configure it (Docker's
            // libnetwork-setkey) before the VMM wires the guest's NIC to it.
            const std::string hs = oci::hook_state_json(s);
            run_hooks(plan.host_hooks.prestart, hs, "prestart");
            run_hooks(plan.host_hooks.create_runtime, hs, "createRuntime");
            hooks_run = true;
            if (::send(ready_r.get(), "go\n", 3, MSG_NOSIGNAL) != 3)
                throw_errno("resuming the VMM");
            r = wait_ready(ready_r.get(), pid);
        }
        if (r != "ok") throw std::runtime_error(r.rfind("error: ", 0) == 0 ? r.substr(7) : r);

        s.status = restoring ? oci::Status::Running : oci::Status::Created;
        s.vessel = {{"image", paths.image},          {"vsock", paths.vsock},
                    {"control", paths.control},      {"terminal", terminal},
                    {"memory_mib", plan.memory_mib}, {"vcpus", plan.vcpus}};
        lock.write(s);
        if (!hooks_run) {
            const std::string hs = oci::hook_state_json(s);
            run_hooks(plan.host_hooks.prestart, hs, "prestart");
            run_hooks(plan.host_hooks.create_runtime, hs, "createRuntime");
        }
        if (!o.pid_file.empty()) write_file_atomic(absolute(o.pid_file), std::to_string(pid));
    } catch (...) {
        if (pid > 0) kill_and_reap(pid);
        paths.remove_sock_dir();
        paths.remove_checkpoint_dir();
        if (jail_opts) jail::cleanup_container(o.id, bundle.spec.annotations);
        store.remove(std::move(lock));
        throw;
    }
    return pid;
}

namespace {

constexpr const char kCheckpointFormat[] = "vessel-container-checkpoint";
constexpr int kCheckpointVersion = 1;

// Moves `from` to `to` (a file or a flat directory of files), copying across file systems.
void move_path(const std::string& from, const std::string& to) {
    if (::rename(from.c_str(), to.c_str()) == 0) return;
    if (errno != EXDEV) throw_errno("moving " + from + " to " + to);
    struct stat st {};
    if (::stat(from.c_str(), &st) != 0) throw_errno("stat " + from);
    if (S_ISDIR(st.st_mode)) {
        if (::mkdir(to.c_str(), 0700) != 0) throw_errno("creating " + to);
        for (const auto& e : std::filesystem::directory_iterator(from))
            snapshot::copy_disk(e.path().string(), to + "/" + e.path().filename().string());
        std::filesystem::remove_all(from);
    } else {
        snapshot::copy_disk(from, to);
        ::unlink(from.c_str());
    }
}

}  // namespace

CheckpointManifest read_checkpoint(const std::string& dir) {
    const std::string path = dir + "/" + kCheckpointManifest;
    std::ifstream in(path);
    if (!in)
        throw std::runtime_error("no checkpoint in " + dir + " (" + kCheckpointManifest +
                                 " is missing)");
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("format", "") != kCheckpointFormat)
        throw std::runtime_error(path + " is not a vessel checkpoint (made by another runtime?)");
    if (j.value("version", 0) != kCheckpointVersion)
        throw std::runtime_error(path + ": checkpoint version " +
                                 std::to_string(j.value("version", 0)) + ", this vessel reads " +
                                 std::to_string(kCheckpointVersion));
    CheckpointManifest m{j.value("container", ""), j.value("snapshot", ""), j.value("disk", "")};
    for (const std::string* rel : {&m.snapshot, &m.disk})
        if (rel->empty() || (*rel)[0] == '/' || rel->find("..") != std::string::npos)
            throw std::runtime_error(path + ": bad snapshot or disk entry");
    if (::access((dir + "/" + m.disk).c_str(), R_OK) != 0)
        throw_errno("the checkpoint's root disk " + dir + "/" + m.disk);
    snapshot::load(dir + "/" + m.snapshot);  // checks sections, checksums and the memory file
    return m;
}

uint64_t checkpoint_container(const CheckpointOptions& o) {
    if (o.image_path.empty()) throw std::runtime_error("checkpoint: --image-path is required");
    const std::string image = absolute(o.image_path);
    oci::StateStore store = state_store();
    std::optional<oci::ContainerLock> lock(store.lock(o.id));
    oci::State s = lock->read();
    const oci::Status st = oci::observed_status(s);
    // A paused container's VMM is stopped (SIGSTOP) and cannot take the request.
    if (st != oci::Status::Running)
        throw std::runtime_error("container " + o.id + " is " + std::string(oci::status_name(st)) +
                                 ": only a running container can be checkpointed" +
                                 (st == oci::Status::Paused ? " (resume it first)" : ""));
    const Paths paths = Paths::of(lock->dir());
    if (!snapshot::socket_is_live(paths.api))
        throw std::runtime_error("container " + o.id +
                                 ": its VMM has no snapshot socket (started by an older vessel?)");
    std::filesystem::create_directories(image);
    if (::access((image + "/" + kCheckpointManifest).c_str(), F_OK) == 0 ||
        ::access((image + "/snap").c_str(), F_OK) == 0)
        throw std::runtime_error(image + " already holds a checkpoint");

    const std::string staging = paths.checkpoint + "/snap";
    std::filesystem::remove_all(staging);  // from a checkpoint that failed half-way
    const nlohmann::json req = {{"op", "snapshot"},
                                {"dir", staging},
                                // Running on, the disk changes: it is copied here while the VM
                                // stays paused (the jailed VMM could not read it by path).
                                {"after", o.leave_running ? "pause" : "stop"}};
    const nlohmann::json ans = snapshot::control_call(paths.api, req, std::chrono::minutes(10));
    if (!ans.value("ok", false)) {
        std::filesystem::remove_all(staging);
        throw std::runtime_error("checkpoint of " + o.id + ": " + ans.value("error", "failed"));
    }
    const std::string disk = "rootfs.img";
    try {
        if (!o.leave_running) {
            // The VM stopped after the snapshot; its disk is final once the VMM is gone.
            if (!wait_gone(s.pid, s.pid_start_time, 30000))
                throw std::runtime_error("the VMM did not exit after the checkpoint");
            move_path(paths.image, image + "/" + disk);
        } else {
            std::exception_ptr failed;
            try {
                snapshot::copy_disk(paths.image, image + "/" + disk);
            } catch (...) {
                failed = std::current_exception();
            }
            const nlohmann::json r =
                snapshot::control_call(paths.api, {{"op", "resume"}}, std::chrono::seconds(30));
            if (failed) std::rethrow_exception(failed);
            if (!r.value("ok", false))
                throw std::runtime_error("resuming after the checkpoint: " +
                                         r.value("error", "failed"));
        }
        move_path(staging, image + "/snap");
        const nlohmann::json manifest = {{"format", kCheckpointFormat},
                                         {"version", kCheckpointVersion},
                                         {"container", o.id},
                                         {"snapshot", "snap"},
                                         {"disk", disk},
                                         {"created", oci::rfc3339_nano_now()}};
        write_file_atomic(image + "/" + kCheckpointManifest, manifest.dump(2) + "\n");
    } catch (...) {
        std::filesystem::remove_all(staging);
        // A stopped container's disk stays where it got to: it is the only copy.
        std::error_code ec;
        if (o.leave_running) std::filesystem::remove(image + "/" + disk, ec);
        throw;
    }
    const uint64_t bytes =
        ans.value("memory_bytes", uint64_t{0}) + ans.value("disk_bytes", uint64_t{0});
    if (!o.leave_running) {
        // As runc: a checkpointed container is gone; `restore` makes it again.
        lock.reset();
        delete_container(o.id, false);
    }
    return bytes;
}

void start_container(const std::string& id) {
    oci::StateStore store = state_store();
    oci::ContainerLock lock = store.lock(id);
    oci::State s = lock.read();
    const oci::Status st = oci::observed_status(s);
    if (st == oci::Status::Stopped)
        throw std::runtime_error("cannot start a container that has stopped");
    if (st != oci::Status::Created)
        throw std::runtime_error("cannot start an already " + std::string(oci::status_name(st)) +
                                 " container");
    const std::string answer =
        control_request(Paths::of(lock.dir()).control, "start", std::chrono::seconds(120));
    if (answer != "ok")
        throw std::runtime_error(answer.rfind("error: ", 0) == 0 ? answer.substr(7) : answer);
    s.status = oci::Status::Running;
    lock.write(s);
    const oci::Hooks hooks = bundle_hooks(s);
    try {
        run_hooks(hooks.poststart, oci::hook_state_json(s), "poststart");
    } catch (const std::exception& e) {
        log_warning(e.what());  // as runc: the container runs on
    }
}

bool delete_container(const std::string& id, bool force) {
    oci::StateStore store = state_store();
    std::optional<oci::ContainerLock> lock;
    try {
        lock.emplace(store.lock(id));
    } catch (const oci::ContainerNotFound&) {
        if (force) return false;
        throw;
    }
    oci::State s = lock->read();
    const oci::Status st = oci::observed_status(s);
    if (st != oci::Status::Stopped) {
        if (st != oci::Status::Created && !force)
            throw std::runtime_error("cannot delete container " + id +
                                     " that is not stopped: " + std::string(oci::status_name(st)));
        ::kill(s.pid, SIGKILL);
        if (!wait_gone(s.pid, s.pid_start_time, 10000))
            throw std::runtime_error("container " + id + ": VMM " + std::to_string(s.pid) +
                                     " did not die after SIGKILL");
        s.status = oci::Status::Stopped;
    }
    const oci::Hooks hooks = bundle_hooks(s);
    try {
        run_hooks(hooks.poststop, oci::hook_state_json(s), "poststop");
    } catch (const std::exception& e) {
        log_warning(e.what());
    }
    if (std::string e = jail::cleanup_container(id, s.annotations); !e.empty()) log_warning(e);
    const Paths paths = Paths::of(lock->dir());
    store.remove(std::move(*lock));
    paths.remove_sock_dir();
    paths.remove_checkpoint_dir();
    return true;
}

void kill_container(const std::string& id, int sig, bool all) {
    oci::StateStore store = state_store();
    const oci::State s = store.load(id);
    const oci::Status st = oci::observed_status(s);
    if (st == oci::Status::Stopped) throw std::runtime_error("container not running");
    const auto& fwd = forwarded_signals();
    const bool forwardable = std::find(fwd.begin(), fwd.end(), sig) != fwd.end();
    // SIGKILL ends the VM; before start, and for signals the VMM relays, the VMM's own
    // signal is the container's.
    if (sig == SIGKILL || st == oci::Status::Created || (forwardable && !all)) {
        if (::kill(s.pid, sig) != 0) throw_errno("signalling the VMM of " + id);
        return;
    }
    UniqueFd conn = agent::connect_vsock_uds(Paths::of(store.container_dir(id)).vsock,
                                             guest::kDefaultAgentPort, std::chrono::seconds(10));
    agent::Client client(std::move(conn));
    std::vector<agent::ProcessInfo> procs = client.list();
    std::sort(procs.begin(), procs.end(),
              [](const agent::ProcessInfo& a, const agent::ProcessInfo& b) { return a.id < b.id; });
    bool any = false;
    for (const agent::ProcessInfo& p : procs) {
        if (!p.running) continue;
        client.signal(p.id, sig);
        any = true;
        if (!all) break;  // the lowest id is the container's process
    }
    if (!any) throw std::runtime_error("container not running");
}

}  // namespace vessel::container
