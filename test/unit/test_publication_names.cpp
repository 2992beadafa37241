// Publication lists: the publication= parameter, cdc_init()'s publication
// argument and the canonical form (src/protocol/publication_names.cpp).
#include "protocol/publication_names.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace proto = pgcdcws::protocol;
using pgcdcws::test::ExactBuffer;
using Names = std::vector<std::string>;
using Quoting = proto::PublicationQuoting;

struct Written {
    const char *error;
    std::string text;
};

Written write(std::string_view text, Quoting quoting = Quoting::Always) {
    ExactBuffer buf(text);
    char out[proto::kMaxPublicationListBytes + 1];
    std::memset(out, 'x', sizeof out);
    const char *error = proto::publication_list_write(buf.view(), quoting, out);
    return {error, out};
}

// The names of `text` read as a list, through the canonical form.
Names names(std::string_view text) {
    const Written w = write(text);
    EXPECT_EQ(w.error, nullptr) << text;
    ExactBuffer buf(w.text);
    return proto::publication_list_names(buf.view());
}

proto::PublicationParameter from_query(std::string_view query) {
    ExactBuffer buf(query);
    return proto::publications_from_query(buf.view());
}

// SplitIdentifierString's reading, case by case.
TEST(PublicationNames, ReadAsPostgresReadsPublicationNames) {
    EXPECT_EQ(names("a"), (Names{"a"}));
    EXPECT_EQ(names("a,b"), (Names{"a", "b"}));
    EXPECT_EQ(names("  a ,\tb\n,\r\fc  "), (Names{"a", "b", "c"}));  // spaces around names
    EXPECT_EQ(names("Orders,AUDIT"), (Names{"orders", "audit"}));      // unquoted: lower case
    EXPECT_EQ(names("\"Orders\",\"AUDIT\""), (Names{"Orders", "AUDIT"}));  // quoted: as written
    EXPECT_EQ(names("\"my pub\""), (Names{"my pub"}));
    EXPECT_EQ(names("\"a,b\",c"), (Names{"a,b", "c"}));  // a comma inside quotes
    EXPECT_EQ(names("\"x\"\"y\""), (Names{"x\"y"}));     // "" is one quote
    EXPECT_EQ(names("\"\"\"\""), (Names{"\""}));
    EXPECT_EQ(names("a\"b"), (Names{"a\"b"}));  // a quote inside an unquoted name is a character
    EXPECT_EQ(names("ÉtÉ"), (Names{"ÉtÉ"}));    // only ASCII letters fold (a UTF-8 database)
    EXPECT_EQ(names("a\vb"), (Names{"a\vb"}));  // \v is no space to PostgreSQL 15
    EXPECT_EQ(names("a,a"), (Names{"a", "a"}));  // repeated: harmless, as for Postgres
    EXPECT_EQ(names("1x,$y,x.y"), (Names{"1x", "$y", "x.y"}));
}

TEST(PublicationNames, CanonicalFormQuotesEveryName) {
    EXPECT_EQ(write("a").text, "\"a\"");
    EXPECT_EQ(write(" Orders , \"My Pub\" ").text, "\"orders\",\"My Pub\"");
    EXPECT_EQ(write("\"x\"\"y\",\"a,b\"").text, "\"x\"\"y\",\"a,b\"");
    // Reading the canonical form again gives it back.
    const std::string canonical = write("a, \"B c\", \"d\"\"e\"").text;
    EXPECT_EQ(write(canonical).text, canonical);
}

TEST(PublicationNames, QuotesWhenNeeded) {
    EXPECT_EQ(write("Orders, audit_2", Quoting::WhenNeeded).text, "orders,audit_2");
    EXPECT_EQ(write("\"Orders\",\"my pub\",\"x\"\"y\",\"a.b\"", Quoting::WhenNeeded).text,
              "\"Orders\",\"my pub\",\"x\"\"y\",\"a.b\"");
    EXPECT_EQ(write("\"é\"", Quoting::WhenNeeded).text, "\"é\"");
}

