// The device I/O thread: an epoll loop that runs callbacks when device fds (queue ioeventfds,
// io_uring completion eventfds, taps, sockets) become readable. Callbacks run on the loop
// thread only, one at a time.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "fd.h"

namespace vessel::vmm {

class EventLoop {
  public:
    using Callback = std::function<void(uint32_t events)>;

    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Watches `fd` (not owned) for `events` (EPOLLIN by default). Callable from any thread.
    void add(int fd, Callback cb, uint32_t events = 0x001 /* EPOLLIN */);
    void remove(int fd);

    void start();  // spawns the thread; idempotent
    void stop();   // wakes the thread and joins it; idempotent

  private:
    void run();

    UniqueFd epfd_;
    UniqueFd wake_;
    std::mutex mu_;
    std::map<int, std::shared_ptr<Callback>> callbacks_;
    std::thread thread_;
    bool stopping_ = false;
};

}  // namespace vessel::vmm
