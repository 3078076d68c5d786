// Helpers for the virtio-vsock tests: a fake guest driver that plays the Linux vsock driver on
// top of FakeVirtqueue (posts RX buffers, sends TX packets, answers REQUESTs, tracks credit
// both ways and checks the device never sends past ours), and host-side Unix socket helpers.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/fake_virtqueue.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/vsock/device.h"
#include "virtio/vsock/packet.h"
#include "vmm/fd.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::vsock::testing {

using namespace std::chrono_literals;
using virtio::testing::Buf;
using virtio::testing::FakeVirtqueue;
using virtio::testing::RawDesc;

// --- data -----------------------------------------------------------------------------------

inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> b(n);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng();
        std::memcpy(b.data() + i, &v, std::min<size_t>(8, n - i));
    }
    return b;
}

// Running FNV-1a: streams hash the same as their concatenation.
struct Fnv {
    uint64_t h = 0xcbf29ce484222325ull;
    void add(const uint8_t* p, size_t n) {
        for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    }
};
inline uint64_t fnv(const std::vector<uint8_t>& b) {
    Fnv f;
    f.add(b.data(), b.size());
    return f.h;
}

// --- host side ------------------------------------------------------------------------------

// A private directory for socket files, removed with everything in it.
class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/vsock-test-XXXXXX";
        if (!::mkdtemp(tmpl)) throw_errno("mkdtemp");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
};

inline sockaddr_un unix_addr(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    return a;
}

// Blocking client socket connected to `path`.
inline UniqueFd connect_unix(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket");
    sockaddr_un a = unix_addr(path);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
        throw_errno("connect " + path);
    return fd;
}

// Blocking listening socket on `path`.
inline UniqueFd listen_unix(const std::string& path, int backlog = 16) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket");
    sockaddr_un a = unix_addr(path);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
        throw_errno("bind " + path);
    if (::listen(fd.get(), backlog) < 0) throw_errno("listen " + path);
    return fd;
}

// Waits up to `timeout` for `events` on fd; true if any.
inline bool wait_fd(int fd, short events, std::chrono::milliseconds timeout) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

inline UniqueFd accept_within(int lfd, std::chrono::milliseconds timeout) {
    if (!wait_fd(lfd, POLLIN, timeout)) return UniqueFd();
    return UniqueFd(::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
}

// Reads one '\n'-terminated line byte by byte (so nothing after it is consumed); "" on EOF,
// error or timeout.
inline std::string read_line(int fd, std::chrono::milliseconds timeout = 5000ms) {
    std::string line;
    for (;;) {
        if (!wait_fd(fd, POLLIN, timeout)) return "";
        char c;
        if (::read(fd, &c, 1) != 1) return "";
        line.push_back(c);
        if (c == '\n') return line;
    }
}

inline bool write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

// Reads until EOF (or error), hashing; returns the byte count.
inline uint64_t read_to_eof(int fd, Fnv& hash, std::chrono::milliseconds timeout = 30000ms) {
    std::vector<uint8_t> buf(256 << 10);
    uint64_t total = 0;
    for (;;) {
        if (!wait_fd(fd, POLLIN, timeout)) return total;
        ssize_t r = ::read(fd, buf.data(), buf.size());
        if (r <= 0) return total;
        hash.add(buf.data(), static_cast<size_t>(r));
        total += static_cast<uint64_t>(r);
    }
}

// True once fd reads EOF or an error (everything buffered is discarded), within `timeout`.
inline bool wait_closed(int fd, std::chrono::milliseconds timeout = 3000ms) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !wait_fd(fd, POLLIN, left)) return false;
        ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return true;
    }
}

// Host-initiated connection: "CONNECT <port>\n", then the "OK <port>\n" answer.
struct HostConn {
    UniqueFd fd;
    std::string answer;
};
inline HostConn host_connect(const std::string& uds, uint32_t port) {
    HostConn c{connect_unix(uds), ""};
    std::string line = "CONNECT " + std::to_string(port) + "\n";
    write_all(c.fd.get(), reinterpret_cast<const uint8_t*>(line.data()), line.size());
    c.answer = read_line(c.fd.get());
    return c;
}

// --- guest side -----------------------------------------------------------------------------

