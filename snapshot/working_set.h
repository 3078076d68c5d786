// A snapshot's working set, DIR/memory.ws (docs/snapshot-format.md, "Working set"): the
// pages the first `vessel restore --uffd` of the snapshot touched, in the order it touched
// them, with a compacted copy of their bytes, so that later --uffd restores install them in
// bulk before the vCPUs start (as REAP does). An optimisation only: a file that is missing,
// stale, damaged or lying is ignored with a warning, never trusted for bounds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/guest_memory.h"

namespace vessel::snapshot {

inline constexpr const char* kWorkingSetFile = "memory.ws";
inline constexpr uint32_t kWorkingSetVersion = 1;
inline constexpr uint64_t kWorkingSetHeaderSize = 64;

// Which memory files a working set belongs to: device, inode, size and modification time of
// the full snapshot's file and of each diff's, hashed. A working set recorded from other
// files (the snapshot re-created or copied) is not used. Throws std::system_error.
uint64_t memory_identity(const std::string& memory_path,
                         const std::vector<vmm::MemoryLayer>& overlays);

// Reads `path` in one read and checks it against the memory it is for. nullopt: no file
// (`why` empty) or one that cannot be used (`why` says why).
std::optional<vmm::Prefetch> read_working_set(const std::string& path, uint64_t memory_size,
                                              uint64_t identity, std::string& why);

// Writes `pages` (first touch first; repeats and pages past the memory dropped) with the
// snapshot's bytes of each (GuestMemory::read_source_page) to `path`: a temporary file in
// the same directory, synced, then renamed over it. Returns the number of pages kept.
// Throws std::system_error (a read-only directory: EROFS or EACCES from creating the file).
uint64_t write_working_set(const std::string& path, const vmm::GuestMemory& mem,
                           const std::vector<uint64_t>& pages, uint64_t identity);

}  // namespace vessel::snapshot
