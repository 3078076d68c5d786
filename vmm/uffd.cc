#include "uffd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "seccomp.h"

namespace vessel::vmm {
namespace {

constexpr uint64_t kPage = 4096;

// Reads one whole page at `offset`; false on an error or a short file (it changed under us).
bool read_page(int fd, uint64_t offset, uint8_t* out) {
    for (uint64_t at = 0; at < kPage;) {
        ssize_t n = ::pread(fd, out + at, kPage - at, static_cast<off_t>(offset + at));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EIO;
            return false;
        }
        at += static_cast<uint64_t>(n);
    }
    return true;
}

void set_bit(std::vector<uint64_t>& bits, uint64_t p) {
    bits[p / 64] |= 1ull << (p % 64);
}

}  // namespace

UniqueFd open_userfaultfd() {
    UniqueFd fd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
    if (fd) return fd;
    const int err = errno;
#ifdef USERFAULTFD_IOC_NEW
    // vm.unprivileged_userfaultfd=0 refuses the system call to a process without
    // CAP_SYS_PTRACE; access to /dev/userfaultfd is the other way in (Linux 6.1+).
    if (err == EPERM) {
        UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
        if (dev) {
            fd = UniqueFd(::ioctl(dev.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK));
            if (fd) return fd;
        }
    }
#endif
    throw_errno(
        "opening a userfaultfd (needs CONFIG_USERFAULTFD, and root or "
        "vm.unprivileged_userfaultfd=1)",
        err);
}

UffdPager::UffdPager(uint8_t* base, uint64_t size, const std::string& memory_path,
                     std::vector<MemoryLayer> overlays, bool record)
    : base_(base),
      size_(size),
      pages_(size / kPage),
      buf_(std::make_unique<uint8_t[]>(kPage)),
      recording_(record) {
    uffd_ = open_userfaultfd();
    uffdio_api api{};
    api.api = UFFD_API;
    if (::ioctl(uffd_.get(), UFFDIO_API, &api) < 0)
        throw_errno("userfaultfd handshake (UFFDIO_API)");
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uint64_t>(base);
    reg.range.len = size;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) < 0)
        throw_errno("registering guest memory with userfaultfd");
    const uint64_t need =
        (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) | (1ull << _UFFDIO_WAKE);
    if ((reg.ioctls & need) != need)
        throw std::system_error(ENOTSUP, std::generic_category(),
                                "userfaultfd on guest memory lacks UFFDIO_COPY or UFFDIO_ZEROPAGE");
    stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_) throw_errno("creating the userfaultfd handler's stop eventfd");

    const uint64_t words = (pages_ + 63) / 64;
    Layer full;
    full.path = memory_path;
    full.fd = UniqueFd(::open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!full.fd) throw_errno("opening memory file " + memory_path);
    // Holes of the full snapshot's file are zero pages: found once here, so a fault on one
    // costs no read.
    data_.assign(words, 0);
    const off_t end = static_cast<off_t>(size);
    for (off_t pos = 0; pos < end;) {
        off_t d = ::lseek(full.fd.get(), pos, SEEK_DATA);
        if (d < 0 && errno == ENXIO) break;
        if (d < 0) {  // no SEEK_DATA: every page may hold data
            std::fill(data_.begin(), data_.end(), ~0ull);
            break;
        }
        off_t h = ::lseek(full.fd.get(), d, SEEK_HOLE);
        if (h < 0 || h > end) h = end;
        for (uint64_t p = static_cast<uint64_t>(d) / kPage;
             p < (static_cast<uint64_t>(h) + kPage - 1) / kPage; ++p)
            set_bit(data_, p);
        pos = h;
    }
    layers_.push_back(std::move(full));
    for (auto& o : overlays) {
        Layer l;
        l.path = o.path;
        l.fd = UniqueFd(::open(o.path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!l.fd) throw_errno("opening diff memory file " + o.path);
        l.bitmap = std::move(o.bitmap);
        l.bitmap.resize(words, 0);
        layers_.push_back(std::move(l));
    }
    filled_.assign(words, 0);
}

UffdPager::~UffdPager() {
    if (thread_.joinable()) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof one);
        thread_.join();
    }
}

void UffdPager::start() {
    // Made before Machine::run blocks the signals it takes with a signalfd: a thread with
    // them unblocked would take SIGTERM's default action for the whole process. The handler
    // wants no signal, so it is born with all of them blocked.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    try {
        thread_ = seccomp::spawn(seccomp::Role::Uffd, [this] { serve(); });
    } catch (...) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        throw;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void UffdPager::set_error_handler(std::function<void(const std::string&)> fn) {
    std::lock_guard lk(mu_);
    on_error_ = std::move(fn);
}