class TestIrq : public Interrupt {
  public:
    void signal_used() override {
        {
            std::lock_guard lk(mu_);
            ++used_;
        }
        cv_.notify_all();
    }
    void signal_config() override {}
    void signal_needs_reset() override {
        needs_reset.fetch_add(1);
        cv_.notify_all();
    }
    // Sleeps until an interrupt newer than the last one waited for, at most `d`.
    void wait(std::chrono::microseconds d) {
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, d, [this] { return used_ != seen_; });
        seen_ = used_;
    }
    uint64_t used() {
        std::lock_guard lk(mu_);
        return used_;
    }
    std::atomic<uint64_t> needs_reset{0};

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    uint64_t used_ = 0, seen_ = 0;
};

struct DriverOptions {
    uint64_t features = kFeatureVersion1 | kRingFeatures;
    uint16_t queue_size = 256;
    bool split_rx = true;            // Linux 6.1: header and payload in two descriptors
    uint32_t rx_buf_size = 4096;     // payload room per RX buffer
    uint32_t tx_max = 4096;          // payload bytes per TX packet (6.1: 4 KiB)
    uint32_t buf_alloc = 256 << 10;  // our receive buffer per socket
    bool auto_repost = true;         // re-post RX buffers as soon as they are used
    bool answer_requests = true;     // accept REQUESTs on listening ports (else ignore them)
};

// The guest's end of one stream connection.
struct GuestSock {
    uint32_t local_port = 0;  // guest
    uint32_t peer_port = 0;   // host
    enum State { kConnecting, kConnected, kClosed } state = kConnecting;
    bool got_rst = false;
    uint32_t peer_shutdown = 0;  // SHUTDOWN flags received
    bool auto_consume = true;    // the application reads everything at once
    bool keep = false;           // keep received bytes in `data`
    std::vector<uint8_t> data;
    Fnv hash;
    uint64_t rx_bytes = 0;
    uint32_t unread = 0;
    // credit, Linux style
    uint32_t buf_alloc = 0, fwd_cnt = 0, last_adv_fwd = 0, rx_cnt = 0;
    uint32_t peer_buf_alloc = 0, peer_fwd_cnt = 0, tx_cnt = 0;

    uint32_t credit() const {
        uint32_t in_flight = tx_cnt - peer_fwd_cnt;
        return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
    }
};

class FakeDriver {
  public:
    static constexpr uint64_t kRxPool = 8ull << 20;
    static constexpr uint64_t kTxPool = 32ull << 20;
    static constexpr uint64_t kTxSlot = (64 << 10) + 64;
    static constexpr uint64_t kMemSize = 64ull << 20;

    FakeDriver(VsockDevice& dev, const vmm::GuestMemory& mem, uint64_t cid, DriverOptions o = {})
        : dev_(dev),
          mem_(mem),
          cid_(cid),
          o_(o),
          rx_slot_((kHeaderSize + o.rx_buf_size + 63) & ~63ull),
          rxq_(mem, o.queue_size, 0x10000, 0x100000),
          txq_(mem, o.queue_size, 0x20000, 0x200000),
          evq_(mem, o.queue_size, 0x30000, 0x400000),
          rx_(o.queue_size, "vsock rx"),
          tx_(o.queue_size, "vsock tx"),
          ev_(o.queue_size, "vsock ev") {
        if (kRxPool + rx_slot_ * o.queue_size > kTxPool)
            throw std::invalid_argument("fake driver: RX buffers too large");
    }
    ~FakeDriver() { dev_.reset(); }
    FakeDriver(const FakeDriver&) = delete;
    FakeDriver& operator=(const FakeDriver&) = delete;

    bool event_idx() const { return o_.features & kFeatureEventIdx; }

    // Configures the queues, posts RX and event buffers (unless post_rx is false) and activates
    // the device, like the Linux probe.
    bool activate(bool post_rx = true) {
        rxq_.configure(rx_, o_.features);
        txq_.configure(tx_, o_.features);
        evq_.configure(ev_, o_.features);
        for (uint16_t i = 0; i < o_.queue_size; ++i) {
            rx_free_.push_back(i);
            tx_free_.push_back(i);
        }
        for (int i = 0; i < 8; ++i) evq_.add_chain({Buf::writable_len(4)});
        if (post_rx) post_rx_buffers();
        Queue* qs[] = {&rx_, &tx_, &ev_};
        bool ok = dev_.activate(mem_, qs, o_.features, irq_);
        rx_kicked_ = rxq_.avail_idx();
        return ok;
    }
    // Driver reset: the device stops; our view of connections goes with it.
    void reset() {
        dev_.reset();
        socks_.clear();
    }

