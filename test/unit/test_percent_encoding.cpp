// percent_encoding.hpp and sql_name.hpp: the helpers shared by the credential,
// snapshot-request and subscription-query parsers.
#include "protocol/percent_encoding.hpp"
#include "protocol/sql_name.hpp"

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

namespace {

using namespace pgcdcws::protocol;

TEST(PercentEncoding, Decode) {
    std::string out;
    EXPECT_TRUE(percent_decode("a%3Ab%3ac%25+", out));
    EXPECT_EQ(out, "a:b:c%+");
    EXPECT_TRUE(percent_decode("", out));
    EXPECT_EQ(out, "");
    EXPECT_TRUE(percent_decode("%00", out));
    EXPECT_EQ(out, std::string(1, '\0'));
    for (const char *bad : {"%", "%4", "a%", "%G0", "%0G", "%%41"})
        EXPECT_FALSE(percent_decode(bad, out)) << bad;
    EXPECT_TRUE(percent_decode("%G0a%4", out, true));  // lenient keeps malformed escapes
    EXPECT_EQ(out, "%G0a%4");
}

TEST(PercentEncoding, EscapeRoundTrips) {
    std::string all, escaped, back;
    for (int c = 0; c < 256; c++) {
        all.push_back(static_cast<char>(c));
        append_percent_escape(escaped, static_cast<unsigned char>(c));
    }
    EXPECT_EQ(escaped.substr(0, 9), "%00%01%02");
    EXPECT_EQ(escaped.substr(escaped.size() - 3), "%FF");
    ASSERT_TRUE(percent_decode(escaped, back));
    EXPECT_EQ(back, all);
}

TEST(PercentEncoding, QueryParametersInOrderWithoutDecoding) {
    std::vector<std::tuple<std::string, std::string, bool>> seen;
    auto collect = [&](std::string_view name, std::string_view value, bool has_value) {
        seen.emplace_back(std::string(name), std::string(value), has_value);
        return true;
    };
    for_each_query_parameter("a=1&b&c=&%64=x%3Dy=z&", collect);
    const std::vector<std::tuple<std::string, std::string, bool>> expected = {
        {"a", "1", true}, {"b", "", false}, {"c", "", true}, {"%64", "x%3Dy=z", true}, {"", "", false}};
    EXPECT_EQ(seen, expected);

    seen.clear();
    for_each_query_parameter("", collect);
    EXPECT_EQ(seen.size(), 1u);  // one empty parameter

    int calls = 0;
    for_each_query_parameter("a&b&c", [&](std::string_view, std::string_view, bool) { return ++calls < 2; });
    EXPECT_EQ(calls, 2);  // stops when the visitor returns false
}

TEST(SqlName, SplitFoldsUnquotedAndKeepsQuoted) {
    std::vector<std::string> parts;
    ASSERT_EQ(split_sql_name(" Public . \"Order \"\"Items\"\" \" ", parts), nullptr);
    EXPECT_EQ(parts, (std::vector<std::string>{"public", "Order \"Items\" "}));
    ASSERT_EQ(split_sql_name("a.b.c.d", parts), nullptr);  // callers cap the number of parts
    EXPECT_EQ(parts.size(), 4u);
    ASSERT_EQ(split_sql_name("\xC3\x89t\xC3\xA9$1", parts), nullptr);  // non-ASCII is not folded
    EXPECT_EQ(parts, std::vector<std::string>{"\xC3\x89t\xC3\xA9$1"});
    EXPECT_STREQ(split_sql_name("", parts), "empty name");
    EXPECT_STREQ(split_sql_name("a.", parts), "a name may not end with a dot");
    EXPECT_STREQ(split_sql_name("\"a", parts), "unterminated quoted identifier");
    EXPECT_STREQ(split_sql_name("\"\"", parts), "zero-length quoted identifier");
    EXPECT_STREQ(split_sql_name("$a", parts), "a name must start with a letter or underscore (quote it otherwise)");
    EXPECT_STREQ(split_sql_name("a b", parts), "unexpected character in name (quote identifiers that contain it)");
}

TEST(SqlName, QuoteOnlyWhereNeeded) {
    EXPECT_EQ(quote_sql_identifier("orders_2$"), "orders_2$");
    EXPECT_EQ(quote_sql_identifier("\xC3\xA9t\xC3\xA9"), "\xC3\xA9t\xC3\xA9");
    EXPECT_EQ(quote_sql_identifier("Orders"), "\"Orders\"");
    EXPECT_EQ(quote_sql_identifier("1st"), "\"1st\"");
    EXPECT_EQ(quote_sql_identifier("a.b"), "\"a.b\"");
    EXPECT_EQ(quote_sql_identifier("say \"hi\""), "\"say \"\"hi\"\"\"");
    EXPECT_EQ(quote_sql_identifier(""), "\"\"");
    // Whatever it writes reads back as the same single identifier.
    for (const char *name : {"orders", "Orders", "1st", "a.b", "say \"hi\"", " x ", "$", "_"}) {
        std::vector<std::string> parts;
        ASSERT_EQ(split_sql_name(quote_sql_identifier(name), parts), nullptr) << name;
        EXPECT_EQ(parts, std::vector<std::string>{name});
    }
}

}  // namespace
