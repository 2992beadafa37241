// libFuzzer target for the pure parsers of src/protocol/. Every input is fed to
// every parser, and each result is checked against an independent reference or
// an invariant; a violated invariant aborts (__builtin_trap) so libFuzzer saves
// the input as crash-<sha1>.
//
// Adding a parser: add a check_<name>(std::string_view) below and call it from
// LLVMFuzzerTestOneInput, and drop a few seed inputs into corpus/.
#include "protocol/client_message.hpp"
#include "protocol/http_response.hpp"
#include "protocol/lsn.hpp"
#include "protocol/route.hpp"
#include "protocol/setting_list.hpp"
#include "protocol/slot_name.hpp"

// Same RapidJSON configuration as src/ (the templates must not differ: ODR).
#include "protocol/rapidjson_config.hpp"

#include <rapidjson/document.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <string_view>

namespace {

namespace proto = pgcdcws::protocol;

[[noreturn]] void fail(const char *what, std::string_view detail = {}) {
    std::fprintf(stderr, "\n*** invariant violated: %s", what);
    if (!detail.empty()) {
        std::fprintf(stderr, "\n*** detail: ");
        for (unsigned char c : detail) {
            if (c >= 0x20 && c < 0x7F && c != '\\')
                std::fputc(c, stderr);
            else
                std::fprintf(stderr, "\\x%02X", c);
        }
    }
    std::fprintf(stderr, "\n");
    __builtin_trap();
}

#define CHECK(cond, ...)                   \
    do {                                   \
        if (!(cond))                       \
            fail(#cond, ##__VA_ARGS__);    \
    } while (0)

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool is_json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF.
bool is_valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        std::size_t n;
        std::uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07u;
        } else {
            return false;
        }
        if (s.size() - i - 1 < n)
            return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const unsigned char t = static_cast<unsigned char>(s[i + k]);
            if ((t & 0xC0u) != 0x80u)
                return false;
            cp = (cp << 6) | (t & 0x3Fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

// Reference LSN parser written differently from src/: exactly one '/', 1-8 hex digits each side.
bool reference_lsn(std::string_view s, std::uint64_t &value) {
    std::size_t slashes = 0, slash = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '/') {
            ++slashes;
            slash = i;
        } else if (!is_hex(s[i])) {
            return false;
        }
    }
    if (slashes != 1 || slash < 1 || slash > 8 || s.size() - slash - 1 < 1 || s.size() - slash - 1 > 8)
        return false;
    const std::string hi(s.substr(0, slash)), lo(s.substr(slash + 1));
    value = (std::strtoull(hi.c_str(), nullptr, 16) << 32) | std::strtoull(lo.c_str(), nullptr, 16);
    return true;
}

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

void check_slot_name(std::string_view input) {
    bool ref_ok = !input.empty() && input.size() <= proto::kMaxSlotNameLength;
    for (char c : input)
        ref_ok = ref_ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
    const char *error = proto::slot_name_error(input);
    CHECK((error == nullptr) == ref_ok, input);
    if (error)
        CHECK(error[0] != '\0');
}

void check_route(std::string_view input) {
    const bool stream = input == "/v1/lr/stream" || input == "/v1/lr/stream/";
    CHECK((proto::route_for_path(input) == proto::Route::Stream) == stream, input);
}

