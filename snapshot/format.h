// The snapshot container (docs/snapshot-format.md): a fixed header, a table of typed
// sections and their payloads, each with a CRC-32C. decode() checks everything before it
// returns a single section, so a bad file is refused before anything is restored.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace vessel::snapshot {

inline constexpr char kMagic[8] = {'V', 'E', 'S', 'S', 'N', 'A', 'P', '\0'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kHeaderSize = 32;
inline constexpr size_t kTableEntrySize = 32;
// Far more than any machine needs (128 vCPUs + devices); bounds what a bad header can ask.
inline constexpr uint32_t kMaxSections = 4096;

enum class SectionType : uint32_t {
    kMeta = 1,    // JSON: machine configuration, creation time, vessel version
    kVcpu = 2,    // binary records; index = vCPU number
    kVm = 3,      // binary records: irqchip, PIT, kvmclock
    kSerial = 4,  // JSON: the 16550 registers
    kDevice = 5,  // JSON; index = virtio-mmio slot
    kMemory = 6,  // JSON: memory file name and size
};
const char* section_name(uint32_t type);

struct Section {
    SectionType type;
    uint32_t index = 0;
    std::vector<uint8_t> data;
};

// A snapshot that cannot be used; what() says why in words fit for the command line.
class SnapshotError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

std::vector<uint8_t> encode(const std::vector<Section>& sections);
// Throws SnapshotError naming the first problem: truncation, bad magic, unsupported version,
// a corrupted header, table or section, an unknown section type.
std::vector<Section> decode(std::span<const uint8_t> file);

// Whole-file helpers. write_file replaces `path` atomically (temporary file, fsync, rename).
void write_file(const std::string& path, std::span<const uint8_t> bytes);
std::vector<uint8_t> read_file(const std::string& path);  // SnapshotError when unreadable

}  // namespace vessel::snapshot
