// parse_subscription_query, format_subscription_query and
// subscription_request_from_query (src/protocol/subscription_query.cpp): the
// broadcast query grammar <types>:<table>[:<column>.<op>.<value>]...
#include "protocol/subscription_query.hpp"

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using namespace pgcdcws::protocol;
using pgcdcws::test::ExactBuffer;
using Values = std::vector<std::string>;

// Parses from an exactly-sized heap buffer so an over-read is an ASan error.
ParsedSubscriptionQuery parse(std::string_view text) {
    ExactBuffer buf(text);
    return parse_subscription_query(buf.view());
}

SubscriptionQuery accepted(std::string_view text) {
    const ParsedSubscriptionQuery p = parse(text);
    EXPECT_TRUE(p.ok) << "refused \"" << text << "\": " << p.error;
    EXPECT_TRUE(p.error.empty());
    if (p.ok) {
        // Canonical text round trip.
        const std::string canonical = format_subscription_query(p.query);
        const ParsedSubscriptionQuery again = parse(canonical);
        EXPECT_TRUE(again.ok) << canonical << ": " << again.error;
        EXPECT_TRUE(again.query == p.query) << "\"" << text << "\" -> \"" << canonical << "\"";
    }
    return p.query;
}

bool printable_ascii(std::string_view s) {
    for (unsigned char c : s)
        if (c < 0x20 || c >= 0x7F)
            return false;
    return true;
}

// Refused, with an error text containing `needle`, printable ASCII.
::testing::AssertionResult Refused(std::string_view text, std::string_view needle) {
    const ParsedSubscriptionQuery p = parse(text);
    if (p.ok)
        return ::testing::AssertionFailure() << "accepted \"" << text << "\"";
    if (p.error.find(needle) == std::string::npos)
        return ::testing::AssertionFailure() << "error \"" << p.error << "\" does not mention \"" << needle << "\"";
    if (!printable_ascii(p.error))
        return ::testing::AssertionFailure() << "error is not printable ASCII: " << p.error;
    return ::testing::AssertionSuccess();
}

// ---- types -----------------------------------------------------------------

TEST(SubscriptionQuery, Types) {
    EXPECT_EQ(accepted("insert:t").kinds, kKindInsert);
    EXPECT_EQ(accepted("update:t").kinds, kKindUpdate);
    EXPECT_EQ(accepted("delete:t").kinds, kKindDelete);
    EXPECT_EQ(accepted("truncate:t").kinds, kKindTruncate);
    EXPECT_EQ(accepted("*:t").kinds, kAllKinds);
    EXPECT_EQ(accepted("insert,delete:t").kinds, kKindInsert | kKindDelete);
    EXPECT_EQ(accepted("insert,update,delete,truncate:t").kinds, kAllKinds);
}

TEST(SubscriptionQuery, TypesIgnoreCaseAndRepeats) {
    EXPECT_EQ(accepted("INSERT,Update:t").kinds, kKindInsert | kKindUpdate);
    EXPECT_EQ(accepted("insert,insert:t").kinds, kKindInsert);
    EXPECT_EQ(accepted("*,insert:t").kinds, kAllKinds);
    EXPECT_EQ(accepted("ins%65rt:t").kinds, kKindInsert);  // pieces are %-decoded
    EXPECT_EQ(accepted("%2A:t").kinds, kAllKinds);
}

TEST(SubscriptionQuery, RefusesBadTypes) {
    EXPECT_TRUE(Refused("inserts:t", "unknown type \"inserts\" (types: insert, update, delete, truncate, *)"));
    EXPECT_TRUE(Refused("select:t", "unknown type \"select\""));
    EXPECT_TRUE(Refused("insert, update:t", "unknown type \" update\""));
    EXPECT_TRUE(Refused("all:t", "unknown type"));
    EXPECT_TRUE(Refused("**:t", "unknown type \"**\""));
    EXPECT_TRUE(Refused(":t", "empty type list"));
    EXPECT_TRUE(Refused("insert,:t", "empty type in the type list"));
    EXPECT_TRUE(Refused(",insert:t", "empty type in the type list"));
    EXPECT_TRUE(Refused("insert,,update:t", "empty type in the type list"));
    EXPECT_TRUE(Refused("ins%2:t", "type \"ins%2\": malformed %-escape"));
    EXPECT_TRUE(Refused("insert%00:t", "%00 is not allowed"));
    EXPECT_TRUE(Refused("%FF:t", "not valid UTF-8"));
}

