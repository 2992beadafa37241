// parse_snapshot_request (src/protocol/snapshot_request.cpp): the JSON body of
// POST /v1/snapshot/data (docs/PROTOCOL.md, "Snapshot data").
#include "protocol/snapshot_request.hpp"

#include "protocol/http_response.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

namespace {

using namespace std::string_literals;
using pgcdcws::protocol::json_error_body;
using pgcdcws::protocol::kDefaultSnapshotLimit;
using pgcdcws::protocol::kMaxAfterValueText;
using pgcdcws::protocol::kMaxSnapshotRequestSize;
using pgcdcws::protocol::kMaxTableNameText;
using pgcdcws::protocol::parse_snapshot_request;
using pgcdcws::protocol::ParsedSnapshotRequest;
using pgcdcws::protocol::SnapshotRequest;
using pgcdcws::test::ExactBuffer;

constexpr std::int64_t kMaxRows = 10000;  // pgcdcws.snapshot_max_rows' default

// Parses from an exactly-sized heap buffer (no NUL after it) so an over-read is an ASan error.
ParsedSnapshotRequest parse(std::string_view text, std::int64_t max_rows = kMaxRows) {
    ExactBuffer buf(text);
    return parse_snapshot_request(buf.data(), buf.size(), max_rows);
}

// {"slotName": "s", "table": "t", <extra>}
std::string body(std::string_view extra = {}) {
    std::string b = R"({"slotName": "s", "table": "t")";
    if (!extra.empty()) {
        b += ", ";
        b += extra;
    }
    b += "}";
    return b;
}

// Accepted; *out receives the request.
::testing::AssertionResult Accepted(std::string_view text, SnapshotRequest *out = nullptr,
                                    std::int64_t max_rows = kMaxRows) {
    const ParsedSnapshotRequest r = parse(text, max_rows);
    if (!r.ok)
        return ::testing::AssertionFailure() << "rejected: " << r.error << "\n  body: " << text;
    if (!r.error.empty())
        return ::testing::AssertionFailure() << "accepted with an error text: " << r.error;
    if (out)
        *out = r.request;
    return ::testing::AssertionSuccess();
}

// Rejected with an error containing `needle`, usable as the message of a 400 reply.
::testing::AssertionResult Rejected(std::string_view text, std::string_view needle,
                                    std::int64_t max_rows = kMaxRows) {
    const ParsedSnapshotRequest r = parse(text, max_rows);
    if (r.ok)
        return ::testing::AssertionFailure() << "accepted: " << text;
    if (r.error.find(needle) == std::string::npos)
        return ::testing::AssertionFailure() << "error \"" << r.error << "\" does not mention \"" << needle
                                             << "\"\n  body: " << text;
    if (!pgcdcws::test::is_valid_utf8(r.error))
        return ::testing::AssertionFailure() << "error text is not valid UTF-8";
    std::string round;
    if (!pgcdcws::test::error_body_message(json_error_body(r.error), round) || round != r.error)
        return ::testing::AssertionFailure() << "error text does not round-trip through json_error_body";
    return ::testing::AssertionSuccess();
}

std::string after_of(std::string_view after_json) {
    SnapshotRequest q;
    const std::string b = body(R"("order_by": {"column": "id"}, "after": )" + std::string(after_json));
    EXPECT_TRUE(Accepted(b, &q));
    EXPECT_TRUE(q.has_after) << b;
    return q.after;
}

// ---- accepted --------------------------------------------------------------

TEST(SnapshotRequest, MinimalBodyGetsDefaults) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(R"({"slotName":"s","table":"t"})", &q));
    EXPECT_EQ(q.slot_name, "s");
    EXPECT_EQ(q.table, "t");
    EXPECT_EQ(q.offset, 0);
    EXPECT_EQ(q.limit, 100);
    EXPECT_EQ(kDefaultSnapshotLimit, 100);
    EXPECT_FALSE(q.has_order);
    EXPECT_EQ(q.order_column, "");
    EXPECT_FALSE(q.descending);
    EXPECT_FALSE(q.has_after);
    EXPECT_EQ(q.after, "");
}

TEST(SnapshotRequest, ProtocolDocExample) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(R"({"slotName": "orders_feed", "table": "public.orders", "offset": 0, "limit": 100,
 "order_by": {"column": "id", "order": "asc"}})",
                         &q));
    EXPECT_EQ(q.slot_name, "orders_feed");
    EXPECT_EQ(q.table, "public.orders");
    EXPECT_EQ(q.offset, 0);
    EXPECT_EQ(q.limit, 100);
    EXPECT_TRUE(q.has_order);
    EXPECT_EQ(q.order_column, "id");
    EXPECT_FALSE(q.descending);
    EXPECT_FALSE(q.has_after);
}

TEST(SnapshotRequest, KeysetPagingDocExample) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(R"({"slotName": "s", "table": "orders", "limit": 1000, "order_by": {"column": "id"}, "after": 1000})",
                         &q));
    EXPECT_EQ(q.slot_name, "s");
    EXPECT_EQ(q.table, "orders");
    EXPECT_EQ(q.offset, 0);
    EXPECT_EQ(q.limit, 1000);
    EXPECT_TRUE(q.has_order);
    EXPECT_EQ(q.order_column, "id");
    EXPECT_FALSE(q.descending);  // order defaults to asc
    EXPECT_TRUE(q.has_after);
    EXPECT_EQ(q.after, "1000");
}

