#include "virtio/vsock/muxer.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace vessel::virtio::vsock {

namespace {

constexpr size_t kMaxOrphanRsts = 256;
constexpr size_t kMaxReadBatch = kMaxPayload;  // bytes per readv into RX buffers
constexpr size_t kMaxBatchIovecs = 512;
constexpr int kMaxRounds = 8;  // TX/RX passes per wake-up before looking at sockets again
constexpr auto kListenerRetry = std::chrono::seconds(1);
constexpr double kLogBurst = 10;  // lines at once, then one per second
constexpr uint64_t kIdMask = (1ull << 56) - 1;
constexpr uint32_t kConnEvents = EPOLLIN | EPOLLRDHUP | EPOLLET;

void drain(int efd) {
    uint64_t v;
    while (::read(efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
}

std::string ports(const ConnKey& k) {
    return "host port " + std::to_string(k.local_port) + ", guest port " +
           std::to_string(k.peer_port);
}

}  // namespace

struct Muxer::Conn {
    Conn(uint64_t i, Connection c, UniqueFd f) : id(i), sm(std::move(c)), fd(std::move(f)) {}

    uint64_t id;
    Connection sm;
    UniqueFd fd;  // closed as soon as sm is closed; the entry lives on until its RST is out
    WriteBuffer out;
    size_t out_uncredited = 0;       // leading bytes of `out` that are not guest data (the OK line)
    bool readable = false;           // an EPOLLIN edge not yet read down to EAGAIN
    bool want_out = false;           // EPOLLOUT registered
    bool in_ctrl = false;            // queued in ctrl_q_
    bool in_data = false;            // queued in data_q_
    std::optional<TimePoint> armed;  // deadline present in timers_
};

Muxer::Muxer(const vmm::GuestMemory& mem, Queue& rx, Queue& tx, Interrupt& irq,
             const UnixListener& listener, MuxerOptions opts, VsockCounters& counters,
             std::mutex& mu)
    : mem_(mem),
      rx_(rx),
      tx_(tx),
      irq_(irq),
      listener_(listener),
      opts_(std::move(opts)),
      counters_(counters),
      mu_(mu),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      now_(Clock::now()),
      log_last_(now_) {
    if (!epoll_) throw_errno("creating the virtio-vsock epoll set");
    next_local_port_ = std::max(opts_.first_host_port, 1u << 30);
}

Muxer::~Muxer() = default;

bool Muxer::watch(int fd, Tag tag, uint64_t id, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = (uint64_t{static_cast<uint8_t>(tag)} << 56) | (id & kIdMask);
    return ::epoll_ctl(epoll_.get(), op, fd, &ev) == 0;
}

void Muxer::set_events(Conn& c, bool want_out) {
    if (want_out == c.want_out || !c.fd) return;
    c.want_out = want_out;
    if (!watch(c.fd.get(), Tag::kConn, c.id, kConnEvents | (want_out ? uint32_t{EPOLLOUT} : 0u),
               EPOLL_CTL_MOD)) {
        ++counters_.host_errors;
        c.sm.on_host_error();
    }
}

void Muxer::note(const std::string& line) {
    const TimePoint now = Clock::now();
    log_tokens_ =
        std::min(kLogBurst, log_tokens_ + std::chrono::duration<double>(now - log_last_).count());
    log_last_ = now;
    if (log_tokens_ < 1) {
        ++counters_.log_suppressed;
        return;
    }
    log_tokens_ -= 1;
    if (opts_.log)
        opts_.log(line);
    else
        std::fprintf(stderr, "vessel: %s\n", line.c_str());
}

std::vector<ConnectionState> Muxer::connections() const {
    std::vector<ConnectionState> v;
    for (const auto& [id, c] : conns_) v.push_back(c->sm.state());
    std::sort(v.begin(), v.end(), [](const ConnectionState& a, const ConnectionState& b) {
        return ConnKey{a.local_port, a.peer_port}.packed() <
               ConnKey{b.local_port, b.peer_port}.packed();
    });
    return v;
}

// --- the loop -------------------------------------------------------------------------------

void Muxer::run(int stop_fd, int kick_fd) {
    if (!watch(stop_fd, Tag::kStop, 0, EPOLLIN) || !watch(kick_fd, Tag::kKick, 0, EPOLLIN) ||
        !watch(listener_.fd(), Tag::kListener, 0, EPOLLIN))
        throw_errno("adding the virtio-vsock eventfds and listener to its epoll set");
    {
        std::lock_guard lock(mu_);
        now_ = Clock::now();
        // Buffers may have been posted before activation.
        process();
        signal();
    }
    epoll_event evs[64];
    for (;;) {
        const int timeout = again_ ? 0 : next_timeout_ms();
        again_ = false;
        const int n = ::epoll_wait(epoll_.get(), evs, 64, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("waiting on the virtio-vsock epoll set");
        }
        std::lock_guard lock(mu_);
        now_ = Clock::now();
        for (int i = 0; i < n; ++i) {
            const auto tag = static_cast<Tag>(evs[i].data.u64 >> 56);
            const uint64_t id = evs[i].data.u64 & kIdMask;
            switch (tag) {
                case Tag::kStop:
                    return;
                case Tag::kKick:
                    drain(kick_fd);
                    break;
                case Tag::kListener:
                    accept_all();
                    break;
                case Tag::kHandshake:
                    on_handshake(id, evs[i].events);
                    break;
                case Tag::kConn:
                    on_conn_event(id, evs[i].events);
                    break;
            }
        }
        run_timers();
        if (held_) continue;  // the queues stay as a snapshot saw them
        process();
        signal();
    }
}

int Muxer::next_timeout_ms() const {
    std::optional<TimePoint> next;
    if (!timers_.empty()) next = timers_.begin()->first;
    if (listener_paused_ && (!next || listener_resume_ < *next)) next = listener_resume_;
    if (!next) return -1;
    const auto d = *next - Clock::now();
    if (d <= Clock::duration::zero()) return 0;
    return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(d).count());
}

void Muxer::run_timers() {
    if (listener_paused_ && now_ >= listener_resume_) pause_listener(false);
    while (!timers_.empty() && timers_.begin()->first <= now_) {
        const auto [t, id] = *timers_.begin();
        timers_.erase(timers_.begin());
        if (auto h = handshakes_.find(id); h != handshakes_.end()) {
            if (h->second.deadline == t) {
                ++counters_.timeouts;
                note("virtio-vsock: a host client sent no CONNECT line in time; closed");
                drop_handshake(id);
            }
            continue;
        }
        Conn* c = find(id);
        if (!c || c->armed != t) continue;  // re-armed or gone since
        c->armed.reset();
        if (c->sm.on_timer(now_)) {
            ++counters_.timeouts;
            note("virtio-vsock: connection (" + ports(c->sm.key()) + ") timed out; reset");
        }
        sync(*c);
    }
}

void Muxer::process() {
    for (int round = 0; round < kMaxRounds && !broken_; ++round) {
        bool progress = drain_tx();
        progress |= fill_rx();
        if (!progress) return;
    }
    if (!broken_) again_ = true;
}

void Muxer::signal() {
    bool irq = false;
    // Each queue's suppression state must see every batch that added used entries.
    if (rx_used_ && rx_.needs_interrupt(mem_)) irq = true;
    if (tx_used_ && tx_.needs_interrupt(mem_)) irq = true;
    rx_used_ = tx_used_ = false;
    if (irq) irq_.signal_used();
}

Muxer::Conn* Muxer::find(uint64_t id) {
    auto it = conns_.find(id);
    return it == conns_.end() ? nullptr : it->second.get();
}

// --- host side ------------------------------------------------------------------------------

void Muxer::pause_listener(bool pause) {
    if (pause == listener_paused_) return;
    if (pause) {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.fd(), nullptr);
    } else if (!watch(listener_.fd(), Tag::kListener, 0, EPOLLIN)) {
        pause = true;  // try again later
    }
    if (pause) listener_resume_ = now_ + kListenerRetry;
    listener_paused_ = pause;
}