// ---- table -----------------------------------------------------------------

TEST(SubscriptionQuery, TableNames) {
    SubscriptionQuery q = accepted("insert:orders");
    EXPECT_FALSE(q.schema.has_value());
    EXPECT_EQ(q.table, "orders");
    EXPECT_TRUE(q.filters.empty());

    q = accepted("insert:public.orders");
    ASSERT_TRUE(q.schema.has_value());
    EXPECT_EQ(*q.schema, "public");
    EXPECT_EQ(q.table, "orders");

    // Unquoted names fold to lower case as Postgres does; quoted ones keep it.
    q = accepted("insert:Sales.Orders");
    EXPECT_EQ(*q.schema, "sales");
    EXPECT_EQ(q.table, "orders");
    q = accepted("insert:\"Sales\".\"Orders\"");
    EXPECT_EQ(*q.schema, "Sales");
    EXPECT_EQ(q.table, "Orders");

    // Quoted names may hold dots, spaces and quotes; a ':' is %3A (split first).
    q = accepted("insert:\"my.schema\".\"order items\"");
    EXPECT_EQ(*q.schema, "my.schema");
    EXPECT_EQ(q.table, "order items");
    q = accepted("insert:\"a%3Ab\".\"say \"\"hi\"\"\"");
    EXPECT_EQ(*q.schema, "a:b");
    EXPECT_EQ(q.table, "say \"hi\"");
    q = accepted("insert:%22T%22");
    EXPECT_EQ(q.table, "T");

    // Underscores, digits, $ and non-ASCII letters (folded: ASCII only).
    q = accepted("insert:_t1$x");
    EXPECT_EQ(q.table, "_t1$x");
    q = accepted("insert:%C3%89t%C3%A9");  // "Été": non-ASCII bytes are not folded
    EXPECT_EQ(q.table, "\xC3\x89t\xC3\xA9");

    // 63 bytes is the longest name Postgres keeps.
    q = accepted("insert:" + std::string(63, 'a'));
    EXPECT_EQ(q.table.size(), 63u);
}

TEST(SubscriptionQuery, RefusesBadTableNames) {
    EXPECT_TRUE(Refused("insert", "missing table: expected <types>:<table>[:<column>.<op>.<value>]..."));
    EXPECT_TRUE(Refused("insert:", "empty table name"));
    EXPECT_TRUE(Refused("insert:a.b.c", "invalid table name \"a.b.c\": too many dotted parts (at most schema.table)"));
    EXPECT_TRUE(Refused("insert:a.", "a name may not end with a dot"));
    EXPECT_TRUE(Refused("insert:.a", "invalid table name"));
    EXPECT_TRUE(Refused("insert:1t", "must start with a letter or underscore"));
    EXPECT_TRUE(Refused("insert:t;drop", "unexpected character in name"));
    EXPECT_TRUE(Refused("insert:\"t", "unterminated quoted identifier"));
    EXPECT_TRUE(Refused("insert:\"\"", "zero-length quoted identifier"));
    EXPECT_TRUE(Refused("insert:" + std::string(64, 'a'), "a name is at most 63 bytes"));
    EXPECT_TRUE(Refused("insert:\"" + std::string(64, 'A') + "\"", "a name is at most 63 bytes"));
    EXPECT_TRUE(Refused("insert:t%", "malformed %-escape (write % as %25)"));
    EXPECT_TRUE(Refused("insert:t%zz", "malformed %-escape"));
    EXPECT_TRUE(Refused("insert:\"t%00\"", "%00 is not allowed"));
    EXPECT_TRUE(Refused("insert:t%C3", "not valid UTF-8"));
    // A raw ':' always separates sections, quoted or not.
    EXPECT_TRUE(Refused("insert:\"a:b\"", "unterminated quoted identifier"));
}

