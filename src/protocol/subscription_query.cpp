#include "protocol/subscription_query.hpp"

#include "protocol/ascii.hpp"
#include "protocol/lsn.hpp"
#include "protocol/percent_encoding.hpp"
#include "protocol/sql_name.hpp"
#include "protocol/utf8.hpp"

namespace pgcdcws::protocol {

namespace {

constexpr const char *kGrammar = "expected <types>:<table>[:<column>.<op>.<value>]...";
constexpr const char *kTypeList = "types: insert, update, delete, truncate, *";
constexpr const char *kOpList = "operators: eq, neq, lt, lte, gt, gte, in";

struct OpName {
    const char *name;
    FilterOp op;
};
constexpr OpName kOps[] = {{"eq", FilterOp::Eq}, {"neq", FilterOp::Neq}, {"lt", FilterOp::Lt}, {"lte", FilterOp::Lte},
                           {"gt", FilterOp::Gt}, {"gte", FilterOp::Gte}, {"in", FilterOp::In}};

struct KindName {
    const char *name;
    std::uint8_t bits;
};
constexpr KindName kKinds[] = {{"insert", kKindInsert},
                               {"update", kKindUpdate},
                               {"delete", kKindDelete},
                               {"truncate", kKindTruncate},
                               {"*", kAllKinds}};

// Client text quoted for an error message: printable ASCII kept, every other byte
// (and the quote and backslash) %-encoded, as the client would write it in a
// query; long text is cut. The message stays printable ASCII whatever came in.
std::string shown(std::string_view text) {
    constexpr std::size_t kMaxShown = 64;
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size(); i++) {
        if (i == kMaxShown) {
            out += "...";
            break;
        }
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
            out.push_back(static_cast<char>(c));
        else
            append_percent_escape(out, c);
    }
    out.push_back('"');
    return out;
}

// Decodes one piece of the query: nullptr, or what is wrong with it.
const char *decode_piece(std::string_view raw, std::string &out) {
    if (!percent_decode(raw, out))
        return "malformed %-escape (write % as %25)";
    if (out.find('\0') != std::string::npos)
        return "%00 is not allowed";
    if (!valid_utf8(out))
        return "not valid UTF-8 once %-decoded";
    return nullptr;
}

// split_sql_name plus the limits of a table (1-2 parts) or column (1 part) name.
const char *name_error(std::string_view decoded, std::size_t max_parts, std::vector<std::string> &parts) {
    if (const char *why = split_sql_name(decoded, parts))
        return why;
    if (parts.size() > max_parts)
        return max_parts == 1 ? "a column name has no dots (quote it and write a dot inside it as %2E)"
                              : "too many dotted parts (at most schema.table)";
    for (const std::string &part : parts)
        if (part.size() > kMaxIdentifierBytes)
            return "a name is at most 63 bytes";
    return nullptr;
}

ParsedSubscriptionQuery fail(std::string why) {
    ParsedSubscriptionQuery r;
    r.error = std::move(why);
    return r;
}

// Splits at every raw `sep`.
std::vector<std::string_view> split(std::string_view text, char sep) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (;;) {
        const std::size_t at = text.find(sep, start);
        if (at == std::string_view::npos) {
            out.push_back(text.substr(start));
            return out;
        }
        out.push_back(text.substr(start, at - start));
        start = at + 1;
    }
}

