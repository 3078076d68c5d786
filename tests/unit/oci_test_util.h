// Helpers for the oci tests: temporary directories, files, fixtures, and expecting the exact
// message of an exception.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace vessel::oci::test {

class TempDir {
  public:
    explicit TempDir(const std::string& parent = std::filesystem::temp_directory_path().string()) {
        std::string tmpl = parent + "/vessel-oci-test.XXXXXX";
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp in " + parent + " failed");
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string str() const { return path_; }
    std::string operator/(std::string_view rel) const { return path_ + "/" + std::string(rel); }

  private:
    std::string path_;
};

inline void write_file(const std::string& path, std::string_view data) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
}

inline std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

inline std::string fixture(std::string_view name) {
    return read_file(std::string(OCI_TEST_DATA) + "/" + std::string(name));
}

// The message of the exception `fn` throws as E; fails the test if it throws nothing.
template <typename E, typename Fn>
std::string message_of(Fn&& fn) {
    try {
        fn();
    } catch (const E& e) {
        return e.what();
    }
    ADD_FAILURE() << "no exception thrown";
    return "";
}

}  // namespace vessel::oci::test
