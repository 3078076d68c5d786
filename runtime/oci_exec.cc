// vessel exec: run another process in a running container, through the guest agent.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "commands.h"
#include "guest/agent/client.h"
#include "guest/init/protocol.h"
#include "oci/spec.h"
#include "oci/state.h"
#include "oci/vm_plan.h"
#include "runtime/container/console.h"
#include "runtime/container/container.h"
#include "runtime/container/flags.h"
#include "runtime/container/lifecycle.h"
#include "vmm/fd.h"

namespace vessel::cli {
namespace {

uint32_t parse_id(const std::string& what, const std::string& s) {
    size_t pos = 0;
    unsigned long v = 0;
    try {
        v = std::stoul(s, &pos);
    } catch (const std::exception&) {
        pos = 0;
    }
    if (pos == 0 || pos != s.size() || v > 0xffffffffUL)
        throw std::runtime_error(what + ": '" + s + "' is not a numeric id");
    return static_cast<uint32_t>(v);
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw_errno("opening process file " + path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int cmd_oci_exec(Args args) {
    std::string process_file, pid_file, console_socket, cwd, user, preserve, label, apparmor;
    std::vector<std::string> env, gids, caps;
    bool detach = false, tty = false, no_new_privs = false, ignore_paused = false;
    auto pos = container::Flags("exec")
                   .value({"process", "p"}, &process_file)
                   .value({"pid-file"}, &pid_file)
                   .value({"console-socket"}, &console_socket)
                   .value({"cwd"}, &cwd)
                   .value({"user", "u"}, &user)
                   .value({"preserve-fds"}, &preserve)
                   .value({"process-label"}, &label)
                   .value({"apparmor"}, &apparmor)
                   .multi({"env", "e"}, &env)
                   .multi({"additional-gids", "g"}, &gids)
                   .multi({"cap", "c"}, &caps)
                   .boolean({"detach", "d"}, &detach)
                   .boolean({"tty", "t"}, &tty)
                   .boolean({"no-new-privs"}, &no_new_privs)
                   .boolean({"ignore-paused"}, &ignore_paused)
                   .parse(args, true);
    if (pos.empty()) usage_error("\"exec\" requires a container id");
    const std::string id = pos[0];
    oci::StateStore store = container::state_store();
    const oci::State st = store.load(id);
    const oci::Status status = oci::observed_status(st);
    if (status == oci::Status::Stopped)
        throw std::runtime_error("cannot exec in a stopped container");
    if (status == oci::Status::Paused && !ignore_paused)
        throw std::runtime_error("cannot exec in a paused container");
    if (status != oci::Status::Running && status != oci::Status::Paused)
        throw std::runtime_error("cannot exec in a container that is " +
                                 std::string(oci::status_name(status)));

    oci::Process p;
    if (!process_file.empty()) {
        p = oci::parse_process(slurp(process_file), process_file);
    } else {
        if (pos.size() < 2) usage_error("exec: no command given (args or --process)");
        // The container's own process is the base, as runc takes it.
        p = oci::load_bundle(st.bundle).spec.process;
        p.args.assign(pos.begin() + 1, pos.end());
        p.terminal = tty;
        for (const std::string& e : env) p.env.push_back(e);
        if (!cwd.empty()) p.cwd = cwd;
        if (!user.empty()) {
            auto colon = user.find(':');
            p.user.uid = parse_id("--user", user.substr(0, colon));
            if (colon != std::string::npos) p.user.gid = parse_id("--user", user.substr(colon + 1));
        }
        for (const std::string& g : gids)
            p.user.additional_gids.push_back(parse_id("--additional-gids", g));
    }
    agent::ProcessSpec spec = container::agent_spec(oci::guest_process(p));
    if (spec.tty && console_socket.empty() && detach)
        throw std::runtime_error(
            "cannot allocate tty if vessel will detach without setting console socket");
    if (!spec.tty && !console_socket.empty())
        throw std::runtime_error("console socket provided but process.terminal is false");

    UniqueFd conn = agent::connect_vsock_uds(container::Paths::of(store.container_dir(id)).vsock,
                                             guest::kDefaultAgentPort, std::chrono::seconds(10));
    auto client = std::make_unique<agent::Client>(std::move(conn));
    std::optional<container::Pty> pty;
    if (!console_socket.empty()) {
        pty = container::open_pty(spec.rows, spec.cols);
        container::send_console_fd(console_socket, pty->master.get());
        pty->master.reset();
    }
    auto run = [&]() -> int {
        if (pty) container::adopt_terminal(pty->slave.get());
        sigset_t mask;
        sigemptyset(&mask);
        for (int s : container::forwarded_signals()) sigaddset(&mask, s);
        sigaddset(&mask, SIGWINCH);
        pthread_sigmask(SIG_BLOCK, &mask, nullptr);
        agent::RunOptions ro;
        ro.forward_signals = container::forwarded_signals();
        if (spec.tty && ::isatty(STDIN_FILENO)) ro.winsize_fd = STDIN_FILENO;
        return agent::run(*client, spec, STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, ro).status;
    };
    if (!detach) {
        if (!pid_file.empty()) container::write_file_atomic(pid_file, std::to_string(::getpid()));
        return run();
    }
    // Detached: a child of ours relays the process's stdio and exits with its status; the
    // caller (conmon, a subreaper) waits for that pid.
    std::fflush(nullptr);
    const pid_t child = ::fork();
    if (child < 0) throw_errno("forking the exec relay");
    if (child == 0) {
        if (!pty) ::setsid();
        int status = 1;
        try {
            status = run();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "vessel: exec: %s\n", e.what());
        }
        std::fflush(nullptr);
        ::_exit(status);
    }
    if (!pid_file.empty()) container::write_file_atomic(pid_file, std::to_string(child));
    std::fflush(nullptr);
    ::_exit(0);  // the connection belongs to the child now
}

}  // namespace vessel::cli
