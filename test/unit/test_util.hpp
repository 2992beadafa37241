// Helpers shared by the unit tests. Header-only so a new test file needs no
// Makefile change: every test/unit/*.cpp is compiled and linked automatically.
#pragma once

// Same RapidJSON configuration as src/ (the templates must not differ: ODR).
#include "protocol/rapidjson_config.hpp"

#include <rapidjson/document.h>

#include <cstring>
#include <memory>
#include <string>
#include <string_view>

namespace pgcdcws::test {

// A heap copy of exactly text.size() bytes, with no terminating NUL after it,
// so AddressSanitizer reports any read past the length a parser was given.
class ExactBuffer {
public:
    explicit ExactBuffer(std::string_view text)
        : size_(text.size()), data_(text.empty() ? nullptr : new char[text.size()]) {
        if (!text.empty())
            std::memcpy(data_.get(), text.data(), text.size());
    }
    const char *data() const { return data_.get(); }
    std::size_t size() const { return size_; }
    std::string_view view() const { return {data_.get(), size_}; }

private:
    std::size_t size_;
    std::unique_ptr<char[]> data_;
};

// Strict UTF-8 check (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF.
inline bool is_valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        std::size_t n;
        std::uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07u;
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
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

// Parses text as one complete JSON document, validating UTF-8. A raw NUL byte is
// never valid in JSON text, but RapidJSON treats it as the end of input, so it is
// refused here first (otherwise "{}\0garbage" would count as valid).
inline bool parse_json(std::string_view text, rapidjson::Document &doc) {
    if (text.find('\0') != std::string_view::npos)
        return false;
    doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
    return !doc.HasParseError();
}

// The "error" string of a {"error": "..."} body; fails the caller's expectation
// through the returned flag when the body is not exactly that shape.
inline bool error_body_message(std::string_view body, std::string &message) {
    rapidjson::Document doc;
    if (!parse_json(body, doc) || !doc.IsObject() || doc.MemberCount() != 1)
        return false;
    auto it = doc.FindMember("error");
    if (it == doc.MemberEnd() || !it->value.IsString())
        return false;
    message.assign(it->value.GetString(), it->value.GetStringLength());
    return true;
}

}  // namespace pgcdcws::test
