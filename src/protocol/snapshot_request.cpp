#include "protocol/snapshot_request.hpp"
#include "protocol/ascii.hpp"

#include <cstdint>
#include <cstring>
#include <set>
#include <string_view>
#include <vector>

#include "protocol/rapidjson_config.hpp"
#include "protocol/slot_name.hpp"
#include "protocol/sql_name.hpp"
#include "protocol/utf8.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace pgcdcws::protocol {

namespace {

ParsedSnapshotRequest fail(std::string why) {
    ParsedSnapshotRequest r;
    r.error = std::move(why);
    return r;
}

}  // namespace

// SQL name syntax (split_sql_name), 1-3 parts: database.schema.table at most.
const char *qualified_name_error(std::string_view name) {
    std::vector<std::string> parts;
    if (const char *why = split_sql_name(name, parts))
        return why;
    if (parts.size() > 3)
        return "too many dotted parts (at most database.schema.table)";
    return nullptr;
}

namespace {

// Builds the request from SAX events. Numbers come as their exact text
// (kParseNumbersAsStringsFlag): no conversion through a double, so "after" keeps
// every digit, and RapidJSON 1.1.0's full-precision number code (which can
// crash on crafted input) is never reached.
class RequestHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, RequestHandler> {
public:
    SnapshotRequest request;
    std::string error;
    bool have_slot = false, have_table = false, have_limit = false;

    bool Null() { return scalar(Kind::Null, nullptr, 0); }
    bool Bool(bool b) { return scalar(Kind::Bool, b ? "true" : "false", b ? 4 : 5); }
    bool RawNumber(const char *text, rapidjson::SizeType length, bool) { return scalar(Kind::Number, text, length); }
    bool String(const char *text, rapidjson::SizeType length, bool) { return scalar(Kind::String, text, length); }
    bool Key(const char *text, rapidjson::SizeType length, bool) {
        const std::string_view key(text, length);
        if (depth_ == 1) {
            if (!seen_top_.insert(std::string(key)).second)
                return fail("duplicate field \"" + printable_key(key) + "\"");
        } else {
            if (!seen_order_.insert(std::string(key)).second)
                return fail("duplicate field in \"order_by\"");
        }
        key_.assign(text, length);
        return true;
    }
    bool StartObject() {
        if (depth_ == 0) {
            depth_ = 1;
            return true;
        }
        if (depth_ == 1 && key_ == "order_by") {
            depth_ = 2;
            request.has_order = true;
            return true;
        }
        return type_error();
    }
    bool EndObject(rapidjson::SizeType) {
        if (depth_ == 2 && request.order_column.empty())
            return fail("\"order_by\" needs a \"column\"");
        depth_--;
        return true;
    }
    bool StartArray() { return depth_ == 0 ? fail(kNotObject) : type_error(); }
    bool EndArray(rapidjson::SizeType) { return true; }

private:
    enum class Kind { Null, Bool, Number, String };
    static constexpr const char *kNotObject = "expected a JSON object such as {\"slotName\": \"s\", \"table\": \"t\"}";

    bool fail(std::string why) {
        if (error.empty())
            error = std::move(why);
        return false;
    }

    static std::string printable_key(std::string_view key) {
        for (char c : key)
            if (c < 0x20 || c > 0x7e)
                return "?";
        return key.size() <= 64 ? std::string(key) : std::string(key.substr(0, 64)) + "...";
    }

    // A non-negative JSON integer: digits only (no sign, fraction or exponent).
    static bool parse_count(const char *text, std::size_t length, std::int64_t &out) {
        if (length == 0)
            return false;
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < length; i++) {
            if (text[i] < '0' || text[i] > '9')
                return false;
            v = v * 10 + static_cast<std::uint64_t>(text[i] - '0');
            if (v > static_cast<std::uint64_t>(INT64_MAX))
                return false;
        }
        out = static_cast<std::int64_t>(v);
        return true;
    }

    bool type_error() {
        if (depth_ == 0)
            return fail(kNotObject);
        if (depth_ == 2 && key_ == "column")
            return fail("\"order_by.column\" must be a column name (1-63 bytes)");
        if (depth_ == 2 && key_ == "order")
            return fail("\"order_by.order\" must be \"asc\" or \"desc\"");
        if (depth_ == 2)
            return fail("unknown field in \"order_by\" (expected \"column\" and \"order\")");
        if (key_ == "slotName")
            return fail("\"slotName\" must be a string");
        if (key_ == "table")
            return fail("\"table\" must be a non-empty string such as \"public.orders\"");
        if (key_ == "offset")
            return fail("\"offset\" must be a non-negative integer");
        if (key_ == "limit")
            return fail("\"limit\" must be a non-negative integer");
        if (key_ == "order_by")
            return fail("\"order_by\" must be an object such as {\"column\": \"id\", \"order\": \"asc\"}");
        if (key_ == "after")
            return fail("\"after\" must be a string, number or boolean (the last order_by value seen)");
        return fail("unknown field (expected slotName, table, offset, limit, order_by, after)");
    }