    // Posts up to `max` RX buffers from the free descriptors.
    void post_rx_buffers(size_t max = SIZE_MAX) {
        const size_t per = o_.split_rx ? 2 : 1;
        for (size_t n = 0; n < max && rx_free_.size() >= per; ++n) {
            uint16_t h = take(rx_free_);
            if (o_.split_rx) {
                uint16_t p = take(rx_free_);
                rxq_.set_desc(h, RawDesc{rx_addr(h), kHeaderSize, kDescFWrite | kDescFNext, p});
                rxq_.set_desc(p, RawDesc{rx_addr(p), o_.rx_buf_size, kDescFWrite, 0});
                rx_chains_[h] = {h, p};
            } else {
                rxq_.set_desc(h, RawDesc{rx_addr(h), kHeaderSize + o_.rx_buf_size, kDescFWrite, 0});
                rx_chains_[h] = {h};
            }
            rx_outstanding_.push_back(h);
            rxq_.publish(h);
        }
        kick(rxq_, rx_kicked_, kRxQueue);
    }

    // --- sockets ---
    void listen(uint32_t port) { listening_.insert(port); }
    GuestSock* sock(uint32_t local, uint32_t peer) {
        auto it = socks_.find(key(local, peer));
        return it == socks_.end() ? nullptr : &it->second;
    }
    // The first socket accepted on `local`.
    GuestSock* accepted(uint32_t local) {
        for (auto& [k, s] : socks_)
            if (s.local_port == local) return &s;
        return nullptr;
    }
    GuestSock& connect(uint32_t local, uint32_t host_port) {
        GuestSock& s = socks_[key(local, host_port)];
        s = GuestSock{};
        s.local_port = local;
        s.peer_port = host_port;
        s.buf_alloc = o_.buf_alloc;
        send_ctl(s, op::kRequest);
        return s;
    }
    // Sends what the peer's credit and free descriptors allow; returns the bytes sent.
    size_t send_some(GuestSock& s, const uint8_t* p, size_t n) {
        size_t sent = 0;
        while (sent < n && s.state == GuestSock::kConnected) {
            const size_t chunk = std::min<size_t>({n - sent, s.credit(), o_.tx_max});
            if (chunk == 0) break;
            if (!tx_room(2)) break;
            PacketHeader h = header(s, op::kRw, static_cast<uint32_t>(chunk));
            s.tx_cnt += static_cast<uint32_t>(chunk);
            send_packet(h, p + sent, chunk);
            sent += chunk;
        }
        return sent;
    }
    // The application reads n bytes: Linux 6.1 sends a credit update when the space it has not
    // advertised yet leaves less than 64 KiB of the buffer.
    void consume(GuestSock& s, uint32_t n) {
        s.unread -= n;
        s.fwd_cnt += n;
        if (s.buf_alloc - (s.fwd_cnt - s.last_adv_fwd) < kMaxPayload)
            send_ctl(s, op::kCreditUpdate);
    }
    // One RW packet of any size, whatever the credit says (a lying driver).
    void send_unchecked(GuestSock& s, const std::vector<uint8_t>& data) {
        PacketHeader h = header(s, op::kRw, static_cast<uint32_t>(data.size()));
        s.tx_cnt += static_cast<uint32_t>(data.size());
        send_packet(h, data.data(), data.size());
    }
    void shutdown(GuestSock& s, uint32_t flags) { send_ctl(s, op::kShutdown, flags); }
    void rst(GuestSock& s) {
        send_ctl(s, op::kRst);
        s.state = GuestSock::kClosed;
    }
    void send_ctl(GuestSock& s, uint16_t o, uint32_t flags = 0) {
        PacketHeader h = header(s, o, 0);
        h.flags = flags;
        send_packet(h, nullptr, 0);
    }
    // Any header and payload, as two descriptors (or one without payload).
    void send_raw(const PacketHeader& h, const std::vector<uint8_t>& payload = {}) {
        send_packet(h, payload.data(), payload.size());
    }
    // A hand-made TX chain from the driver's own descriptors: direct or as an indirect table;
    // `loop` points the last descriptor back at the first (a malformed chain).
    void send_chain(const std::vector<Buf>& bufs, bool indirect = false, bool loop = false) {
        const size_t n = bufs.size();
        if (!tx_room(n + (indirect ? 1 : 0))) throw std::runtime_error("fake driver: TX stuck");
        std::vector<uint16_t> slots;
        for (size_t i = 0; i < n + (indirect ? 1 : 0); ++i) slots.push_back(take(tx_free_));
        std::vector<RawDesc> descs;
        for (size_t i = 0; i < n; ++i) {
            const uint64_t a = tx_addr(slots[i]);
            if (!bufs[i].data.empty()) mem_.write(a, bufs[i].data.data(), bufs[i].data.size());
            descs.push_back(RawDesc{a, bufs[i].len,
                                    static_cast<uint16_t>(bufs[i].writable ? kDescFWrite : 0), 0});
        }
        for (size_t i = 0; i < n; ++i) {
            const bool last = i + 1 == n;
            if (last && !loop) break;
            descs[i].flags |= kDescFNext;
            const size_t to = last ? 0 : i + 1;
            descs[i].next = static_cast<uint16_t>(indirect ? to : slots[to]);
        }
        uint16_t head;
        if (indirect) {
            head = slots[n];
            mem_.write(tx_addr(head), descs.data(), 16 * n);
            txq_.set_desc(head,
                          RawDesc{tx_addr(head), static_cast<uint32_t>(16 * n), kDescFIndirect, 0});
        } else {
            head = slots[0];
            for (size_t i = 0; i < n; ++i) txq_.set_desc(slots[i], descs[i]);
        }
        tx_chains_[head] = slots;
        txq_.publish(head);
        kick(txq_, tx_kicked_, kTxQueue);
    }
    // An RX chain as given ({length, device-writable} per descriptor).
    void post_rx_chain(const std::vector<std::pair<uint32_t, bool>>& parts) {
        std::vector<uint16_t> slots;
        for (size_t i = 0; i < parts.size(); ++i) slots.push_back(take(rx_free_));
        for (size_t i = 0; i < parts.size(); ++i) {
            uint16_t flags = parts[i].second ? kDescFWrite : 0;
            uint16_t next = 0;
            if (i + 1 < parts.size()) {
                flags |= kDescFNext;
                next = slots[i + 1];
            }
            rxq_.set_desc(slots[i], RawDesc{rx_addr(slots[i]), parts[i].first, flags, next});
        }
        rx_chains_[slots[0]] = slots;
        rx_outstanding_.push_back(slots[0]);
        rxq_.publish(slots[0]);
        kick(rxq_, rx_kicked_, kRxQueue);
    }
    FakeVirtqueue& rx_ring() { return rxq_; }
    FakeVirtqueue& tx_ring() { return txq_; }

