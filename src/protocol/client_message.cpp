#include "protocol/client_message.hpp"

#include "protocol/lsn.hpp"
#include "protocol/utf8.hpp"
#include "protocol/rapidjson_config.hpp"

#include <cstring>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>

namespace pgcdcws::protocol {

namespace {

// Whether a client-supplied name may be repeated in an error reply: it must be
// valid UTF-8 (a WebSocket text frame must be). Control characters are fine:
// the JSON writer escapes them.
bool printable(std::string_view name) { return name.size() <= 128 && valid_utf8(name); }

ClientMessage invalid(std::string why) {
    ClientMessage m;
    m.kind = ClientMessage::Kind::Invalid;
    m.error = std::move(why);
    return m;
}

constexpr const char *kIdRule = "must be a non-empty string of at most 64 bytes";

// A subscription id, or nullptr when `value` is not one.
const char *id_error(const rapidjson::Value &value) {
    if (!value.IsString() || value.GetStringLength() == 0 || value.GetStringLength() > kMaxSubscriptionIdBytes)
        return kIdRule;
    if (!valid_utf8(std::string_view(value.GetString(), value.GetStringLength())))
        return "must be valid UTF-8";
    return nullptr;
}

// {"subscribe": "<query>", "id": "<id>"[, "since": "X/Y"]}, each member once.
ClientMessage parse_subscribe(const rapidjson::Document &doc) {
    const rapidjson::Value *query = nullptr, *id = nullptr, *since = nullptr;
    std::string member_error;  // reported after the id is known, so the reply can name it
    bool duplicate_id = false;
    for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
        const std::string_view name(m->name.GetString(), m->name.GetStringLength());
        const rapidjson::Value **slot = name == "subscribe" ? &query : name == "id" ? &id : name == "since" ? &since : nullptr;
        if (!slot) {
            if (member_error.empty())
                member_error = printable(name) ? "unknown field \"" + std::string(name) + "\" (fields: subscribe, id, since)"
                                               : std::string("unknown field (fields: subscribe, id, since)");
            continue;
        }
        if (*slot) {
            duplicate_id = duplicate_id || slot == &id;
            if (member_error.empty())
                member_error = "duplicate \"" + std::string(name) + "\": send each field once";
            continue;
        }
        *slot = &m->value;
    }
    // Duplicate names are read differently by different JSON libraries (RFC 8259):
    // an id given twice is not repeated back.
    const std::string id_text =
        id && !duplicate_id && !id_error(*id) ? std::string(id->GetString(), id->GetStringLength()) : "";
    auto refuse = [&](std::string why) {
        ClientMessage m = invalid(std::move(why));
        m.id = id_text;
        return m;
    };
    if (!member_error.empty())
        return refuse(std::move(member_error));
    if (!id)
        return refuse("missing \"id\": expected {\"subscribe\": \"<query>\", \"id\": \"<your id>\"}");
    if (const char *why = id_error(*id))
        return refuse(std::string("\"id\" ") + why);
    if (!query->IsString())
        return refuse("\"subscribe\" must be a string: the query text, e.g. \"insert,update:public.orders\"");

    ClientMessage m;
    if (since) {
        if (!since->IsString())
            return refuse("\"since\" must be a string such as \"0/16B3748\"");
        const auto lsn = parse_lsn(std::string_view(since->GetString(), since->GetStringLength()));
        if (!lsn)
            return refuse("\"since\" is not a valid LSN (expected X/Y in hexadecimal, e.g. \"0/16B3748\")");
        m.since = *lsn;
    }
    ParsedSubscriptionQuery parsed = parse_subscription_query(std::string_view(query->GetString(), query->GetStringLength()));
    if (!parsed.ok)
        return refuse("invalid subscription query: " + parsed.error);
    m.kind = ClientMessage::Kind::Subscribe;
    m.id = id_text;
    m.subscription = std::move(parsed.query);
    return m;
}

// {"unsubscribe": "<id>"}, alone.
ClientMessage parse_unsubscribe(const rapidjson::Document &doc) {
    if (doc.MemberCount() != 1)
        return invalid("\"unsubscribe\" must be alone in its message: {\"unsubscribe\": \"<id>\"}");
    const rapidjson::Value &id = doc.MemberBegin()->value;
    if (const char *why = id_error(id))
        return invalid(std::string("\"unsubscribe\" ") + why + " (the id of a subscription)");
    ClientMessage m;
    m.kind = ClientMessage::Kind::Unsubscribe;
    m.id.assign(id.GetString(), id.GetStringLength());
    return m;
}

}  // namespace

