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