// ---- filters ---------------------------------------------------------------

TEST(SubscriptionQuery, EveryOperator) {
    const std::pair<const char *, FilterOp> ops[] = {{"eq", FilterOp::Eq},   {"neq", FilterOp::Neq}, {"lt", FilterOp::Lt},
                                                     {"lte", FilterOp::Lte}, {"gt", FilterOp::Gt},   {"gte", FilterOp::Gte},
                                                     {"in", FilterOp::In}};
    for (const auto &op : ops) {
        const SubscriptionQuery q = accepted(std::string("*:t:id.") + op.first + ".5");
        ASSERT_EQ(q.filters.size(), 1u) << op.first;
        EXPECT_EQ(q.filters[0].column, "id");
        EXPECT_EQ(q.filters[0].op, op.second);
        EXPECT_EQ(q.filters[0].values, Values{"5"});
        EXPECT_STREQ(filter_op_name(op.second), op.first);
    }
    EXPECT_EQ(accepted("*:t:id.EQ.5").filters[0].op, FilterOp::Eq);  // operators ignore case
    EXPECT_EQ(accepted("*:t:id.Gte.5").filters[0].op, FilterOp::Gte);
}

TEST(SubscriptionQuery, OnlyTheFirstTwoDotsSeparate) {
    SubscriptionQuery q = accepted("update:t:score.gt.4.5");
    EXPECT_EQ(q.filters[0].values, Values{"4.5"});
    q = accepted("update:t:host.eq.db.example.com");
    EXPECT_EQ(q.filters[0].values, Values{"db.example.com"});
    q = accepted("update:t:v.eq...");
    EXPECT_EQ(q.filters[0].values, Values{".."});
}

TEST(SubscriptionQuery, ValuesArePercentDecodedAfterSplitting) {
    SubscriptionQuery q = accepted("insert:t:url.eq.http%3A%2F%2Fx%3A80");
    EXPECT_EQ(q.filters[0].values, Values{"http://x:80"});
    q = accepted("insert:t:name.eq.a%2Cb");  // a comma in a single value
    EXPECT_EQ(q.filters[0].values, Values{"a,b"});
    q = accepted("insert:t:pct.eq.50%25");
    EXPECT_EQ(q.filters[0].values, Values{"50%"});
    q = accepted("insert:t:name.eq.caf%C3%A9");
    EXPECT_EQ(q.filters[0].values, Values{"caf\xC3\xA9"});
    q = accepted("insert:t:name.eq.a+b c");  // '+' and spaces are themselves
    EXPECT_EQ(q.filters[0].values, Values{"a+b c"});
    q = accepted("insert:t:name.eq.%2E");
    EXPECT_EQ(q.filters[0].values, Values{"."});
}

TEST(SubscriptionQuery, EmptyValueIsAnEmptyString) {
    SubscriptionQuery q = accepted("insert:t:name.eq.");
    EXPECT_EQ(q.filters[0].values, Values{""});
    q = accepted("insert:t:name.in.");
    EXPECT_EQ(q.filters[0].values, Values{""});
    q = accepted("insert:t:name.in.,a,");
    EXPECT_EQ(q.filters[0].values, (Values{"", "a", ""}));
}

TEST(SubscriptionQuery, InTakesACommaList) {
    SubscriptionQuery q = accepted("*:t:status.in.new,paid,a%2Cb,x.y");
    EXPECT_EQ(q.filters[0].op, FilterOp::In);
    EXPECT_EQ(q.filters[0].values, (Values{"new", "paid", "a,b", "x.y"}));

    std::string hundred = "*:t:id.in.0";
    for (int i = 1; i < 100; i++)
        hundred += "," + std::to_string(i);
    q = accepted(hundred);
    ASSERT_EQ(q.filters[0].values.size(), 100u);
    EXPECT_EQ(q.filters[0].values[99], "99");
    EXPECT_TRUE(Refused(hundred + ",100", "too many values for in: at most 100"));
}