TEST(SnapshotRequest, AllFieldsAnyOrderAnyWhitespace) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(" \r\n\t{ \"after\" : \"x\" ,\n\"order_by\":{\"order\":\"DESC\",\"column\":\"Created At\"},"
                         "\"limit\":7,\"offset\":9223372036854775807,\"table\":\"a.b\",\"slotName\":\"slot_1\"} \n",
                         &q));
    EXPECT_EQ(q.slot_name, "slot_1");
    EXPECT_EQ(q.table, "a.b");
    EXPECT_EQ(q.offset, std::numeric_limits<std::int64_t>::max());
    EXPECT_EQ(q.limit, 7);
    EXPECT_TRUE(q.has_order);
    EXPECT_EQ(q.order_column, "Created At");  // as stored: case and spaces kept
    EXPECT_TRUE(q.descending);
    EXPECT_TRUE(q.has_after);
    EXPECT_EQ(q.after, "x");
}

TEST(SnapshotRequest, TableTextIsKeptAsWritten) {
    // Only the syntax is checked here; the worker parses and resolves the name.
    const std::pair<const char *, std::string> cases[] = {
        {R"("orders")", "orders"},
        {R"("Orders")", "Orders"},  // unquoted: Postgres folds it, not the parser
        {R"("public.orders")", "public.orders"},
        {R"("db.public.orders")", "db.public.orders"},
        {R"(" public . orders ")", " public . orders "},
        {R"("_t$1")", "_t$1"},
        {R"("\"My Schema\".\"Mixed Case\"")", "\"My Schema\".\"Mixed Case\""},
        {R"("\"t; drop table x\"")", "\"t; drop table x\""},  // a (strange) quoted name
        {R"("\"a\"\"b\"")", "\"a\"\"b\""},
        {R"("caf\u00e9")", "caf\xC3\xA9"},
        {"\"caf\xC3\xA9\"", "caf\xC3\xA9"},
    };
    for (const auto &c : cases) {
        SnapshotRequest q;
        ASSERT_TRUE(Accepted(R"({"slotName":"s","table":)" + std::string(c.first) + "}", &q));
        EXPECT_EQ(q.table, c.second);
    }
}

TEST(SnapshotRequest, TableAtMaxLength) {
    SnapshotRequest q;
    const std::string table(kMaxTableNameText, 'x');
    ASSERT_EQ(kMaxTableNameText, 1024u);
    ASSERT_TRUE(Accepted(R"({"slotName":"s","table":")" + table + "\"}", &q));
    EXPECT_EQ(q.table, table);
}

// qualified_name_error: the SQL name syntax "table" must follow (1-3 dotted parts, each an
// unquoted identifier or a "double quoted" one).
TEST(QualifiedName, Valid) {
    const std::string cases[] = {
        "t", "T", "_", "a$", "a1", "_1$x", "\xC3\xA4", "\xE6\x97\xA5\xE6\x9C\xAC", "a.b", "a.b.c", " a . b ",
        "\t a\r\n.\nb", "\"a.b\".c", "\"My Schema\".\"Mixed Case\"", "\"\"\"\"", "\"1\"", "\" \"", "\";\"",
        "a.\"b\".c", std::string(1024, 'x'),
    };
    for (const auto &name : cases)
        EXPECT_EQ(pgcdcws::protocol::qualified_name_error(name), nullptr) << name;
}

TEST(QualifiedName, Invalid) {
    const std::pair<std::string, const char *> cases[] = {
        {"", "empty name"},
        {" ", "empty name"},
        {"\t\r\n", "empty name"},
        {"a.", "a name may not end with a dot"},
        {"a.b. ", "a name may not end with a dot"},
        {"\"a", "unterminated quoted identifier"},
        {"a.\"b\"\"", "unterminated quoted identifier"},
        {"\"\"", "zero-length quoted identifier"},
        {"a.\"\"", "zero-length quoted identifier"},
        {"1t", "a name must start with a letter or underscore (quote it otherwise)"},
        {"$a", "a name must start with a letter or underscore (quote it otherwise)"},
        {".a", "a name must start with a letter or underscore (quote it otherwise)"},
        {"a..b", "a name must start with a letter or underscore (quote it otherwise)"},
        {"a.1", "a name must start with a letter or underscore (quote it otherwise)"},
        {"(select 1)", "a name must start with a letter or underscore (quote it otherwise)"},
        {"t; drop table x", "unexpected character in name (quote identifiers that contain it)"},
        {"t union select 1", "unexpected character in name (quote identifiers that contain it)"},
        {"pg_sleep(5)", "unexpected character in name (quote identifiers that contain it)"},
        {"a b", "unexpected character in name (quote identifiers that contain it)"},
        {"a-b", "unexpected character in name (quote identifiers that contain it)"},
        {"\"a\"b", "unexpected character in name (quote identifiers that contain it)"},
        {"a\"b\"", "unexpected character in name (quote identifiers that contain it)"},
        {"t\0"s, "unexpected character in name (quote identifiers that contain it)"},
        {"a\fb", "unexpected character in name (quote identifiers that contain it)"},
        {"a.b.c.d", "too many dotted parts (at most database.schema.table)"},
        {"\"a\".\"b\".\"c\".\"d\"", "too many dotted parts (at most database.schema.table)"},
    };
    for (const auto &c : cases) {
        const char *why = pgcdcws::protocol::qualified_name_error(c.first);
        ASSERT_NE(why, nullptr) << c.first;
        EXPECT_STREQ(why, c.second) << c.first;
    }
}

