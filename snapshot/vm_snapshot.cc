#include "snapshot/vm_snapshot.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "snapshot/disk_copy.h"
#include "virtio/device.h"
#include "virtio/queue.h"

namespace vessel::snapshot {
namespace {

using Clock = std::chrono::steady_clock;

bool active(const virtio::MmioTransport::State& s) {
    return s.status & virtio::status::kDriverOk;
}

uint32_t type_of_kind(const std::string& kind) {
    if (kind == "block") return virtio::device_id::kBlock;
    if (kind == "net") return virtio::device_id::kNet;
    if (kind == "vsock") return virtio::device_id::kVsock;
    return 0;
}

// True when no queue outside `skip` has a chain taken but not yet used.
bool idle(const AttachedDevice& d, std::string* busy) {
    virtio::MmioTransport::State s = d.transport->state();
    if (!active(s)) return true;
    for (size_t q = 0; q < s.queues.size(); ++q) {
        bool prefetch = false;
        for (uint16_t p : d.prefetch_queues) prefetch |= p == q;
        if (prefetch || !s.queues[q].ready) continue;
        if (s.queues[q].next_avail != s.queues[q].next_used) {
            if (busy) *busy = d.kind + " queue " + std::to_string(q);
            return false;
        }
    }
    return true;
}

// The device's I/O threads may still be finishing requests the guest made before the pause:
// their completions go to guest memory and the used ring, which must be in the snapshot.
void drain(const std::vector<AttachedDevice>& devices, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (const auto& d : devices) {
        std::string busy;
        while (!idle(d, &busy)) {
            if (Clock::now() > deadline)
                throw SnapshotError("device " + busy + " still has requests in flight after " +
                                    std::to_string(timeout.count()) + " ms");
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }
}

// A VIRTIO_VSOCK_EVENT_TRANSPORT_RESET in the next event-queue buffer, written before the
// device is activated (the queue is ours until then). The saved queue state advances past it.
void vsock_transport_reset(const vmm::GuestMemory& mem, virtio::MmioTransport::State& s) {
    constexpr size_t kEventQueue = 2;
    if (!active(s) || s.queues.size() <= kEventQueue || !s.queues[kEventQueue].ready) return;
    virtio::Queue q(s.queues[kEventQueue].max_size, "vsock event (restore)");
    q.restore(s.queues[kEventQueue]);
    virtio::PopResult r = q.pop(mem);
    if (r.status == virtio::PopStatus::kChain) {
        uint32_t written = 0;
        for (const auto& desc : r.chain.descs) {
            if (desc.device_writable && desc.len >= 4) {
                const uint32_t event_id = 0;  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, le32
                if (mem.write(desc.addr, &event_id, 4)) written = 4;
                break;
            }
        }
        q.add_used(mem, r.chain.head, written);
        s.interrupt_status |= virtio::MmioTransport::kIntUsedRing;
    } else if (r.status == virtio::PopStatus::kBadChain) {
        q.add_used(mem, r.chain.head, 0);
    }
    s.queues[kEventQueue] = q.state();
}

}  // namespace

CreateStats create(vmm::Machine& m, const std::vector<AttachedDevice>& devices,
                   const std::string& dir, nlohmann::json meta,
                   std::chrono::milliseconds drain_timeout, const std::string& diff_parent,
                   bool copy_disks) {
    CreateStats st;
    const bool diff = !diff_parent.empty();
    if (diff && !m.tracks_dirty())
        throw SnapshotError(
            "a diff snapshot needs a VM that tracks dirty pages (boot or restore it with "
            "--track-dirty)");
    const std::string state_path = dir + "/" + kStateFile, mem_path = dir + "/" + kMemoryFile,
                      bitmap_path = dir + "/" + kBitmapFile;
    bool made_dir = false;
    if (::mkdir(dir.c_str(), 0700) == 0) {
        made_dir = true;
    } else if (errno != EEXIST) {
        throw SnapshotError("creating snapshot directory " + dir + ": " + std::strerror(errno));
    } else if (::access(state_path.c_str(), F_OK) == 0) {
        throw SnapshotError(dir + " already holds a snapshot (remove it first)");
    }
    std::vector<std::string> copies;
    auto cleanup = [&] {
        for (const auto& c : copies) ::unlink(c.c_str());
        ::unlink(state_path.c_str());
        ::unlink(mem_path.c_str());
        ::unlink(bitmap_path.c_str());
        if (made_dir) ::rmdir(dir.c_str());
    };
    // Devices that write guest memory on their own (received frames) are held from the
    // drain until the memory is saved, so that the memory matches the captured queues.
    struct Held {
        const std::vector<AttachedDevice>& devices;
        bool on = false;
        void set(bool v) {
            for (const auto& d : devices) d.transport->device().hold(v);
            on = v;
        }
        ~Held() {
            if (on) set(false);
        }
    } held{devices};
    try {
        auto t = Clock::now();
        if (!m.pause()) throw SnapshotError("the VM is not running");
        held.set(true);
        st.pause = Clock::now() - t;
        t = Clock::now();
        drain(devices, drain_timeout);
        st.drain = Clock::now() - t;

        t = Clock::now();
        Snapshot s;
        s.meta = std::move(meta);
        s.machine = m.capture();
        for (size_t i = 0; i < devices.size(); ++i) {
            const AttachedDevice& d = devices[i];
            DeviceRecord r;
            r.slot = static_cast<uint32_t>(i);
            r.kind = d.kind;
            r.config = d.config;
            r.transport = d.transport->state();
            for (uint16_t q : d.prefetch_queues)
                if (q < r.transport.queues.size())
                    r.transport.queues[q].next_avail = r.transport.queues[q].next_used;
            if (d.state) r.state = d.state();
            s.devices.push_back(std::move(r));
        }
        st.capture = Clock::now() - t;

        if (copy_disks) {
            // Drained: each writable disk holds what the guest wrote before the pause.
            t = Clock::now();
            for (DeviceRecord& r : s.devices) {
                if (r.kind != "block" || r.config.value("read_only", false)) continue;
                const std::string name = "disk-" + std::to_string(r.slot) + ".img";
                copies.push_back(dir + "/" + name);
                st.disk_bytes += copy_disk(r.config.at("path").get<std::string>(), copies.back());
                r.config["copy"] = name;
            }
            st.disks = Clock::now() - t;
        }

        t = Clock::now();
        s.meta.erase("diff");
        if (diff) {
            const std::vector<uint64_t> bitmap = m.take_dirty_pages();
            st.memory_bytes = m.save_memory_pages(mem_path, bitmap);
            write_bitmap(bitmap_path, bitmap);
            s.meta["diff"] = {{"parent", diff_parent},
                              {"pages", st.memory_bytes / vmm::GuestMemory::kPageSize},
                              {"bitmap_crc32c", bitmap_crc(bitmap)}};
        } else {
            st.memory_bytes = m.save_memory(mem_path);
            if (m.tracks_dirty()) m.take_dirty_pages();  // the next diff starts here
        }
        st.memory = Clock::now() - t;
        held.set(false);
        t = Clock::now();
        save(dir, std::move(s));
        st.state = Clock::now() - t;
    } catch (...) {
        cleanup();
        throw;
    }
    return st;
}

void restore_devices(const vmm::GuestMemory& mem, const std::vector<DeviceRecord>& records,
                     const std::vector<std::shared_ptr<virtio::MmioTransport>>& transports) {
    if (records.size() != transports.size())
        throw SnapshotError("snapshot has " + std::to_string(records.size()) + " devices, " +
                            std::to_string(transports.size()) + " attached");
    for (size_t i = 0; i < records.size(); ++i) {
        const DeviceRecord& r = records[i];
        virtio::MmioTransport& t = *transports[i];
        if (type_of_kind(r.kind) != t.device().device_type())
            throw SnapshotError("device slot " + std::to_string(i) + ": snapshot has a " + r.kind +
                                " device, a different one is attached");
        virtio::MmioTransport::State s = r.transport;
        try {
            if (r.kind == "vsock") vsock_transport_reset(mem, s);
            t.restore(s);
        } catch (const std::system_error& e) {
            throw SnapshotError("device slot " + std::to_string(i) + " (" + r.kind +
                                "): " + e.what());
        }
    }
}

std::function<bool()> vsock_reset_handled(const vmm::GuestMemory& mem, const DeviceRecord& r) {
    constexpr size_t kEventQueue = 2;
    const auto& s = r.transport;
    if (r.kind != "vsock" || !active(s) || s.queues.size() <= kEventQueue ||
        !s.queues[kEventQueue].ready)
        return [] { return true; };
    const uint64_t idx_gpa = s.queues[kEventQueue].avail_addr + 2;  // virtq_avail.idx
    uint16_t at_restore = 0;
    if (!mem.read(idx_gpa, &at_restore, sizeof at_restore)) return [] { return true; };
    return [&mem, idx_gpa, at_restore] {
        uint16_t now = 0;
        return !mem.read(idx_gpa, &now, sizeof now) || now != at_restore;
    };
}

void kick_devices(const std::vector<std::shared_ptr<virtio::MmioTransport>>& transports) {
    for (const auto& t : transports)
        if (t->active()) t->raise_used_interrupt();
}

}  // namespace vessel::snapshot