TEST(SubscriptionQuery, FiltersAreAnded) {
    const SubscriptionQuery q = accepted("insert,update:public.orders:status.eq.paid:total.gt.100:total.lt.1000");
    ASSERT_EQ(q.filters.size(), 3u);
    EXPECT_EQ(q.filters[0].column, "status");
    EXPECT_EQ(q.filters[1].column, "total");
    EXPECT_EQ(q.filters[1].op, FilterOp::Gt);
    EXPECT_EQ(q.filters[2].op, FilterOp::Lt);
    EXPECT_EQ(q.filters[2].values, Values{"1000"});
}

TEST(SubscriptionQuery, ColumnNames) {
    EXPECT_EQ(accepted("*:t:Status.eq.x").filters[0].column, "status");
    EXPECT_EQ(accepted("*:t:\"Status\".eq.x").filters[0].column, "Status");
    EXPECT_EQ(accepted("*:t:\"a%2Eb\".eq.x").filters[0].column, "a.b");
    EXPECT_EQ(accepted("*:t:\"a%3Ab\".eq.x").filters[0].column, "a:b");
    EXPECT_EQ(accepted("*:t:%22a b%22.eq.x").filters[0].column, "a b");
}

TEST(SubscriptionQuery, TruncateWithFiltersIsAccepted) {
    // Filters apply to row changes; a truncate reaches the subscription anyway.
    const SubscriptionQuery q = accepted("truncate,insert:t:id.eq.1");
    EXPECT_EQ(q.kinds, kKindTruncate | kKindInsert);
    EXPECT_EQ(q.filters.size(), 1u);
}

TEST(SubscriptionQuery, RefusesBadFilters) {
    EXPECT_TRUE(Refused("*:t:", "empty filter (a doubled or trailing ':')"));
    EXPECT_TRUE(Refused("*:t::id.eq.1", "empty filter"));
    EXPECT_TRUE(Refused("*:t:id", "filter \"id\": missing operator and value: write <column>.<op>.<value>"));
    EXPECT_TRUE(Refused("*:t:id.eq", "filter \"id.eq\": missing value"));
    EXPECT_TRUE(Refused("*:t:.eq.1", "filter \".eq.1\": empty column"));
    EXPECT_TRUE(Refused("*:t:id..1", "empty operator (operators: eq, neq, lt, lte, gt, gte, in)"));
    EXPECT_TRUE(Refused("*:t:id.like.1", "unknown operator \"like\" (operators: eq, neq, lt, lte, gt, gte, in)"));
    EXPECT_TRUE(Refused("*:t:id.is.null", "unknown operator \"is\""));
    EXPECT_TRUE(Refused("*:t:id.ne.1", "unknown operator \"ne\""));
    EXPECT_TRUE(Refused("*:t:id.eq.1,2", "',' separates values only after in; write a comma inside a value as %2C"));
    EXPECT_TRUE(Refused("*:t:id.gt.1,", "',' separates values only after in"));
    EXPECT_TRUE(Refused("*:t:1id.eq.1", "invalid column name: a name must start with a letter"));
    EXPECT_TRUE(Refused("*:t:a%2Eb.eq.1", "a column name has no dots"));
    EXPECT_TRUE(Refused("*:t:" + std::string(64, 'c') + ".eq.1", "a name is at most 63 bytes"));
    EXPECT_TRUE(Refused("*:t:id%.eq.1", "column: malformed %-escape"));
    EXPECT_TRUE(Refused("*:t:id.e%.1", "operator: malformed %-escape"));
    EXPECT_TRUE(Refused("*:t:id.eq.%G1", "value \"%G1\": malformed %-escape"));
    EXPECT_TRUE(Refused("*:t:id.eq.a%00", "%00 is not allowed"));
    EXPECT_TRUE(Refused("*:t:id.in.a,%FF", "value \"%FF\": not valid UTF-8"));
    EXPECT_TRUE(Refused("*:t:id.eq." + std::string(1025, 'v'), "value too long: at most 1024 bytes"));
    EXPECT_EQ(accepted("*:t:id.eq." + std::string(1024, 'v')).filters[0].values[0].size(), 1024u);
    // Each error names the filter it is about.
    EXPECT_TRUE(Refused("*:t:a.eq.1:b.zz.2", "filter \"b.zz.2\": unknown operator \"zz\""));
}

