#include "protocol/lsn.hpp"

#include <cstdio>

namespace pgcdcws::protocol {

namespace {

// Parses 1-8 hex digits; returns false on an empty, overlong or non-hex field.
bool parse_hex32(std::string_view field, std::uint32_t &out) {
    if (field.empty() || field.size() > 8)
        return false;
    std::uint32_t value = 0;
    for (char c : field) {
        std::uint32_t digit;
        if (c >= '0' && c <= '9')
            digit = static_cast<std::uint32_t>(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = static_cast<std::uint32_t>(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            digit = static_cast<std::uint32_t>(c - 'A' + 10);
        else
            return false;
        value = (value << 4) | digit;
    }
    out = value;
    return true;
}

}  // namespace

std::optional<std::uint64_t> parse_lsn(std::string_view text) {
    const std::size_t slash = text.find('/');
    if (slash == std::string_view::npos)
        return std::nullopt;
    std::uint32_t high, low;
    if (!parse_hex32(text.substr(0, slash), high) || !parse_hex32(text.substr(slash + 1), low))
        return std::nullopt;
    return (static_cast<std::uint64_t>(high) << 32) | low;
}

std::size_t format_lsn(std::uint64_t lsn, char *out) {
    const int n = std::snprintf(out, kLsnTextSize, "%X/%X", static_cast<unsigned>(lsn >> 32),
                                static_cast<unsigned>(lsn & 0xFFFFFFFFu));
    return static_cast<std::size_t>(n);
}

}  // namespace pgcdcws::protocol
