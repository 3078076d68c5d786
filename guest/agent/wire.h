// Framing of the host <-> guest agent protocol (docs/agent-protocol.md). Pure: no I/O, no
// exceptions out of the reader, shared by the static guest agent and the host client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vessel::agent {

inline constexpr std::string_view kProtocolName = "vessel-agent";
inline constexpr std::uint32_t kProtocolVersion = 1;

// Frame header: u32 length, u8 type, u8 stream, u16 flags (0), u32 id; little-endian.
inline constexpr std::size_t kHeaderSize = 12;
inline constexpr std::uint32_t kMaxControlPayload = 1u << 20;  // request/response JSON
inline constexpr std::uint32_t kMaxDataPayload = 64u << 10;    // one Data frame
// Outstanding credit a receiver may grant per stream; more is a protocol error.
inline constexpr std::uint32_t kMaxWindow = 4u << 20;
// Credit the agent grants for each process's stdin.
inline constexpr std::uint32_t kStdinWindow = 256u << 10;

// Request limits enforced by the agent.
inline constexpr std::size_t kMaxProcesses = 1024;  // running plus exited-but-unwaited
inline constexpr std::size_t kMaxConnections = 64;
inline constexpr std::size_t kMaxPendingWaits = 1024;  // per connection
inline constexpr std::size_t kMaxArgs = 4096;
inline constexpr std::size_t kMaxEnv = 4096;
inline constexpr std::size_t kMaxArgvEnvBytes = 512u << 10;  // argv + env, NULs included
inline constexpr std::size_t kMaxPathBytes = 4096;
inline constexpr std::size_t kMaxHostnameBytes = 64;
inline constexpr std::size_t kMaxIdentitySeed = 512;  // bytes of RNG seed
inline constexpr std::size_t kMaxIdentityInterfaces = 16;
inline constexpr std::size_t kMaxIdentityDns = 3;
inline constexpr std::size_t kMaxGroups = 256;
inline constexpr std::size_t kMaxRlimits = 32;
inline constexpr int kMaxJsonDepth = 32;
inline constexpr std::size_t kMaxJsonTokens = 128u << 10;  // structural characters

enum class FrameType : std::uint8_t {
    Request = 1,   // host -> agent, JSON, id = request id
    Response = 2,  // agent -> host, JSON, id = request id (0: connection error, then close)
    Data = 3,      // either way, raw bytes of one stream, id = process id
    Credit = 4,    // either way, u32 LE byte count the receiver may now accept
    Eof = 5,       // either way, the stream is finished (see the protocol document)
};

enum Stream : std::uint8_t { kStdin = 0, kStdout = 1, kStderr = 2 };

struct FrameHeader {
    std::uint32_t length = 0;
    FrameType type = FrameType::Request;
    std::uint8_t stream = 0;
    std::uint16_t flags = 0;
    std::uint32_t id = 0;
};

struct Frame {
    FrameHeader header;
    std::string payload;
};

void encode_header(const FrameHeader& h, char out[kHeaderSize]);
FrameHeader decode_header(const char in[kHeaderSize]);

// Returns why a header is invalid (unknown type, bad stream, flags, length over the
// type's limit), or an empty string if it is acceptable.
std::string check_header(const FrameHeader& h);

void append_frame(std::string& out, FrameType type, std::uint8_t stream, std::uint32_t id,
                  std::string_view payload);
void append_credit(std::string& out, std::uint8_t stream, std::uint32_t id, std::uint32_t bytes);
// nullopt unless the payload is exactly 4 bytes.
std::optional<std::uint32_t> parse_credit(std::string_view payload);

// Reassembles frames from a byte stream. A header is checked as soon as it is complete, so
// an oversized length is rejected before any of its payload is buffered. After an error the
// reader stays failed: the stream cannot be resynchronised.
class FrameReader {
  public:
    enum class Status { kFrame, kNeedMore, kError };

    void feed(const char* data, std::size_t n);
    Status next(Frame& out);
    const std::string& error() const { return error_; }
    std::size_t buffered() const { return buf_.size() - pos_; }
    bool mid_frame() const { return buffered() != 0; }

  private:
    std::string buf_;
    std::size_t pos_ = 0;
    std::string error_;
};

// Bounds what a JSON parser may be asked to build: nesting depth and the number of
// structural characters outside strings. Returns an empty string if acceptable.
std::string check_json_limits(std::string_view text);

}  // namespace vessel::agent