// Parses one `column.op.value` section into `filter`; returns "" or the error.
std::string parse_filter(std::string_view raw, SubscriptionFilter &filter) {
    const std::string where = "filter " + shown(raw) + ": ";
    if (raw.empty())
        return "empty filter (a doubled or trailing ':'); " + std::string(kGrammar);
    const std::size_t dot1 = raw.find('.');
    if (dot1 == std::string_view::npos)
        return where + "missing operator and value: write <column>.<op>.<value>";
    const std::size_t dot2 = raw.find('.', dot1 + 1);
    const std::string_view raw_column = raw.substr(0, dot1);
    const std::string_view raw_op =
        raw.substr(dot1 + 1, dot2 == std::string_view::npos ? std::string_view::npos : dot2 - dot1 - 1);

    if (raw_column.empty())
        return where + "empty column";
    std::string decoded;
    std::vector<std::string> parts;
    if (const char *why = decode_piece(raw_column, decoded))
        return where + "column: " + why;
    if (const char *why = name_error(decoded, 1, parts))
        return where + "invalid column name: " + why;
    filter.column = std::move(parts[0]);

    if (raw_op.empty())
        return where + "empty operator (" + kOpList + ")";
    if (const char *why = decode_piece(raw_op, decoded))
        return where + "operator: " + why;
    bool known = false;
    for (const OpName &op : kOps) {
        if (ascii_iequals(decoded, op.name)) {
            filter.op = op.op;
            known = true;
        }
    }
    if (!known)
        return where + "unknown operator " + shown(decoded) + " (" + kOpList + ")";
    if (dot2 == std::string_view::npos)
        return where + "missing value: write <column>.<op>.<value>";

    const std::string_view raw_value = raw.substr(dot2 + 1);
    if (filter.op != FilterOp::In && raw_value.find(',') != std::string_view::npos)
        return where + "',' separates values only after in; write a comma inside a value as %2C";
    const std::vector<std::string_view> raw_values = split(raw_value, ',');
    if (raw_values.size() > kMaxInValues)
        return where + "too many values for in: at most " + std::to_string(kMaxInValues);
    filter.values.clear();
    for (const std::string_view one : raw_values) {
        if (const char *why = decode_piece(one, decoded))
            return where + "value " + shown(one) + ": " + why;
        if (decoded.size() > kMaxFilterValueBytes)
            return where + "value too long: at most " + std::to_string(kMaxFilterValueBytes) + " bytes once %-decoded";
        filter.values.push_back(decoded);
    }
    return std::string();
}

// Appends `text` with '%' and the separators of its section (`special`)
// %-encoded, and nothing else: every such byte was %-encoded in any query that
// parsed to it, so the canonical text is never longer than the text it came from.
void append_encoded(std::string &out, std::string_view text, std::string_view special) {
    for (const char ch : text) {
        if (ch != '%' && special.find(ch) == std::string_view::npos)
            out.push_back(ch);
        else
            append_percent_escape(out, static_cast<unsigned char>(ch));
    }
}

}  // namespace

const char *filter_op_name(FilterOp op) {
    for (const OpName &entry : kOps)
        if (entry.op == op)
            return entry.name;
    return "?";
}

ParsedSubscriptionQuery parse_subscription_query(std::string_view text) {
    if (text.size() > kMaxSubscriptionQueryBytes)
        return fail("query too long: at most " + std::to_string(kMaxSubscriptionQueryBytes) + " bytes");
    if (text.empty())
        return fail(std::string("empty query: ") + kGrammar);
    const std::vector<std::string_view> sections = split(text, ':');
    if (sections.size() < 2)
        return fail(std::string("missing table: ") + kGrammar);
    if (sections.size() - 2 > kMaxSubscriptionFilters)
        return fail("too many filters: at most " + std::to_string(kMaxSubscriptionFilters));

    ParsedSubscriptionQuery result;
    SubscriptionQuery &query = result.query;
    std::string decoded;

    if (sections[0].empty())
        return fail(std::string("empty type list (") + kTypeList + ")");
    for (const std::string_view raw_type : split(sections[0], ',')) {
        if (raw_type.empty())
            return fail(std::string("empty type in the type list (a doubled or trailing ','; ") + kTypeList + ")");
        if (const char *why = decode_piece(raw_type, decoded))
            return fail("type " + shown(raw_type) + ": " + why);
        std::uint8_t bits = 0;
        for (const KindName &kind : kKinds)
            if (ascii_iequals(decoded, kind.name))
                bits = kind.bits;
        if (bits == 0)
            return fail("unknown type " + shown(decoded) + " (" + kTypeList + ")");
        query.kinds |= bits;
    }

    if (sections[1].empty())
        return fail(std::string("empty table name: ") + kGrammar);
    if (const char *why = decode_piece(sections[1], decoded))
        return fail("table " + shown(sections[1]) + ": " + why);
    std::vector<std::string> parts;
    if (const char *why = name_error(decoded, 2, parts))
        return fail("invalid table name " + shown(sections[1]) + ": " + why);
    if (parts.size() == 2)
        query.schema = std::move(parts[0]);
    query.table = std::move(parts.back());

    for (std::size_t i = 2; i < sections.size(); i++) {
        SubscriptionFilter filter;
        std::string why = parse_filter(sections[i], filter);
        if (!why.empty())
            return fail(std::move(why));
        query.filters.push_back(std::move(filter));
    }
    result.ok = true;
    return result;
}

