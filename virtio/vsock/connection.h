// One virtio-vsock stream connection between a guest port and a host Unix socket, as a pure
// state machine: packets from the guest and events from the host socket go in; control packets
// owed to the guest, data credit and what to do with the host socket come out. No I/O, no
// clock (callers pass the time), so every transition is unit-testable without sockets.
//
// Credit (virtio 1.2 section 5.10.6.3), both directions:
// - guest -> host: we advertise buf_alloc and fwd_cnt (bytes already written to the host
//   socket). The guest may have at most buf_alloc bytes that we received but did not forward;
//   a packet past that is a credit violation and resets the connection, so the device never
//   buffers more than buf_alloc bytes per connection. When the guest's last known view of our
//   free space falls under half of buf_alloc and we have forwarded more since, a CREDIT_UPDATE
//   is owed (every header we send carries the counters, so data packets update it too).
// - host -> guest: every guest header carries its buf_alloc and fwd_cnt; send_credit() is what
//   it can still take. A guest that lies (fwd_cnt ahead of what we sent) gets zero credit, not
//   a wrapped huge one.
//
// Ordering the device relies on: a connection's RESPONSE goes out before any of its data
// (can_send_data() is false until then); SHUTDOWN is owed only once the host socket hit EOF,
// i.e. after its data; RST replaces everything else still owed.
//
// Closing: the guest's SHUTDOWN(SEND) becomes shutdown(SHUT_WR) on the host socket once the
// bytes before it are written; EOF on the host socket becomes SHUTDOWN(SEND) to the guest. When
// neither direction can carry data any more (the guest shut both, or shut SEND after host EOF)
// the connection drains the host-bound bytes (bounded by close_timeout), closes the host socket
// and sends RST, which is how a Linux guest expects its close() to be answered.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

#include "virtio/vsock/packet.h"

namespace vessel::virtio::vsock {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// A connection is named by its two ports; the CIDs are fixed (guest, host).
struct ConnKey {
    uint32_t local_port = 0;  // host side
    uint32_t peer_port = 0;   // guest side
    bool operator==(const ConnKey&) const = default;
    uint64_t packed() const { return (uint64_t{local_port} << 32) | peer_port; }
};

struct ConnKeyHash {
    size_t operator()(const ConnKey& k) const { return std::hash<uint64_t>()(k.packed()); }
};

struct ConnectionSettings {
    uint64_t guest_cid = 3;
    uint32_t buf_alloc = 256 << 10;  // guest -> host bytes we may hold per connection
    std::chrono::milliseconds connect_timeout{2000};  // REQUEST to RESPONSE
    std::chrono::milliseconds close_timeout{5000};    // draining host-bound bytes at close
};

enum class Phase : uint8_t {
    kConnecting,   // host-initiated: REQUEST owed or sent, waiting for the guest's RESPONSE
    kEstablished,  // streaming (possibly half-closed)
    kClosing,      // neither direction carries data any more: draining host-bound bytes
    kClosed,       // the host socket must be closed; an RST may still be owed
};

// Control packets owed to the guest (ConnectionState::owed bits), in the order they go out.
namespace owed {
inline constexpr uint8_t kRequest = 1;
inline constexpr uint8_t kResponse = 2;
inline constexpr uint8_t kCreditUpdate = 4;
inline constexpr uint8_t kShutdown = 8;
inline constexpr uint8_t kRst = 16;
}  // namespace owed

// Plain state for snapshots and tests (deadlines are not included: they are host-clock times).
struct ConnectionState {
    uint32_t local_port = 0;
    uint32_t peer_port = 0;
    bool host_initiated = false;
    Phase phase = Phase::kConnecting;
    uint8_t owed = 0;
    uint32_t guest_shutdown = 0;  // SHUTDOWN flags received so far
    bool host_eof = false;        // EOF read from the host socket (SHUTDOWN(SEND) owed or sent)
    bool host_shut_wr = false;    // shutdown(SHUT_WR) done on the host socket
    bool ok_owed = false;         // "OK <port>\n" not yet handed to the host socket
    // guest -> host (our receive side)
    uint32_t buf_alloc = 0;
    uint32_t fwd_cnt = 0;            // bytes written to the host socket
    uint32_t rx_cnt = 0;             // bytes received from the guest
    uint32_t last_sent_fwd_cnt = 0;  // fwd_cnt in the last header we sent
    // host -> guest (the guest's receive side)
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
    uint32_t tx_cnt = 0;  // bytes sent to the guest
    bool operator==(const ConnectionState&) const = default;
};

// What the device does with a guest packet after on_packet().
enum class Verdict : uint8_t {
    kOk,             // accepted; the accessors say what follows
    kData,           // OP_RW accepted: write its hdr.len bytes to the host, then on_forwarded()
    kIgnored,        // the connection is already closed: dropped
    kProtocolError,  // an op this phase does not allow: reset (RST owed, host socket closed)
    kCreditError,    // more data than the credit we gave: reset likewise
    kReset,          // the guest sent RST: close the host socket; nothing is owed
};

class Connection {
  public:
    // Host-initiated (a host client asked for guest port `peer_port`): REQUEST owed.
    static Connection connect_to_guest(ConnKey key, const ConnectionSettings& s, TimePoint now);
    // Guest-initiated: `request` is the guest's REQUEST and the host socket is connected:
    // RESPONSE owed.
    static Connection accept_from_guest(const PacketHeader& request, const ConnectionSettings& s);