void Muxer::accept_all() {
    for (;;) {
        UniqueFd fd = listener_.accept();
        if (!fd) {
            const int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) return;
            if (err == ECONNABORTED) continue;
            // Out of fds or memory: the listener would stay readable and spin us, so stop
            // watching it for a while.
            note("virtio-vsock: accepting on " + listener_.path() + ": " + std::strerror(err));
            pause_listener(true);
            return;
        }
        if (live() >= opts_.max_connections) {
            ++counters_.over_limit;
            note("virtio-vsock: connection limit (" + std::to_string(opts_.max_connections) +
                 ") reached; refused a host client");
            continue;  // closes it
        }
        const uint64_t id = next_id_++;
        if (!watch(fd.get(), Tag::kHandshake, id, EPOLLIN | EPOLLRDHUP | EPOLLET)) {
            note(std::string("virtio-vsock: watching a host client: ") + std::strerror(errno));
            continue;
        }
        const TimePoint deadline = now_ + opts_.conn.connect_timeout;
        handshakes_.emplace(id, Handshake{std::move(fd), deadline});
        timers_.emplace(deadline, id);
    }
}

void Muxer::drop_handshake(uint64_t id) {
    auto it = handshakes_.find(id);
    if (it == handshakes_.end()) return;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd.get(), nullptr);
    handshakes_.erase(it);
}