TEST(PublicationNames, Errors) {
    const struct {
        std::string text;
        const char *error;
    } cases[] = {
        {"", "the publication list is empty"},
        {"  \t ", "the publication list is empty"},
        {",", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {"a,", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {",a", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {"a,,b", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {"a, ,b", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {"\"\"", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {"a,\"\"", "a publication name is empty (two commas in a row, a comma at an end, or \"\")"},
        {"\"abc", "a quoted publication name has no closing double quote"},
        {"a,\"b\"\"", "a quoted publication name has no closing double quote"},
        {"\"", "a quoted publication name has no closing double quote"},
        {"my pub", "publication names must be separated by commas (quote a name that holds spaces: \"my pub\")"},
        {"\"a\"b", "publication names must be separated by commas (quote a name that holds spaces: \"my pub\")"},
        {"\"a\" \"b\"", "publication names must be separated by commas (quote a name that holds spaces: \"my pub\")"},
        {std::string(64, 'p'), "a publication name is longer than 63 bytes (Postgres would truncate it)"},
        {"\"" + std::string(64, 'P') + "\"", "a publication name is longer than 63 bytes (Postgres would truncate it)"},
        {std::string("a\0b", 3), "a publication name contains a NUL byte"},
        {"a,\xff", "the publication list is not valid UTF-8"},
        {"\xc3", "the publication list is not valid UTF-8"},
        {std::string(4097, ' ') + "a", "the publication list is longer than 4096 bytes"},
    };
    for (const auto &c : cases) {
        const Written w = write(c.text);
        EXPECT_STREQ(w.error, c.error) << c.text;
        EXPECT_EQ(w.text, "") << c.text;
    }
}

TEST(PublicationNames, Limits) {
    // 63 bytes is the longest name, counted in bytes (quotes doubled inside count once).
    EXPECT_EQ(names(std::string(63, 'p')), (Names{std::string(63, 'p')}));
    EXPECT_EQ(names("\"" + std::string(62, 'p') + "\"\"\""), (Names{std::string(62, 'p') + "\""}));
    EXPECT_EQ(names(std::string(21, 'x') + "é" + std::string(40, 'y')).size(), 1u);  // 63 bytes
    EXPECT_NE(write(std::string(22, 'x') + "é" + std::string(40, 'y')).error, nullptr);  // 64 bytes
    // 64 names; 65 is too many.
    std::string list;
    for (int i = 0; i < 64; i++)
        list += (i ? ",p" : "p") + std::to_string(i);
    EXPECT_EQ(names(list).size(), 64u);
    EXPECT_STREQ(write(list + ",p64").error, "more than 64 publications");
    // 1024 bytes of names together; 1025 is too many. 16 names of 63 bytes and one of 16.
    std::string long_list;
    for (int i = 0; i < 16; i++)
        long_list += std::string(62, 'a' + i) + "x,";
    EXPECT_EQ(names(long_list + std::string(16, 'z')).size(), 17u);
    EXPECT_STREQ(write(long_list + std::string(17, 'z')).error,
                 "the publication names are longer than 1024 bytes together");
}

TEST(PublicationNames, LongestCanonicalListFits) {
    // 16 names of 63 quotes (each doubled) and one of 16: 1024 bytes of names.
    std::string list;
    for (int i = 0; i < 16; i++)
        list += "\"" + std::string(126, '"') + "\",";
    list += "\"" + std::string(32, '"') + "\"";
    ASSERT_LE(list.size(), proto::kMaxPublicationTextBytes);
    const Written w = write(list);
    ASSERT_EQ(w.error, nullptr);
    EXPECT_EQ(w.text, list);
    EXPECT_LE(w.text.size(), proto::kMaxPublicationListBytes);
    // 64 names whose bytes are all quotes would be longer still, but 64 x 16 bytes is the limit.
    std::string many;
    for (int i = 0; i < 64; i++)
        many += std::string(i ? "," : "") + "\"" + std::string(32, '"') + "\"";
    const Written m = write(many);
    ASSERT_EQ(m.error, nullptr);
    EXPECT_EQ(m.text.size(), 64u * 34 + 63);
    EXPECT_LE(m.text.size(), proto::kMaxPublicationListBytes);
}

TEST(PublicationNames, NextWalksCanonicalAndRawLists) {
    char name[proto::kMaxPublicationNameBytes + 1];
    std::size_t pos = 0;
    const std::string list = "\"a\",\"B c\"";
    ASSERT_TRUE(proto::publication_list_next(list, &pos, name));
    EXPECT_STREQ(name, "a");
    ASSERT_TRUE(proto::publication_list_next(list, &pos, name));
    EXPECT_STREQ(name, "B c");
    EXPECT_FALSE(proto::publication_list_next(list, &pos, name));
    EXPECT_FALSE(proto::publication_list_next(list, &pos, name));
    pos = 0;
    EXPECT_FALSE(proto::publication_list_next("", &pos, name));
    EXPECT_EQ(proto::publication_list_names(" x , Y "), (Names{"x", "y"}));
}

TEST(PublicationNames, QueryParameterAbsent) {
    for (const char *query : {"", "slotName=s", "publications=a", "publicatio=a", "Publication=a", "pub=a"}) {
        const auto p = from_query(query);
        EXPECT_TRUE(p.ok) << query;
        EXPECT_FALSE(p.list.has_value()) << query;
    }
}

TEST(PublicationNames, QueryParameterDecodedOnce) {
    auto p = from_query("slotName=s&publication=orders,audit");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "\"orders\",\"audit\"");
    p = from_query("publication=%22My%20Pub%22%2CB&slotName=s");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "\"My Pub\",\"b\"");
    p = from_query("publication=%22a%2Cb%22");
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(proto::publication_list_names(*p.list), (Names{"a,b"}));
    p = from_query("publication=a+b");  // '+' is a plus, not a space
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "\"a+b\"");
    p = from_query("public%61tion=a");  // an encoded name counts
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.list, "\"a\"");
}

TEST(PublicationNames, QueryParameterErrors) {
    const struct {
        std::string query;
        const char *error;
    } cases[] = {
        {"publication=a&publication=b", "publication given more than once in the query string"},
        {"publication=a&slotName=s&publication=a", "publication given more than once in the query string"},
        {"publication=", "publication parameter without a value (omit it for the slot's default, set by cdc_init())"},
        {"publication", "publication parameter without a value (omit it for the slot's default, set by cdc_init())"},
        {"publication=a%2", "publication parameter has a malformed %-escape"},
        {"publication=%20", "invalid publication parameter: the publication list is empty"},
        {"publication=a,,b",
         "invalid publication parameter: a publication name is empty (two commas in a row, a comma at an end, or "
         "\"\")"},
        {"publication=%22a", "invalid publication parameter: a quoted publication name has no closing double quote"},
        {"publication=a%00", "invalid publication parameter: a publication name contains a NUL byte"},
        {"publication=%FF", "invalid publication parameter: the publication list is not valid UTF-8"},
        {"publication=" + std::string(64, 'p'),
         "invalid publication parameter: a publication name is longer than 63 bytes (Postgres would truncate it)"},
        {"publication=" + std::string(3 * 4096 + 1, 'p'), "publication parameter too long: at most 4096 bytes"},
    };
    for (const auto &c : cases) {
        const auto p = from_query(c.query);
        EXPECT_FALSE(p.ok) << c.query;
        EXPECT_EQ(p.error, c.error) << c.query;
        EXPECT_FALSE(p.list.has_value()) << c.query;
    }
}

}  // namespace