TEST(SubscriptionQuery, Caps) {
    std::string sixteen = "*:t";
    for (int i = 0; i < 16; i++)
        sixteen += ":c" + std::to_string(i) + ".eq.1";
    EXPECT_EQ(accepted(sixteen).filters.size(), 16u);
    EXPECT_TRUE(Refused(sixteen + ":x.eq.1", "too many filters: at most 16"));

    std::string longest = "*:t:v.eq.";
    longest += std::string(kMaxSubscriptionQueryBytes - longest.size(), '1');
    EXPECT_TRUE(Refused(longest, "value too long"));  // within the query cap, over the value cap
    EXPECT_TRUE(Refused(longest + "1", "query too long: at most 4096 bytes"));
    EXPECT_TRUE(Refused("", "empty query: expected <types>:<table>"));
}

TEST(SubscriptionQuery, ErrorsShowClientTextAsPrintableAscii) {
    // Control characters, quotes and non-ASCII bytes are shown %-encoded; long text is cut.
    const ParsedSubscriptionQuery p = parse("in\"s\x01\xC3\xA9:t");
    ASSERT_FALSE(p.ok);
    EXPECT_NE(p.error.find("unknown type \"in%22s%01%C3%A9\""), std::string::npos) << p.error;
    const ParsedSubscriptionQuery q = parse(std::string(200, 'x') + ":t");
    ASSERT_FALSE(q.ok);
    EXPECT_NE(q.error.find("\"" + std::string(64, 'x') + "...\""), std::string::npos) << q.error;
    EXPECT_TRUE(printable_ascii(q.error));
}

TEST(SubscriptionQuery, HonoursStringViewLength) {
    const char text[] = "insert:t:id.eq.12345";
    const ParsedSubscriptionQuery p = parse_subscription_query(std::string_view(text, 16));
    ASSERT_TRUE(p.ok) << p.error;
    EXPECT_EQ(p.query.filters[0].values, Values{"1"});
}

// ---- canonical form --------------------------------------------------------

TEST(SubscriptionQuery, CanonicalForm) {
    auto canonical = [](std::string_view text) { return format_subscription_query(accepted(text)); };
    EXPECT_EQ(canonical("insert:t"), "insert:t");
    EXPECT_EQ(canonical("DELETE,insert:T"), "insert,delete:t");
    EXPECT_EQ(canonical("truncate,delete,update,insert:t"), "*:t");
    EXPECT_EQ(canonical("insert:Public.\"Order Items\""), "insert:public.\"Order Items\"");
    EXPECT_EQ(canonical("insert:\"a.b\".\"c%3ad\""), "insert:\"a.b\".\"c%3Ad\"");
    EXPECT_EQ(canonical("insert:t:\"A%2eb\".EQ.x:n.in.a%2Cb,c"), "insert:t:\"A%2Eb\".eq.x:n.in.a%2Cb,c");
    EXPECT_EQ(canonical("insert:t:v.eq.4.5"), "insert:t:v.eq.4.5");
    EXPECT_EQ(canonical("insert:t:v.eq.50%25 off"), "insert:t:v.eq.50%25 off");
    EXPECT_EQ(canonical("insert:t:v.eq.a%2cb%3a%2e"), "insert:t:v.eq.a%2Cb%3A.");
    EXPECT_EQ(canonical("insert:t:v.in.a%2cb,%41"), "insert:t:v.in.a%2Cb,A");
    EXPECT_EQ(canonical("insert:%22t%22: v .eq.x"), "insert:t:v.eq.x");
    EXPECT_EQ(canonical("insert:\"T\":\"a%3Ab%2Ec\".eq.\"q\""), "insert:\"T\":\"a%3Ab%2Ec\".eq.\"q\"");
    EXPECT_EQ(canonical("insert:\"t\"\"q\""), "insert:\"t\"\"q\"");
}