TEST(QualifiedName, HonoursStringViewLength) {
    const char text[] = "public.orders; drop";
    EXPECT_EQ(pgcdcws::protocol::qualified_name_error(std::string_view(text, 13)), nullptr);
    EXPECT_NE(pgcdcws::protocol::qualified_name_error(std::string_view(text, 14)), nullptr);
    EXPECT_NE(pgcdcws::protocol::qualified_name_error(std::string_view(text, 7)), nullptr);  // "public."
}

TEST(SnapshotRequest, SlotNameShapes) {
    for (const std::string &name : {"a"s, "_"s, "0"s, "slot_9"s, std::string(63, 'z')}) {
        SnapshotRequest q;
        ASSERT_TRUE(Accepted(R"({"slotName":")" + name + R"(","table":"t"})", &q));
        EXPECT_EQ(q.slot_name, name);
    }
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(R"({"\u0073lotName":"\u0073","table":"t"})", &q));  // escapes in key and value
    EXPECT_EQ(q.slot_name, "s");
}

TEST(SnapshotRequest, OffsetAndLimit) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(body(R"("offset": 5, "limit": 0)"), &q));
    EXPECT_EQ(q.offset, 5);
    EXPECT_EQ(q.limit, 0);
    ASSERT_TRUE(Accepted(body(R"("limit": 10000)"), &q));  // exactly max_rows
    EXPECT_EQ(q.limit, 10000);
    ASSERT_TRUE(Accepted(body(R"("limit": 1)"), &q, 1));
    EXPECT_EQ(q.limit, 1);
    ASSERT_TRUE(Accepted(body(R"("offset": 4294967296, "limit": 4294967296)"), &q,
                         std::numeric_limits<std::int64_t>::max()));
    EXPECT_EQ(q.offset, 4294967296);
    EXPECT_EQ(q.limit, 4294967296);
}

TEST(SnapshotRequest, OrderAnyCase) {
    const std::pair<const char *, bool> cases[] = {
        {"asc", false}, {"ASC", false}, {"Asc", false}, {"aSc", false},
        {"desc", true}, {"DESC", true}, {"Desc", true}, {"dEsC", true},
    };
    for (const auto &c : cases) {
        SnapshotRequest q;
        ASSERT_TRUE(Accepted(body(R"("order_by": {"column": "id", "order": ")" + std::string(c.first) + "\"}"), &q));
        EXPECT_TRUE(q.has_order) << c.first;
        EXPECT_EQ(q.order_column, "id") << c.first;
        EXPECT_EQ(q.descending, c.second) << c.first;
    }
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(body(R"("order_by": {"column": "id"})"), &q));
    EXPECT_TRUE(q.has_order);
    EXPECT_FALSE(q.descending);
}

TEST(SnapshotRequest, OrderColumnIsCaseSensitiveUpTo63Bytes) {
    for (const std::string &col : {"Id"s, "a b"s, "\"quoted\""s, std::string(63, 'c'), "\xC3\xA4"s}) {
        SnapshotRequest q;
        std::string json_col;
        for (char c : col)
            json_col += (c == '"') ? "\\\""s : std::string(1, c);
        ASSERT_TRUE(Accepted(body(R"("order_by": {"column": ")" + json_col + "\"}"), &q));
        EXPECT_EQ(q.order_column, col);
    }
}

TEST(SnapshotRequest, AfterValueText) {
    EXPECT_EQ(after_of(R"("2024-01-01 00:00:00+00")"), "2024-01-01 00:00:00+00");
    EXPECT_EQ(after_of(R"("")"), "");
    EXPECT_EQ(after_of(R"("a\"b\\c\u00e9")"), "a\"b\\c\xC3\xA9");
    EXPECT_EQ(after_of(R"("0001")"), "0001");  // strings as is
    EXPECT_EQ(after_of("42"), "42");
    EXPECT_EQ(after_of("0"), "0");
    EXPECT_EQ(after_of("-7"), "-7");
    EXPECT_EQ(after_of("2147483648"), "2147483648");
    EXPECT_EQ(after_of("9223372036854775807"), "9223372036854775807");
    EXPECT_EQ(after_of("-9223372036854775808"), "-9223372036854775808");
    EXPECT_EQ(after_of("18446744073709551615"), "18446744073709551615");
    EXPECT_EQ(after_of("1.5"), "1.5");
    EXPECT_EQ(after_of("-2.25"), "-2.25");
    EXPECT_EQ(after_of("0.1"), "0.1");
    EXPECT_EQ(after_of("true"), "true");
    EXPECT_EQ(after_of("false"), "false");
}

