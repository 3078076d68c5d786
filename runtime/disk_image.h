// Raw disk images for guests: an ext4 filesystem made from a host directory.
#pragma once

#include <cstdint>
#include <string>

namespace vessel::image {

// Creates `image` (raw, sparse, `size_bytes`) holding an ext4 filesystem with the contents of
// `dir`, via mkfs.ext4 -d. Written to a temporary file and renamed, so a failure leaves
// nothing behind. Throws std::system_error / std::runtime_error naming the problem.
void make_ext4_from_dir(const std::string& dir, const std::string& image, uint64_t size_bytes,
                        const std::string& label = "vessel");

}  // namespace vessel::image
