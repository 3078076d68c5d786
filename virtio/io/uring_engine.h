// io_uring engine.
//
// One ring per device queue, sized to the queue; the device's files (disk image, tap) are
// registered and every SQE uses IOSQE_FIXED_FILE, and completions are signalled on a
// registered eventfd.
//
// Flow control: at most ring_entries() operations are in the kernel at once (the CQ ring is
// twice that, so it cannot overflow even with one cancel per operation); more wait in a
// user-space FIFO that reap() drains as completions free room. submit()/commit()/reap() never
// wait for I/O.
//
// Short reads and writes (a signal, a partial transfer) are resubmitted for the remainder; a
// read or write that makes no progress (0 bytes: the file shrank under us) completes with -EIO.
// Message ops (Op::message) complete with whatever one transfer moved. -EAGAIN/-EINTR
// completions are retried a few times. When io_uring_enter itself fails (-EAGAIN, -EBUSY,
// -ENOMEM), the queued SQEs stay in the ring and the engine writes its own eventfd so the I/O
// thread comes back and retries from reap().
//
// Message ops on O_NONBLOCK files (the kernel then tries them inline, and hands -EAGAIN back):
// a read goes in as IORING_OP_POLL_ADD(POLLIN | EPOLLEXCLUSIVE) linked to its READV, so it waits
// in the kernel for a frame and one frame wakes one read, not all of them; a write is tried
// inline and, on -EAGAIN, goes again behind a POLLOUT poll. -EAGAIN of a message op (another
// read took the frame) re-arms it without a retry limit: it is a wait, not an error. On a
// blocking fd message ops go in plain, and io_uring serves them from io-wq worker threads
// (Linux 6.1's tun has no FMODE_NOWAIT). The tap is blocking today: two-VM TCP in the nested
// harness did not finish with an O_NONBLOCK tap (2026-12-04, machine loaded; not pinned down).
//
// Restriction: io_uring submissions bypass seccomp, so every ring is created disabled
// (IORING_SETUP_R_DISABLED), restricted (IORING_REGISTER_RESTRICTIONS) and only then enabled:
// the opcodes of kUringOpcodes that its EngineUse needs (files: READV, WRITEV, FSYNC,
// FALLOCATE, ASYNC_CANCEL; messages: READV, WRITEV, POLL_ADD, ASYNC_CANCEL), every SQE with
// IOSQE_FIXED_FILE (set on cancels too, where the kernel ignores it) so only the registered
// files are reachable, IOSQE_IO_LINK besides only for message rings (the polls), and of the
// register operations only IORING_UNREGISTER_FILES (the destructor's). Anything else
// completes with -EACCES.
#pragma once

#include <liburing.h>

#include <array>
#include <deque>
#include <span>
#include <vector>

#include "virtio/io/engine.h"
#include "vmm/fd.h"