// Reference for setting_list_contains, per its header: Postgres list syntax. An item
// opening with " is quoted ("" is a quote) and compared exactly; anything else runs to
// the next comma, is trimmed and compared case-insensitively. An unterminated quote or
// text after a quoted item makes the whole list invalid (contains nothing).
bool is_json_ws_or_ff(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

bool reference_setting_list(std::string_view list, std::string_view name) {
    std::vector<std::string> quoted, plain;
    std::size_t pos = 0;
    while (true) {
        while (pos < list.size() && is_json_ws_or_ff(list[pos]))
            ++pos;
        if (pos < list.size() && list[pos] == '"') {
            std::string item;
            std::size_t q = pos + 1;
            while (true) {
                const std::size_t close = list.find('"', q);
                if (close == std::string_view::npos)
                    return false;
                item.append(list.substr(q, close - q));
                if (close + 1 < list.size() && list[close + 1] == '"') {
                    item.push_back('"');
                    q = close + 2;
                } else {
                    pos = close + 1;
                    break;
                }
            }
            quoted.push_back(item);
            while (pos < list.size() && is_json_ws_or_ff(list[pos]))
                ++pos;
            if (pos < list.size() && list[pos] != ',')
                return false;
        } else {
            std::size_t end = list.find(',', pos);
            if (end == std::string_view::npos)
                end = list.size();
            std::string item(list.substr(pos, end - pos));
            while (!item.empty() && is_json_ws_or_ff(item.back()))
                item.pop_back();
            for (char &c : item)
                if (c >= 'A' && c <= 'Z')
                    c = static_cast<char>(c - 'A' + 'a');
            plain.push_back(item);
            pos = end;
        }
        if (pos >= list.size())
            break;
        ++pos;
    }
    for (const auto &q : quoted)
        if (q == name)
            return true;
    for (const auto &p : plain)
        if (p == name)
            return true;
    return false;
}

void check_setting_list(std::string_view input) {
    for (std::string_view name : {"pgcdcws", "pgoutput", ""}) {
        const bool got = proto::setting_list_contains(input, name);
        CHECK(got == reference_setting_list(input, name), input);
    }
    // The list split at its first NUL: name from the tail, list from the head.
    const std::size_t nul = input.find('\0');
    if (nul != std::string_view::npos) {
        const std::string_view list = input.substr(0, nul), name = input.substr(nul + 1);
        CHECK(proto::setting_list_contains(list, name) == reference_setting_list(list, name), input);
    }
}

// json_error_body(message) is a single JSON object {"error": message}.
void check_error_body(std::string_view message) {
    const std::string body = proto::json_error_body(message);
    // A raw NUL is never valid JSON text, and RapidJSON would stop reading at one.
    CHECK(body.find('\0') == std::string::npos, body);
    // Only the bytes of message can be non-ASCII; everything RapidJSON adds is ASCII,
    // and control characters are always escaped.
    for (unsigned char c : body)
        CHECK(c >= 0x20, body);

    rapidjson::Document doc;
    const bool utf8 = is_valid_utf8(message);
    if (utf8)
        doc.Parse<rapidjson::kParseValidateEncodingFlag>(body.data(), body.size());
    else
        doc.Parse(body.data(), body.size());  // invalid UTF-8 in, passed through as is
    CHECK(!doc.HasParseError(), body);
    CHECK(doc.IsObject() && doc.MemberCount() == 1, body);
    const auto it = doc.FindMember("error");
    CHECK(it != doc.MemberEnd() && it->value.IsString(), body);
    const std::string_view got(it->value.GetString(), it->value.GetStringLength());
    if (utf8) {
        CHECK(got == message, body);
        CHECK(is_valid_utf8(body), body);
    }

    // The full response: content-length equals the body's bytes, body comes last.
    const std::string response = proto::http_error_response(400, message);
    CHECK(response.compare(0, 25, "HTTP/1.1 400 Bad Request\r") == 0);
    const std::size_t end = response.find("\r\n\r\n");
    CHECK(end != std::string::npos && response.compare(end + 4, std::string::npos, body) == 0);
    const std::string length = "\r\ncontent-length: " + std::to_string(body.size()) + "\r\n";
    const std::size_t at = response.find(length);
    CHECK(at != std::string::npos && at < end);
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
            CHECK(m.error == "message too large: at most 4096 bytes", m.error);
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    check_lsn(input);
    check_slot_name(input);
    check_route(input);
    check_setting_list(input);
    check_error_body(input);
    check_client_message(data, size);
    return 0;
}
