#include "virtio/vsock/connection.h"

namespace vessel::virtio::vsock {

Connection::Connection(const ConnectionSettings& s, ConnKey key, bool host_initiated)
    : guest_cid_(s.guest_cid),
      connect_timeout_(s.connect_timeout),
      close_timeout_(s.close_timeout) {
    s_.local_port = key.local_port;
    s_.peer_port = key.peer_port;
    s_.host_initiated = host_initiated;
    s_.buf_alloc = s.buf_alloc;
}

Connection Connection::connect_to_guest(ConnKey key, const ConnectionSettings& s, TimePoint now) {
    Connection c(s, key, true);
    c.s_.phase = Phase::kConnecting;
    c.s_.owed = owed::kRequest;
    c.deadline_ = now + c.connect_timeout_;
    return c;
}

Connection Connection::accept_from_guest(const PacketHeader& request, const ConnectionSettings& s) {
    Connection c(s, ConnKey{request.dst_port, request.src_port}, false);
    c.s_.phase = Phase::kEstablished;
    c.s_.owed = owed::kResponse;
    c.s_.peer_buf_alloc = request.buf_alloc;
    c.s_.peer_fwd_cnt = request.fwd_cnt;
    return c;
}

Verdict Connection::fail(Verdict v) {
    abort();
    return v;
}

void Connection::abort() {
    if (s_.phase == Phase::kClosed) return;
    // A guest that never saw our REQUEST has nothing to reset.
    s_.owed = (s_.owed & owed::kRequest) ? 0 : owed::kRst;
    s_.phase = Phase::kClosed;
    s_.ok_owed = false;
    deadline_.reset();
}

Verdict Connection::on_packet(const PacketHeader& h, TimePoint now) {
    if (s_.phase == Phase::kClosed) return Verdict::kIgnored;
    if (h.op == op::kRst) {
        s_.phase = Phase::kClosed;
        s_.owed = 0;
        s_.ok_owed = false;
        deadline_.reset();
        return Verdict::kReset;
    }
    s_.peer_buf_alloc = h.buf_alloc;
    s_.peer_fwd_cnt = h.fwd_cnt;
    const bool open = s_.phase == Phase::kEstablished || s_.phase == Phase::kClosing;
    switch (h.op) {
        case op::kResponse:
            // Only as the answer to a REQUEST that went out.
            if (s_.phase != Phase::kConnecting || (s_.owed & owed::kRequest))
                return fail(Verdict::kProtocolError);
            s_.phase = Phase::kEstablished;
            s_.ok_owed = true;
            deadline_.reset();
            return Verdict::kOk;
        case op::kShutdown:
            if (!open) return fail(Verdict::kProtocolError);
            s_.guest_shutdown |= h.flags & kShutdownBoth;
            check_done(now);
            return Verdict::kOk;
        case op::kRw:
            if (s_.phase != Phase::kEstablished || (s_.guest_shutdown & kShutdownSend))
                return fail(Verdict::kProtocolError);
            if (h.len > free_space()) return fail(Verdict::kCreditError);
            s_.rx_cnt += h.len;
            return Verdict::kData;
        case op::kCreditUpdate:
            // The counters above are the whole message; a Connecting one is harmless.
            return Verdict::kOk;
        case op::kCreditRequest:
            if (open) s_.owed |= owed::kCreditUpdate;
            return Verdict::kOk;
        default:  // REQUEST on a live connection, or an op the parser should have rejected
            return fail(Verdict::kProtocolError);
    }
}

void Connection::check_done(TimePoint now) {
    if (s_.phase != Phase::kEstablished) return;
    const bool guest_done = s_.guest_shutdown & kShutdownSend;
    const bool host_done = s_.host_eof || (s_.guest_shutdown & kShutdownRcv);
    if (guest_done && host_done) {
        s_.phase = Phase::kClosing;
        deadline_ = now + close_timeout_;
    }
}

void Connection::on_forwarded(uint32_t n) {
    s_.fwd_cnt += n;
    maybe_credit_update();
}

void Connection::maybe_credit_update() {
    if (s_.phase != Phase::kEstablished || (s_.guest_shutdown & kShutdownSend)) return;
    if (s_.fwd_cnt == s_.last_sent_fwd_cnt) return;
    // What the guest believes is still in our buffer: all it sent, minus the last fwd_cnt it
    // heard of. Saturating: a guest that overran its view (within our real space) reads as 0.
    const uint32_t believed = s_.rx_cnt - s_.last_sent_fwd_cnt;
    const uint32_t believed_free = believed >= s_.buf_alloc ? 0 : s_.buf_alloc - believed;
    if (believed_free < s_.buf_alloc / 2) s_.owed |= owed::kCreditUpdate;
}

void Connection::on_host_eof(TimePoint now) {
    if (s_.phase != Phase::kEstablished || s_.host_eof) return;
    s_.host_eof = true;
    s_.owed |= owed::kShutdown;
    check_done(now);
}

void Connection::on_host_error() {
    abort();
}

void Connection::on_drained() {
    if (s_.phase == Phase::kClosing) abort();
}

bool Connection::on_timer(TimePoint now) {
    if (!deadline_ || now < *deadline_) return false;
    abort();
    return true;
}

PacketHeader Connection::header(uint16_t o, uint32_t len, uint32_t flags) {
    PacketHeader h;
    h.src_cid = kHostCid;
    h.dst_cid = guest_cid_;
    h.src_port = s_.local_port;
    h.dst_port = s_.peer_port;
    h.len = len;
    h.type = kTypeStream;
    h.op = o;
    h.flags = flags;
    h.buf_alloc = s_.buf_alloc;
    h.fwd_cnt = s_.fwd_cnt;
    // Every header tells the guest our counters, so a credit update is no longer owed.
    s_.last_sent_fwd_cnt = s_.fwd_cnt;
    s_.owed &= static_cast<uint8_t>(~owed::kCreditUpdate);
    return h;
}

PacketHeader Connection::take_control() {
    auto take = [this](uint8_t bit) { s_.owed &= static_cast<uint8_t>(~bit); };
    if (s_.owed & owed::kRst) {
        s_.owed = 0;
        return header(op::kRst, 0, 0);
    }
    if (s_.owed & owed::kRequest) {
        take(owed::kRequest);
        return header(op::kRequest, 0, 0);
    }
    if (s_.owed & owed::kResponse) {
        take(owed::kResponse);
        return header(op::kResponse, 0, 0);
    }
    if (s_.owed & owed::kCreditUpdate) return header(op::kCreditUpdate, 0, 0);
    // Only kShutdown is left.
    take(owed::kShutdown);
    return header(op::kShutdown, 0, kShutdownSend);
}

bool Connection::can_send_data() const {
    return s_.phase == Phase::kEstablished && !s_.host_eof && !(s_.guest_shutdown & kShutdownRcv) &&
           !(s_.owed & (owed::kRequest | owed::kResponse | owed::kRst));
}

uint32_t Connection::send_credit() const {
    const uint32_t in_flight = s_.tx_cnt - s_.peer_fwd_cnt;
    return in_flight >= s_.peer_buf_alloc ? 0 : s_.peer_buf_alloc - in_flight;
}

PacketHeader Connection::data_header(uint32_t len) {
    s_.tx_cnt += len;
    return header(op::kRw, len, 0);
}

bool Connection::wants_host_shut_wr() const {
    return s_.phase == Phase::kEstablished && (s_.guest_shutdown & kShutdownSend) &&
           !s_.host_shut_wr;
}

PacketHeader rst_reply(const PacketHeader& to) {
    PacketHeader h;
    h.src_cid = to.dst_cid;
    h.dst_cid = to.src_cid;
    h.src_port = to.dst_port;
    h.dst_port = to.src_port;
    h.type = to.type;
    h.op = op::kRst;
    return h;
}

}  // namespace vessel::virtio::vsock