std::string format_subscription_query(const SubscriptionQuery &query) {
    std::string out;
    if (query.kinds == kAllKinds) {
        out = "*";
    } else {
        for (const KindName &kind : kKinds) {
            if (kind.bits != kAllKinds && (query.kinds & kind.bits)) {
                if (!out.empty())
                    out.push_back(',');
                out += kind.name;
            }
        }
    }
    out.push_back(':');
    std::string name;
    if (query.schema)
        name = quote_sql_identifier(*query.schema) + ".";
    name += quote_sql_identifier(query.table);
    append_encoded(out, name, ":");
    for (const SubscriptionFilter &filter : query.filters) {
        out.push_back(':');
        append_encoded(out, quote_sql_identifier(filter.column), ":.");
        out.push_back('.');
        out += filter_op_name(filter.op);
        out.push_back('.');
        for (std::size_t i = 0; i < filter.values.size(); i++) {
            if (i > 0)
                out.push_back(',');
            append_encoded(out, filter.values[i], ":,");
        }
    }
    return out;
}

SubscriptionRequest subscription_request_from_query(std::string_view query_string) {
    SubscriptionRequest result;
    std::string name, value;
    bool seen_query = false, seen_since = false;
    std::string error;
    for_each_query_parameter(query_string, [&](std::string_view raw_name, std::string_view raw_value, bool has_value) {
        // Names are short; an encoded one is at most 3 bytes per byte.
        if (raw_name.size() > 15 || !percent_decode(raw_name, name) || (name != "query" && name != "since"))
            return true;
        bool &seen = name == "query" ? seen_query : seen_since;
        if (seen)
            error = name + " given more than once in the query string";
        else if (!has_value || raw_value.empty())
            error = name + " parameter without a value";
        else if (raw_value.size() > 3 * kMaxSubscriptionQueryBytes)
            error = name + " parameter too long";
        else if (!percent_decode(raw_value, value))
            error = name + " parameter has a malformed %-escape (URL-encode the whole query text)";
        seen = true;
        if (!error.empty())
            return false;
        if (name == "since") {
            if (const auto lsn = parse_lsn(value))
                result.since = *lsn;
            else
                error = "since is not a valid LSN (expected X/Y in hexadecimal, e.g. 0/16B3748)";
        } else {
            ParsedSubscriptionQuery parsed = parse_subscription_query(value);
            if (parsed.ok)
                result.query = std::move(parsed.query);
            else
                error = "invalid query: " + parsed.error;
        }
        return error.empty();
    });
    if (error.empty() && result.since && !result.query)
        error = "since needs a query: it applies to the subscription given by query= "
                "(on a bare /ws, give \"since\" in each subscribe message)";
    if (!error.empty()) {
        SubscriptionRequest failed;
        failed.error = std::move(error);
        return failed;
    }
    result.ok = true;
    return result;
}

}  // namespace pgcdcws::protocol
