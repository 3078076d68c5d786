// Log sinks shared by the device models.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace vessel::virtio::io {

// Log sink; the default writes "vessel: <line>" to stderr.
using LogFn = std::function<void(const std::string&)>;

// `log` itself, or the stderr default when it is empty.
LogFn log_or_stderr(LogFn log);

// Token bucket: `burst` lines at once, then one every `interval`. For anything the guest can
// trigger: a hostile guest must not be able to flood the host's logs.
class RateLimitedLog {
  public:
    RateLimitedLog(LogFn sink, unsigned burst = 10,
                   std::chrono::milliseconds interval = std::chrono::seconds(1));
    // False (and counted) when suppressed.
    bool log(const std::string& line);
    uint64_t suppressed() const { return suppressed_total_; }

  private:
    LogFn sink_;
    unsigned burst_;
    std::chrono::milliseconds interval_;
    double tokens_;
    std::chrono::steady_clock::time_point last_;
    uint64_t suppressed_ = 0, suppressed_total_ = 0;
};

}  // namespace vessel::virtio::io
