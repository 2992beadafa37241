// libFuzzer target: the client messages ({"lsn": "X/Y"} acks, {"access_token": ...},
// {"subscribe": ..., "id": ...}, {"unsubscribe": ...}) and the LSN text parser/formatter.
// Each result is checked against an independent reference or an invariant; a
// violated invariant aborts (__builtin_trap) so libFuzzer saves the input as
// crash-<sha1>. Build and run with the Makefile here (make smoke, make fuzz TARGET=...).
#include "protocol/client_message.hpp"
#include "protocol/lsn.hpp"

#include "fuzz_common.hpp"

namespace {

using namespace pgcdcws::fuzz;

void check_lsn(std::string_view input) {
    const auto lsn = proto::parse_lsn(input);
    std::uint64_t ref = 0;
    const bool ref_ok = reference_lsn(input, ref);
    CHECK(lsn.has_value() == ref_ok, input);
    if (!lsn)
        return;
    CHECK(*lsn == ref, input);

    char text[proto::kLsnTextSize];
    const std::size_t n = proto::format_lsn(*lsn, text);
    CHECK(n >= 3 && n < proto::kLsnTextSize && text[n] == '\0' && std::strlen(text) == n);
    const auto again = proto::parse_lsn(std::string_view(text, n));
    CHECK(again.has_value() && *again == *lsn, std::string_view(text, n));
    // Canonical form: formatting the re-parsed value gives the same text.
    char text2[proto::kLsnTextSize];
    CHECK(proto::format_lsn(*again, text2) == n && std::memcmp(text, text2, n) == 0);
}

void check_client_message(const std::uint8_t *data, std::size_t size) {
    const auto *chars = reinterpret_cast<const char *>(data);
    const std::string_view input(chars, size);
    const proto::ClientMessage m = proto::parse_client_message(chars, size);

    if (m.kind == proto::ClientMessage::Kind::Invalid) {
        // The error goes back as {"error": ...} in a WebSocket text frame.
        CHECK(!m.error.empty(), input);
        CHECK(is_valid_utf8(m.error), m.error);
        check_error_body(m.error);
        if (size > proto::kMaxClientMessageSize)
            CHECK(m.error == "message too large: at most 16384 bytes", m.error);
        // An id repeated in the error reply is a valid one.
        CHECK(m.id.size() <= proto::kMaxSubscriptionIdBytes && is_valid_utf8(m.id), m.id);
        return;
    }
    CHECK(m.error.empty() && size <= proto::kMaxClientMessageSize, input);

    if (m.kind == proto::ClientMessage::Kind::Subscribe || m.kind == proto::ClientMessage::Kind::Unsubscribe) {
        CHECK(!m.id.empty() && m.id.size() <= proto::kMaxSubscriptionIdBytes && is_valid_utf8(m.id), input);
        rapidjson::Document doc;
        doc.Parse<rapidjson::kParseValidateEncodingFlag>(chars, size);
        CHECK(!doc.HasParseError() && doc.IsObject(), input);
        auto string_of = [&](const char *name) {
            const auto it = doc.FindMember(name);
            CHECK(it != doc.MemberEnd() && it->value.IsString(), input);
            return std::string_view(it->value.GetString(), it->value.GetStringLength());
        };
        if (m.kind == proto::ClientMessage::Kind::Unsubscribe) {
            // Exactly {"unsubscribe": "<id>"}.
            CHECK(doc.MemberCount() == 1 && string_of("unsubscribe") == m.id, input);
            return;
        }
        // {"subscribe": "<query>", "id": "<id>"} and an optional "since", each once.
        CHECK(doc.MemberCount() == (m.since ? 3u : 2u), input);
        CHECK(string_of("id") == m.id, input);
        const auto parsed = proto::parse_subscription_query(string_of("subscribe"));
        CHECK(parsed.ok && parsed.query == m.subscription, input);
        if (m.since) {
            std::uint64_t ref = 0;
            CHECK(reference_lsn(string_of("since"), ref) && ref == *m.since, input);
        } else {
            CHECK(!doc.HasMember("since"), input);
        }
        return;
    }

    if (m.kind == proto::ClientMessage::Kind::AccessToken) {
        // Exactly {"access_token": "<non-empty string>"}, and the token is that string.
        CHECK(m.error.empty() && !m.token.empty() && size <= proto::kMaxClientMessageSize, input);
        rapidjson::Document doc;
        doc.Parse<rapidjson::kParseValidateEncodingFlag>(chars, size);
        CHECK(!doc.HasParseError() && doc.IsObject() && doc.MemberCount() == 1, input);
        const auto &member = *doc.MemberBegin();
        CHECK(std::string_view(member.name.GetString(), member.name.GetStringLength()) == "access_token", input);
        CHECK(member.value.IsString(), input);
        CHECK(std::string_view(member.value.GetString(), member.value.GetStringLength()) == m.token, input);
        return;
    }

    CHECK(m.kind == proto::ClientMessage::Kind::Ack, input);
    CHECK(m.lsn != 0, input);
    CHECK(m.error.empty(), input);
    CHECK(size <= proto::kMaxClientMessageSize, input);
    // An Ack is a complete JSON text: valid UTF-8, no raw NUL (never valid in JSON,
    // see RFC 8259), and an object: first and last non-whitespace bytes are { and }.
    CHECK(is_valid_utf8(input), input);
    CHECK(input.find('\0') == std::string_view::npos, input);
    std::size_t b = 0, e = size;
    while (b < e && is_json_ws(input[b]))
        ++b;
    while (e > b && is_json_ws(input[e - 1]))
        --e;
    CHECK(e - b >= 2 && input[b] == '{' && input[e - 1] == '}', input);

    // Independently: the document is exactly {"lsn": "<that LSN>"}; one member, so
    // no duplicate "lsn" (RFC 8259: which duplicate wins differs between parsers).
    rapidjson::Document doc;
    doc.Parse<rapidjson::kParseValidateEncodingFlag>(chars, size);
    CHECK(!doc.HasParseError() && doc.IsObject() && doc.MemberCount() == 1, input);
    const auto &member = *doc.MemberBegin();
    CHECK(std::string_view(member.name.GetString(), member.name.GetStringLength()) == "lsn", input);
    CHECK(member.value.IsString(), input);
    std::uint64_t ref = 0;
    CHECK(reference_lsn(std::string_view(member.value.GetString(), member.value.GetStringLength()), ref), input);
    CHECK(ref == m.lsn, input);
}

// Reference for qualified_name_error, per its comment: 1-3 parts separated by dots, spaces
// (space, tab, CR, LF) allowed around them; a part is "double quoted" with "" for a quote and
// at least one character, or an unquoted identifier: a letter, _ or non-ASCII byte first, then

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    check_lsn(std::string_view(reinterpret_cast<const char *>(data), size));
    check_client_message(data, size);
    return 0;
}
