// Shared by the libFuzzer targets in this directory: the invariant check that saves
// the input as a crash, and references used by more than one target.
#pragma once

#include "protocol/http_response.hpp"

// Same RapidJSON configuration as src/ (the templates must not differ: ODR).
#include "protocol/rapidjson_config.hpp"
#include "test_util.hpp"  // ../unit is on the include path

#include <rapidjson/document.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace pgcdcws::fuzz {

namespace proto = pgcdcws::protocol;

[[noreturn]] inline void fail(const char *what, std::string_view detail = {}) {
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

inline bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

inline bool is_json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Strict UTF-8 (RFC 3629): the unit tests' reference check.
using pgcdcws::test::is_valid_utf8;

// Reference LSN parser written differently from src/: exactly one '/', 1-8 hex digits each side.
inline bool reference_lsn(std::string_view s, std::uint64_t &value) {
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

// json_error_body(message) is a single JSON object {"error": message}.
inline void check_error_body(std::string_view message) {
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

}  // namespace pgcdcws::fuzz
