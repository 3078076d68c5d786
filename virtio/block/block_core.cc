#include "virtio/block/block_core.h"

#include <linux/virtio_blk.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "virtio/block/disk.h"

namespace vessel::virtio::block {

BlockCore::BlockCore(const vmm::GuestMemory& mem, const DiskInfo& disk,
                     const std::array<uint8_t, kIdBytes>& id, IoEngine& engine,
                     BlockCoreOptions opts)
    : mem_(mem),
      disk_(disk),
      id_(id),
      engine_(engine),
      opts_(std::move(opts)),
      log_(opts_.log),
      slots_(std::min<size_t>(opts_.max_in_flight, 256)) {
    free_.reserve(slots_.size());
    for (size_t i = slots_.size(); i-- > 0;) free_.push_back(static_cast<uint32_t>(i));
}

BlockCore::BlockCore(const vmm::GuestMemory& mem, const Disk& disk, IoEngine& engine,
                     BlockCoreOptions opts)
    : BlockCore(mem, disk.info(), disk.id(), engine, std::move(opts)) {}

uint32_t BlockCore::acquire_slot() {
    ++active_;
    if (!free_.empty()) {
        uint32_t i = free_.back();
        free_.pop_back();
        return i;
    }
    slots_.emplace_back();
    return static_cast<uint32_t>(slots_.size() - 1);
}

void BlockCore::release_slot(uint32_t i) {
    --active_;
    free_.push_back(i);
}

void BlockCore::reject(const ParsedRequest& r) {
    ++counters_.rejected[static_cast<size_t>(r.error)];
    char line[160];
    std::snprintf(line, sizeof line,
                  "virtio-block: rejected request (head %u, type %" PRIu32 ", sector %" PRIu64
                  "): %.*s",
                  r.head, r.type, r.sector, static_cast<int>(error_name(r.error).size()),
                  error_name(r.error).data());
    if (!log_.log(line)) ++counters_.log_suppressed;
    if (r.status) {
        *r.status = error_status(r.error);
        ready_.push_back({r.head, 1});
    } else {
        ready_.push_back({r.head, 0});
    }
}

void BlockCore::handle(const DescriptorChain& chain) {
    if (active_ >= opts_.max_in_flight) {
        parse_request(chain, mem_, disk_, overflow_);
        ++counters_.busy;
        if (!log_.log("virtio-block: more than " + std::to_string(opts_.max_in_flight) +
                      " requests in flight; failing head " + std::to_string(chain.head)))
            ++counters_.log_suppressed;
        if (overflow_.status) *overflow_.status = VIRTIO_BLK_S_IOERR;
        ready_.push_back({chain.head, overflow_.status ? 1u : 0u});
        return;
    }
    uint32_t s = acquire_slot();
    ParsedRequest& r = slots_[s].req;
    parse_request(chain, mem_, disk_, r);
    if (!r.ok()) {
        reject(r);
        release_slot(s);
        return;
    }
    submit(s);
}

void BlockCore::submit(uint32_t s) {
    Slot& slot = slots_[s];
    ParsedRequest& r = slot.req;
    slot.status = VIRTIO_BLK_S_OK;
    Op op;
    op.file = opts_.file;
    switch (r.kind) {
        case Kind::GetId: {
            uint64_t done = 0;
            for (const iovec& v : r.iovecs) {
                size_t n = std::min<uint64_t>(v.iov_len, r.len - done);
                std::memcpy(v.iov_base, id_.data() + done, n);
                done += n;
            }
            ++counters_.get_ids;
            *r.status = VIRTIO_BLK_S_OK;
            ready_.push_back({r.head, static_cast<uint32_t>(r.len + 1)});
            release_slot(s);
            return;
        }
        case Kind::Read:
        case Kind::Write:
            op.kind = r.kind == Kind::Read ? OpKind::Read : OpKind::Write;
            op.offset = r.offset;
            op.iov = r.iovecs;
            op.len = r.len;
            slot.ops_left = 1;
            engine_.submit(op, s);
            return;
        case Kind::Flush:
            op.kind = OpKind::Flush;
            slot.ops_left = 1;
            engine_.submit(op, s);
            return;
        case Kind::Discard:
        case Kind::WriteZeroes:
            slot.ops_left = static_cast<uint32_t>(r.segments.size());
            for (const Segment& seg : r.segments) {
                op.kind =
                    r.kind == Kind::Discard || seg.unmap ? OpKind::Discard : OpKind::WriteZeroes;
                op.offset = seg.offset;
                op.len = seg.len;
                engine_.submit(op, s);
            }
            return;
    }
}

void BlockCore::finish(uint32_t s) {
    Slot& slot = slots_[s];
    const ParsedRequest& r = slot.req;
    uint32_t used = 1;
    if (slot.status == VIRTIO_BLK_S_OK) {
        switch (r.kind) {
            case Kind::Read:
                ++counters_.reads;
                counters_.read_bytes += r.len;
                used = static_cast<uint32_t>(r.len + 1);
                break;
            case Kind::Write:
                ++counters_.writes;
                counters_.write_bytes += r.len;
                break;
            case Kind::Flush:
                ++counters_.flushes;
                break;
            case Kind::Discard:
                ++counters_.discards;
                break;
            case Kind::WriteZeroes:
                ++counters_.write_zeroes;
                break;
            case Kind::GetId:
                break;
        }
    }
    *r.status = slot.status;
    ready_.push_back({r.head, used});
    release_slot(s);
}

size_t BlockCore::process_completions(const UsedFn& used) {
    engine_.commit();
    completions_.clear();
    engine_.reap(completions_);
    for (const Completion& c : completions_) {
        if (c.cookie >= slots_.size()) continue;  // cannot happen: cookies are slot indices
        Slot& slot = slots_[c.cookie];
        if (c.result < 0 && slot.status == VIRTIO_BLK_S_OK) {
            slot.status = VIRTIO_BLK_S_IOERR;
            ++counters_.io_errors;
            const ParsedRequest& r = slot.req;
            char line[200];
            std::snprintf(line, sizeof line,
                          "virtio-block: I/O error (head %u, type %" PRIu32 ", sector %" PRIu64
                          "): %s",
                          r.head, r.type, r.sector, std::strerror(static_cast<int>(-c.result)));
            if (!log_.log(line)) ++counters_.log_suppressed;
        }
        if (--slot.ops_left == 0) finish(static_cast<uint32_t>(c.cookie));
    }
    // Callbacks may call handle(), which appends to ready_: deliver from a separate vector.
    delivering_.swap(ready_);
    for (const Used& u : delivering_) used(u.head, u.len);
    size_t n = delivering_.size();
    delivering_.clear();
    return n;
}

}  // namespace vessel::virtio::block
