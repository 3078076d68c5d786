// A disk image: a raw file (or block device) opened for one VM.
//
// Host set-up: every failure throws std::system_error naming the image and the step.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "virtio/block/request.h"
#include "vmm/fd.h"

namespace vessel::virtio::block {

struct DiskOptions {
    std::string path;
    bool read_only = false;  // O_RDONLY, LOCK_SH, VIRTIO_BLK_F_RO; no discard/write-zeroes
    bool direct = false;     // O_DIRECT; refused (not silently dropped) where unsupported
    std::string serial;      // GET_ID string (at most 20 bytes); empty: derived from the file
    Limits limits;
};

class Disk {
  public:
    // Opens and locks the image: LOCK_EX for read-write, LOCK_SH for read-only, so two VMs
    // cannot write one image (nor one write what another reads). The lock lives as long as the
    // Disk. The capacity is the size rounded down to whole 512-byte sectors.
    static Disk open(const DiskOptions& opts);

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }
    uint64_t sectors() const { return sectors_; }
    bool read_only() const { return read_only_; }
    bool direct() const { return direct_; }
    bool discard() const { return discard_; }
    // The GET_ID answer: the serial, NUL-padded to 20 bytes. Unless given, it is derived from
    // the image's device and inode numbers: stable across runs while the file is not copied.
    const std::array<uint8_t, kIdBytes>& id() const { return id_; }
    DiskInfo info() const;

  private:
    UniqueFd fd_;
    std::string path_;
    uint64_t sectors_ = 0;
    bool read_only_ = false;
    bool direct_ = false;
    bool discard_ = false;
    std::array<uint8_t, kIdBytes> id_{};
    Limits limits_;
};

}  // namespace vessel::virtio::block
