// Writer for the SVR4 "newc" cpio format (magic 070701), the format the Linux kernel
// unpacks as initramfs. Output is reproducible: uid/gid 0, mtime 0, inodes numbered in order.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "guest/init/proto.h"

namespace vessel::initramfs {

inline constexpr std::size_t kNewcHeaderSize = 110;
inline constexpr std::string_view kNewcMagic = "070701";
inline constexpr std::string_view kTrailerName = "TRAILER!!!";

// Returns the archive name for path: leading '/', "." components and duplicate slashes
// removed ("/usr//bin/./sh" -> "usr/bin/sh").
// Throws std::invalid_argument for an empty result or a ".." component.
std::string normalize_path(std::string_view path);

// Entries are written in call order. The kernel does not create missing parents, so add
// directories before their contents (or rely on an earlier archive having created them).
// Modes are permission bits only (<= 07777); the file type is implied by the method.
class Writer {
  public:
    // Distinct inode ranges keep concatenated archives unambiguous for hard-link detection.
    explicit Writer(std::uint32_t first_inode = 1) : next_inode_(first_inode) {}

    void add_directory(std::string_view path, std::uint32_t mode = 0755);
    void add_file(std::string_view path, std::string_view bytes, std::uint32_t mode = 0644);
    void add_file(std::string_view path, std::span<const std::uint8_t> bytes,
                  std::uint32_t mode = 0644);
    void add_symlink(std::string_view path, std::string_view target);
    void add_char_device(std::string_view path, std::uint32_t major, std::uint32_t minor,
                         std::uint32_t mode = 0600);

    // Appends the TRAILER!!! entry, pads to 4 bytes and hands the archive over.
    // The writer cannot be used afterwards (std::logic_error).
    std::string finish();
    std::vector<std::uint8_t> finish_bytes();

    std::size_t size() const { return out_.size(); }

  private:
    struct Entry {
        std::uint32_t mode;  // including S_IF* type bits
        std::uint32_t nlink;
        std::uint32_t rdev_major = 0;
        std::uint32_t rdev_minor = 0;
    };
    void append(std::string_view name, const Entry& e, std::string_view data);
    void check_open() const;

    std::string out_;
    std::uint32_t next_inode_;
    bool finished_ = false;
};

// The small per-run archive the VMM appends to the base initramfs: /vessel/argv, /vessel/env,
// /vessel/cwd (omitted if cwd is empty), /vessel/hostname (omitted if empty) and
// /vessel/rootfs (omitted without a rootfs; the command then runs from the initramfs).
// Throws std::invalid_argument for entries containing NUL, env entries without "KEY=", or a
// rootfs format_rootfs() rejects.
std::string make_run_archive(const std::vector<std::string>& argv,
                             const std::vector<std::string>& env, const std::string& cwd,
                             const std::string& hostname = "",
                             const std::optional<guest::RootFs>& rootfs = std::nullopt);

}  // namespace vessel::initramfs
