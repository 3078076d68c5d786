// CRC-32C (Castagnoli), the checksum of every snapshot section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace vessel::snapshot {

// Continues `crc` (0 to start) over `data`.
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace vessel::snapshot
