// The virtio-vsock data path without the transport: the TX queue's packets in, the RX queue's
// buffers out, host Unix sockets on the other side, one epoll set over all of it.
//
// Threading: one thread (the device's I/O thread) runs run() and everything it calls; the
// device reads counters and connection states from other threads under the mutex it passes in,
// which run() holds while it handles a batch (never while it sleeps).
//
// One wake-up (a batch):
// 1. Events: queue kicks (one eventfd for all queues), the listener (accept, then each socket
//    sends its "CONNECT <port>\n" line), connection sockets (readable, writable, hung up).
// 2. Timers: handshakes and REQUESTs that went unanswered, closes that did not drain.
// 3. TX: every available chain is parsed and handed to its connection (bounded per batch).
//    OP_RW payloads are written straight from guest memory to the host socket (sendmsg on
//    the guest's iovecs); only what the socket does not take is copied into the connection's
//    WriteBuffer, which credit bounds to buf_alloc, and EPOLLOUT is armed for it.
// 4. RX: owed control packets first (RSTs for unknown connections, then per connection), then
//    data, round-robin over connections that are readable and have credit: one readv from the
//    socket straight into up to 64 KiB of RX buffers, split into one packet per buffer.
// 5. One interrupt for the batch if either queue's used ring moved and the driver wants it
//    (EVENT_IDX's used_event, or NO_INTERRUPT).
//
// Isolation: host sockets are edge-triggered and a connection is read only while the guest has
// credit for it and RX buffers exist, so a guest that stops reading one connection stops that
// host socket only (its kernel buffer fills and the host writer blocks), and a host reader that
// stalls fills only its own WriteBuffer, after which the guest runs out of credit for it.
// Nothing blocks: every socket is non-blocking.
//
// Guest input never throws out of here: malformed packets are counted and logged (rate
// limited); well-addressed packets we cannot serve, or for no connection, are answered with
// RST. If RX buffers run out while RSTs are owed, TX processing pauses (leaving chains in the
// ring) until the guest posts buffers, so a flood cannot grow host memory.
#pragma once

#include <sys/epoll.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/vsock/connection.h"
#include "virtio/vsock/packet.h"
#include "virtio/vsock/unix_backend.h"
#include "vmm/fd.h"
#include "vmm/guest_memory.h"

namespace vessel::virtio::vsock {

// Log sink; the default writes "vessel: <line>" to stderr.
using LogFn = std::function<void(const std::string&)>;

struct VsockCounters {
    std::array<uint64_t, kNumPacketErrors> bad_packets{};       // by PacketError (kNone unused)
    std::array<uint64_t, kNumRxBufferErrors> bad_rx_buffers{};  // completed with used_len 0
    uint64_t bad_chains = 0;          // malformed chains the queues consumed
    uint64_t protocol_errors = 0;     // ops the connection's phase does not allow: reset
    uint64_t credit_errors = 0;       // guest data past the credit we gave: reset
    uint64_t unknown_connection = 0;  // packets for no connection: RST (unless an RST)
    uint64_t rst_sent = 0;            // every RST put in the RX queue
    uint64_t rst_dropped = 0;         // RSTs for unknown connections that did not fit
    uint64_t guest_connects = 0;      // guest REQUESTs that reached a host socket
    uint64_t guest_refused = 0;       // guest REQUESTs nothing accepted on the host
    uint64_t host_connects = 0;       // valid CONNECT lines
    uint64_t host_refused = 0;        // the guest answered our REQUEST with RST
    uint64_t bad_handshakes = 0;      // malformed CONNECT lines, or EOF before one
    uint64_t timeouts = 0;            // handshakes, REQUESTs or closes that took too long
    uint64_t over_limit = 0;          // connections refused by max_connections
    uint64_t host_errors = 0;         // host sockets that failed mid-stream: reset
    uint64_t bytes_to_host = 0;
    uint64_t bytes_to_guest = 0;
    uint64_t log_suppressed = 0;

    uint64_t count(PacketError e) const { return bad_packets[static_cast<size_t>(e)]; }
};

struct MuxerOptions {
    ConnectionSettings conn;              // guest_cid, buf_alloc, timeouts
    uint32_t max_connections = 1024;      // connections plus pending handshakes
    uint32_t first_host_port = 1u << 30;  // host ports of host-initiated connections count up
    LogFn log;                            // empty: stderr
};

class Muxer {
  public:
    // `mem`, the queues, `irq`, `listener`, `counters` and `mu` outlive the muxer. Throws
    // std::system_error if it cannot create its epoll set.
    Muxer(const vmm::GuestMemory& mem, Queue& rx, Queue& tx, Interrupt& irq,
          const UnixListener& listener, MuxerOptions opts, VsockCounters& counters, std::mutex& mu);
    ~Muxer();  // closes every host socket
    Muxer(const Muxer&) = delete;
    Muxer& operator=(const Muxer&) = delete;

