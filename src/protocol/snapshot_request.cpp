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

}  // namespace

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
