#include "guest/agent/wire.h"

#include <cstring>

namespace vessel::agent {
namespace {

void put_u32(char* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

void put_u16(char* p, std::uint16_t v) {
    p[0] = static_cast<char>(v & 0xff);
    p[1] = static_cast<char>(v >> 8);
}

std::uint32_t get_u32(const char* p) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
    return v;
}

std::uint16_t get_u16(const char* p) {
    return static_cast<std::uint16_t>(static_cast<unsigned char>(p[0]) |
                                      (static_cast<unsigned char>(p[1]) << 8));
}

}  // namespace

void encode_header(const FrameHeader& h, char out[kHeaderSize]) {
    put_u32(out, h.length);
    out[4] = static_cast<char>(h.type);
    out[5] = static_cast<char>(h.stream);
    put_u16(out + 6, h.flags);
    put_u32(out + 8, h.id);
}

FrameHeader decode_header(const char in[kHeaderSize]) {
    FrameHeader h;
    h.length = get_u32(in);
    h.type = static_cast<FrameType>(static_cast<unsigned char>(in[4]));
    h.stream = static_cast<std::uint8_t>(in[5]);
    h.flags = get_u16(in + 6);
    h.id = get_u32(in + 8);
    return h;
}

std::string check_header(const FrameHeader& h) {
    if (h.flags != 0) return "non-zero frame flags " + std::to_string(h.flags);
    const bool stream_ok = h.stream <= kStderr;
    switch (h.type) {
        case FrameType::Request:
        case FrameType::Response:
            if (h.stream != 0) return "control frame with stream " + std::to_string(h.stream);
            if (h.length > kMaxControlPayload)
                return "control frame of " + std::to_string(h.length) + " bytes exceeds " +
                       std::to_string(kMaxControlPayload);
            return {};
        case FrameType::Data:
            if (!stream_ok) return "data frame for stream " + std::to_string(h.stream);
            if (h.length > kMaxDataPayload)
                return "data frame of " + std::to_string(h.length) + " bytes exceeds " +
                       std::to_string(kMaxDataPayload);
            return {};
        case FrameType::Credit:
            if (!stream_ok) return "credit frame for stream " + std::to_string(h.stream);
            if (h.length != 4) return "credit frame of " + std::to_string(h.length) + " bytes";
            return {};
        case FrameType::Eof:
            if (!stream_ok) return "eof frame for stream " + std::to_string(h.stream);
            if (h.length != 0) return "eof frame with " + std::to_string(h.length) + " bytes";
            return {};
    }
    return "unknown frame type " + std::to_string(static_cast<unsigned>(h.type));
}

void append_frame(std::string& out, FrameType type, std::uint8_t stream, std::uint32_t id,
                  std::string_view payload) {
    char hdr[kHeaderSize];
    encode_header({static_cast<std::uint32_t>(payload.size()), type, stream, 0, id}, hdr);
    out.append(hdr, kHeaderSize);
    out.append(payload);
}

void append_credit(std::string& out, std::uint8_t stream, std::uint32_t id, std::uint32_t bytes) {
    char p[4];
    put_u32(p, bytes);
    append_frame(out, FrameType::Credit, stream, id, std::string_view(p, 4));
}

std::optional<std::uint32_t> parse_credit(std::string_view payload) {
    if (payload.size() != 4) return std::nullopt;
    return get_u32(payload.data());
}

void FrameReader::feed(const char* data, std::size_t n) {
    // Compact once the consumed prefix dominates, keeping appends amortised O(n).
    if (pos_ > 0 && pos_ >= buf_.size() / 2) {
        buf_.erase(0, pos_);
        pos_ = 0;
    }
    buf_.append(data, n);
}

FrameReader::Status FrameReader::next(Frame& out) {
    if (!error_.empty()) return Status::kError;
    if (buffered() < kHeaderSize) return Status::kNeedMore;
    const FrameHeader h = decode_header(buf_.data() + pos_);
    if (std::string why = check_header(h); !why.empty()) {
        error_ = std::move(why);
        return Status::kError;
    }
    if (buffered() - kHeaderSize < h.length) return Status::kNeedMore;
    out.header = h;
    out.payload.assign(buf_, pos_ + kHeaderSize, h.length);
    pos_ += kHeaderSize + h.length;
    if (pos_ == buf_.size()) {
        buf_.clear();
        pos_ = 0;
    }
    return Status::kFrame;
}

std::string check_json_limits(std::string_view text) {
    int depth = 0;
    std::size_t tokens = 0;
    bool in_string = false;
    bool escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        switch (c) {
            case '"':
                in_string = true;
                break;
            case '[':
            case '{':
                if (++depth > kMaxJsonDepth)
                    return "JSON nested deeper than " + std::to_string(kMaxJsonDepth);
                [[fallthrough]];
            case ',':
            case ':':
                if (++tokens > kMaxJsonTokens) return "JSON has too many elements";
                break;
            case ']':
            case '}':
                // Unbalanced closers are the parser's to reject; keep the count sane.
                if (depth > 0) --depth;
                break;
            default:
                break;
        }
    }
    return {};
}

}  // namespace vessel::agent