    // Serves until `stop_fd` is readable. `kick_fd` is the eventfd driver notifications land
    // on (drained here). Throws std::system_error if epoll fails.
    void run(int stop_fd, int kick_fd);

    // Per-connection states, for snapshots and tests. Call with `mu` held.
    std::vector<ConnectionState> connections() const;
    // Snapshots: while held, host events are taken in but nothing is written to the queues
    // (no packet delivered, no chain popped). Call with `mu` held; wake the loop after release.
    void set_held(bool on) { held_ = on; }

  private:
    struct Conn;
    struct Handshake {
        UniqueFd fd;
        TimePoint deadline;
    };
    enum class Tag : uint8_t { kStop = 1, kKick, kListener, kHandshake, kConn };

    // epoll_ctl ADD (or `op`); false with errno set on failure.
    bool watch(int fd, Tag tag, uint64_t id, uint32_t events, int op = EPOLL_CTL_ADD);
    // Sets a connection socket's events (EPOLLOUT or not); a failure resets the connection.
    void set_events(Conn& c, bool want_out);
    int next_timeout_ms() const;
    void process();
    void signal();
    void run_timers();

    // host side
    void accept_all();
    void pause_listener(bool pause);
    void on_handshake(uint64_t id, uint32_t events);
    void drop_handshake(uint64_t id);
    void on_conn_event(uint64_t id, uint32_t events);
    void flush_host(Conn& c);
    void forward_to_host(Conn& c, const std::vector<iovec>& payload, uint32_t len);
    uint32_t alloc_local_port(uint32_t peer_port);
    // Applies a connection's state to its host socket and the RX schedule; may erase it.
    void sync(Conn& c);
    Conn* find(uint64_t id);
    size_t live() const { return conns_.size() + handshakes_.size(); }

    // guest side
    bool drain_tx();
    void handle_tx(const DescriptorChain& chain);
    void handle_new(const PacketHeader& h);
    void queue_rst(const PacketHeader& to);
    bool fill_rx();
    bool have_rx_work() const;
    std::optional<RxBuffer> take_rx();
    void give_back(RxBuffer&& b);
    void send(RxBuffer& b, const PacketHeader& h);
    // One readv for `c` into RX buffers; false when no buffer was available.
    bool read_host(Conn& c);

    // Rate-limited log line: neither a hostile guest nor a host client may flood the logs.
    void note(const std::string& line);

    const vmm::GuestMemory& mem_;
    Queue& rx_;
    Queue& tx_;
    Interrupt& irq_;
    const UnixListener& listener_;
    const MuxerOptions opts_;
    VsockCounters& counters_;
    std::mutex& mu_;
    UniqueFd epoll_;

    std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
    std::unordered_map<ConnKey, uint64_t, ConnKeyHash> by_key_;
    std::unordered_map<uint64_t, Handshake> handshakes_;
    std::multimap<TimePoint, uint64_t> timers_;  // lazily invalidated
    std::deque<uint64_t> ctrl_q_;                // connections owing control packets
    std::deque<uint64_t> data_q_;                // connections with host data to send
    std::deque<PacketHeader> orphan_rsts_;       // RSTs for packets with no connection
    // Popped RX buffers not used yet, in pop order: used in that order, the used buffers are
    // the first ones popped, so a snapshot can hand the rest back to the guest by rewinding
    // the queue to its used count (snapshot/vm_snapshot.cc). One exception: a buffer with no
    // payload room waits here for a control packet while later ones carry data (Linux never
    // posts such buffers; a guest that does may lose RX buffers across a restore).
    std::deque<RxBuffer> spare_;
    uint64_t rx_popped_ = 0;
    uint64_t next_id_ = 1;
    uint32_t next_local_port_;
    TimePoint now_;
    bool again_ = false;  // work left over: poll again without sleeping
    bool broken_ = false;
    bool held_ = false;
    bool rx_used_ = false, tx_used_ = false;
    bool listener_paused_ = false;
    TimePoint listener_resume_;

    double log_tokens_ = 10;  // token bucket for note()
    TimePoint log_last_;

    // Scratch, reused across packets.
    TxPacket pkt_;
    std::vector<iovec> iov_;
    std::vector<RxBuffer> batch_;
    std::vector<size_t> shares_;
};

}  // namespace vessel::virtio::vsock
