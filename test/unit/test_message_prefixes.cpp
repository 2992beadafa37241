// The messages= parameter and prefix lists (src/protocol/message_prefixes.cpp).
#include "protocol/message_prefixes.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace proto = pgcdcws::protocol;
using pgcdcws::test::ExactBuffer;
using Items = std::vector<std::string>;

const char *list_error(std::string_view list) {
    ExactBuffer buf(list);
    return proto::message_prefix_list_error(buf.view());
}

bool listed(std::string_view list, std::string_view prefix) {
    ExactBuffer l(list), p(prefix);
    return proto::message_prefix_listed(l.view(), p.view());
}

proto::MessagePrefixParameter from_query(std::string_view query) {
    ExactBuffer buf(query);
    return proto::message_prefixes_from_query(buf.view());
}

TEST(MessagePrefixes, ValidLists) {
    for (const char *list : {"a", "a,b", "audit,watermark", "with space", " lead", "trail ", "a\\,b", "\\\\",
                             "\\,", "x\\\\,y", "ünïcødé,🙂", "a.b:c/d%e"})
        EXPECT_EQ(list_error(list), nullptr) << list;
}

TEST(MessagePrefixes, InvalidLists) {
    EXPECT_STREQ(list_error(""), "the prefix list is empty");
    for (const char *list : {",", "a,", ",a", "a,,b", "a,b,"})
        EXPECT_STREQ(list_error(list), "a prefix is empty (two commas in a row, or one at an end)") << list;
    for (const char *list : {"\\", "a\\", "a\\b", "\\n", "a,\\"})
        EXPECT_NE(std::string(list_error(list)).find("backslash"), std::string::npos) << list;
    EXPECT_STREQ(list_error(std::string("a\0b", 3)), "a prefix contains a NUL byte");
    EXPECT_STREQ(list_error("a,\xff"), "the prefix list is not valid UTF-8");
    EXPECT_STREQ(list_error("\xc3"), "the prefix list is not valid UTF-8");  // cut in a character
    EXPECT_EQ(list_error(std::string(1024, 'p')), nullptr);
    EXPECT_STREQ(list_error(std::string(1025, 'p')), "the prefix list is longer than 1024 bytes");
}

TEST(MessagePrefixes, Items) {
    EXPECT_EQ(proto::message_prefix_items("a,b"), (Items{"a", "b"}));
    EXPECT_EQ(proto::message_prefix_items("a\\,b,c"), (Items{"a,b", "c"}));
    EXPECT_EQ(proto::message_prefix_items("x\\\\,y"), (Items{"x\\", "y"}));
    EXPECT_EQ(proto::message_prefix_items("\\\\\\,"), (Items{"\\,"}));
    EXPECT_EQ(proto::message_prefix_items(" a , b "), (Items{" a ", " b "}));  // spaces are part of a prefix
}

TEST(MessagePrefixes, ListedComparesWholePrefixesExactly) {
    EXPECT_TRUE(listed("audit,watermark", "audit"));
    EXPECT_TRUE(listed("audit,watermark", "watermark"));
    EXPECT_FALSE(listed("audit,watermark", "audi"));      // not a prefix match
    EXPECT_FALSE(listed("audit,watermark", "audits"));
    EXPECT_FALSE(listed("audit,watermark", "Audit"));     // no case folding
    EXPECT_FALSE(listed("audit,watermark", ""));
    EXPECT_FALSE(listed("audit,watermark", "audit,watermark"));
    EXPECT_TRUE(listed("a\\,b,c", "a,b"));
    EXPECT_FALSE(listed("a\\,b,c", "a"));
    EXPECT_FALSE(listed("a\\,b,c", "b"));
    EXPECT_TRUE(listed("x\\\\,y", "x\\"));
    EXPECT_FALSE(listed("x\\\\,y", "x\\\\"));
    EXPECT_TRUE(listed("ünïcødé,🙂", "🙂"));
}

TEST(MessagePrefixes, QueryParameterAbsent) {
    for (const char *query : {"", "slotName=s", "slotName=s&message=a", "messagesx=a", "Messages=a"}) {
        const auto p = from_query(query);
        EXPECT_TRUE(p.ok) << query;
        EXPECT_FALSE(p.list.has_value()) << query;
    }
}

TEST(MessagePrefixes, QueryParameterDecodedOnce) {
    auto p = from_query("slotName=s&messages=audit,watermark");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "audit,watermark");
    // A client that URL-encodes the whole value sends the comma as %2C: still a separator.
    p = from_query("messages=audit%2Cwatermark&slotName=s");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "audit,watermark");
    // A comma inside a prefix is escaped with a backslash (%5C once encoded).
    p = from_query("messages=a%5C%2Cb,c");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(proto::message_prefix_items(*p.list), (Items{"a,b", "c"}));
    p = from_query("messages=%F0%9F%99%82");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "🙂");
    p = from_query("m%65ssages=a");  // an encoded name counts
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "a");
    p = from_query("messages=a+b");  // '+' is a plus, not a space
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "a+b");
}

TEST(MessagePrefixes, QueryParameterErrors) {
    const struct {
        const char *query;
        const char *error;
    } cases[] = {
        {"messages=a&messages=b", "messages given more than once in the query string"},
        {"messages=", "messages parameter without a value (omit it to receive every message)"},
        {"messages", "messages parameter without a value (omit it to receive every message)"},
        {"messages=a%2", "messages parameter has a malformed %-escape"},
        {"messages=%zz", "messages parameter has a malformed %-escape"},
        {"messages=a,,b", "invalid messages parameter: a prefix is empty (two commas in a row, or one at an end)"},
        {"messages=%2C", "invalid messages parameter: a prefix is empty (two commas in a row, or one at an end)"},
        {"messages=a%00", "invalid messages parameter: a prefix contains a NUL byte"},
        {"messages=%FF", "invalid messages parameter: the prefix list is not valid UTF-8"},
    };
    for (const auto &c : cases) {
        const auto p = from_query(c.query);
        EXPECT_FALSE(p.ok) << c.query;
        EXPECT_EQ(p.error, c.error) << c.query;
        EXPECT_FALSE(p.list.has_value()) << c.query;
    }
    auto p = from_query("messages=a%5C");
    EXPECT_FALSE(p.ok);
    EXPECT_NE(p.error.find("backslash"), std::string::npos) << p.error;
    p = from_query("messages=" + std::string(1025, 'p'));
    EXPECT_FALSE(p.ok);
    EXPECT_EQ(p.error, "invalid messages parameter: the prefix list is longer than 1024 bytes");
    p = from_query("messages=" + std::string(3 * 1024 + 1, 'p'));
    EXPECT_EQ(p.error, "messages parameter too long: at most 1024 bytes");
    // 1024 bytes once decoded is the limit, however it was encoded.
    std::string encoded;
    for (int i = 0; i < 1024; i++)
        encoded += "%70";
    p = from_query("messages=" + encoded);
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, std::string(1024, 'p'));
}

}  // namespace
