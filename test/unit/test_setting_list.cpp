// setting_list_contains (src/protocol/setting_list.cpp).
#include "protocol/setting_list.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using pgcdcws::protocol::setting_list_contains;
using pgcdcws::test::ExactBuffer;

bool contains(std::string_view list, std::string_view name) {
    ExactBuffer l(list), n(name);
    return setting_list_contains(l.view(), n.view());
}

TEST(SettingList, FindsItems) {
    EXPECT_TRUE(contains("pgcdcws", "pgcdcws"));
    EXPECT_TRUE(contains("pgoutput, test_decoding, \"pgcdcws\"", "pgcdcws"));
    EXPECT_TRUE(contains("pgoutput, test_decoding, \"pgcdcws\"", "pgoutput"));
    EXPECT_TRUE(contains("pgoutput, test_decoding, \"pgcdcws\"", "test_decoding"));
    EXPECT_TRUE(contains("pgcdcws,pgoutput", "pgcdcws"));
    EXPECT_TRUE(contains("a,b,pgcdcws", "pgcdcws"));
}

TEST(SettingList, IgnoresSpaceAroundItems) {
    EXPECT_TRUE(contains("  pgcdcws  ", "pgcdcws"));
    EXPECT_TRUE(contains("a ,\tpgcdcws\t, b", "pgcdcws"));
    EXPECT_TRUE(contains("a,\n pgcdcws\r\n", "pgcdcws"));
    EXPECT_TRUE(contains("a,  \"pgcdcws\"  ,b", "pgcdcws"));
}

TEST(SettingList, UnquotedItemsAreCaseInsensitive) {
    EXPECT_TRUE(contains("PGCDCWS", "pgcdcws"));
    EXPECT_TRUE(contains("a, PgCdcWs", "pgcdcws"));
}

TEST(SettingList, QuotedItemsAreExact) {
    EXPECT_FALSE(contains("\"PGCDCWS\"", "pgcdcws"));
    EXPECT_FALSE(contains("\" pgcdcws\"", "pgcdcws"));   // space inside quotes is kept
    EXPECT_FALSE(contains("\"pgcdcws \"", "pgcdcws"));
    EXPECT_TRUE(contains("\"Mixed Case\"", "Mixed Case"));
}

TEST(SettingList, NoPartialOrMalformedMatches) {
    const char *cases[] = {
        "",
        " ",
        ",",
        "pgcdcws2",
        "xpgcdcws",
        "pgcdcw",
        "pg cdcws",
        "pgcdcws;",
        "\"pgcdcws",
        "pgcdcws\"",
        "\"pgcdcws\"x",
        "'pgcdcws'",
        "pgoutput test_decoding pgcdcws",
        "pgoutput;pgcdcws",
    };
    for (const char *list : cases)
        EXPECT_FALSE(contains(list, "pgcdcws")) << "list: \"" << list << "\"";
}

TEST(SettingList, EmptyItems) {
    EXPECT_TRUE(contains(",,pgcdcws,,", "pgcdcws"));
    EXPECT_FALSE(contains(",,", "pgcdcws"));
    EXPECT_FALSE(contains("\"\"", "pgcdcws"));
}

TEST(SettingList, HonoursStringViewLength) {
    const char list[] = "a, pgcdcwsX";
    EXPECT_TRUE(setting_list_contains(std::string_view(list, 10), "pgcdcws"));
    EXPECT_FALSE(setting_list_contains(std::string_view(list, 11), "pgcdcws"));
    EXPECT_FALSE(setting_list_contains(std::string_view(list, 9), "pgcdcws"));
}

}  // namespace

// Postgres list syntax: a quote only quotes when it opens an item, and a quoted
// item may contain commas; a list Postgres would reject contains nothing.
TEST(SettingList, QuotesFollowPostgresListSyntax) {
    using pgcdcws::protocol::setting_list_contains;
    EXPECT_FALSE(setting_list_contains("\"x, pgcdcws ,y\"", "pgcdcws"));
    EXPECT_TRUE(setting_list_contains("pgoutput, \"pgcdcws\"", "pgcdcws"));
    EXPECT_TRUE(setting_list_contains("a\"b, pgcdcws", "pgcdcws"));
    EXPECT_TRUE(setting_list_contains("\"pg\"\"cdcws\", x", "pg\"cdcws"));
    EXPECT_FALSE(setting_list_contains("\"pgcdcws\" trailing, x", "pgcdcws"));
    EXPECT_FALSE(setting_list_contains("pgcdcws, \"unterminated", "pgcdcws"));
    EXPECT_TRUE(setting_list_contains("pgoutput,\f pgcdcws", "pgcdcws"));
}

// The ALTER SYSTEM form: one literal per item, so that ALTER SYSTEM stores a
// list (a single literal with commas would be stored as one quoted item).
TEST(SettingList, AlterSystemValueKeepsItemsAndAddsOne) {
    using pgcdcws::protocol::setting_list_alter_system_value;
    EXPECT_EQ(setting_list_alter_system_value("pgoutput, test_decoding", "pgcdcws"),
              "'pgoutput', 'test_decoding', 'pgcdcws'");
    EXPECT_EQ(setting_list_alter_system_value("pgoutput, wal2json, test_decoding", "pgcdcws"),
              "'pgoutput', 'wal2json', 'test_decoding', 'pgcdcws'");
    EXPECT_EQ(setting_list_alter_system_value("", "pgcdcws"), "'pgcdcws'");
    EXPECT_EQ(setting_list_alter_system_value("pgcdcws", "pgcdcws"), "'pgcdcws'");
    EXPECT_EQ(setting_list_alter_system_value("\"My Lib\", PGOUTPUT", "pgcdcws"),
              "'My Lib', 'pgoutput', 'pgcdcws'");
    EXPECT_EQ(setting_list_alter_system_value("\"it's\"", "pgcdcws"), "'it''s', 'pgcdcws'");
    EXPECT_EQ(setting_list_alter_system_value("\"unterminated", "pgcdcws"), "'pgcdcws'");
}

TEST(SettingList, ItemsFoldUnquotedAndKeepQuoted) {
    using pgcdcws::protocol::setting_list_items;
    const auto items = setting_list_items(" PgOutput , \"Test_Decoding\",,x ");
    ASSERT_TRUE(items.has_value());
    EXPECT_EQ(*items, (std::vector<std::string>{"pgoutput", "Test_Decoding", "x"}));
    EXPECT_FALSE(setting_list_items("\"a\" b").has_value());
}