TEST(SnapshotRequest, AfterAtMaxLength) {
    ASSERT_EQ(kMaxAfterValueText, 1024u);
    const std::string v(kMaxAfterValueText, 'v');
    EXPECT_EQ(after_of("\"" + v + "\""), v);
}

TEST(SnapshotRequest, AfterWithDescendingOrder) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(body(R"("after": "k", "order_by": {"column": "id", "order": "desc"})"), &q));
    EXPECT_TRUE(q.has_after);
    EXPECT_TRUE(q.descending);
    EXPECT_EQ(q.after, "k");
}

TEST(SnapshotRequest, BodyOfExactly64kBIsAccepted) {
    std::string b = body();
    b.append(kMaxSnapshotRequestSize - b.size(), ' ');
    ASSERT_EQ(b.size(), 65536u);
    EXPECT_TRUE(Accepted(b));
}

TEST(SnapshotRequest, HonoursLengthNotNul) {
    const std::string text = R"({"slotName":"s","table":"t"}GARBAGE)";
    const ParsedSnapshotRequest r = parse_snapshot_request(text.data(), 28, kMaxRows);
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.request.table, "t");
}

// ---- rejected --------------------------------------------------------------

TEST(SnapshotRequest, RejectsEmptyBody) {
    EXPECT_TRUE(Rejected("", "invalid JSON at offset 0"));
    const ParsedSnapshotRequest r = parse_snapshot_request(nullptr, 0, kMaxRows);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("invalid JSON"), std::string::npos) << r.error;
}

TEST(SnapshotRequest, RejectsInvalidJson) {
    const char *cases[] = {
        " ",
        "{",
        "}",
        "{\"slotName\":}",
        "{\"slotName\":\"s\",\"table\":\"t\",}",
        "{'slotName':'s','table':'t'}",
        "{slotName:\"s\",\"table\":\"t\"}",
        "{\"slotName\":\"s\" \"table\":\"t\"}",
        "{\"slotName\":\"s\",\"table\":\"t\"",
        "{\"slotName\":\"s\",\"table\":\"t\",\"limit\":01}",
        "{\"slotName\":\"s\",\"table\":\"t\",\"limit\":+1}",
        "{\"slotName\":\"s\",\"table\":\"t\",\"limit\":NaN}",
        "{\"slotName\":\"s\",\"table\":\"t\",\"after\":1e400}",
        "{\"slotName\":\"s\",\"table\":\"t\n\"}",  // raw control character in a string
        "{\"slotName\":\"s\",\"table\":\"\\x\"}",
        "{\"slotName\":\"s\",\"table\":\"\\ud800\"}",  // lone surrogate escape
        "\xEF\xBB\xBF{\"slotName\":\"s\",\"table\":\"t\"}",  // BOM
    };
    for (const char *c : cases)
        EXPECT_TRUE(Rejected(c, "invalid JSON at offset "));
}

TEST(SnapshotRequest, InvalidJsonErrorNamesOffsetAndProblem) {
    const ParsedSnapshotRequest r = parse(R"({"slotName": "s", "table": })");
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(r.error, "invalid JSON at offset 27: Invalid value.");
}

TEST(SnapshotRequest, RejectsTrailingGarbage) {
    for (const std::string &tail : {" x"s, "{}"s, ","s, "\"\""s, " 1"s, "}"s, " null"s}) {
        const ParsedSnapshotRequest r = parse(R"({"slotName":"s","table":"t"})" + tail);
        ASSERT_FALSE(r.ok) << tail;
        EXPECT_NE(r.error.find("invalid JSON at offset"), std::string::npos) << r.error;
        EXPECT_NE(r.error.find("must not be followed by other values"), std::string::npos) << r.error;
    }
    EXPECT_EQ(parse(R"({"slotName":"s","table":"t"} x)").error,
              "invalid JSON at offset 29: The document root must not be followed by other values.");
}

TEST(SnapshotRequest, RejectsRawNulBytesAnywhere) {
    const std::string base = R"({"slotName":"s","table":"t"})";
    for (std::size_t at = 0; at <= base.size(); ++at) {
        std::string b = base;
        b.insert(at, 1, '\0');
        EXPECT_TRUE(Rejected(b, "invalid JSON: NUL character")) << "NUL at " << at;
    }
    EXPECT_EQ(parse("\0"s).error, "invalid JSON: NUL character");
}

