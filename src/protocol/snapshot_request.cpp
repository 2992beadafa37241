#include "protocol/snapshot_request.hpp"

#include <cstring>
#include <string_view>

#include "protocol/rapidjson_config.hpp"
#include "protocol/slot_name.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace pgcdcws::protocol {

namespace {

ParsedSnapshotRequest fail(std::string why) {
    ParsedSnapshotRequest r;
    r.error = std::move(why);
    return r;
}

std::string_view view(const rapidjson::Value &v) { return std::string_view(v.GetString(), v.GetStringLength()); }

bool lower_equals(std::string_view s, std::string_view lower) {
    if (s.size() != lower.size())
        return false;
    for (std::size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = static_cast<char>(c - 'A' + 'a');
        if (c != lower[i])
            return false;
    }
    return true;
}

// A non-negative JSON integer (not a float, not a string).
bool non_negative_integer(const rapidjson::Value &v, std::int64_t &out) {
    if (!v.IsInt64() || v.GetInt64() < 0)
        return false;
    out = v.GetInt64();
    return true;
}

bool identifier_start(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80; }
bool identifier_char(unsigned char c) { return identifier_start(c) || (c >= '0' && c <= '9') || c == '$'; }

}  // namespace

// SQL name syntax: 1-3 parts separated by dots (spaces allowed around them);
// a part is "double quoted" ("" for a quote) or an unquoted identifier (a letter,
// _ or non-ASCII byte, then also digits and $). Postgres' own splitter accepts
// more (any run of characters), which would let "t;" or "pg_sleep(5)" through
// as table names to look up; they are not names.
const char *qualified_name_error(std::string_view name) {
    std::size_t i = 0, parts = 0;
    auto skip_spaces = [&] {
        while (i < name.size() && (name[i] == ' ' || name[i] == '\t' || name[i] == '\n' || name[i] == '\r'))
            i++;
    };
    for (;;) {
        skip_spaces();
        if (i >= name.size())
            return parts == 0 ? "empty name" : "a name may not end with a dot";
        if (name[i] == '"') {
            std::size_t length = 0;
            for (i++;; i++) {
                if (i >= name.size())
                    return "unterminated quoted identifier";
                if (name[i] == '"') {
                    if (i + 1 < name.size() && name[i + 1] == '"') {
                        i++;
                        length++;
                        continue;
                    }
                    i++;
                    break;
                }
                length++;
            }
            if (length == 0)
                return "zero-length quoted identifier";
        } else {
            if (!identifier_start(static_cast<unsigned char>(name[i])))
                return "a name must start with a letter or underscore (quote it otherwise)";
            while (i < name.size() && identifier_char(static_cast<unsigned char>(name[i])))
                i++;
        }
        parts++;
        skip_spaces();
        if (i >= name.size())
            break;
        if (name[i] != '.')
            return "unexpected character in name (quote identifiers that contain it)";
        i++;
    }
    if (parts > 3)
        return "too many dotted parts (at most database.schema.table)";
    return nullptr;
}