ClientMessage parse_client_message(const char *data, std::size_t length) {
    if (length > kMaxClientMessageSize)
        return invalid("message too large: at most 16384 bytes");

    // RapidJSON's in-memory streams read NUL as the end of input, which would
    // ignore whatever follows it; a raw NUL is never valid JSON text anyway.
    if (const void *nul = length ? std::memchr(data, 0, length) : nullptr) {
        const auto offset = static_cast<std::size_t>(static_cast<const char *>(nul) - data);
        return invalid("invalid JSON at offset " + std::to_string(offset) + ": NUL character");
    }

    rapidjson::Document doc;
    // Parse from a plain MemoryStream: Parse(str, len) wraps it in an
    // EncodedInputStream that silently skips (partial) byte order marks.
    // kParseStopWhenDoneFlag is not used: trailing garbage must be an error.
    rapidjson::MemoryStream stream(data, length);
    doc.ParseStream<rapidjson::kParseValidateEncodingFlag, rapidjson::UTF8<>>(stream);
    if (doc.HasParseError()) {
        return invalid(std::string("invalid JSON at offset ") + std::to_string(doc.GetErrorOffset()) +
                       ": " + rapidjson::GetParseError_En(doc.GetParseError()));
    }
    if (!doc.IsObject())
        return invalid("expected a JSON object such as {\"lsn\": \"0/16B3748\"}");

    auto token = doc.FindMember("access_token");
    if (token != doc.MemberEnd()) {
        // One member only: a token never travels with an ack (nor twice).
        if (doc.MemberCount() != 1)
            return invalid("\"access_token\" must be alone in its message: {\"access_token\": \"<token>\"}");
        if (!token->value.IsString() || token->value.GetStringLength() == 0)
            return invalid("\"access_token\" must be a non-empty string");
        ClientMessage m;
        m.kind = ClientMessage::Kind::AccessToken;
        m.token.assign(token->value.GetString(), token->value.GetStringLength());
        return m;
    }

    if (doc.HasMember("subscribe"))
        return parse_subscribe(doc);
    if (doc.HasMember("unsubscribe"))
        return parse_unsubscribe(doc);

    auto it = doc.FindMember("lsn");
    if (it == doc.MemberEnd())
        return invalid("missing \"lsn\": expected {\"lsn\": \"X/Y\"}");
    int lsn_members = 0;
    for (auto m = doc.MemberBegin(); m != doc.MemberEnd(); ++m) {
        const std::string_view name(m->name.GetString(), m->name.GetStringLength());
        if (name != "lsn")
            return invalid(printable(name) ? "unknown field \"" + std::string(name) + "\""
                                           : std::string("unknown field (name not shown)"));
        lsn_members++;
    }
    // Duplicate names are read differently by different JSON libraries (RFC 8259).
    if (lsn_members > 1)
        return invalid("duplicate \"lsn\": send one {\"lsn\": \"X/Y\"} per message");
    if (!it->value.IsString())
        return invalid("\"lsn\" must be a string such as \"0/16B3748\"");

    const std::string_view text(it->value.GetString(), it->value.GetStringLength());
    auto lsn = parse_lsn(text);
    if (!lsn)
        return invalid("\"lsn\" is not a valid LSN (expected X/Y in hexadecimal, e.g. \"0/16B3748\")");
    if (*lsn == 0)
        return invalid("\"lsn\" must not be 0/0");

    ClientMessage m;
    m.kind = ClientMessage::Kind::Ack;
    m.lsn = *lsn;
    return m;
}

}  // namespace pgcdcws::protocol
