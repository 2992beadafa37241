// slot_name_error (src/protocol/slot_name.cpp).
#include "protocol/slot_name.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pgcdcws::protocol::kMaxSlotNameLength;
using pgcdcws::protocol::slot_name_error;
using pgcdcws::test::ExactBuffer;

const char *check(std::string_view name) {
    ExactBuffer buf(name);
    return slot_name_error(buf.view());
}

std::string error_of(std::string_view name) {
    const char *e = check(name);
    return e ? e : "";
}

TEST(SlotName, AcceptsValidNames) {
    const std::string cases[] = {
        "a", "_", "0", "cdc_amber42", "slot_1", "abcdefghijklmnopqrstuvwxyz0123456789_",
        std::string(63, 'a'), std::string(63, '_'), std::string(63, '9'),
    };
    for (const auto &name : cases)
        EXPECT_EQ(check(name), nullptr) << "rejected \"" << name << "\": " << error_of(name);
}

TEST(SlotName, MaxLengthIs63) {
    EXPECT_EQ(kMaxSlotNameLength, 63u);
    EXPECT_EQ(check(std::string(63, 'x')), nullptr);
    EXPECT_EQ(error_of(std::string(64, 'x')), "slot name is longer than 63 characters");
    EXPECT_EQ(error_of(std::string(1000, 'x')), "slot name is longer than 63 characters");
}

TEST(SlotName, RejectsEmpty) {
    EXPECT_EQ(error_of(""), "slot name is empty");
    EXPECT_EQ(error_of(std::string_view()), "slot name is empty");
}

TEST(SlotName, RejectsInvalidCharacters) {
    const std::string bad = "slot name may contain only lower case letters, digits and underscores";
    const std::string cases[] = {
        "A", "Slot", "a-b", "a b", " a", "a ", "a.b", "a/b", "../x", "a;drop", "a'b", "a\"b",
        "a%20b", "\xC3\xA4" /* ä */, "a\nb", std::string("a\0b", 3), std::string("\0", 1),
    };
    for (const auto &name : cases)
        EXPECT_EQ(error_of(name), bad) << "accepted or misreported \"" << name << "\"";
}

TEST(SlotName, EveryByteValue) {
    for (int ch = 0; ch < 256; ++ch) {
        const char c = static_cast<char>(ch);
        const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        const std::string name = std::string("s") + c + "t";
        EXPECT_EQ(check(name) == nullptr, ok) << "byte " << ch;
    }
}

TEST(SlotName, HonoursStringViewLength) {
    const char text[] = "good_nameBAD";
    EXPECT_EQ(slot_name_error(std::string_view(text, 9)), nullptr);
    EXPECT_NE(slot_name_error(std::string_view(text, 10)), nullptr);
}

}  // namespace
