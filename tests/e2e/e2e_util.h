// Shared set-up for end-to-end tests: where the kernel is, when they can run, how to boot.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace vessel::test {

inline std::string e2e_kernel() {
    if (const char* k = std::getenv("VESSEL_KERNEL"); k && *k) return k;
    const char* c = std::getenv("VESSEL_CACHE");
    return std::string(c && *c ? c : "/var/cache/vessel") + "/kernel/current/vmlinux";
}

// Needs a KVM that boots Linux: hardware KVM, or the nested harness on PVM hosts.
class E2ETest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::access("/sys/module/kvm_pvm", F_OK) == 0)
            GTEST_SKIP() << "host KVM is PVM, which cannot boot Linux: run through "
                            "tests/harness/maybe-nested";
        if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
        if (::access(e2e_kernel().c_str(), R_OK) != 0)
            GTEST_FAIL() << "guest kernel " << e2e_kernel()
                         << " missing: run guest/kernel/build.sh";
    }

    ProcResult boot(const std::vector<std::string>& opts, const std::vector<std::string>& cmd,
                    int timeout_s = 300) {
        std::vector<std::string> argv = {VESSEL_BIN, "boot", "--kernel", e2e_kernel()};
        argv.insert(argv.end(), opts.begin(), opts.end());
        argv.push_back("--");
        argv.insert(argv.end(), cmd.begin(), cmd.end());
        ProcResult r = run_process(argv, timeout_s);
        RecordProperty("seconds", std::to_string(r.seconds));
        return r;
    }
};

// A scratch directory removed with everything in it at the end of the test.
class TempDir {
  public:
    TempDir() {
        std::string tmpl = "/var/tmp/vessel-e2e-XXXXXX";
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }
    std::string operator/(const std::string& name) const { return path_ + "/" + name; }

  private:
    std::string path_;
};

}  // namespace vessel::test