TEST(SnapshotRequest, RejectsInvalidUtf8) {
    const char *bad[] = {
        "\xC3",          // truncated
        "\xC0\xAF",      // overlong '/'
        "\xE0\x80\xAF",  // overlong
        "\xED\xA0\x80",  // UTF-16 surrogate
        "\xF4\x90\x80\x80",  // above U+10FFFF
        "\xFF",
        "\x80",
    };
    for (const char *seq : bad) {
        EXPECT_TRUE(Rejected(R"({"slotName":"s","table":"t)" + std::string(seq) + "\"}", "invalid JSON at offset"))
            << "in a value";
        EXPECT_TRUE(Rejected(R"({"slotName":"s","table":"t",")" + std::string(seq) + "\":1}", "invalid JSON at offset"))
            << "in a key";
        EXPECT_TRUE(Rejected(body(R"("order_by":{"column":")" + std::string(seq) + "\"}"), "invalid JSON at offset"))
            << "in order_by.column";
        EXPECT_TRUE(Rejected(std::string(seq) + R"({"slotName":"s","table":"t"})", "invalid JSON at offset"))
            << "before the document";
    }
    EXPECT_EQ(parse("{\"slotName\":\"s\",\"table\":\"\xFF\"}").error,
              "invalid JSON at offset 25: Invalid encoding in string.");
}

TEST(SnapshotRequest, RejectsNonObjects) {
    for (const char *c : {"[]", "[{\"slotName\":\"s\",\"table\":\"t\"}]", "\"s\"", "1", "-1.5", "null", "true", "false"})
        EXPECT_TRUE(Rejected(c, "expected a JSON object such as {\"slotName\": \"s\", \"table\": \"t\"}")) << c;
}

TEST(SnapshotRequest, RejectsMissingSlotNameOrTable) {
    EXPECT_EQ(parse(R"({"table":"t"})").error, "missing \"slotName\"");
    EXPECT_EQ(parse(R"({"slotName":"s"})").error, "missing \"table\"");
    EXPECT_EQ(parse("{}").error, "missing \"slotName\"");
    EXPECT_EQ(parse(R"({"offset": 1, "limit": 2})").error, "missing \"slotName\"");
    EXPECT_TRUE(Rejected(R"({"slotName":"s","order_by":{"column":"id"},"after":1})", "missing \"table\""));
}

TEST(SnapshotRequest, RejectsInvalidSlotName) {
    EXPECT_EQ(parse(R"({"slotName":"S","table":"t"})").error,
              "invalid slotName: slot name may contain only lower case letters, digits and underscores");
    EXPECT_EQ(parse(R"({"slotName":"Orders_Feed","table":"t"})").error,
              "invalid slotName: slot name may contain only lower case letters, digits and underscores");
    EXPECT_EQ(parse(R"({"slotName":")" + std::string(64, 'a') + R"(","table":"t"})").error,
              "invalid slotName: slot name is longer than 63 characters");
    EXPECT_EQ(parse(R"({"slotName":"","table":"t"})").error, "invalid slotName: slot name is empty");
    for (const char *name : {"a-b", "a b", "a.b", "a\\u0000", "\\u00e4", "s;"})
        EXPECT_TRUE(Rejected(R"({"slotName":")" + std::string(name) + R"(","table":"t"})", "invalid slotName: "))
            << name;
    for (const char *v : {"1", "null", "true", "[\"s\"]", "{}"})
        EXPECT_EQ(parse(R"({"table":"t","slotName":)" + std::string(v) + "}").error, "\"slotName\" must be a string")
            << v;
}

TEST(SnapshotRequest, RejectsBadTable) {
    const std::string not_string = "\"table\" must be a non-empty string such as \"public.orders\"";
    EXPECT_EQ(parse(R"({"slotName":"s","table":""})").error, not_string);
    for (const char *v : {"1", "null", "false", "[\"t\"]", "{\"schema\":\"public\"}"})
        EXPECT_EQ(parse(R"({"slotName":"s","table":)" + std::string(v) + "}").error, not_string) << v;
    EXPECT_EQ(parse(R"({"slotName":"s","table":")" + std::string(kMaxTableNameText + 1, 'x') + "\"}").error,
              "\"table\" is too long");
    // Length is counted in bytes after unescaping: 512 x "ä" (2 bytes each) fits, 513 do not.
    std::string fits, too_long;
    for (int i = 0; i < 512; ++i)
        fits += "\\u00e4";
    too_long = fits + "\\u00e4";
    EXPECT_TRUE(Accepted(R"({"slotName":"s","table":")" + fits + "\"}"));
    EXPECT_TRUE(Rejected(R"({"slotName":"s","table":")" + too_long + "\"}", "\"table\" is too long"));
}

TEST(SnapshotRequest, RejectsInvalidTableNameSyntax) {
    // PROTOCOL.md: "t; drop table x", "t union select ..." and subqueries get a 400.
    const std::pair<const char *, const char *> cases[] = {
        {R"("t; drop table x")", "unexpected character in name (quote identifiers that contain it)"},
        {R"("t union select * from pg_authid")", "unexpected character in name (quote identifiers that contain it)"},
        {R"j("(select * from pg_authid) s")j", "a name must start with a letter or underscore (quote it otherwise)"},
        {R"j("pg_sleep(5)")j", "unexpected character in name (quote identifiers that contain it)"},
        {R"(" ")", "empty name"},
        {R"("public.")", "a name may not end with a dot"},
        {R"("a.b.c.d")", "too many dotted parts (at most database.schema.table)"},
        {R"("\"unterminated")", "unterminated quoted identifier"},
        {R"("\"\"")", "zero-length quoted identifier"},
        {R"("orders\u0000")", "unexpected character in name (quote identifiers that contain it)"},
    };
    for (const auto &c : cases)
        EXPECT_EQ(parse(R"({"slotName":"s","table":)" + std::string(c.first) + "}").error,
                  "invalid table name: " + std::string(c.second))
            << c.first;
}