    // --- progress ---
    // Reaps both used rings, handles received packets, re-posts RX buffers.
    void poll() {
        in_poll_ = true;
        reap_tx();
        bool got = false;
        while (rx_seen_ != rxq_.used_idx()) {
            auto e = rxq_.used(rx_seen_++);
            got = true;
            auto it = rx_chains_.find(static_cast<uint16_t>(e.id));
            if (it == rx_chains_.end()) {
                ++bad_used_len;
                continue;
            }
            std::vector<uint16_t> chain = std::move(it->second);
            rx_chains_.erase(it);
            const auto pos =
                std::find(rx_outstanding_.begin(), rx_outstanding_.end(), chain.front());
            if (pos != rx_outstanding_.begin()) ++rx_out_of_order;
            if (pos != rx_outstanding_.end()) rx_outstanding_.erase(pos);
            if (e.len == 0) {
                ++empty_rx;  // an RX buffer the device refused
            } else {
                uint8_t raw[kHeaderSize];
                mem_.read(rx_addr(chain[0]), raw, kHeaderSize);
                const PacketHeader h = decode_header(raw);
                const uint64_t pay =
                    o_.split_rx ? rx_addr(chain[1]) : rx_addr(chain[0]) + kHeaderSize;
                if (e.len != kHeaderSize + h.len || h.len > o_.rx_buf_size)
                    ++bad_used_len;
                else
                    receive(h, mem_.host_ptr(pay, h.len));
            }
            for (uint16_t d : chain) rx_free_.push_back(d);
        }
        if (event_idx()) rxq_.set_used_event(rx_seen_);
        if (got && o_.auto_repost) post_rx_buffers();
        in_poll_ = false;
    }
    // Polls until pred() holds or `timeout` passes, sleeping on the interrupt in between.
    bool wait(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10000ms) {
        const auto end = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            poll();
            if (pred()) return true;
            if (std::chrono::steady_clock::now() > end) return false;
            irq_.wait(1ms);
        }
    }

    void set_auto_repost(bool on) { o_.auto_repost = on; }
    TestIrq& irq() { return irq_; }
    uint64_t kicks() const { return kicks_; }
    uint64_t suppressed_kicks() const { return suppressed_kicks_; }

    // Every control packet received (not RW), in order.
    std::vector<PacketHeader> control;
    uint64_t bad_used_len = 0;       // used lengths that do not match the header
    uint64_t rx_out_of_order = 0;    // RX buffers used before one posted earlier
    uint64_t credit_violations = 0;  // the device sent past our buf_alloc
    uint64_t misaddressed = 0;       // wrong CIDs
    uint64_t empty_rx = 0;           // RX buffers returned with used_len 0

    size_t count_ops(uint16_t o) const {
        size_t n = 0;
        for (const auto& h : control) n += h.op == o;
        return n;
    }

  private:
    static uint64_t key(uint32_t local, uint32_t peer) { return (uint64_t{local} << 32) | peer; }
    static uint16_t take(std::vector<uint16_t>& v) {
        if (v.empty()) throw std::runtime_error("fake driver: out of descriptors");
        uint16_t d = v.back();
        v.pop_back();
        return d;
    }
    uint64_t rx_addr(uint16_t d) const { return kRxPool + rx_slot_ * d; }
    uint64_t tx_addr(uint16_t d) const { return kTxPool + kTxSlot * d; }

    PacketHeader header(GuestSock& s, uint16_t o, uint32_t len) {
        PacketHeader h;
        h.src_cid = cid_;
        h.dst_cid = kHostCid;
        h.src_port = s.local_port;
        h.dst_port = s.peer_port;
        h.len = len;
        h.type = kTypeStream;
        h.op = o;
        h.buf_alloc = s.buf_alloc;
        h.fwd_cnt = s.fwd_cnt;
        s.last_adv_fwd = s.fwd_cnt;
        return h;
    }

    void reap_tx() {
        while (tx_seen_ != txq_.used_idx()) {
            auto e = txq_.used(tx_seen_++);
            auto it = tx_chains_.find(static_cast<uint16_t>(e.id));
            if (it == tx_chains_.end()) continue;  // a hand-made chain
            if (e.len != 0) ++bad_used_len;
            for (uint16_t d : it->second) tx_free_.push_back(d);
            tx_chains_.erase(it);
        }
        if (event_idx()) txq_.set_used_event(tx_seen_);
    }

    // Waits for `n` free TX descriptors, handling RX meanwhile (the device may hold TX back
    // until it has somewhere to put its answers), like Linux's separate RX worker. Inside
    // poll() it only re-posts the RX buffers already handled.
    bool tx_room(size_t n) {
        const auto end = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            if (in_poll_)
                reap_tx();
            else
                poll();
            if (tx_free_.size() >= n) return true;
            if (o_.auto_repost) post_rx_buffers();
            if (std::chrono::steady_clock::now() > end) return false;
            irq_.wait(1ms);
        }
    }

    void send_packet(const PacketHeader& h, const uint8_t* payload, size_t len) {
        if (!tx_room(len ? 2 : 1)) throw std::runtime_error("fake driver: TX ring stuck");
        uint8_t raw[kHeaderSize];
        encode_header(h, raw);
        const uint16_t hd = take(tx_free_);
        mem_.write(tx_addr(hd), raw, kHeaderSize);
        std::vector<uint16_t> chain{hd};
        if (len) {
            const uint16_t pd = take(tx_free_);
            mem_.write(tx_addr(pd), payload, len);
            txq_.set_desc(hd, RawDesc{tx_addr(hd), kHeaderSize, kDescFNext, pd});
            txq_.set_desc(pd, RawDesc{tx_addr(pd), static_cast<uint32_t>(len), 0, 0});
            chain.push_back(pd);
        } else {
            txq_.set_desc(hd, RawDesc{tx_addr(hd), kHeaderSize, 0, 0});
        }
        tx_chains_[hd] = chain;
        txq_.publish(hd);
        kick(txq_, tx_kicked_, kTxQueue);
    }

    // Notifies unless EVENT_IDX says the device is still going through the ring.
    void kick(FakeVirtqueue& q, uint16_t& last, uint16_t index) {
        const uint16_t now = q.avail_idx();
        if (now == last) return;
        std::atomic_thread_fence(std::memory_order_seq_cst);
        bool need = true;
        if (event_idx()) {
            const uint16_t ev = q.avail_event();
            need = static_cast<uint16_t>(now - ev - 1) < static_cast<uint16_t>(now - last);
        }
        last = now;
        if (need) {
            ++kicks_;
            dev_.notify(index);
        } else {
            ++suppressed_kicks_;
        }
    }

    void receive(const PacketHeader& h, const uint8_t* payload) {
        if (h.src_cid != kHostCid || h.dst_cid != cid_) {
            ++misaddressed;
            return;
        }
        if (h.op != op::kRw) control.push_back(h);
        auto it = socks_.find(key(h.dst_port, h.src_port));
        GuestSock* s = it == socks_.end() ? nullptr : &it->second;
        if (h.op == op::kRequest) {
            if (!o_.answer_requests) return;
            if (s || !listening_.contains(h.dst_port)) {
                PacketHeader r = reply(h, op::kRst);
                send_packet(r, nullptr, 0);
                return;
            }
            GuestSock& n = socks_[key(h.dst_port, h.src_port)];
            n.local_port = h.dst_port;
            n.peer_port = h.src_port;
            n.buf_alloc = o_.buf_alloc;
            n.state = GuestSock::kConnected;
            n.peer_buf_alloc = h.buf_alloc;
            n.peer_fwd_cnt = h.fwd_cnt;
            send_ctl(n, op::kResponse);
            return;
        }
        if (!s) {
            if (h.op != op::kRst) send_packet(reply(h, op::kRst), nullptr, 0);
            return;
        }
        if (h.op == op::kRst) {
            s->got_rst = true;
            s->state = GuestSock::kClosed;
            return;
        }
        s->peer_buf_alloc = h.buf_alloc;
        s->peer_fwd_cnt = h.fwd_cnt;
        switch (h.op) {
            case op::kResponse:
                if (s->state == GuestSock::kConnecting) s->state = GuestSock::kConnected;
                break;
            case op::kShutdown:
                s->peer_shutdown |= h.flags;
                break;
            case op::kCreditRequest:
                send_ctl(*s, op::kCreditUpdate);
                break;
            case op::kRw:
                s->rx_cnt += h.len;
                s->unread += h.len;
                if (s->rx_cnt - s->fwd_cnt > s->buf_alloc) ++credit_violations;
                s->hash.add(payload, h.len);
                s->rx_bytes += h.len;
                if (s->keep) s->data.insert(s->data.end(), payload, payload + h.len);
                if (s->auto_consume) consume(*s, h.len);
                break;
            default:
                break;
        }
    }

    PacketHeader reply(const PacketHeader& to, uint16_t o) const {
        PacketHeader r;
        r.src_cid = cid_;
        r.dst_cid = kHostCid;
        r.src_port = to.dst_port;
        r.dst_port = to.src_port;
        r.type = kTypeStream;
        r.op = o;
        return r;
    }

    VsockDevice& dev_;
    const vmm::GuestMemory& mem_;
    uint64_t cid_;
    DriverOptions o_;
    uint64_t rx_slot_;
    FakeVirtqueue rxq_, txq_, evq_;
    Queue rx_, tx_, ev_;
    TestIrq irq_;
    std::vector<uint16_t> rx_free_, tx_free_;
    std::map<uint16_t, std::vector<uint16_t>> rx_chains_, tx_chains_;
    std::deque<uint16_t> rx_outstanding_;  // posted RX heads not used yet, in avail order
    uint16_t rx_seen_ = 0, tx_seen_ = 0;
    uint16_t rx_kicked_ = 0, tx_kicked_ = 0;
    uint64_t kicks_ = 0, suppressed_kicks_ = 0;
    bool in_poll_ = false;
    std::map<uint64_t, GuestSock> socks_;
    std::set<uint32_t> listening_;
};

}  // namespace vessel::virtio::vsock::testing