    // A packet from the guest for this connection (parsed: addressed to it, valid op).
    Verdict on_packet(const PacketHeader& h, TimePoint now);

    // --- host socket events ---
    void on_forwarded(uint32_t n);  // n guest bytes written to the host socket
    void on_host_eof(TimePoint now);
    void on_host_error();  // the host socket failed or hung up mid-stream: reset
    void on_host_shut_wr() { s_.host_shut_wr = true; }
    void on_ok_sent() { s_.ok_owed = false; }
    // Closing and every host-bound byte written: close the host socket, RST owed.
    void on_drained();
    // A local abort (device decision): closes, RST owed unless the guest never heard of us.
    void abort();
    // Aborts if the deadline has passed; returns whether it did.
    bool on_timer(TimePoint now);

    // --- towards the guest ---
    bool has_control() const { return s_.owed != 0; }
    // The next control packet owed (has_control() must be true); clears it.
    PacketHeader take_control();
    // Whether host data may be read and sent now (credit aside).
    bool can_send_data() const;
    // Bytes the guest can still take (0 when it is full or lied).
    uint32_t send_credit() const;
    // Header of an OP_RW packet carrying `len` (<= send_credit()) bytes; counts them as sent.
    PacketHeader data_header(uint32_t len);

    // --- towards the host socket ---
    bool ok_owed() const { return s_.ok_owed; }
    // The guest shut SEND: shutdown(SHUT_WR) once the host-bound bytes are written.
    bool wants_host_shut_wr() const;
    bool draining() const { return s_.phase == Phase::kClosing; }
    bool closed() const { return s_.phase == Phase::kClosed; }
    // Closed and nothing owed: forget it.
    bool finished() const { return closed() && s_.owed == 0; }
    // Bytes received from the guest and not yet forwarded (<= buf_alloc).
    uint32_t buffered() const { return s_.rx_cnt - s_.fwd_cnt; }
    std::optional<TimePoint> deadline() const { return deadline_; }

    ConnKey key() const { return {s_.local_port, s_.peer_port}; }
    const ConnectionState& state() const { return s_; }

  private:
    Connection(const ConnectionSettings& s, ConnKey key, bool host_initiated);
    PacketHeader header(uint16_t op, uint32_t len, uint32_t flags);
    Verdict fail(Verdict v);
    void check_done(TimePoint now);
    void maybe_credit_update();
    uint32_t free_space() const { return s_.buf_alloc - buffered(); }

    ConnectionState s_;
    uint64_t guest_cid_;
    std::chrono::milliseconds connect_timeout_, close_timeout_;
    std::optional<TimePoint> deadline_;
};

// The RST the host answers `to` with (a packet for no connection, or one we cannot serve).
PacketHeader rst_reply(const PacketHeader& to);

}  // namespace vessel::virtio::vsock