TEST(SnapshotRequest, RejectsBadOffsetAndLimit) {
    const char *bad[] = {
        "-1", "-9223372036854775808", "1.5", "1.0", "1e3", "1E2", "0.0", "-0.0",
        "9223372036854775808",  // above int64
        "18446744073709551615", "\"5\"", "\"\"", "null", "true", "false", "[1]", "{}",
    };
    for (const char *field : {"offset", "limit"}) {
        const std::string message = "\"" + std::string(field) + "\" must be a non-negative integer";
        for (const char *v : bad)
            EXPECT_EQ(parse(body("\"" + std::string(field) + "\": " + v)).error, message) << field << ": " << v;
    }
}

TEST(SnapshotRequest, RejectsLimitAboveMaxRows) {
    EXPECT_EQ(parse(body(R"("limit": 10001)")).error,
              "\"limit\" 10001 is above pgcdcws.snapshot_max_rows (10000)");
    EXPECT_EQ(parse(body(R"("limit": 2)"), 1).error, "\"limit\" 2 is above pgcdcws.snapshot_max_rows (1)");
    EXPECT_EQ(parse(body(R"("limit": 9223372036854775807)"), 10000000).error,
              "\"limit\" 9223372036854775807 is above pgcdcws.snapshot_max_rows (10000000)");
    EXPECT_TRUE(Rejected(body(R"("limit": 10001, "offset": 3)"), "pgcdcws.snapshot_max_rows"));
}

TEST(SnapshotRequest, RejectsOrderByNotAnObject) {
    const std::string message = "\"order_by\" must be an object such as {\"column\": \"id\", \"order\": \"asc\"}";
    for (const char *v : {"\"id\"", "\"id asc\"", "[\"id\"]", "null", "1", "true"})
        EXPECT_EQ(parse(body("\"order_by\": " + std::string(v))).error, message) << v;
}

TEST(SnapshotRequest, RejectsOrderByWithoutColumn) {
    EXPECT_EQ(parse(body(R"("order_by": {})")).error, "\"order_by\" needs a \"column\"");
    EXPECT_EQ(parse(body(R"("order_by": {"order": "desc"})")).error, "\"order_by\" needs a \"column\"");
}

TEST(SnapshotRequest, RejectsBadColumn) {
    const std::string message = "\"order_by.column\" must be a column name (1-63 bytes)";
    const std::string cases[] = {
        "\"\"", "\"" + std::string(64, 'c') + "\"", "\"a\\u0000b\"", "\"\\u0000\"", "1", "null", "true", "[\"id\"]",
        "{}",
    };
    for (const auto &v : cases)
        EXPECT_EQ(parse(body("\"order_by\": {\"column\": " + v + "}")).error, message) << v;
    // 32 x "ä" is 64 bytes: too long although 32 characters.
    std::string umlauts;
    for (int i = 0; i < 32; ++i)
        umlauts += "\xC3\xA4";
    EXPECT_EQ(parse(body("\"order_by\": {\"column\": \"" + umlauts + "\"}")).error, message);
}

TEST(SnapshotRequest, RejectsBadOrder) {
    const std::string message = "\"order_by.order\" must be \"asc\" or \"desc\"";
    for (const char *v : {"\"up\"", "\"\"", "\"ascending\"", "\"descending\"", "\" asc\"", "\"asc \"", "\"as\"",
                          "\"asc\\u0000\"", "\"\xC3\xA4sc\"", "1", "-1", "true", "null", "[\"asc\"]", "{}"})
        EXPECT_EQ(parse(body("\"order_by\": {\"column\": \"id\", \"order\": " + std::string(v) + "}")).error, message)
            << v;
}

TEST(SnapshotRequest, RejectsUnknownFieldInOrderBy) {
    const std::string message = "unknown field in \"order_by\" (expected \"column\" and \"order\")";
    for (const char *f : {"direction", "Column", "ORDER", "col", "nulls", "", "after"})
        EXPECT_EQ(parse(body("\"order_by\": {\"column\": \"id\", \"" + std::string(f) + "\": \"x\"}")).error, message)
            << f;
}

TEST(SnapshotRequest, RejectsBadAfter) {
    const std::string message = "\"after\" must be a string, number or boolean (the last order_by value seen)";
    for (const char *v : {"null", "[]", "[1]", "{}", "{\"id\": 1}"})
        EXPECT_EQ(parse(body("\"order_by\": {\"column\": \"id\"}, \"after\": " + std::string(v))).error, message)
            << v;
    const std::string too_long_or_nul = "\"after\" is too long or contains a NUL character";
    EXPECT_EQ(parse(body(R"("order_by": {"column": "id"}, "after": ")" + std::string(kMaxAfterValueText + 1, 'v') +
                         "\""))
                  .error,
              too_long_or_nul);
    EXPECT_EQ(parse(body(R"("order_by": {"column": "id"}, "after": "a\u0000b")")).error, too_long_or_nul);
    EXPECT_EQ(parse(body(R"("order_by": {"column": "id"}, "after": "\u0000")")).error, too_long_or_nul);
}