int UffdPager::copy(uint64_t page, const uint8_t* src, uint64_t pages, bool wake) {
    uffdio_copy c{};
    c.dst = reinterpret_cast<uint64_t>(base_) + page * kPage;
    c.src = reinterpret_cast<uint64_t>(src);
    c.len = pages * kPage;
    c.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE;
    while (::ioctl(uffd_.get(), UFFDIO_COPY, &c) < 0) {
        // EAGAIN: interrupted part way (c.copy says how far); go on from there.
        if (errno != EAGAIN) return errno;
        if (c.copy > 0) {
            c.dst += static_cast<uint64_t>(c.copy);
            c.src += static_cast<uint64_t>(c.copy);
            c.len -= static_cast<uint64_t>(c.copy);
        }
        c.copy = 0;
    }
    return 0;
}

int UffdPager::zero(uint64_t page, uint64_t pages, bool wake) {
    uffdio_zeropage z{};
    z.range.start = reinterpret_cast<uint64_t>(base_) + page * kPage;
    z.range.len = pages * kPage;
    z.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
    while (::ioctl(uffd_.get(), UFFDIO_ZEROPAGE, &z) < 0) {
        if (errno != EAGAIN) return errno;
        if (z.zeropage > 0) {
            z.range.start += static_cast<uint64_t>(z.zeropage);
            z.range.len -= static_cast<uint64_t>(z.zeropage);
        }
        z.zeropage = 0;
    }
    return 0;
}

void UffdPager::wake(uint64_t page) {
    uffdio_range r{reinterpret_cast<uint64_t>(base_) + page * kPage, kPage};
    ::ioctl(uffd_.get(), UFFDIO_WAKE, &r);
}

uint64_t UffdPager::prefetch(const Prefetch& p) {
    const auto t0 = std::chrono::steady_clock::now();
    // Which entries to install, in list order: pages inside the memory, each once, while the
    // data lasts (the rest is served on faults). nullptr: a zero page.
    const uint64_t data_pages = p.data.size() / kPage;
    std::vector<std::pair<uint64_t, const uint8_t*>> todo;
    todo.reserve(p.pages.size());
    uint64_t di = 0;  // next data page
    for (uint64_t e : p.pages) {
        const bool is_zero = e & Prefetch::kZeroPage;
        const uint64_t page = e & ~Prefetch::kZeroPage;
        if (!is_zero && di >= data_pages) break;
        const uint8_t* src = is_zero ? nullptr : p.data.data() + di++ * kPage;
        if (page >= pages_ || bit(filled_, page)) continue;
        set_bit(filled_, page);
        todo.emplace_back(page, src);
    }
    // In page order, one ioctl per run of consecutive pages of one kind (each ioctl has a
    // fixed cost; first-touch order interleaves the runs). A run's data is gathered into
    // one buffer when the list did not keep it together.
    std::sort(todo.begin(), todo.end());
    constexpr uint64_t kMaxRun = 512;
    std::unique_ptr<uint8_t[]> staging;
    uint64_t installed = 0;
    for (size_t i = 0; i < todo.size();) {
        const auto [page, src] = todo[i];
        const bool is_zero = src == nullptr;
        uint64_t run = 1;
        bool together = true;
        while (i + run < todo.size() && run < kMaxRun && todo[i + run].first == page + run &&
               (todo[i + run].second == nullptr) == is_zero) {
            together = together && (is_zero || todo[i + run].second == src + run * kPage);
            ++run;
        }
        const uint8_t* from = src;
        if (!is_zero && !together) {
            if (!staging) staging = std::make_unique_for_overwrite<uint8_t[]>(kMaxRun * kPage);
            for (uint64_t k = 0; k < run; ++k)
                std::memcpy(staging.get() + k * kPage, todo[i + k].second, kPage);
            from = staging.get();
        }
        int err = is_zero ? zero(page, run, false) : copy(page, from, run, false);
        if (err == 0) {
            installed += run;
        } else {
            // One page at a time, so one that is there already costs only itself.
            for (uint64_t k = 0; k < run; ++k)
                if ((is_zero ? zero(page + k, 1, false)
                             : copy(page + k, from + k * kPage, 1, false)) == 0)
                    ++installed;
        }
        ++prefetch_ioctls_;
        i += run;
    }
    prefetched_ += installed;
    prefetch_ns_ += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    return installed;
}