void Muxer::on_handshake(uint64_t id, uint32_t events) {
    auto it = handshakes_.find(id);
    if (it == handshakes_.end()) return;  // became a connection earlier in this batch
    const int fd = it->second.fd.get();
    // Peek, so that stream bytes the client sent right after the line stay in the socket.
    char buf[kMaxConnectLine];
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
        ++counters_.bad_handshakes;
        drop_handshake(id);
        return;
    }
    const char* nl = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
    if (!nl) {
        // Wait for the rest of the line, unless none can come.
        const bool eof = events & (EPOLLRDHUP | EPOLLHUP);
        if (static_cast<size_t>(n) < sizeof buf && !eof) return;
        ++counters_.bad_handshakes;
        note("virtio-vsock: a host client sent an incomplete handshake line; closed");
        drop_handshake(id);
        return;
    }
    const size_t len = static_cast<size_t>(nl - buf) + 1;
    std::optional<uint32_t> port;
    if (::recv(fd, buf, len, MSG_DONTWAIT) == static_cast<ssize_t>(len))
        port = parse_connect_line(std::string_view(buf, len));
    if (!port) {
        ++counters_.bad_handshakes;
        note("virtio-vsock: a host client sent a bad handshake line (want \"CONNECT <port>\\n\")");
        drop_handshake(id);
        return;
    }
    ++counters_.host_connects;
    const ConnKey key{alloc_local_port(*port), *port};
    auto conn = std::make_unique<Conn>(id, Connection::connect_to_guest(key, opts_.conn, now_),
                                       std::move(it->second.fd));
    handshakes_.erase(it);
    // Bytes already queued behind the line raise no new edge.
    conn->readable = true;
    if (!watch(conn->fd.get(), Tag::kConn, id, kConnEvents, EPOLL_CTL_MOD)) return;  // closes
    Conn& c = *conn;
    by_key_[key] = id;
    conns_.emplace(id, std::move(conn));
    sync(c);
}

uint32_t Muxer::alloc_local_port(uint32_t peer_port) {
    // Host ports the device assigns live above 2^30, away from well-known guest-visible ones.
    for (;;) {
        const uint32_t p = next_local_port_++;
        if (next_local_port_ == 0xffffffffu) next_local_port_ = 1u << 30;
        if (!by_key_.contains(ConnKey{p, peer_port})) return p;
    }
}

void Muxer::on_conn_event(uint64_t id, uint32_t events) {
    Conn* c = find(id);
    if (!c || !c->fd) return;
    if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(c->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            ++counters_.host_errors;
            c->sm.on_host_error();
            sync(*c);
            return;
        }
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) c->readable = true;
    // A host client that hangs up before the guest answered gets nothing more.
    if ((events & EPOLLHUP) && c->sm.state().phase == Phase::kConnecting) c->sm.abort();
    if (events & (EPOLLOUT | EPOLLHUP)) flush_host(*c);
    sync(*c);
}

void Muxer::flush_host(Conn& c) {
    if (!c.fd || c.out.empty()) return;
    const ssize_t r = c.out.flush(c.fd.get());
    if (r < 0) {
        ++counters_.host_errors;
        c.sm.on_host_error();
        return;
    }
    const size_t n = static_cast<size_t>(r);
    const size_t ok_part = std::min(n, c.out_uncredited);
    c.out_uncredited -= ok_part;
    if (n > ok_part) {
        c.sm.on_forwarded(static_cast<uint32_t>(n - ok_part));
        counters_.bytes_to_host += n - ok_part;
    }
    set_events(c, !c.out.empty());
}