TEST(SnapshotRequest, RejectsAfterWithoutOrderBy) {
    const std::string message =
        "\"after\" needs \"order_by\": keyset paging continues after a value of that column";
    for (const char *v : {"1", "\"x\"", "true", "1.5"})
        EXPECT_EQ(parse(body("\"after\": " + std::string(v))).error, message) << v;
}

TEST(SnapshotRequest, RejectsUnknownTopLevelFields) {
    const std::string message = "unknown field (expected slotName, table, offset, limit, order_by, after)";
    for (const char *f : {"slotname", "SlotName", "slot_name", "Table", "limt", "orderBy", "order", "column", "",
                          "slotName ", "\\u0000"})
        EXPECT_EQ(parse(body("\"" + std::string(f) + "\": 1")).error, message) << f;
    // pgdeltastream-style extras are not silently ignored either.
    EXPECT_EQ(parse(body(R"("schema": "public")")).error, message);
}

TEST(SnapshotRequest, RejectsBodyOver64kB) {
    std::string b = body();
    b.append(kMaxSnapshotRequestSize + 1 - b.size(), ' ');
    ASSERT_EQ(b.size(), 65537u);
    EXPECT_EQ(parse(b).error, "request body too large: at most 65536 bytes");
    // Checked first: a huge body of garbage gets the size message, not a JSON error.
    EXPECT_EQ(parse(std::string(1 << 20, '\0')).error, "request body too large: at most 65536 bytes");
}

TEST(SnapshotRequest, EveryErrorIsPrintableAscii) {
    // Errors never echo input bytes: they go into an HTTP JSON body as they are.
    const std::string bodies[] = {
        "\xFF", "\0"s, "[]", "{}", body("\"\xC3\xA4\": 1"), body(R"("order_by": {"\u00e4": 1})"),
        R"({"slotName":"\u00e4","table":"t"})", body(R"("limit": 99999999999)"),
        R"({"slotName":"s","table":"\u00e4 \u00e4"})",
    };
    for (const auto &b : bodies) {
        const ParsedSnapshotRequest r = parse(b);
        ASSERT_FALSE(r.ok);
        ASSERT_FALSE(r.error.empty());
        for (unsigned char c : r.error)
            EXPECT_TRUE(c >= 0x20 && c < 0x7F) << "byte " << int(c) << " in " << r.error;
    }
}

// ---- bugs: DISABLED until fixed in src/ (run with --gtest_also_run_disabled_tests) ----

// CRASH: snapshot_request.cpp parses with kParseFullPrecisionFlag, whose code path in
// RapidJSON 1.1.0 (Debian's rapidjson-dev; fixed upstream after 1.1.0: Tencent/rapidjson
// #1251/#1290, #1249, #1441, #2326) has undefined behaviour. A JSON number ANYWHERE in the
// body (any field, unknown fields, a bare top-level number) reaches it before any field is
// checked, so this 47-byte body segfaults the "pgcdcws server" background worker (g++ -O0
// and -O2, clang++ -O2 all crash): an unauthenticated POST /v1/snapshot/data takes the
// server, and with it (bgworker crash => postmaster crash-restart) the whole cluster, down.
// Under the sanitizers of this suite it aborts the test binary, hence DISABLED.
TEST(SnapshotRequestRegression, NumberInBodyDoesNotCrash) {
    const std::string n = "128.74836467836484838364836483643636483648e-336";
    EXPECT_FALSE(parse(n).ok);  // segfault (GetCachedPower10 index overflow: diyfp.h:242)
    EXPECT_FALSE(parse(R"({"x": )" + n + "}").ok);
    EXPECT_EQ(parse(body(R"("offset": )" + n)).error, "\"offset\" must be a non-negative integer");
}

// Same flag, wrong values instead of a crash (DiyFp::Normalize() of 0: "passing zero to
// clz()"): a numeric zero as Postgres prints it at scale 24 becomes a huge negative number,
// so keyset paging on a numeric column restarts from the top (asc) or ends early (desc).
// g++ -O2 results today in the comments.
TEST(SnapshotRequestRegression, AfterNumberIsNotGarbage) {
    const char *cases[] = {
        "0.000000000000000000000000",  // -2.191809349008403e-193
        "0e100",                       // -1.997919072202235e146
        "-0e100",                      // 1.997919072202235e146
        "184467440737095516155",       // -2.0152837033678638e264
        "18446744073709551615.5",      // -2.5191046292098298e263
        "0.184467440737095516159",     // -6.532100883151302e-201
    };
    for (const char *v : cases) {
        const std::string text = after_of(v);
        const double want = std::strtod(v, nullptr), got = std::strtod(text.c_str(), nullptr);
        EXPECT_NEAR(got, want, std::abs(want) * 1e-15) << v << " -> " << text;
    }
}