ParsedSnapshotRequest parse_snapshot_request(const char *data, std::size_t length, std::int64_t max_rows) {
    if (length > kMaxSnapshotRequestSize)
        return fail("request body too large: at most 65536 bytes");
    if (length && std::memchr(data, 0, length))
        return fail("invalid JSON: NUL character");

    rapidjson::Document doc;
    rapidjson::MemoryStream stream(data, length);
    doc.ParseStream<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseFullPrecisionFlag, rapidjson::UTF8<>>(
        stream);
    if (doc.HasParseError())
        return fail("invalid JSON at offset " + std::to_string(doc.GetErrorOffset()) + ": " +
                    rapidjson::GetParseError_En(doc.GetParseError()));
    if (!doc.IsObject())
        return fail("expected a JSON object such as {\"slotName\": \"s\", \"table\": \"t\"}");

    ParsedSnapshotRequest r;
    SnapshotRequest &q = r.request;
    bool have_slot = false, have_table = false;
    for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
        const std::string_view key = view(m->name);
        const rapidjson::Value &v = m->value;
        if (key == "slotName") {
            if (!v.IsString())
                return fail("\"slotName\" must be a string");
            if (const char *why = slot_name_error(view(v)))
                return fail(std::string("invalid slotName: ") + why);
            q.slot_name.assign(v.GetString(), v.GetStringLength());
            have_slot = true;
        } else if (key == "table") {
            if (!v.IsString() || v.GetStringLength() == 0)
                return fail("\"table\" must be a non-empty string such as \"public.orders\"");
            if (v.GetStringLength() > kMaxTableNameText)
                return fail("\"table\" is too long");
            if (const char *why = qualified_name_error(view(v)))
                return fail(std::string("invalid table name: ") + why);
            q.table.assign(v.GetString(), v.GetStringLength());
            have_table = true;
        } else if (key == "offset") {
            if (!non_negative_integer(v, q.offset))
                return fail("\"offset\" must be a non-negative integer");
        } else if (key == "limit") {
            if (!non_negative_integer(v, q.limit))
                return fail("\"limit\" must be a non-negative integer");
        } else if (key == "order_by") {
            if (!v.IsObject())
                return fail("\"order_by\" must be an object such as {\"column\": \"id\", \"order\": \"asc\"}");
            for (auto o = v.MemberBegin(); o != v.MemberEnd(); ++o) {
                const std::string_view okey = view(o->name);
                if (okey == "column") {
                    if (!o->value.IsString() || o->value.GetStringLength() == 0 || o->value.GetStringLength() > 63 ||
                        std::memchr(o->value.GetString(), 0, o->value.GetStringLength()))
                        return fail("\"order_by.column\" must be a column name (1-63 bytes)");
                    q.order_column.assign(o->value.GetString(), o->value.GetStringLength());
                } else if (okey == "order") {
                    if (!o->value.IsString())
                        return fail("\"order_by.order\" must be \"asc\" or \"desc\"");
                    if (lower_equals(view(o->value), "asc"))
                        q.descending = false;
                    else if (lower_equals(view(o->value), "desc"))
                        q.descending = true;
                    else
                        return fail("\"order_by.order\" must be \"asc\" or \"desc\"");
                } else {
                    return fail("unknown field in \"order_by\" (expected \"column\" and \"order\")");
                }
            }
            if (q.order_column.empty())
                return fail("\"order_by\" needs a \"column\"");
            q.has_order = true;
        } else if (key == "after") {
            if (v.IsString()) {
                q.after.assign(v.GetString(), v.GetStringLength());
            } else if (v.IsNumber() || v.IsBool()) {
                rapidjson::StringBuffer text;
                rapidjson::Writer<rapidjson::StringBuffer> writer(text);
                v.Accept(writer);
                q.after.assign(text.GetString(), text.GetSize());
            } else {
                return fail("\"after\" must be a string, number or boolean (the last order_by value seen)");
            }
            if (q.after.size() > kMaxAfterValueText || q.after.find('\0') != std::string::npos)
                return fail("\"after\" is too long or contains a NUL character");
            q.has_after = true;
        } else {
            return fail("unknown field (expected slotName, table, offset, limit, order_by, after)");
        }
    }
    if (!have_slot)
        return fail("missing \"slotName\"");
    if (!have_table)
        return fail("missing \"table\"");
    if (q.limit > max_rows)
        return fail("\"limit\" " + std::to_string(q.limit) + " is above pgcdcws.snapshot_max_rows (" +
                    std::to_string(max_rows) + ")");
    if (q.has_after && !q.has_order)
        return fail("\"after\" needs \"order_by\": keyset paging continues after a value of that column");
    r.ok = true;
    return r;
}

}  // namespace pgcdcws::protocol