namespace vessel::virtio::io {

struct UringOpcode {
    uint8_t op;
    const char* name;
    uint8_t uses;  // EngineUse bits of the rings that may issue it
};
constexpr uint8_t kUseFiles = static_cast<uint8_t>(EngineUse::Files);
constexpr uint8_t kUseMessages = static_cast<uint8_t>(EngineUse::Messages);
// Every opcode the engine issues: the probe checks them, each ring's restriction allows those
// of its use. The one list of io_uring opcodes in vessel.
inline constexpr std::array<UringOpcode, 6> kUringOpcodes = {{
    {IORING_OP_READV, "IORING_OP_READV", kUseFiles | kUseMessages},
    {IORING_OP_WRITEV, "IORING_OP_WRITEV", kUseFiles | kUseMessages},
    {IORING_OP_FSYNC, "IORING_OP_FSYNC", kUseFiles},
    {IORING_OP_FALLOCATE, "IORING_OP_FALLOCATE", kUseFiles},
    {IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL", kUseFiles | kUseMessages},
    {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD", kUseMessages},
}};

// Restricts a ring created with IORING_SETUP_R_DISABLED to what `use` needs (see above) and
// enables it. Returns 0 or -errno.
int restrict_ring(io_uring* ring, EngineUse use);

class UringEngine final : public IoEngine {
  public:
    struct Stats {
        uint64_t submitted = 0;             // operations accepted by submit()
        uint64_t deferred = 0;              // operations that waited in the user-space FIFO
        uint64_t resubmitted = 0;           // short transfers and -EAGAIN/-EINTR retries
        uint64_t zero_range_fallbacks = 0;  // WriteZeroes done as a punched hole
        uint64_t enter_failures = 0;        // io_uring_enter errors (retried)
        uint64_t cancelled = 0;             // operations dropped by cancel_all()
        uint64_t rearmed = 0;               // message ops that found nothing and wait again
    };

    // Throws std::system_error (with errno and the step) when the ring cannot be set up.
    // `use` decides what the ring's restriction allows (see above).
    UringEngine(unsigned entries, std::span<const int> files, EngineUse use = EngineUse::Both);
    // Cancels what can be cancelled and waits for the rest: operations in the kernel point
    // into memory the caller may free.
    ~UringEngine() override;
    UringEngine(const UringEngine&) = delete;
    UringEngine& operator=(const UringEngine&) = delete;

    const char* name() const override { return "io_uring"; }
    void submit(const Op& op, uint64_t cookie) override;
    void commit() override;
    int completion_fd() const override { return event_.get(); }
    size_t reap(std::vector<Completion>& out) override;
    size_t in_flight() const override { return in_flight_; }
    void cancel_all() override;

    unsigned ring_entries() const { return capacity_; }
    const Stats& counters() const { return stats_; }
    std::string stats() const override;

  private:
    struct Record {
        OpKind kind = OpKind::Read;
        uint32_t file = 0;
        uint64_t offset = 0;
        uint64_t len = 0;
        uint64_t done = 0;  // Read/Write bytes transferred so far
        uint64_t cookie = 0;
        std::vector<iovec> iov;  // our copy, advanced past transferred bytes
        size_t first = 0;        // first iovec not fully transferred
        uint8_t retries = 0;
        bool punch = false;      // WriteZeroes fell back to PUNCH_HOLE
        bool message = false;    // Op::message
        bool poll = false;       // message op: goes in behind a linked POLL_ADD
        bool in_kernel = false;  // holds an SQE (prepared or submitted)
        bool live = false;       // allocated (not on the free list)
    };

    class Ring {
      public:
        Ring(unsigned entries);
        ~Ring();
        Ring(const Ring&) = delete;
        Ring& operator=(const Ring&) = delete;
        io_uring* get() { return &ring_; }

      private:
        io_uring ring_{};
    };

    uint32_t alloc_record();
    void free_record(uint32_t rec);
    bool prep(uint32_t rec);
    void on_cqe(uint32_t rec, int res, std::vector<Completion>& out);
    void resubmit(uint32_t rec);
    void finish(uint32_t rec, int64_t result, std::vector<Completion>& out);
    void kick();
    io_uring_sqe* sqe_for_cancel();
    // Consumes CQEs until no operation (and no cancel) is left in the kernel, dropping results.
    void drain_kernel();

    UniqueFd event_;  // declared before ring_: unregistered by the ring's exit first
    Ring ring_;
    unsigned capacity_ = 0;
    uint32_t nfiles_ = 0;
    std::vector<bool> nonblocking_;  // per registered file: O_NONBLOCK (message ops poll first)
    // Per registered file: its last read found data. Frames come in bursts, so the next read
    // goes straight to the file (one SQE, no poll to arm and fire); -EAGAIN sends it back
    // behind a poll.
    std::vector<bool> hot_;
    unsigned kernel_ops_ = 0;  // operations holding an SQE (prepared or in the kernel)
    unsigned cancels_ = 0;     // cancel SQEs whose CQE has not been seen
    size_t in_flight_ = 0;
    std::vector<Record> recs_;
    std::vector<uint32_t> free_;
    std::deque<uint32_t> waiting_;   // no ring space yet, FIFO
    std::vector<Completion> early_;  // completed without reaching the kernel (bad file index)
    Stats stats_;
};

}  // namespace vessel::virtio::io
