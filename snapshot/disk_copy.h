// Disk images kept with a snapshot (`vessel snapshot create --disks`) and put back by
// `vessel restore --revert-disks`, as `virsh snapshot-revert` does for a domain's disks.
#pragma once

#include <cstdint>
#include <string>

namespace vessel::snapshot {

// Copies the image file `from` to `to` (created; must not exist): a reflink (FICLONE) where
// the file system shares extents, else a sparse copy (holes stay holes). fsyncs `to`.
// Returns the bytes of data copied (0 for a reflink). Throws std::system_error naming the
// file; a partly written `to` is removed. Block devices are refused (EINVAL).
uint64_t copy_disk(const std::string& from, const std::string& to);

// Replaces the disk image at `path` by a copy of `copy`, atomically (a temporary file next to
// it, then rename): `path` is either its old self or the copy, never half of each. Refuses
// (std::system_error, EBUSY) while a VM holds `path` (vessel's disk lock, flock).
void revert_disk(const std::string& copy, const std::string& path);
// True while a VM holds `path` (its disk lock); a missing file is not in use.
bool disk_in_use(const std::string& path);

}  // namespace vessel::snapshot