void Muxer::forward_to_host(Conn& c, const std::vector<iovec>& payload, uint32_t len) {
    if (len == 0 || !c.fd) return;
    size_t n = 0;
    // Straight from guest memory unless older bytes are still waiting.
    if (c.out.empty()) {
        const ssize_t r = send_iov(c.fd.get(), payload.data(), payload.size());
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            ++counters_.host_errors;
            c.sm.on_host_error();
            return;
        }
        n = r < 0 ? 0 : static_cast<size_t>(r);
    }
    if (n > 0) {
        c.sm.on_forwarded(static_cast<uint32_t>(n));
        counters_.bytes_to_host += n;
    }
    if (n < len) {
        // Bounded: the connection accepted these bytes only within the credit it gave.
        c.out.append(payload.data(), payload.size(), n);
        set_events(c, true);
    }
}

void Muxer::sync(Conn& c) {
    if (c.sm.ok_owed() && c.fd) {
        const std::string line = ok_line(c.sm.key().local_port);
        c.out.append(line);
        c.out_uncredited += line.size();
        c.sm.on_ok_sent();
        flush_host(c);
    }
    if (c.fd && !c.sm.closed() && c.out.empty()) {
        if (c.sm.wants_host_shut_wr()) {
            ::shutdown(c.fd.get(), SHUT_WR);  // fails only if the peer is gone, which reads see
            c.sm.on_host_shut_wr();
        }
        if (c.sm.draining()) c.sm.on_drained();
    }
    if (c.sm.closed() && c.fd) {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
        c.fd.reset();
        c.out.clear();
        c.out_uncredited = 0;
        c.readable = false;
        c.want_out = false;
    }
    if (c.sm.has_control() && !c.in_ctrl) {
        c.in_ctrl = true;
        ctrl_q_.push_back(c.id);
    }
    if (c.readable && !c.in_data && c.sm.can_send_data() && c.sm.send_credit() > 0) {
        c.in_data = true;
        data_q_.push_back(c.id);
    }
    if (c.sm.deadline() != c.armed) {
        c.armed = c.sm.deadline();
        if (c.armed) timers_.emplace(*c.armed, c.id);
    }
    if (c.sm.finished()) {
        by_key_.erase(c.sm.key());
        conns_.erase(c.id);  // `c` is gone; stale queue entries are skipped by id
        // A guest that opens and resets connections while posting no RX buffers must not grow
        // the queues with dead ids.
        auto dead = [this](uint64_t id) { return !conns_.contains(id); };
        if (ctrl_q_.size() > 2 * conns_.size() + 64) std::erase_if(ctrl_q_, dead);
        if (data_q_.size() > 2 * conns_.size() + 64) std::erase_if(data_q_, dead);
    }
}

// --- guest side -----------------------------------------------------------------------------

bool Muxer::drain_tx() {
    bool progress = false;
    // A queue's worth per pass; the caller comes back for more.
    for (unsigned budget = tx_.size(); budget > 0; --budget) {
        if (broken_) return progress;
        // RSTs owed but no RX buffer to carry them: leave the rest in the ring for now.
        if (orphan_rsts_.size() >= kMaxOrphanRsts) return progress;
        PopResult r = tx_.pop(mem_);
        switch (r.status) {
            case PopStatus::kEmpty:
                return progress;
            case PopStatus::kBroken:
                broken_ = true;
                irq_.signal_needs_reset();
                return progress;
            case PopStatus::kBadChain:
                ++counters_.bad_chains;
                break;
            case PopStatus::kChain:
                handle_tx(r.chain);
                break;
        }
        // TX buffers are device-readable only: nothing written, used_len 0. The payload has
        // been sent or copied by now, so the driver may reuse the buffer.
        tx_used_ |= tx_.add_used(mem_, r.chain.head, 0);
        progress = true;
    }
    return progress;
}

