// Terminals for containers with process.terminal: a host pty pair whose master goes to the
// caller's --console-socket (SCM_RIGHTS, as runc sends it) and whose slave is the VMM's stdio,
// relayed to a pty in the guest.
#pragma once

#include <termios.h>

#include <string>

#include "vmm/fd.h"

namespace vessel::container {

struct Pty {
    UniqueFd master;
    UniqueFd slave;
};

// A new pty pair; the slave in raw mode (the guest's pty does the line discipline), with
// `rows` x `cols` if non-zero.
Pty open_pty(unsigned rows = 0, unsigned cols = 0);

// Connects to the Unix socket `path` and sends `fd` with one byte of data (the name, like
// runc). Throws std::system_error naming the socket.
void send_console_fd(const std::string& path, int fd);

// Makes `slave` this process's controlling terminal (after setsid) and its stdio 0-2.
void adopt_terminal(int slave);

// The host terminal `fd` in raw mode while a guest tty owns it; restored on every way out.
// Does nothing when fd is not a terminal.
class RawTerminal {
  public:
    explicit RawTerminal(int fd);
    ~RawTerminal();
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;

  private:
    int fd_;
    termios saved_{};
    bool active_ = false;
};

}  // namespace vessel::container
