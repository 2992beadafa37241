#include "protocol/init_request.hpp"

#include <cstring>
#include <set>
#include <string_view>

#include "protocol/lsn.hpp"
#include "protocol/publication_names.hpp"
#include "protocol/rapidjson_config.hpp"
#include "protocol/slot_name.hpp"
#include "protocol/utf8.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace pgcdcws::protocol {

namespace {

ParsedInitRequest invalid(std::string why) {
    ParsedInitRequest p;
    p.error = std::move(why);
    return p;
}

bool only_whitespace(const char *data, std::size_t length) {
    for (std::size_t i = 0; i < length; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r' && data[i] != '\n')
            return false;
    return true;
}

}  // namespace

std::string init_response_body(const std::string &slot_name, std::uint64_t lsn, const char *snapshot_name) {
    char lsn_text[kLsnTextSize];
    const std::size_t n = format_lsn(lsn, lsn_text);
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    writer.StartObject();
    writer.Key("slotName");
    writer.String(slot_name.data(), static_cast<rapidjson::SizeType>(slot_name.size()));
    writer.Key("lsn");
    writer.String(lsn_text, static_cast<rapidjson::SizeType>(n));
    writer.Key("snapshotName");
    if (snapshot_name)
        writer.String(snapshot_name);
    else
        writer.Null();
    writer.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

ParsedInitRequest parse_init_request(const char *data, std::size_t length) {
    if (length > kMaxInitRequestSize)
        return invalid("request body too large: at most 4096 bytes");
    ParsedInitRequest out;
    if (only_whitespace(data, length)) {
        out.ok = true;  // no body: every default
        return out;
    }
    // RapidJSON's in-memory streams read NUL as the end of input.
    if (std::memchr(data, 0, length))
        return invalid("invalid JSON: NUL character");
    rapidjson::Document doc;
    rapidjson::MemoryStream stream(data, length);
    doc.ParseStream<rapidjson::kParseValidateEncodingFlag, rapidjson::UTF8<>>(stream);
    if (doc.HasParseError())
        return invalid(std::string("invalid JSON at offset ") + std::to_string(doc.GetErrorOffset()) + ": " +
                       rapidjson::GetParseError_En(doc.GetParseError()));
    if (!doc.IsObject())
        return invalid("expected a JSON object such as {\"slotName\": \"s\", \"temporary\": false, \"snapshot\": true}");
    std::set<std::string_view> seen;
    for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
        const std::string_view name(m->name.GetString(), m->name.GetStringLength());
        if (!seen.insert(name).second)
            return invalid(valid_utf8(name) && name.size() <= 64 ? "duplicate \"" + std::string(name) + "\""
                                                                  : std::string("duplicate member"));
        if (name == "slotName") {
            if (!m->value.IsString())
                return invalid("\"slotName\" must be a string");
            const std::string_view slot(m->value.GetString(), m->value.GetStringLength());
            if (const char *why = slot_name_error(slot))
                return invalid(std::string("invalid slotName: ") + why);
            out.request.has_slot_name = true;
            out.request.slot_name.assign(slot);
        } else if (name == "temporary" || name == "snapshot") {
            if (!m->value.IsBool())
                return invalid("\"" + std::string(name) + "\" must be true or false");
            (name == "temporary" ? out.request.temporary : out.request.snapshot) = m->value.GetBool();
        } else if (name == "publication") {
            if (m->value.IsNull())
                continue;  // none, as cdc_init(publication => NULL)
            if (!m->value.IsString())
                return invalid("\"publication\" must be a string (publication names separated by commas) or null");
            char canonical[kMaxPublicationListBytes + 1];
            const std::string_view text(m->value.GetString(), m->value.GetStringLength());
            if (const char *why = publication_list_write(text, PublicationQuoting::Always, canonical))
                return invalid(std::string("invalid publication: ") + why);
            out.request.publications = canonical;
        } else {
            return invalid(valid_utf8(name) && name.size() <= 64
                               ? "unknown field \"" + std::string(name) + "\" (fields: slotName, temporary, snapshot, publication)"
                               : std::string("unknown field (fields: slotName, temporary, snapshot, publication)"));
        }
    }
    out.ok = true;
    return out;
}

}  // namespace pgcdcws::protocol
