// I/O engines shared by the virtio devices (virtio-blk on disk images, virtio-net on a tap):
// one interface, two implementations (io_uring and plain syscalls).
//
// An engine is owned and driven by one thread (a device's I/O thread). The caller submits
// operations tagged with a cookie, calls commit() once per batch, waits for completion_fd() to
// become readable (poll/epoll, level- or edge-triggered), and calls reap() to collect results.
// Nothing here waits for a file to become ready: a packet read on an idle tap stays in flight
// (in the kernel, or parked by the sync engine) until a packet arrives. The one exception is
// SyncEngine with regular files, which does disk I/O inline.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vessel::virtio::io {

enum class OpKind : uint8_t {
    Read,         // preadv / IORING_OP_READV
    Write,        // pwritev / IORING_OP_WRITEV
    Flush,        // fdatasync / IORING_OP_FSYNC + IORING_FSYNC_DATASYNC: durable on completion
    Discard,      // fallocate(PUNCH_HOLE | KEEP_SIZE): reads back as zeros afterwards
    WriteZeroes,  // fallocate(ZERO_RANGE | KEEP_SIZE); falls back to a punched hole when the
                  // filesystem has no ZERO_RANGE (e.g. tmpfs), which also reads as zeros
};

struct Op {
    OpKind kind = OpKind::Read;
    uint32_t file = 0;           // index into the files the engine was created with
    uint64_t offset = 0;         // bytes; ignored for Flush and message ops
    std::span<const iovec> iov;  // Read/Write buffers; copied by submit(), the memory they point
                                 // to must stay valid until the completion is reaped
    uint64_t len = 0;            // Read/Write: sum of iov lengths; Discard/WriteZeroes: range
    // Read/Write of one datagram (a tap frame, a packet socket): the transfer happens at the
    // file's current position (offset ignored), a short transfer is the result and is never
    // resubmitted, and a read waits for the file to become readable without blocking anyone.
    // The file must not be O_NONBLOCK (io_uring would fail the read with -EAGAIN instead of
    // waiting for it).
    bool message = false;
};

struct Completion {
    uint64_t cookie;
    int64_t result;  // >= 0: done (Read/Write: the full length, short transfers are retried;
                     // message ops: the bytes transferred); < 0: -errno
};

class IoEngine {
  public:
    virtual ~IoEngine() = default;

    // "io_uring" or "sync".
    virtual const char* name() const = 0;

    // Queues an operation. Never blocks (SyncEngine: does disk I/O inline), never fails: an
    // operation that cannot be issued completes with a negative result.
    virtual void submit(const Op& op, uint64_t cookie) = 0;

    // Hands every queued operation to the kernel (io_uring_submit). Never blocks.
    virtual void commit() = 0;

    // A file descriptor that is readable while completions may be waiting. reap() clears it.
    virtual int completion_fd() const = 0;

    // Appends every available completion to `out`; returns how many it appended. Also feeds
    // operations that were waiting for ring space (or, SyncEngine, for their file to become
    // ready) to the kernel. Never blocks.
    virtual size_t reap(std::vector<Completion>& out) = 0;

    // Operations submitted and not yet reaped.
    virtual size_t in_flight() const = 0;

    // Drops every operation submitted and not yet reaped: none of them is reported by reap(),
    // and when this returns none can touch its buffers any more. Reads waiting for a packet are
    // cancelled at once; disk I/O the kernel has already started is waited for.
    virtual void cancel_all() = 0;
    // The engine's own counters as one line for logs ("" if it keeps none). Same thread rules
    // as submit().
    virtual std::string stats() const { return {}; }
};

enum class EnginePreference { Auto, IoUring, Sync };

// What a device does with its engine: file I/O at offsets (virtio-blk) or datagrams
// (Op::message: virtio-net). An io_uring engine's ring allows only the opcodes of its use.
enum class EngineUse : uint8_t { Files = 1, Messages = 2, Both = 3 };

struct EngineChoice {
    std::unique_ptr<IoEngine> engine;
    std::string reason;  // one line for the log: what was picked and why
};

// Result of probing the running kernel for the io_uring features the engine needs.
struct UringSupport {
    bool ok = false;
    std::string reason;  // why not, e.g. "io_uring: kernel lacks IORING_OP_FALLOCATE"
};
UringSupport probe_io_uring();

// Creates an engine for `files` with room for `queue_depth` operations in flight in the kernel
// (more are queued in user space). Auto picks io_uring when probe_io_uring() succeeds and the
// ring can be set up, else the sync engine. IoUring throws std::system_error when io_uring is
// unusable; set-up errors of the chosen engine throw std::system_error.
EngineChoice make_engine(EnginePreference pref, unsigned queue_depth, std::span<const int> files,
                         EngineUse use = EngineUse::Both);

}  // namespace vessel::virtio::io
