// parse_client_frames (src/protocol/ws_frame.cpp).
#include "protocol/ws_frame.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using pgcdcws::protocol::ClientFrame;
using pgcdcws::protocol::parse_client_frames;

std::string frame(std::uint8_t first, const std::string &payload, const unsigned char mask[4]) {
    std::string out;
    out.push_back(static_cast<char>(first));
    if (payload.size() < 126) {
        out.push_back(static_cast<char>(0x80 | payload.size()));
    } else {
        out.push_back(static_cast<char>(0x80 | 126));
        out.push_back(static_cast<char>(payload.size() >> 8));
        out.push_back(static_cast<char>(payload.size() & 0xFF));
    }
    out.append(reinterpret_cast<const char *>(mask), 4);
    for (std::size_t i = 0; i < payload.size(); i++)
        out.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
    return out;
}

const unsigned char kMask[4] = {0x12, 0x34, 0x56, 0x78};

TEST(ClientFrames, TextAckThenClose) {
    const std::string ack = R"({"lsn": "0/1542218"})";
    const std::string bytes = frame(0x81, ack, kMask) + frame(0x88, std::string("\x03\xe8", 2), kMask);
    std::vector<ClientFrame> out;
    EXPECT_EQ(parse_client_frames(bytes.data(), bytes.size(), 4096, &out), bytes.size());
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].opcode, 1);
    EXPECT_TRUE(out[0].fin);
    EXPECT_EQ(out[0].payload, ack);
    EXPECT_EQ(out[1].opcode, 8);
}

TEST(ClientFrames, FragmentsAndExtendedLength) {
    const std::string big(300, 'x');
    const std::string bytes = frame(0x01, big, kMask) + frame(0x80, "tail", kMask);
    std::vector<ClientFrame> out;
    EXPECT_EQ(parse_client_frames(bytes.data(), bytes.size(), 4096, &out), bytes.size());
    ASSERT_EQ(out.size(), 2u);
    EXPECT_FALSE(out[0].fin);
    EXPECT_EQ(out[0].payload, big);
    EXPECT_EQ(out[1].opcode, 0);
    EXPECT_TRUE(out[1].fin);
    EXPECT_EQ(out[1].payload, "tail");
}

TEST(ClientFrames, StopsAtIncompleteOrInvalid) {
    const std::string whole = frame(0x81, "abc", kMask);
    // Every proper prefix of the second frame: only the first is taken.
    const std::string two = whole + frame(0x81, "defgh", kMask);
    for (std::size_t cut = whole.size(); cut < two.size(); cut++) {
        std::vector<ClientFrame> out;
        EXPECT_EQ(parse_client_frames(two.data(), cut, 4096, &out), whole.size()) << cut;
        EXPECT_EQ(out.size(), 1u);
    }
    std::vector<ClientFrame> out;
    const std::string unmasked = "\x81\x03" "abc";
    EXPECT_EQ(parse_client_frames(unmasked.data(), unmasked.size(), 4096, &out), 0u);
    const std::string reserved = frame(0xC1, "abc", kMask);
    EXPECT_EQ(parse_client_frames(reserved.data(), reserved.size(), 4096, &out), 0u);
    const std::string unknown = frame(0x83, "abc", kMask);
    EXPECT_EQ(parse_client_frames(unknown.data(), unknown.size(), 4096, &out), 0u);
    const std::string too_large = frame(0x81, std::string(200, 'y'), kMask);
    EXPECT_EQ(parse_client_frames(too_large.data(), too_large.size(), 100, &out), 0u);
    EXPECT_TRUE(out.empty());
}

// The header lws would write for a server's text frame (RFC 6455 5.2): the
// length in 7 bits below 126, then 16, then 64 bits, big-endian.
TEST(ServerTextHeader, LengthEncodings) {
    unsigned char out[pgcdcws::protocol::kMaxServerFrameHeader];
    auto header = [&](std::uint64_t n) {
        const std::size_t len = pgcdcws::protocol::write_server_text_header(n, out);
        return std::vector<unsigned>(out, out + len);
    };
    EXPECT_EQ(header(0), (std::vector<unsigned>{0x81, 0}));
    EXPECT_EQ(header(125), (std::vector<unsigned>{0x81, 125}));
    EXPECT_EQ(header(126), (std::vector<unsigned>{0x81, 126, 0, 126}));
    EXPECT_EQ(header(300), (std::vector<unsigned>{0x81, 126, 1, 44}));
    EXPECT_EQ(header(65535), (std::vector<unsigned>{0x81, 126, 0xff, 0xff}));
    EXPECT_EQ(header(65536), (std::vector<unsigned>{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}));
    EXPECT_EQ(header(0x0102030405ull), (std::vector<unsigned>{0x81, 127, 0, 0, 0, 1, 2, 3, 4, 5}));
}

}  // namespace

