// Broadcast subscriptions (issue 8, docs/PROTOCOL.md "Broadcast subscriptions:
// query grammar"): the query text
//
//   <types>:<table>[:<column>.<op>.<value>]...
//
// e.g. insert,update:public.orders:status.eq.paid:total.gt.100, and the `query` and
// `since` parameters of GET /ws. Pure functions: no Postgres headers, unit-tested
// (test/unit/test_subscription_query.cpp) and fuzzed (test/fuzz/fuzz_subscription.cpp).
// Names and values are only checked for shape here; the server resolves the table
// and columns in the catalog and parses values with the column type's input function.
//
// Splitting comes before decoding: the text is split at raw ':' (sections), ','
// (type list, in-values) and the first two raw '.' of a filter; then each piece is
// percent-decoded on its own, so a separator inside a piece is written %3A, %2C or
// %2E (and '%' itself %25). Table and column names then follow SQL's rules
// (src/protocol/sql_name.hpp): unquoted names fold to lower case, "Quoted" ones
// keep their case and may contain any character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgcdcws::protocol {

constexpr std::size_t kMaxSubscriptionQueryBytes = 4096;  // the query text, before %-decoding
constexpr std::size_t kMaxSubscriptionFilters = 16;
constexpr std::size_t kMaxInValues = 100;
constexpr std::size_t kMaxFilterValueBytes = 1024;        // one value, after %-decoding

// SubscriptionQuery::kinds bits.
enum ChangeKindBit : std::uint8_t {
    kKindInsert = 1,
    kKindUpdate = 2,
    kKindDelete = 4,
    kKindTruncate = 8,
    kAllKinds = 15,  // "*"
};

enum class FilterOp : std::uint8_t { Eq, Neq, Lt, Lte, Gt, Gte, In };

// "eq", "neq", "lt", "lte", "gt", "gte", "in".
const char *filter_op_name(FilterOp op);

struct SubscriptionFilter {
    std::string column;               // as the catalog spells it (unquoted: folded to lower case), 1-63 bytes
    FilterOp op = FilterOp::Eq;
    std::vector<std::string> values;  // decoded; exactly one, or 1-100 for In; may be empty strings
    bool operator==(const SubscriptionFilter &other) const {
        return column == other.column && op == other.op && values == other.values;
    }
};

struct SubscriptionQuery {
    std::uint8_t kinds = 0;             // ChangeKindBit set, never 0 once parsed
    std::optional<std::string> schema;  // absent: resolved through the role's search_path
    std::string table;
    // ANDed. They apply to insert, update and delete; a truncate (no row to test)
    // reaches every subscription that asked for truncate, filtered or not.
    std::vector<SubscriptionFilter> filters;
    bool operator==(const SubscriptionQuery &other) const {
        return kinds == other.kinds && schema == other.schema && table == other.table && filters == other.filters;
    }
};

struct ParsedSubscriptionQuery {
    bool ok = false;
    std::string error;  // when !ok: what is wrong, printable ASCII (client text shown %-encoded)
    SubscriptionQuery query;
};

ParsedSubscriptionQuery parse_subscription_query(std::string_view text);

// The canonical query text of `query`: types in the order insert, update, delete,
// truncate, or "*" for all four; names quoted only where needed; only '%' and the
// separators of each piece %-encoded (':' everywhere, '.' in a column, ',' in a
// value). parse_subscription_query(format_subscription_query(q)).query == q, and
// the canonical text is never longer than a text that parsed to q. It is query
// text, not a URL: URL-encode it to put it in query=.
std::string format_subscription_query(const SubscriptionQuery &query);

// The parameters of GET /ws from its raw query string (the text after '?', as
// access_token_from_query takes it): `query` (the query text, %-decoded once as
// any URL parameter: a client URL-encodes the whole query text, so a %3A inside a
// value travels as %253A) and `since` (an LSN "X/Y"; 0/0 asks for all the replay
// window holds). Either given twice, empty or malformed is an error, and so is
// `since` without `query` (a bare /ws has no subscription for it to apply to).
// Other parameters (access_token...) are not looked at beyond their names.
struct SubscriptionRequest {
    bool ok = false;
    std::string error;                          // when !ok: the message of the 400 reply
    std::optional<SubscriptionQuery> query;     // absent: a bare /ws, no subscription yet
    std::optional<std::uint64_t> since;
};

SubscriptionRequest subscription_request_from_query(std::string_view query_string);

}  // namespace pgcdcws::protocol
