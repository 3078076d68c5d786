// Framing of the agent protocol: header encoding, per-type checks, reassembly.
#include <gtest/gtest.h>

#include <string>

#include "guest/agent/wire.h"

namespace vessel::agent {
namespace {

std::string frame(FrameType t, std::uint8_t stream, std::uint32_t id, std::string_view payload) {
    std::string s;
    append_frame(s, t, stream, id, payload);
    return s;
}

TEST(AgentWire, HeaderIsLittleEndianAndRoundTrips) {
    const std::string s = frame(FrameType::Data, kStderr, 0x01020304, "xyz");
    ASSERT_EQ(s.size(), kHeaderSize + 3);
    EXPECT_EQ(s.substr(0, 12), std::string("\x03\x00\x00\x00\x03\x02\x00\x00\x04\x03\x02\x01", 12));
    const FrameHeader h = decode_header(s.data());
    EXPECT_EQ(h.length, 3u);
    EXPECT_EQ(h.type, FrameType::Data);
    EXPECT_EQ(h.stream, kStderr);
    EXPECT_EQ(h.id, 0x01020304u);
    EXPECT_EQ(check_header(h), "");
}

TEST(AgentWire, CheckHeaderRejectsWhatNoPeerMaySend) {
    auto bad = [](FrameHeader h) { return !check_header(h).empty(); };
    EXPECT_TRUE(bad({0, static_cast<FrameType>(0), 0, 0, 1}));
    EXPECT_TRUE(bad({0, static_cast<FrameType>(6), 0, 0, 1}));
    EXPECT_TRUE(bad({0, static_cast<FrameType>(255), 0, 0, 1}));
    EXPECT_TRUE(bad({0, FrameType::Request, 0, 1, 1}));  // flags
    EXPECT_TRUE(bad({0, FrameType::Request, 1, 0, 1}));  // stream on a control frame
    EXPECT_TRUE(bad({kMaxControlPayload + 1, FrameType::Request, 0, 0, 1}));
    EXPECT_FALSE(bad({kMaxControlPayload, FrameType::Response, 0, 0, 1}));
    EXPECT_TRUE(bad({kMaxDataPayload + 1, FrameType::Data, kStdin, 0, 1}));
    EXPECT_FALSE(bad({kMaxDataPayload, FrameType::Data, kStdout, 0, 1}));
    EXPECT_TRUE(bad({1, FrameType::Data, 3, 0, 1}));
    EXPECT_TRUE(bad({3, FrameType::Credit, kStdout, 0, 1}));
    EXPECT_FALSE(bad({4, FrameType::Credit, kStdout, 0, 1}));
    EXPECT_TRUE(bad({1, FrameType::Eof, kStdin, 0, 1}));
    EXPECT_TRUE(bad({0xffffffffu, FrameType::Data, kStdin, 0, 1}));
}

TEST(AgentWire, ReaderReassemblesByteByByte) {
    const std::string stream = frame(FrameType::Request, 0, 7, R"({"op":"list"})") +
                               frame(FrameType::Eof, kStdin, 9, "") +
                               frame(FrameType::Data, kStdin, 9, std::string(1000, 'x'));
    FrameReader r;
    std::vector<Frame> got;
    for (char c : stream) {
        r.feed(&c, 1);
        Frame f;
        while (r.next(f) == FrameReader::Status::kFrame) got.push_back(f);
    }
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0].header.id, 7u);
    EXPECT_EQ(got[0].payload, R"({"op":"list"})");
    EXPECT_EQ(got[1].header.type, FrameType::Eof);
    EXPECT_EQ(got[2].payload, std::string(1000, 'x'));
    EXPECT_FALSE(r.mid_frame());
}

TEST(AgentWire, OversizedLengthFailsBeforeThePayloadArrives) {
    FrameReader r;
    const std::string s = frame(FrameType::Request, 0, 1, "");
    std::string h = s.substr(0, kHeaderSize);
    h[0] = h[1] = h[2] = h[3] = '\xff';
    r.feed(h.data(), h.size());
    Frame f;
    EXPECT_EQ(r.next(f), FrameReader::Status::kError);
    EXPECT_NE(r.error().find("exceeds"), std::string::npos) << r.error();
    // Stays failed: the stream cannot be resynchronised.
    const std::string good = frame(FrameType::Request, 0, 2, "{}");
    r.feed(good.data(), good.size());
    EXPECT_EQ(r.next(f), FrameReader::Status::kError);
}

TEST(AgentWire, CreditPayload) {
    std::string s;
    append_credit(s, kStdout, 3, 0x00abcdef);
    Frame f;
    FrameReader r;
    r.feed(s.data(), s.size());
    ASSERT_EQ(r.next(f), FrameReader::Status::kFrame);
    EXPECT_EQ(f.header.type, FrameType::Credit);
    EXPECT_EQ(parse_credit(f.payload), 0x00abcdefu);
    EXPECT_EQ(parse_credit("abc"), std::nullopt);
}

TEST(AgentWire, JsonLimits) {
    EXPECT_EQ(check_json_limits(R"({"a":[1,2,{"b":"[[[[[[[["}]})"), "");
    EXPECT_NE(check_json_limits(std::string(kMaxJsonDepth + 1, '[')), "");
    EXPECT_EQ(check_json_limits(std::string(kMaxJsonDepth, '[')), "");
    // Brackets inside strings, escaped quotes included, do not count.
    EXPECT_EQ(check_json_limits("[\"\\\"" + std::string(1000, '[') + "\"]"), "");
    std::string many = "[";
    for (std::size_t i = 0; i <= kMaxJsonTokens; ++i) many += "0,";
    EXPECT_NE(check_json_limits(many), "");
}

}  // namespace
}  // namespace vessel::agent