bool UffdPager::read_source_page(uint64_t page, uint8_t* out) const {
    if (page >= pages_) return false;
    for (size_t i = layers_.size(); i-- > 1;)
        if (bit(layers_[i].bitmap, page)) return read_page(layers_[i].fd.get(), page * kPage, out);
    if (!bit(data_, page)) {
        std::memset(out, 0, kPage);
        return true;
    }
    return read_page(layers_[0].fd.get(), page * kPage, out);
}

std::vector<std::pair<uint64_t, uint64_t>> UffdPager::source_ranges() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    auto any = [&](uint64_t p) {
        if (bit(data_, p)) return true;
        for (size_t i = 1; i < layers_.size(); ++i)
            if (bit(layers_[i].bitmap, p)) return true;
        return false;
    };
    for (uint64_t p = 0; p < pages_; ++p) {
        if (!any(p)) continue;
        if (!out.empty() && out.back().second == p * kPage)
            out.back().second += kPage;
        else
            out.emplace_back(p * kPage, (p + 1) * kPage);
    }
    return out;
}

void UffdPager::fail(const std::string& what) {
    if (failed_.exchange(true)) return;
    std::function<void(const std::string&)> fn;
    {
        std::lock_guard lk(mu_);
        fn = on_error_;
    }
    if (fn)
        fn(what);
    else
        std::fprintf(stderr, "vessel: %s\n", what.c_str());
}

void UffdPager::fill(uint64_t page, bool write) {
    int err = 0;
    bool hole = false;
    if (failed_.load()) {
        hole = true;  // the VM is being stopped: let its threads run to their end
    } else {
        size_t layer = 0;
        for (size_t i = layers_.size(); i-- > 1;)
            if (bit(layers_[i].bitmap, page)) {
                layer = i;
                break;
            }
        hole = layer == 0 && !bit(data_, page);
        if (!hole && !read_page(layers_[layer].fd.get(), page * kPage, buf_.get())) {
            fail("guest memory: reading page " + std::to_string(page) + " of " +
                 layers_[layer].path + ": " + std::strerror(errno) + "; stopping the VM");
            hole = true;
        }
    }
    // Counted and recorded before the page is installed: installing wakes the faulting
    // thread, which may then ask for the record. A repeated fault on a page filled already
    // (two threads at once) is not counted again; it still tries the install, which wakes it.
    if (!bit(filled_, page)) {
        set_bit(filled_, page);
        faults_.fetch_add(1, std::memory_order_relaxed);
        if (hole) zero_faults_.fetch_add(1, std::memory_order_relaxed);
        if (recording_.load(std::memory_order_relaxed)) {
            std::lock_guard lk(mu_);
            if (recording_.load(std::memory_order_relaxed)) recorded_.push_back(page);
        }
    }
    if (!hole) {
        err = copy(page, buf_.get(), 1, true);
    } else if (write) {
        // A write would take a second fault to replace the shared zero page: copy zeros.
        std::memset(buf_.get(), 0, kPage);
        err = copy(page, buf_.get(), 1, true);
    } else {
        err = zero(page, 1, true);
    }
    if (err == EEXIST) {
        // Filled already (two threads faulted on it, or the prefetch did): wake this waiter.
        wake(page);
        return;
    }
    if (err != 0) {
        fail("guest memory: filling page " + std::to_string(page) +
             " through userfaultfd: " + std::strerror(err));
        wake(page);
        return;
    }
}

void UffdPager::serve() {
    pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    uffd_msg msgs[64];
    for (;;) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            fail(std::string("guest memory: polling the userfaultfd: ") + std::strerror(errno));
            return;
        }
        if (fds[1].revents) return;
        ssize_t n = ::read(uffd_.get(), msgs, sizeof msgs);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            fail(std::string("guest memory: reading the userfaultfd: ") + std::strerror(errno));
            return;
        }
        for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); ++i) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
            const uint64_t addr = msgs[i].arg.pagefault.address;
            const uint64_t start = reinterpret_cast<uint64_t>(base_);
            // The kernel only reports addresses of the registered range; checked anyway.
            if (addr < start || addr - start >= size_) continue;
            fill((addr - start) / kPage, msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
        }
    }
}

std::vector<uint64_t> UffdPager::take_recorded() {
    std::lock_guard lk(mu_);
    recording_.store(false);
    return std::move(recorded_);
}

UffdStats UffdPager::stats() const {
    UffdStats s;
    s.prefetched_pages = prefetched_;
    s.prefetch_ns = prefetch_ns_;
    s.prefetch_runs = prefetch_ioctls_;
    s.faults = faults_.load(std::memory_order_relaxed);
    s.zero_faults = zero_faults_.load(std::memory_order_relaxed);
    return s;
}

}  // namespace vessel::vmm
