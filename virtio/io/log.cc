#include "virtio/io/log.h"

#include <algorithm>
#include <cstdio>

namespace vessel::virtio::io {

LogFn log_or_stderr(LogFn log) {
    if (log) return log;
    return [](const std::string& l) { std::fprintf(stderr, "vessel: %s\n", l.c_str()); };
}

RateLimitedLog::RateLimitedLog(LogFn sink, unsigned burst, std::chrono::milliseconds interval)
    : sink_(log_or_stderr(std::move(sink))),
      burst_(std::max(1u, burst)),
      interval_(std::max(interval, std::chrono::milliseconds(1))),
      tokens_(burst_),
      last_(std::chrono::steady_clock::now()) {}

bool RateLimitedLog::log(const std::string& line) {
    auto now = std::chrono::steady_clock::now();
    tokens_ =
        std::min<double>(burst_, tokens_ + std::chrono::duration<double>(now - last_) / interval_);
    last_ = now;
    if (tokens_ < 1) {
        ++suppressed_;
        ++suppressed_total_;
        return false;
    }
    tokens_ -= 1;
    if (suppressed_ > 0) {
        sink_(line + " (" + std::to_string(suppressed_) + " similar lines suppressed)");
        suppressed_ = 0;
    } else {
        sink_(line);
    }
    return true;
}

}  // namespace vessel::virtio::io
