// run(): one process's stdio pumped between host fds and the agent connection.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "guest/agent/client.h"

namespace vessel::agent {
namespace {

// Blocks a set of signals in this thread and reads them from a signalfd; on destruction
// swallows what is still pending (already forwarded or too late to matter) and restores
// the mask, so nothing is delivered with its default action afterwards.
class SignalCapture {
  public:
    explicit SignalCapture(const std::vector<int>& signals) {
        if (signals.empty()) return;
        sigemptyset(&set_);
        for (int s : signals)
            if (sigaddset(&set_, s) < 0) throw std::invalid_argument("bad signal number");
        if (int e = pthread_sigmask(SIG_BLOCK, &set_, &old_); e != 0)
            throw_errno("blocking forwarded signals", e);
        active_ = true;
        fd_.reset(signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
        if (!fd_) {
            const int e = errno;
            pthread_sigmask(SIG_SETMASK, &old_, nullptr);
            active_ = false;
            throw_errno("creating a signalfd", e);
        }
    }
    ~SignalCapture() {
        if (!active_) return;
        signalfd_siginfo si;
        while (read(fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        }
        pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SignalCapture(const SignalCapture&) = delete;
    SignalCapture& operator=(const SignalCapture&) = delete;

    int fd() const { return fd_.get(); }

  private:
    sigset_t set_{};
    sigset_t old_{};
    bool active_ = false;
    UniqueFd fd_;
};

bool terminal_size(int fd, std::uint16_t& rows, std::uint16_t& cols) {
    winsize ws{};
    if (fd < 0 || ioctl(fd, TIOCGWINSZ, &ws) < 0) return false;
    rows = ws.ws_row;
    cols = ws.ws_col;
    return true;
}

// How much to hand one write(): a blocking pipe or terminal that polled writable takes
// PIPE_BUF bytes without blocking, more may block the whole loop on one slow reader.
std::size_t write_chunk(int fd) {
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) return kMaxDataPayload;
    const int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) ? kMaxDataPayload : PIPE_BUF;
}

void write_all_best_effort(int fd, const std::string& s) {
    std::size_t off = 0;
    while (off < s.size()) {
        const ssize_t n = write(fd, s.data() + off, s.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        off += static_cast<std::size_t>(n);
    }
}

}  // namespace

ExitStatus run(Client& client, const ProcessSpec& spec_in, int in_fd, int out_fd, int err_fd,
               const RunOptions& options) {
    ProcessSpec spec = spec_in;
    std::vector<int> signals = options.forward_signals;
    const bool track_winsize = spec.tty && options.winsize_fd >= 0;
    if (track_winsize) {
        if (spec.rows == 0 && spec.cols == 0)
            terminal_size(options.winsize_fd, spec.rows, spec.cols);
        signals.push_back(SIGWINCH);
    }
    SignalCapture sigs(signals);

    Started proc;
    try {
        proc = options.attach_id ? client.attach(options.attach_id) : client.start(spec);
    } catch (const AgentError& e) {
        if (e.code() != "exec_failed" || options.throw_exec_failure) throw;
        if (err_fd >= 0) write_all_best_effort(err_fd, options.error_prefix + e.what() + "\n");
        ExitStatus st;
        st.status = e.stage() == "exec" && e.error_number() == ENOENT ? 127 : 126;
        return st;
    }
    if (options.on_started) options.on_started();
    const std::uint32_t id = proc.id;
    client.wait_async(id);
    bool in_done = in_fd < 0;
    if (in_done) client.close_stdin(id);
    const int outs[2] = {out_fd, err_fd};
    const std::size_t chunks[2] = {out_fd >= 0 ? write_chunk(out_fd) : 0,
                                   err_fd >= 0 ? write_chunk(err_fd) : 0};
    std::string inbuf(kMaxDataPayload, '\0');

    for (;;) {
        client.check();
        // Output for a negative fd is dropped as it arrives, which keeps credit flowing.
        for (int s = 0; s < 2; ++s) {
            const Stream stream = s == 0 ? kStdout : kStderr;
            if (outs[s] < 0) client.consume_output(id, stream, SIZE_MAX);
        }
        const auto status = client.exit_status(id);
        if (status && client.output_eof(id, kStdout) && client.output_eof(id, kStderr)) {
            client.forget(id);
            return *status;
        }
        if (!in_done && !client.stdin_open(id)) in_done = true;

        pollfd pfds[5];
        int n = 0;
        const int conn_i = n;
        pfds[n++] = {client.fd(), client.poll_events(), 0};
        int in_i = -1, sig_i = -1, out_i[2] = {-1, -1};
        if (!in_done && client.stdin_room(id) > 0) {
            in_i = n;
            pfds[n++] = {in_fd, POLLIN, 0};
        }
        for (int s = 0; s < 2; ++s) {
            const Stream stream = s == 0 ? kStdout : kStderr;
            if (outs[s] >= 0 && !client.peek_output(id, stream).empty()) {
                out_i[s] = n;
                pfds[n++] = {outs[s], POLLOUT, 0};
            }
        }
        if (sigs.fd() >= 0) {
            sig_i = n;
            pfds[n++] = {sigs.fd(), POLLIN, 0};
        }
        if (poll(pfds, static_cast<nfds_t>(n), -1) < 0) {
            if (errno == EINTR) continue;
            throw_errno("polling the agent connection");
        }

        if (pfds[conn_i].revents) client.on_ready(pfds[conn_i].revents);
        client.check();

        if (in_i >= 0 && pfds[in_i].revents) {
            const std::size_t room = std::min(client.stdin_room(id), inbuf.size());
            const ssize_t r = room == 0 ? -1 : read(in_fd, inbuf.data(), room);
            if (r > 0) {
                client.write_stdin(id, std::string_view(inbuf.data(), static_cast<size_t>(r)));
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                // EOF, or an error such as EIO from a hung-up terminal: stdin is over.
                in_done = true;
                client.close_stdin(id);
            }
        }
        for (int s = 0; s < 2; ++s) {
            if (out_i[s] < 0 || !pfds[out_i[s]].revents) continue;
            const Stream stream = s == 0 ? kStdout : kStderr;
            const std::string_view data = client.peek_output(id, stream);
            const ssize_t w = write(outs[s], data.data(), std::min(data.size(), chunks[s]));
            if (w > 0) {
                client.consume_output(id, stream, static_cast<std::size_t>(w));
            } else if (w < 0 && errno == EPIPE) {
                client.discard_output(id, stream);
            } else if (w < 0 && errno != EINTR && errno != EAGAIN) {
                throw_errno(s == 0 ? "writing the process's stdout"
                                   : "writing the process's stderr");
            }
        }
        if (sig_i >= 0 && (pfds[sig_i].revents & POLLIN)) {
            signalfd_siginfo si;
            while (read(sigs.fd(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
                const int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGWINCH && track_winsize) {
                    std::uint16_t rows = 0, cols = 0;
                    if (terminal_size(options.winsize_fd, rows, cols))
                        client.resize_async(id, rows, cols);
                    if (std::find(options.forward_signals.begin(), options.forward_signals.end(),
                                  SIGWINCH) == options.forward_signals.end())
                        continue;
                }
                client.signal_async(id, sig, options.signal_group);
            }
        }
    }
}

}  // namespace vessel::agent
