#include "guest/initramfs/cpio.h"

#include <sys/stat.h>

#include <cstdio>
#include <stdexcept>

#include "guest/init/proto.h"
#include "guest/init/protocol.h"

namespace vessel::initramfs {

namespace {

constexpr std::uint32_t kMaxPermBits = 07777;

void pad4(std::string& out) {
    while (out.size() % 4 != 0) out.push_back('\0');
}

void put_hex(std::string& out, std::uint32_t v) {
    char buf[9];
    std::snprintf(buf, sizeof buf, "%08X", v);
    out.append(buf, 8);
}

std::uint32_t checked_mode(std::uint32_t mode) {
    if (mode > kMaxPermBits) throw std::invalid_argument("cpio: mode must be permission bits only");
    return mode;
}

}  // namespace

std::string normalize_path(std::string_view path) {
    std::string out;
    while (!path.empty()) {
        const auto slash = path.find('/');
        const auto comp = path.substr(0, slash);
        path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
        if (comp.empty() || comp == ".") continue;
        if (comp == "..") throw std::invalid_argument("cpio: '..' in path");
        if (comp.find('\0') != std::string_view::npos)
            throw std::invalid_argument("cpio: NUL in path");
        if (!out.empty()) out += '/';
        out += comp;
    }
    if (out.empty()) throw std::invalid_argument("cpio: empty path");
    return out;
}

void Writer::check_open() const {
    if (finished_) throw std::logic_error("cpio: archive already finished");
}

void Writer::append(std::string_view name, const Entry& e, std::string_view data) {
    if (data.size() > UINT32_MAX) throw std::invalid_argument("cpio: file larger than 4 GiB");
    // The header is only 4-aligned if every earlier entry kept the stream aligned.
    const std::uint32_t ino = name == kTrailerName ? 0 : next_inode_++;
    out_ += kNewcMagic;
    put_hex(out_, ino);
    put_hex(out_, e.mode);
    put_hex(out_, 0);  // uid
    put_hex(out_, 0);  // gid
    put_hex(out_, e.nlink);
    put_hex(out_, 0);  // mtime: fixed for reproducible images
    put_hex(out_, static_cast<std::uint32_t>(data.size()));
    put_hex(out_, 0);  // devmajor of the containing fs: meaningless here
    put_hex(out_, 0);  // devminor
    put_hex(out_, e.rdev_major);
    put_hex(out_, e.rdev_minor);
    put_hex(out_, static_cast<std::uint32_t>(name.size() + 1));
    put_hex(out_, 0);  // check: only used by the "070702" crc variant
    out_ += name;
    out_ += '\0';
    pad4(out_);
    out_ += data;
    pad4(out_);
}

void Writer::add_directory(std::string_view path, std::uint32_t mode) {
    check_open();
    append(normalize_path(path), {S_IFDIR | checked_mode(mode), 2}, {});
}

void Writer::add_file(std::string_view path, std::string_view bytes, std::uint32_t mode) {
    check_open();
    append(normalize_path(path), {S_IFREG | checked_mode(mode), 1}, bytes);
}

void Writer::add_file(std::string_view path, std::span<const std::uint8_t> bytes,
                      std::uint32_t mode) {
    add_file(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
             mode);
}

void Writer::add_symlink(std::string_view path, std::string_view target) {
    check_open();
    if (target.empty() || target.find('\0') != std::string_view::npos)
        throw std::invalid_argument("cpio: bad symlink target");
    // Symlink targets are stored unterminated as the entry's data, like GNU cpio does.
    append(normalize_path(path), {S_IFLNK | 0777, 1}, target);
}

void Writer::add_char_device(std::string_view path, std::uint32_t major, std::uint32_t minor,
                             std::uint32_t mode) {
    check_open();
    append(normalize_path(path), {S_IFCHR | checked_mode(mode), 1, major, minor}, {});
}

std::string Writer::finish() {
    check_open();
    append(kTrailerName, {0, 1}, {});
    finished_ = true;
    return std::move(out_);
}

std::vector<std::uint8_t> Writer::finish_bytes() {
    const std::string s = finish();
    return {s.begin(), s.end()};
}

std::string make_run_archive(const std::vector<std::string>& argv,
                             const std::vector<std::string>& env, const std::string& cwd,
                             const std::string& hostname,
                             const std::optional<guest::RootFs>& rootfs) {
    for (const auto& e : env) {
        if (guest::env_key(e).empty())
            throw std::invalid_argument("run archive: env entry is not KEY=VALUE: " + e);
    }
    for (const auto* s : {&cwd, &hostname}) {
        if (s->find('\0') != std::string::npos)
            throw std::invalid_argument("run archive: NUL in cwd or hostname");
    }
    const std::string rootfs_text = rootfs ? guest::format_rootfs(*rootfs) : "";
    // High inode numbers so they never collide with the base archive's.
    Writer w(0x40000000);
    w.add_directory(guest::kRunDir, 0755);
    w.add_file(guest::kArgvPath, guest::join_nul_list(argv), 0644);
    w.add_file(guest::kEnvPath, guest::join_nul_list(env), 0644);
    if (!cwd.empty()) w.add_file(guest::kCwdPath, cwd, 0644);
    if (!hostname.empty()) w.add_file(guest::kHostnamePath, hostname, 0644);
    if (rootfs) w.add_file(guest::kRootFsPath, rootfs_text, 0644);
    return w.finish();
}

}  // namespace vessel::initramfs