// The "after" number goes through a double, so a numeric key beyond 2^64 or with more than
// 17 significant digits comes out rounded. PROTOCOL.md promises numeric values "digit for
// digit"; a client that passes the last value it received back as "after" then skips rows
// (rounded up, asc) or gets rows again (rounded down) on the next keyset page.
TEST(SnapshotRequestRegression, AfterNumberKeepsEveryDigit) {
    EXPECT_EQ(after_of("12345678901234567890123"), "12345678901234567890123");  // now "1.2345678901234568e22"
    EXPECT_EQ(after_of("18446744073709551616"), "18446744073709551616");        // 2^64
    EXPECT_EQ(after_of("0.12345678901234567890"), "0.12345678901234567890");
    EXPECT_EQ(after_of("9007199254740993"), "9007199254740993");  // fits int64: exact today, kept as a guard
}

// RapidJSON 1.1.0 refuses a lone high surrogate escape ("\ud800") but decodes a lone LOW one
// ("\udc00".."\udfff") into the bytes ED B0 80..ED BF BF, which are not UTF-8, even with
// kParseValidateEncodingFlag (that flag checks raw bytes, not escapes; see the client_message
// test ErrorTextIsUtf8EvenForLoneSurrogateEscapes). parse_snapshot_request passes them on:
// "table" (bytes >= 0x80 count as identifier characters) and "order_by.column" end up in the
// worker's catalog lookups and in its error replies ('table "\xED\xB0\x80" does not exist': a
// JSON body that is not UTF-8), "after" reaches the column type's input function (textin does
// not verify encoding) as text that is not valid in the UTF-8 database. Found by the fuzzer.
TEST(SnapshotRequestRegression, LoneLowSurrogateEscapesAreRejected) {
    const std::string bodies[] = {
        R"({"slotName":"s","table":"\udc00"})",
        R"({"slotName":"s","table":"\"\udfff\".t"})",
        body(R"("order_by":{"column":"i\udffd"})"),
        body(R"("order_by":{"column":"id"},"after":"\udc00")"),
        body(R"("order_by":{"column":"id"},"after":"\ud800\udc00\udc00")"),  // a pair, then a lone one
    };
    for (const auto &b : bodies) {
        const ParsedSnapshotRequest r = parse(b);
        EXPECT_FALSE(r.ok) << b;
        if (r.ok) {
            EXPECT_TRUE(pgcdcws::test::is_valid_utf8(r.request.table)) << b;
            EXPECT_TRUE(pgcdcws::test::is_valid_utf8(r.request.order_column)) << b;
            EXPECT_TRUE(pgcdcws::test::is_valid_utf8(r.request.after)) << b;
        }
    }
    // A proper pair is fine: U+10000.
    EXPECT_EQ(after_of(R"("\ud800\udc00")"), "\xF0\x90\x80\x80");
}

// Minor: qualified_name_error accepts NUL inside a quoted identifier (order_by.column and after
// refuse NUL). The server passes q.table.c_str() on (snapshot_scheduler.cpp, strlcpy in pg_bridge.cpp), so
// the worker sees the name cut at the NUL, always inside the quotes: Postgres then reports
// "invalid name syntax" and the client still gets a 400, but from the worker after waiting its
// turn, and naming a table text it did not send.
TEST(SnapshotRequestRegression, RejectsNulInTable) {
    EXPECT_FALSE(parse(R"({"slotName":"s","table":"\"orders\u0000\""})").ok);
    EXPECT_FALSE(parse(R"({"slotName":"s","table":"\"a\u0000b\".t"})").ok);
    EXPECT_NE(pgcdcws::protocol::qualified_name_error("\"a\0b\""s), nullptr);
}

// pgcdcws.snapshot_max_rows may be 1..99 (GUC minimum 1), yet the default limit is always
// 100: a body without "limit" is then refused with '"limit" 100 is above
// pgcdcws.snapshot_max_rows (50)', naming a field the client never sent.
TEST(SnapshotRequestRegression, DefaultLimitFitsSmallMaxRows) {
    SnapshotRequest q;
    ASSERT_TRUE(Accepted(R"({"slotName":"s","table":"t"})", &q, 50));
    EXPECT_LE(q.limit, 50);
}

// Duplicate names are accepted, the last one winning, and a second order_by keeps the first
// one's "order": {"order_by":{"column":"a","order":"desc"},"order_by":{"column":"b"}} reads b
// descending. parse_client_message refuses duplicates because JSON libraries disagree on which
// one wins (RFC 8259), e.g. a proxy checking the first slotName while pgcdcws uses the last.
TEST(SnapshotRequestRegression, RejectsDuplicateFields) {
    EXPECT_FALSE(parse(R"({"slotName":"a","slotName":"b","table":"t"})").ok);
    EXPECT_FALSE(parse(R"({"slotName":"s","table":"t","table":"u"})").ok);
    EXPECT_FALSE(parse(body(R"("order_by":{"column":"a","order":"desc"},"order_by":{"column":"b"})")).ok);
    EXPECT_FALSE(parse(body(R"("order_by":{"column":"a","column":"b"})")).ok);
}

}  // namespace
