#include "event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "seccomp.h"

namespace vessel::vmm {

EventLoop::EventLoop() {
    epfd_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd_) throw_errno("creating epoll instance");
    wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw_errno("creating event loop eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_.get();
    if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) < 0)
        throw_errno("adding wake eventfd to epoll");
}

EventLoop::~EventLoop() {
    stop();
}

void EventLoop::add(int fd, Callback cb, uint32_t events) {
    {
        std::lock_guard lk(mu_);
        callbacks_[fd] = std::make_shared<Callback>(std::move(cb));
    }
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
        throw_errno("adding fd " + std::to_string(fd) + " to the device event loop");
}

void EventLoop::remove(int fd) {
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
    std::lock_guard lk(mu_);
    callbacks_.erase(fd);
}

void EventLoop::start() {
    if (thread_.joinable()) return;
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
}

void EventLoop::stop() {
    if (!thread_.joinable()) return;
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
    thread_.join();
}

void EventLoop::run() {
    seccomp::enter(seccomp::Role::DeviceEvents);
    epoll_event evs[32];
    for (;;) {
        int n = ::epoll_wait(epfd_.get(), evs, 32, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int i = 0; i < n; ++i) {
            int fd = evs[i].data.fd;
            std::shared_ptr<Callback> cb;
            {
                std::lock_guard lk(mu_);
                if (stopping_) return;
                auto it = callbacks_.find(fd);
                if (it != callbacks_.end()) cb = it->second;
            }
            if (cb) (*cb)(evs[i].events);
        }
        std::lock_guard lk(mu_);
        if (stopping_) return;
    }
}

}  // namespace vessel::vmm
