// ASCII case folding for protocol tokens (header values, keywords, host names):
// locale-independent, as HTTP and Postgres identifiers want it.
#pragma once

#include <string_view>

namespace pgcdcws::protocol {

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// `s` equals `lower` (already lower case) ignoring ASCII case.
inline bool ascii_iequals(std::string_view s, std::string_view lower) {
    if (s.size() != lower.size())
        return false;
    for (std::size_t i = 0; i < s.size(); i++)
        if (ascii_lower(s[i]) != lower[i])
            return false;
    return true;
}

}  // namespace pgcdcws::protocol
