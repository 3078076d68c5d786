#include "snapshot/control.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/eventfd.h"
#include "vmm/seccomp.h"

namespace vessel::snapshot {
namespace {

using nlohmann::json;

sockaddr_un unix_addr(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path)
        throw std::system_error(ENAMETOOLONG, std::generic_category(),
                                "control socket path " + path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

double ms(std::chrono::nanoseconds d) {
    return static_cast<double>(d.count()) / 1e6;
}

// Reads one line (without the newline) within `timeout`; empty on EOF or timeout.
std::string read_line(int fd, std::chrono::milliseconds timeout) {
    std::string s;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (s.find('\n') == std::string::npos && s.size() < 65536) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return {};
        pollfd p{fd, POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n < 0 && errno != EINTR) return {};
        if (n <= 0) continue;
        char buf[1024];
        ssize_t r = ::recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        s.append(buf, static_cast<size_t>(r));
    }
    size_t nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
}

void send_all(int fd, const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
        ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        done += static_cast<size_t>(n);
    }
}

json error(const std::string& msg) {
    return {{"ok", false}, {"error", msg}};
}

}  // namespace

json handle_request(vmm::Machine& m, const std::vector<AttachedDevice>& devices, const json& meta,
                    const std::string& line, std::string* last_snapshot) {
    json req = json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object() || !req.contains("op") || !req["op"].is_string())
        return error("malformed request (expected a JSON object with \"op\")");
    const std::string op = req["op"];
    try {
        if (op == "ping") return {{"ok", true}};
        if (op == "pause") return m.pause() ? json{{"ok", true}} : error("the VM is not running");
        if (op == "resume") {
            m.resume();
            return {{"ok", true}};
        }
        if (op == "stop") {
            m.stop({vmm::RunResult::Reason::Signal, SIGTERM, {}});
            return {{"ok", true}};
        }
        if (op == "snapshot") {
            if (!req.contains("dir") || !req["dir"].is_string() ||
                req["dir"].get<std::string>().empty())
                return error("snapshot: no \"dir\"");
            const std::string after = req.value("after", "resume");
            if (after != "resume" && after != "stop" && after != "pause")
                return error("snapshot: \"after\" must be resume, stop or pause");
            const bool diff = req.value("diff", false);
            std::string parent;
            if (diff) {
                if (!last_snapshot || last_snapshot->empty())
                    return error(
                        "snapshot: a diff snapshot needs an earlier snapshot of this VM, or a VM "
                        "restored from one");
                parent = *last_snapshot;
            }
            const std::string dir = req["dir"].get<std::string>();
            CreateStats st;
            try {
                st = create(m, devices, dir, meta, std::chrono::seconds(10), parent,
                            req.value("disks", false));
                if (last_snapshot) *last_snapshot = dir;
            } catch (...) {
                m.resume();  // a failed snapshot leaves the VM as it was
                throw;
            }
            if (after == "resume") m.resume();
            if (after == "stop") m.stop({vmm::RunResult::Reason::ExitStatus, 0, "snapshot"});
            return {{"ok", true},
                    {"memory_bytes", st.memory_bytes},
                    {"diff", diff},
                    {"pause_ms", ms(st.pause)},
                    {"drain_ms", ms(st.drain)},
                    {"capture_ms", ms(st.capture)},
                    {"memory_ms", ms(st.memory)},
                    {"disk_bytes", st.disk_bytes},
                    {"disks_ms", ms(st.disks)},
                    {"state_ms", ms(st.state)}};
        }
        return error("unknown request \"" + op + "\"");
    } catch (const std::exception& e) {
        return error(e.what());
    }
}

bool socket_is_live(const std::string& path) {
    sockaddr_un a;
    try {
        a = unix_addr(path);
    } catch (const std::system_error&) {
        return false;
    }
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    return s && ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

UniqueFd ControlServer::listen_at(const std::string& path) {
    sockaddr_un a = unix_addr(path);
    if (socket_is_live(path))
        throw std::system_error(EADDRINUSE, std::generic_category(),
                                "control socket " + path + " is in use by a running VM");
    ::unlink(path.c_str());  // stale, from a VMM that was killed
    if (size_t slash = path.rfind('/'); slash != std::string::npos && slash > 0)
        ::mkdir(path.substr(0, slash).c_str(), 0700);  // the runtime dir may not exist yet
    UniqueFd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l) throw_errno("creating control socket");
    if (::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        throw_errno("binding control socket " + path);
    if (::listen(l.get(), 4) != 0) {
        int e = errno;
        ::unlink(path.c_str());
        throw_errno("listening on control socket " + path, e);
    }
    return l;
}

ControlServer::ControlServer(std::string path, vmm::Machine& m, std::vector<AttachedDevice> devices,
                             json meta, std::string restored_from)
    : ControlServer(listen_at(path), path, m, std::move(devices), std::move(meta),
                    std::move(restored_from)) {}

ControlServer::ControlServer(UniqueFd listening, std::string path, vmm::Machine& m,
                             std::vector<AttachedDevice> devices, json meta,
                             std::string restored_from)
    : path_(std::move(path)),
      m_(m),
      devices_(std::move(devices)),
      meta_(std::move(meta)),
      last_snapshot_(std::move(restored_from)),
      listen_(std::move(listening)) {
    stop_ = make_eventfd("creating the control socket's stop eventfd");
    thread_ = std::thread([this] { serve(); });
}

ControlServer::~ControlServer() {
    eventfd_poke(stop_.get());
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
}

void ControlServer::serve() noexcept {
    vmm::seccomp::enter(vmm::seccomp::Role::Control);
    pollfd fds[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    for (;;) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return;
        if (!(fds[0].revents & POLLIN)) continue;
        UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) continue;
        std::string line = read_line(c.get(), std::chrono::seconds(5));
        if (line.empty()) continue;
        send_all(c.get(), handle_request(m_, devices_, meta_, line, &last_snapshot_).dump() + "\n");
    }
}

json control_call(const std::string& path, const json& request, std::chrono::milliseconds timeout) {
    sockaddr_un a = unix_addr(path);
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("creating a socket");
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        throw_errno("connecting to the VM's control socket " + path);
    send_all(s.get(), request.dump() + "\n");
    std::string line = read_line(s.get(), timeout);
    if (line.empty()) throw std::runtime_error("no answer from the VM's control socket " + path);
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        throw std::runtime_error("malformed answer from the VM's control socket");
    return j;
}

}  // namespace vessel::snapshot