// ---- GET /ws parameters ----------------------------------------------------

TEST(SubscriptionRequest, BareWs) {
    for (const char *qs : {"", "access_token=abc", "x=1&y"}) {
        const SubscriptionRequest r = subscription_request_from_query(qs);
        EXPECT_TRUE(r.ok) << qs << ": " << r.error;
        EXPECT_FALSE(r.query.has_value());
        EXPECT_FALSE(r.since.has_value());
    }
}

TEST(SubscriptionRequest, QueryAndSince) {
    SubscriptionRequest r = subscription_request_from_query("query=insert%3Apublic.orders%3Aid.eq.5&since=0/16B3748&access_token=x");
    ASSERT_TRUE(r.ok) << r.error;
    ASSERT_TRUE(r.query.has_value());
    EXPECT_EQ(r.query->kinds, kKindInsert);
    EXPECT_EQ(*r.query->schema, "public");
    EXPECT_EQ(r.query->filters[0].values, Values{"5"});
    ASSERT_TRUE(r.since.has_value());
    EXPECT_EQ(*r.since, 0x16B3748u);

    // Raw ':' in the URL is fine too; a value's %3A travels as %253A.
    r = subscription_request_from_query("since=1%2F0&query=*:t:url.eq.a%253Ab");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.query->filters[0].values, Values{"a:b"});
    EXPECT_EQ(*r.since, 0x100000000u);

    r = subscription_request_from_query("%71uery=*:t&since=0/0");  // encoded name; 0/0 allowed
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(*r.since, 0u);

    r = subscription_request_from_query("query=*:t");
    ASSERT_TRUE(r.ok);
    EXPECT_FALSE(r.since.has_value());
}

TEST(SubscriptionRequest, Refusals) {
    auto error_of = [](std::string_view qs) {
        const SubscriptionRequest r = subscription_request_from_query(qs);
        EXPECT_FALSE(r.ok) << qs;
        EXPECT_FALSE(r.query.has_value());
        EXPECT_TRUE(printable_ascii(r.error)) << r.error;
        return r.error;
    };
    EXPECT_EQ(error_of("query=*:a&query=*:b"), "query given more than once in the query string");
    EXPECT_EQ(error_of("query=*:a&since=0/1&since=0/1"), "since given more than once in the query string");
    EXPECT_EQ(error_of("query"), "query parameter without a value");
    EXPECT_EQ(error_of("query="), "query parameter without a value");
    EXPECT_EQ(error_of("query=*:a&since="), "since parameter without a value");
    EXPECT_EQ(error_of("query=*:a%"), "query parameter has a malformed %-escape (URL-encode the whole query text)");
    EXPECT_EQ(error_of("query=*:a&since=5"), "since is not a valid LSN (expected X/Y in hexadecimal, e.g. 0/16B3748)");
    EXPECT_EQ(error_of("query=*:a&since=0/1%20"), "since is not a valid LSN (expected X/Y in hexadecimal, e.g. 0/16B3748)");
    EXPECT_EQ(error_of("since=0/1"),
              "since needs a query: it applies to the subscription given by query= (on a bare /ws, give \"since\" "
              "in each subscribe message)");
    EXPECT_EQ(error_of("query=bogus:t"), "invalid query: unknown type \"bogus\" (types: insert, update, delete, truncate, *)");
    EXPECT_EQ(error_of("query=" + std::string(3 * kMaxSubscriptionQueryBytes + 1, 'x')), "query parameter too long");
    EXPECT_EQ(error_of("query=" + std::string(kMaxSubscriptionQueryBytes + 1, 'x')),
              "invalid query: query too long: at most 4096 bytes");
    // A single %-decoding at the URL level: %2525 reaches the grammar as %25.
    const SubscriptionRequest r = subscription_request_from_query("query=*:t:v.eq.1%2525");
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.query->filters[0].values, Values{"1%"});
}

}  // namespace