void Muxer::handle_tx(const DescriptorChain& chain) {
    parse_tx(chain, mem_, opts_.conn.guest_cid, pkt_);
    const PacketHeader& h = pkt_.hdr;
    if (!pkt_.ok()) {
        ++counters_.bad_packets[static_cast<size_t>(pkt_.error)];
        std::string what =
            "virtio-vsock: dropped a TX packet: " + std::string(error_name(pkt_.error));
        if (pkt_.has_header)
            what += " (op " + std::to_string(h.op) + ", guest port " + std::to_string(h.src_port) +
                    " to port " + std::to_string(h.dst_port) + ", len " + std::to_string(h.len) +
                    ")";
        note(what);
        if (answer_with_rst(pkt_.error) && h.op != op::kRst) queue_rst(rst_reply(h));
        return;
    }
    auto it = by_key_.find(ConnKey{h.dst_port, h.src_port});
    if (it == by_key_.end()) {
        handle_new(h);
        return;
    }
    Conn& c = *conns_.at(it->second);
    const Phase before = c.sm.state().phase;
    switch (c.sm.on_packet(h, now_)) {
        case Verdict::kData:
            forward_to_host(c, pkt_.payload, h.len);
            break;
        case Verdict::kProtocolError:
            ++counters_.protocol_errors;
            note("virtio-vsock: " + std::string(op_name(h.op)) + " not allowed on connection (" +
                 ports(c.sm.key()) + "); reset");
            break;
        case Verdict::kCreditError:
            ++counters_.credit_errors;
            note("virtio-vsock: guest sent past its credit on connection (" + ports(c.sm.key()) +
                 "); reset");
            break;
        case Verdict::kReset:
            if (before == Phase::kConnecting) ++counters_.host_refused;
            break;
        case Verdict::kOk:
        case Verdict::kIgnored:
            break;
    }
    sync(c);
}

void Muxer::handle_new(const PacketHeader& h) {
    if (h.op == op::kRst) return;  // nothing to reset
    if (h.op != op::kRequest) {
        ++counters_.unknown_connection;
        queue_rst(rst_reply(h));
        return;
    }
    if (live() >= opts_.max_connections) {
        ++counters_.over_limit;
        note("virtio-vsock: connection limit (" + std::to_string(opts_.max_connections) +
             ") reached; refused guest port " + std::to_string(h.src_port));
        queue_rst(rst_reply(h));
        return;
    }
    int err = 0;
    UniqueFd fd = listener_.connect_port(h.dst_port, err);
    if (!fd) {
        // Nobody listening on <uds_path>_<port> is an ordinary refusal, not worth a log line.
        ++counters_.guest_refused;
        queue_rst(rst_reply(h));
        return;
    }
    ++counters_.guest_connects;
    const uint64_t id = next_id_++;
    auto conn =
        std::make_unique<Conn>(id, Connection::accept_from_guest(h, opts_.conn), std::move(fd));
    if (!watch(conn->fd.get(), Tag::kConn, id, kConnEvents)) {
        ++counters_.host_errors;
        queue_rst(rst_reply(h));
        return;
    }
    Conn& c = *conn;
    by_key_[c.sm.key()] = id;
    conns_.emplace(id, std::move(conn));
    sync(c);
}

void Muxer::queue_rst(const PacketHeader& to) {
    if (orphan_rsts_.size() >= kMaxOrphanRsts) {
        ++counters_.rst_dropped;
        return;
    }
    orphan_rsts_.push_back(to);
}

bool Muxer::have_rx_work() const {
    return !orphan_rsts_.empty() || !ctrl_q_.empty() || !data_q_.empty();
}

std::optional<RxBuffer> Muxer::take_rx() {
    if (!spare_.empty()) {
        RxBuffer b = std::move(spare_.front());
        spare_.pop_front();
        return b;
    }
    for (;;) {
        PopResult r = rx_.pop(mem_);
        switch (r.status) {
            case PopStatus::kEmpty:
                return std::nullopt;
            case PopStatus::kBroken:
                broken_ = true;
                irq_.signal_needs_reset();
                return std::nullopt;
            case PopStatus::kBadChain:
                ++counters_.bad_chains;
                rx_used_ |= rx_.add_used(mem_, r.chain.head, 0);
                continue;
            case PopStatus::kChain:
                break;
        }
        RxBuffer b;
        parse_rx_buffer(r.chain, mem_, b);
        b.seq = rx_popped_++;
        if (b.ok()) return b;
        ++counters_.bad_rx_buffers[static_cast<size_t>(b.error)];
        note("virtio-vsock: unusable RX buffer: " + std::string(error_name(b.error)));
        rx_used_ |= rx_.add_used(mem_, b.head, 0);
    }
}

