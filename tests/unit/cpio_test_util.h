// Test-side newc reader (independent of the writer) and small process/filesystem helpers.
#pragma once

#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace vessel::test {

struct CpioEntry {
    std::string name;
    std::uint32_t ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        rdevminor, namesize, check;
    std::string data;
    std::size_t header_offset;
    std::size_t data_offset;
};

// Parses a stream the way the kernel does: archives may follow each other, separated by
// zero padding, each starting 4-aligned. Returns one entry list per archive (no trailer).
inline std::vector<std::vector<CpioEntry>> parse_cpio_stream(std::string_view s) {
    std::vector<std::vector<CpioEntry>> archives;
    std::size_t off = 0;
    auto hex = [&](std::size_t at) {
        const std::string field(s.substr(at, 8));
        if (field.size() != 8 ||
            field.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
            throw std::runtime_error("bad hex field at " + std::to_string(at));
        return static_cast<std::uint32_t>(std::stoul(field, nullptr, 16));
    };
    auto align4 = [](std::size_t v) { return (v + 3) & ~std::size_t{3}; };
    for (;;) {
        while (off < s.size() && s[off] == '\0') ++off;
        if (off >= s.size()) break;
        if (off % 4 != 0) throw std::runtime_error("archive not 4-aligned");
        std::vector<CpioEntry> entries;
        for (;;) {
            if (off % 4 != 0) throw std::runtime_error("header not 4-aligned");
            if (off + 110 > s.size()) throw std::runtime_error("truncated header");
            if (s.substr(off, 6) != "070701") throw std::runtime_error("bad magic");
            CpioEntry e{};
            std::uint32_t* fields[] = {&e.ino,      &e.mode,      &e.uid,       &e.gid,
                                       &e.nlink,    &e.mtime,     &e.filesize,  &e.devmajor,
                                       &e.devminor, &e.rdevmajor, &e.rdevminor, &e.namesize,
                                       &e.check};
            for (int i = 0; i < 13; ++i) *fields[i] = hex(off + 6 + 8 * i);
            e.header_offset = off;
            if (e.namesize == 0 || off + 110 + e.namesize > s.size())
                throw std::runtime_error("bad namesize");
            if (s[off + 110 + e.namesize - 1] != '\0')
                throw std::runtime_error("name not NUL-terminated");
            e.name = std::string(s.substr(off + 110, e.namesize - 1));
            e.data_offset = align4(off + 110 + e.namesize);
            for (std::size_t p = off + 110 + e.namesize; p < e.data_offset; ++p)
                if (s.at(p) != '\0') throw std::runtime_error("non-zero name padding");
            if (e.data_offset + e.filesize > s.size()) throw std::runtime_error("truncated data");
            e.data = std::string(s.substr(e.data_offset, e.filesize));
            off = align4(e.data_offset + e.filesize);
            if (off > s.size()) throw std::runtime_error("missing data padding");
            if (e.name == "TRAILER!!!") break;
            entries.push_back(std::move(e));
        }
        archives.push_back(std::move(entries));
    }
    return archives;
}

inline const CpioEntry* find_entry(const std::vector<CpioEntry>& entries, std::string_view name) {
    for (const auto& e : entries)
        if (e.name == name) return &e;
    return nullptr;
}

class TempDir {
  public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "vessel-test.XXXXXX").string();
        if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }
    std::string str() const { return path_.string(); }

  private:
    std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& p, std::string_view data) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!f) throw std::runtime_error("cannot write " + p.string());
}

inline std::string read_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + p.string());
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Runs a /bin/sh command line; returns its exit code (-1 if it did not exit normally).
inline int run_shell(const std::string& cmd) {
    const int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Single-quotes s for /bin/sh.
inline std::string sh_quote(std::string_view s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    return out + "'";
}

}  // namespace vessel::test
