// parse_lsn / format_lsn (src/protocol/lsn.cpp).
#include "protocol/lsn.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using pgcdcws::protocol::format_lsn;
using pgcdcws::protocol::kLsnTextSize;
using pgcdcws::protocol::parse_lsn;
using pgcdcws::test::ExactBuffer;

// Parses from an exactly-sized heap buffer so an over-read is an ASan error.
std::optional<std::uint64_t> parse(std::string_view text) {
    ExactBuffer buf(text);
    return parse_lsn(buf.view());
}

std::string format(std::uint64_t lsn) {
    // Exactly kLsnTextSize bytes on the heap: writing more is an ASan error.
    std::unique_ptr<char[]> out(new char[kLsnTextSize]);
    std::memset(out.get(), 'Z', kLsnTextSize);
    const std::size_t n = format_lsn(lsn, out.get());
    EXPECT_LT(n, kLsnTextSize);
    EXPECT_EQ(out[n], '\0') << "format_lsn must NUL-terminate";
    EXPECT_EQ(std::strlen(out.get()), n) << "return value must be the text length";
    return std::string(out.get(), n);
}

struct Valid {
    const char *text;
    std::uint64_t value;
};

TEST(ParseLsn, AcceptsValidForms) {
    const Valid cases[] = {
        {"0/16B3748", 0x16B3748ull},
        {"0/16b3748", 0x16B3748ull},
        {"0/0", 0},
        {"0/1", 1},
        {"1/0", 0x100000000ull},
        {"FFFFFFFF/FFFFFFFF", 0xFFFFFFFFFFFFFFFFull},
        {"ffffffff/ffffffff", 0xFFFFFFFFFFFFFFFFull},
        {"FfFfFfFf/fFfFfFfF", 0xFFFFFFFFFFFFFFFFull},
        {"00000000/00000001", 1},
        {"00000001/00000000", 0x100000000ull},
        {"12345678/9ABCDEF0", 0x123456789ABCDEF0ull},
        {"abcdef/0", 0xABCDEF00000000ull},
        {"DEADBEEF/1", 0xDEADBEEF00000001ull},
        {"7/FFFFFFFF", 0x7FFFFFFFFull},
        {"0/18154A8", 0x18154A8ull},
    };
    for (const auto &c : cases) {
        auto got = parse(c.text);
        ASSERT_TRUE(got.has_value()) << "rejected valid LSN \"" << c.text << "\"";
        EXPECT_EQ(*got, c.value) << c.text;
    }
}

TEST(ParseLsn, RejectsMalformedText) {
    const std::string cases[] = {
        "",
        "/",
        "0/",
        "/0",
        "0",
        "16B3748",
        "1/2/3",
        "0//1",
        " 0/1",
        "0/1 ",
        "0 /1",
        "0/ 1",
        "\t0/1",
        "0/1\n",
        "G/1",
        "1/G",
        "g/0",
        "0/x",
        "123456789/0",      // 9 digits high
        "0/123456789",      // 9 digits low
        "000000000/0",      // 9 digits even though the value fits
        "0/000000000",
        "+1/0",
        "-1/0",
        "1/-0",
        "1/+0",
        "0x1/0",
        "0/0x1",
        "1.0/0",
        "1\\0",
        "1:0",
        "1,0",
        std::string("0/1\0", 4),    // embedded NUL after
        std::string("\0" "0/1", 4),  // embedded NUL before
        std::string("0\0/1", 4),
        "\xEF\xBC\x91/1",  // U+FF11 FULLWIDTH DIGIT ONE
        "0/1\xC2\xA0",     // trailing NO-BREAK SPACE
        "FFFFFFFF/FFFFFFFFF",
        "FFFFFFFFF/FFFFFFFF",
    };
    for (const auto &text : cases)
        EXPECT_FALSE(parse(text).has_value()) << "accepted invalid LSN \"" << text << "\"";
}

TEST(ParseLsn, RejectsEveryNonHexCharacterInEitherField) {
    for (int ch = 0; ch < 256; ++ch) {
        const char c = static_cast<char>(ch);
        const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        const std::string high = std::string(1, c) + "/0";
        const std::string low = std::string("0/") + c;
        EXPECT_EQ(parse(high).has_value(), hex) << "character " << ch << " in high field";
        EXPECT_EQ(parse(low).has_value(), hex) << "character " << ch << " in low field";
    }
}

TEST(ParseLsn, HonoursStringViewLength) {
    // The parser must look at exactly the bytes of the view, not up to a NUL.
    const char text[] = "0/16B3748garbage";
    EXPECT_EQ(parse_lsn(std::string_view(text, 9)), std::optional<std::uint64_t>(0x16B3748ull));
    EXPECT_EQ(parse_lsn(std::string_view(text, 3)), std::optional<std::uint64_t>(1));
    EXPECT_FALSE(parse_lsn(std::string_view(text, 2)).has_value());
    EXPECT_FALSE(parse_lsn(std::string_view()).has_value());
}

TEST(FormatLsn, ProducesPgLsnText) {
    EXPECT_EQ(format(0), "0/0");
    EXPECT_EQ(format(1), "0/1");
    EXPECT_EQ(format(0x16B3748ull), "0/16B3748");
    EXPECT_EQ(format(0x100000000ull), "1/0");
    EXPECT_EQ(format(0x123456789ABCDEF0ull), "12345678/9ABCDEF0");
    EXPECT_EQ(format(0xABCDEF00000000ull), "ABCDEF/0");  // upper case, no leading zeros
    EXPECT_EQ(format(0x00000001000000ABull), "1/AB");
    EXPECT_EQ(format(0xFFFFFFFFFFFFFFFFull), "FFFFFFFF/FFFFFFFF");
    EXPECT_EQ(format(0xFFFFFFFFFFFFFFFFull).size(), kLsnTextSize - 1);
}

TEST(FormatLsn, RoundTripsThroughParse) {
    std::vector<std::uint64_t> values = {0, 1, 0xF, 0x10, 0xFFFFFFFFull, 0x100000000ull,
                                         0xFFFFFFFF00000000ull, 0xFFFFFFFFFFFFFFFFull};
    for (int shift = 0; shift < 64; ++shift) {
        values.push_back(1ull << shift);
        values.push_back((1ull << shift) - 1);
    }
    std::mt19937_64 rng(20261121);
    for (int i = 0; i < 10000; ++i)
        values.push_back(rng() >> (rng() % 64));
    for (std::uint64_t v : values) {
        const std::string text = format(v);
        auto back = parse(text);
        ASSERT_TRUE(back.has_value()) << text;
        EXPECT_EQ(*back, v) << text;
    }
}

TEST(FormatLsn, ParseThenFormatIsCanonical) {
    // Leading zeros and lower case are accepted but not produced.
    EXPECT_EQ(format(*parse("00000000/00000001")), "0/1");
    EXPECT_EQ(format(*parse("0000000a/0000000b")), "A/B");
    EXPECT_EQ(format(*parse("0/16b3748")), "0/16B3748");
}

}  // namespace