    bool scalar(Kind kind, const char *text, std::size_t length) {
        if (depth_ == 0)
            return fail(kNotObject);
        if (kind == Kind::String && !valid_utf8(std::string_view(text, length)))
            return fail("invalid JSON: a string is not valid UTF-8 (lone surrogate escape?)");
        const bool has_nul = kind == Kind::String && length && std::memchr(text, 0, length);
        if (depth_ == 2) {
            if (key_ == "column") {
                if (kind != Kind::String || length == 0 || length > 63 || has_nul)
                    return fail("\"order_by.column\" must be a column name (1-63 bytes)");
                request.order_column.assign(text, length);
                return true;
            }
            if (key_ == "order") {
                const std::string_view v(text ? text : "", length);
                if (kind == Kind::String && ascii_iequals(v, "asc"))
                    request.descending = false;
                else if (kind == Kind::String && ascii_iequals(v, "desc"))
                    request.descending = true;
                else
                    return fail("\"order_by.order\" must be \"asc\" or \"desc\"");
                return true;
            }
            return fail("unknown field in \"order_by\" (expected \"column\" and \"order\")");
        }
        if (key_ == "slotName") {
            if (kind != Kind::String)
                return type_error();
            if (const char *why = slot_name_error(std::string_view(text, length)))
                return fail(std::string("invalid slotName: ") + why);
            request.slot_name.assign(text, length);
            have_slot = true;
        } else if (key_ == "table") {
            if (kind != Kind::String || length == 0)
                return type_error();
            if (length > kMaxTableNameText)
                return fail("\"table\" is too long");
            if (const char *why = qualified_name_error(std::string_view(text, length)))
                return fail(std::string("invalid table name: ") + why);
            request.table.assign(text, length);
            have_table = true;
        } else if (key_ == "offset") {
            if (kind != Kind::Number || !parse_count(text, length, request.offset))
                return type_error();
        } else if (key_ == "limit") {
            if (kind != Kind::Number || !parse_count(text, length, request.limit))
                return type_error();
            have_limit = true;
        } else if (key_ == "after") {
            if (kind == Kind::Null)
                return type_error();
            if (length > kMaxAfterValueText || has_nul)
                return fail("\"after\" is too long or contains a NUL character");
            request.after.assign(text, length);
            request.has_after = true;
        } else if (key_ == "order_by") {
            return type_error();
        } else {
            return type_error();
        }
        return true;
    }

    int depth_ = 0;
    std::string key_;
    std::set<std::string> seen_top_, seen_order_;
};

}  // namespace

ParsedSnapshotRequest parse_snapshot_request(const char *data, std::size_t length, std::int64_t max_rows) {
    if (length > kMaxSnapshotRequestSize)
        return fail("request body too large: at most 65536 bytes");
    if (length && std::memchr(data, 0, length))
        return fail("invalid JSON: NUL character");

    RequestHandler handler;
    rapidjson::Reader reader;
    rapidjson::MemoryStream stream(data, length);
    const rapidjson::ParseResult ok =
        reader.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseNumbersAsStringsFlag>(stream, handler);
    if (!ok) {
        if (!handler.error.empty())
            return fail(handler.error);
        return fail("invalid JSON at offset " + std::to_string(ok.Offset()) + ": " +
                    rapidjson::GetParseError_En(ok.Code()));
    }
    SnapshotRequest &q = handler.request;
    if (!handler.have_slot)
        return fail("missing \"slotName\"");
    if (!handler.have_table)
        return fail("missing \"table\"");
    if (!handler.have_limit && q.limit > max_rows)
        q.limit = max_rows;  // the default never exceeds the cap
    if (q.limit > max_rows)
        return fail("\"limit\" " + std::to_string(q.limit) + " is above pgcdcws.snapshot_max_rows (" +
                    std::to_string(max_rows) + ")");
    if (q.has_after && !q.has_order)
        return fail("\"after\" needs \"order_by\": keyset paging continues after a value of that column");
    ParsedSnapshotRequest r;
    r.ok = true;
    r.request = std::move(q);
    return r;
}

}  // namespace pgcdcws::protocol