void Muxer::give_back(RxBuffer&& b) {
    auto at = spare_.end();
    while (at != spare_.begin() && std::prev(at)->seq > b.seq) --at;
    spare_.insert(at, std::move(b));
}

void Muxer::send(RxBuffer& b, const PacketHeader& h) {
    write_header(b, h);
    rx_used_ |= rx_.add_used(mem_, b.head, kHeaderSize + h.len);
    if (h.op == op::kRst) ++counters_.rst_sent;
}

bool Muxer::fill_rx() {
    bool progress = false;
    for (unsigned budget = rx_.size(); budget > 0 && !broken_ && have_rx_work();) {
        if (!orphan_rsts_.empty()) {
            std::optional<RxBuffer> b = take_rx();
            if (!b) break;
            send(*b, orphan_rsts_.front());
            orphan_rsts_.pop_front();
            --budget;
            progress = true;
            continue;
        }
        if (!ctrl_q_.empty()) {
            Conn* c = find(ctrl_q_.front());
            if (!c || !c->sm.has_control()) {
                if (c) c->in_ctrl = false;
                ctrl_q_.pop_front();
                continue;
            }
            std::optional<RxBuffer> b = take_rx();
            if (!b) break;
            send(*b, c->sm.take_control());
            if (!c->sm.has_control()) {
                c->in_ctrl = false;
                ctrl_q_.pop_front();
            }
            --budget;
            progress = true;
            sync(*c);
            continue;
        }
        const uint64_t id = data_q_.front();
        Conn* c = find(id);
        if (!c) {
            data_q_.pop_front();
            continue;
        }
        if (!c->readable || !c->sm.can_send_data() || c->sm.send_credit() == 0) {
            // sync() queues it again when that changes.
            c->in_data = false;
            data_q_.pop_front();
            continue;
        }
        if (!read_host(*c)) break;  // no RX buffer: stays first in line
        c->in_data = false;
        data_q_.pop_front();
        --budget;
        progress = true;
        sync(*c);  // back at the end of the line if there is more
    }
    return progress;
}

bool Muxer::read_host(Conn& c) {
    const size_t want = std::min<size_t>(c.sm.send_credit(), kMaxReadBatch);
    batch_.clear();
    shares_.clear();
    iov_.clear();
    size_t cap = 0;
    std::vector<RxBuffer> header_only;  // rare: buffers with no payload room
    while (cap < want && iov_.size() < kMaxBatchIovecs) {
        std::optional<RxBuffer> b = take_rx();
        if (!b) break;
        if (b->capacity == 0) {
            header_only.push_back(std::move(*b));
            continue;
        }
        size_t share = std::min(b->capacity, want - cap);
        cap += share;
        shares_.push_back(share);
        for (const iovec& v : b->payload) {
            if (share == 0) break;
            const size_t take = std::min(v.iov_len, share);
            iov_.push_back(iovec{v.iov_base, take});
            share -= take;
        }
        batch_.push_back(std::move(*b));
    }
    for (RxBuffer& b : header_only) give_back(std::move(b));
    if (batch_.empty()) return false;

    const ssize_t n = recv_iov(c.fd.get(), iov_.data(), iov_.size());
    if (n <= 0) {
        const int err = errno;
        for (RxBuffer& b : batch_) give_back(std::move(b));
        c.readable = false;
        if (n == 0) {
            c.sm.on_host_eof(now_);
        } else if (err != EAGAIN && err != EWOULDBLOCK) {
            ++counters_.host_errors;
            c.sm.on_host_error();
        }
        return true;
    }
    size_t left = static_cast<size_t>(n);
    for (size_t i = 0; i < batch_.size(); ++i) {
        const size_t k = std::min(shares_[i], left);
        if (k == 0) {
            give_back(std::move(batch_[i]));
            continue;
        }
        send(batch_[i], c.sm.data_header(static_cast<uint32_t>(k)));
        left -= k;
    }
    counters_.bytes_to_guest += static_cast<uint64_t>(n);
    return true;
}

}  // namespace vessel::virtio::vsock
