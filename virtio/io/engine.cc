#include "virtio/io/engine.h"

#include <cerrno>
#include <cstring>
#include <system_error>

#include "virtio/io/sync_engine.h"
#include "virtio/io/uring_engine.h"

namespace vessel::virtio::io {

UringSupport probe_io_uring() {
    io_uring ring{};
    int r = io_uring_queue_init(2, &ring, 0);
    if (r < 0) {
        std::string why = std::strerror(-r);
        if (r == -ENOSYS) why += " (kernel built without io_uring)";
        if (r == -EPERM) why += " (disabled by kernel.io_uring_disabled or a seccomp filter)";
        return {false, "io_uring: cannot create a ring: " + why};
    }
    UringSupport s{true, "io_uring: kernel supports every opcode needed"};
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    if (!probe) {
        s = {false, "io_uring: kernel lacks IORING_REGISTER_PROBE (older than 5.6)"};
    } else {
        for (const UringOpcode& op : kUringOpcodes) {
            if (!io_uring_opcode_supported(probe, op.op)) {
                s = {false, std::string("io_uring: kernel lacks ") + op.name};
                break;
            }
        }
        io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
    return s;
}

EngineChoice make_engine(EnginePreference pref, unsigned queue_depth, std::span<const int> files,
                         EngineUse use) {
    if (pref == EnginePreference::Sync)
        return {std::make_unique<SyncEngine>(files), "sync: requested"};
    UringSupport s = probe_io_uring();
    if (!s.ok) {
        if (pref == EnginePreference::IoUring)
            throw std::system_error(ENOSYS, std::generic_category(),
                                    "io_uring engine requested but " + s.reason);
        return {std::make_unique<SyncEngine>(files), "sync: " + s.reason};
    }
    try {
        auto e = std::make_unique<UringEngine>(queue_depth, files, use);
        std::string why = "io_uring: ring of " + std::to_string(e->ring_entries()) + " entries, " +
                          std::to_string(files.size()) + " registered file(s)";
        return {std::move(e), std::move(why)};
    } catch (const std::system_error& e) {
        if (pref == EnginePreference::IoUring) throw;
        return {std::make_unique<SyncEngine>(files),
                std::string("sync: io_uring set-up failed: ") + e.what()};
    }
}

}  // namespace vessel::virtio::io
